"""The deployment files agree with the code: Dockerfile, .dockerignore and docker-compose.yml.

Docker cannot run here, so these tests read the files as Docker and Compose would: every variable
the compose file or the image sets must be a real setting (and validate as one), the build context
must keep out the data dir and every key, and what the Dockerfile copies must get through.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from provenance.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
# The bot reads its own settings (provenance_bot.settings; tests/e2e/test_telegram_bot.py checks its service).
IMAGE_SERVICES = {name: svc for name, svc in COMPOSE["services"].items() if "build" in svc and name != "bot"}
# Sample values for the variables the operator must supply (`${VAR:?message}`).
REQUIRED_SAMPLES = {
    "RPC_URL": "https://rpc.example.org",
    "REGISTRY_ADDRESS": "0x" + "11" * 20,
    "NFT_ADDRESS": "0x" + "22" * 20,
}


def setting_env_names() -> set[str]:
    """Every environment variable Settings reads: PROVENANCE_<FIELD> or the field's aliases."""
    prefix = Settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice).upper() for choice in alias.choices}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def dockerfile_env() -> dict[str, str]:
    """The ENV instructions of the Dockerfile (all stages), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    env: dict[str, str] = {}
    for line in joined.splitlines():
        if line.strip().upper().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def interpolate(value: str) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?message}`` with nothing set but the samples."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if name in REQUIRED_SAMPLES:
            return REQUIRED_SAMPLES[name]
        assert op != ":?", f"{name} is required by docker-compose.yml but has no sample in this test"
        return rest if op == ":-" else ""

    # A default may itself hold one pair of braces (`${PROVENANCE_MODELS:-{}}`).
    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:[-?])((?:[^{}]|\{[^{}]*\})*))?\}", one, str(value))


def test_every_variable_the_compose_file_sets_is_a_setting() -> None:
    known = setting_env_names()
    assert {"DATABASE_URL", "PROVENANCE_MODELS", "NFT_ADDRESS", "PROVENANCE_DATA_DIR"} <= known  # the rule works
    assert IMAGE_SERVICES.keys() >= {"api", "worker"}
    for name, service in IMAGE_SERVICES.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: environment as a mapping"
        unknown = sorted(key for key in env if key.upper() not in known)
        assert unknown == [], f"{name} sets variables that are no setting: {unknown}"


def test_every_variable_the_image_sets_is_a_setting() -> None:
    env = dockerfile_env()
    assert env, "the Dockerfile sets no ENV at all"
    unknown = sorted(key for key in env if key.upper() not in setting_env_names())
    assert unknown == []


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_compose_environment_validates_as_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values too: what the container would see, image ENV first, then the service's environment."""
    for key in list(os.environ):
        if key.upper() in setting_env_names():
            monkeypatch.delenv(key)
    env = {**dockerfile_env(), **{k: interpolate(v) for k, v in IMAGE_SERVICES[service]["environment"].items()}}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.data_dir == Path("/data")
    assert settings.database_url is not None and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.rpc_url == REQUIRED_SAMPLES["RPC_URL"]
    assert settings.registry_address == REQUIRED_SAMPLES["REGISTRY_ADDRESS"]
    assert settings.nft_address == REQUIRED_SAMPLES["NFT_ADDRESS"]  # without it every NFT endpoint answers 503
    assert settings.chain_key_file == Path("/run/secrets/chain_key")
    assert settings.job_backend == "celery" and settings.redis_url == "redis://redis:6379/0"
    assert settings.models == {}
    assert settings.anchor_mode in ("single", "batch")


def test_compose_wiring_matches_what_the_code_needs() -> None:
    api, worker = IMAGE_SERVICES["api"], IMAGE_SERVICES["worker"]
    secret_files = {name: spec["file"] for name, spec in COMPOSE.get("secrets", {}).items()}
    for name, service in (("api", api), ("worker", worker)):
        env = service["environment"]
        # Both resolve model names (the API on submit, the worker to load): same names, same folder.
        assert "PROVENANCE_MODELS" in env, name
        assert any(str(v).endswith(":/models:ro") for v in service["volumes"]), name
        # A Celery backend needs Redis up before the service starts.
        if env.get("PROVENANCE_JOB_BACKEND") == "celery" or "REDIS_URL" in env:
            assert "redis" in service["depends_on"], name
            assert COMPOSE["services"]["redis"].get("healthcheck"), "redis needs a healthcheck for service_healthy"
        # The key files the settings name are secrets the service mounts.
        for key in ("CHAIN_KEY_FILE", "CHAIN_OWNER_KEY_FILE"):
            if key in env:
                secret = Path(env[key]).name
                assert env[key] == f"/run/secrets/{secret}" and secret in service["secrets"], (name, key)
                assert secret in secret_files, secret
        # Signing keys, C2PA credentials and the mark key live in the shared data volume.
        assert any(str(v).startswith("provenancedata:/data") for v in service["volumes"]), name
    assert api["environment"]["PROVENANCE_MODELS"] == worker["environment"]["PROVENANCE_MODELS"]
    assert "worker" in worker["command"]
    # Secrets come from files the repository never holds.
    gitignore = (ROOT / ".gitignore").read_text().split()
    for path in secret_files.values():
        assert Path(path).parts[-2] + "/" in gitignore, path


# --- .dockerignore, evaluated the way Docker's pattern matcher does -------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line[1:].strip() if negated else line
        rules.append((negated, _pattern_regex(pattern.strip("/"))))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether ``path`` (relative, with /) reaches the build context: the last matching rule decides,
    and a rule that matches a parent folder matches everything inside it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for negated, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            included = negated
    return included


def test_the_matcher_follows_docker_semantics() -> None:
    rules = [(False, _pattern_regex("*")), (True, _pattern_regex("src")), (False, _pattern_regex("**/*.key"))]
    assert not in_context("data/x", rules) and in_context("src/a.py", rules)
    assert not in_context("src/deep/a.key", rules) and not in_context("top.key", rules)


SENSITIVE = [
    "data/admin.key",
    "data/keys/signing-1.key",
    "data/keys/watermark.key",
    "data/c2pa/ca.key.pem",
    "data/c2pa/tsa.cert.pem",
    "data/chain/owner.key",
    "data/chain/operator.key",
    "data/provenance.db",
    "data/ipfs/blocks/ab/cd",
    "secrets/chain.key",
    ".venv/bin/python",
    "node_modules/solc/index.js",
    ".git/config",
    "bench-out/load.json",
    ".pytest_cache/v/cache/lastfailed",
    "tests/test_api.py",
    "provenance/__pycache__/cli.cpython-311.pyc",
    "provenance/keys/leftover.key",
    "provenance/stray.key",
    "provenance/chain/operator.key",
    "provenance/data/provenance.db",
    "generator/stray.pem",
    "provenance.egg-info/PKG-INFO",
]


def _ignored_entries() -> list[str]:
    """What git ignores here right now (folders collapsed): data/, .venv/, caches..."""
    out = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.rstrip("/") for line in out.splitlines() if line]


def test_dockerignore_keeps_data_keys_and_caches_out() -> None:
    rules = dockerignore_rules()
    leaked = [path for path in SENSITIVE + _ignored_entries() if in_context(path, rules)]
    assert leaked == []


def test_the_build_context_is_only_what_the_image_needs() -> None:
    rules = dockerignore_rules()
    tree = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    context = {path for path in tree if (ROOT / path).is_file() and in_context(path, rules)}
    allowed_top = {"pyproject.toml", "README.md", "package.json", "package-lock.json", "provenance", "generator"}
    assert {path.split("/")[0] for path in context} == allowed_top
    # What the wheel needs is there: migrations and contract artifacts included.
    package_data = {
        "provenance/db/migrations/env.py",
        "provenance/db/migrations/script.py.mako",
        "provenance/chain/compiled/ProvenanceRegistry.json",
        "provenance/chain/compiled/ProvenanceNFT.json",
    }
    assert package_data <= context
    assert {p for p in tree if p.startswith("provenance/db/migrations/versions/")} <= context
    # Every COPY from the context names something that gets through.
    for line in DOCKERFILE.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            for source in words[1:-1]:
                assert any(p == source or p.startswith(source.rstrip("/") + "/") for p in context), source


def _final_stage() -> str:
    return re.split(r"(?m)^FROM ", DOCKERFILE)[-1]


def test_the_image_runs_as_a_non_root_user() -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", _final_stage())
    assert users, "the final stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert re.search(rf"useradd\b.*--uid {re.escape(user)}\b", _final_stage()) or re.search(
        rf"useradd\b.*\b{re.escape(user)}\b", _final_stage()
    )


def test_the_image_pins_the_cpu_torch_the_project_pins() -> None:
    pinned = next(
        dep
        for dep in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        if dep.startswith("torch==")
    )
    version = pinned.split("==")[1]
    stage = _final_stage()
    assert re.search(rf"(?m)^ARG TORCH_VERSION={re.escape(version)}$", stage)
    assert re.search(r"(?m)^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cpu$", stage)
    assert '"torch==${TORCH_VERSION}"' in stage and "--index-url" in stage
    # torch goes in before the project, so the project's dependencies find it installed.
    assert stage.index("torch==${TORCH_VERSION}") < stage.index("provenance-*.whl")
    # anvil is on PATH for the embedded chain (find_anvil: setting, then PATH).
    assert re.search(r"(?m)^COPY --from=anvil \S+/bin/anvil /usr/local/bin/anvil$", stage)
