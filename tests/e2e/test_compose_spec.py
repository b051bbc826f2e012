"""Every compose file of the repository against the Compose Specification, with and without its variables set.

Compose interpolates first, then validates. ``interpolate`` below follows the specification's interpolation
rules (compose-spec ``interpolation.md``, as compose-go implements them): ``$VAR`` and ``${VAR}``,
``${VAR:-default}`` (unset or empty), ``${VAR-default}`` (unset), ``${VAR:?error}`` / ``${VAR?error}``,
``${VAR:+replacement}`` / ``${VAR+replacement}``, nested ``${...}`` inside a default, and ``$$`` for a literal
``$``. A braced expression ends at the first ``}`` that closes no nested ``${``: a bare ``{`` opens nothing, which
is why ``${PROVENANCE_MODELS:-{}}`` left a stray ``}`` as soon as the variable was set.

The schema is the Compose Specification's ``compose-spec.json`` as ``check-jsonschema`` ships it (its vendored
copy of the compose-spec repository's schema), so nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from provenance.config import Settings
from provenance_bot.settings import BotSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = sorted(
    {
        path
        for pattern in ("*compose*.y*ml", "deploy/**/*compose*.y*ml")
        for path in ROOT.glob(pattern)
        if path.is_file()
    }
)
SCHEMA = json.loads(
    resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
)
# A value for every variable a compose file reads; an operator's typical setting (not the default).
SAMPLES = {
    "RPC_URL": "https://rpc.example.org",
    "REGISTRY_ADDRESS": "0x" + "11" * 20,
    "NFT_ADDRESS": "0x" + "22" * 20,
    "PROVENANCE_CONFIRMATIONS": "5",
    "PROVENANCE_ANCHOR_MODE": "single",
    "PROVENANCE_MODELS": '{"sdxl": "/models/sdxl-base", "sd15": "/models/sd15"}',
    "PROVENANCE_PUBLIC_URL": "https://provenance.example.org",
    "PROVENANCE_TELEGRAM_WEBHOOK_URL": "https://provenance.example.org/telegram/webhook",
}
REQUIRED = {"RPC_URL", "REGISTRY_ADDRESS", "NFT_ADDRESS"}


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is missing, or a malformed expression."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _braced(text: str, start: int, env: dict[str, str]) -> tuple[str, int]:
    """Evaluate the expression after ``${`` at ``start``; returns (value, index after its closing ``}``)."""
    name_match = _NAME.match(text, start)
    if name_match is None:
        raise InterpolationError(f"invalid interpolation format: {text[start - 2 : start + 20]!r}")
    name, i = name_match.group(), name_match.end()
    operator = ""
    for candidate in (":-", ":?", ":+", "-", "?", "+"):
        if text.startswith(candidate, i):
            operator, i = candidate, i + len(candidate)
            break
    argument, i = _until_close(text, i, env, lazy=operator == "")
    value = env.get(name)
    present = value is not None
    filled = bool(value)
    if operator == "":
        return value or "", i
    if operator in (":-", "-"):
        return (value if (filled if operator == ":-" else present) else argument) or "", i
    if operator in (":?", "?"):
        if not (filled if operator == ":?" else present):
            raise InterpolationError(f"required variable {name} is missing a value: {argument}")
        return value or "", i
    return (argument if (filled if operator == ":+" else present) else ""), i


def _until_close(text: str, i: int, env: dict[str, str], *, lazy: bool) -> tuple[str, int]:
    """The (interpolated) argument of an operator up to the ``}`` that closes the expression."""
    out: list[str] = []
    while i < len(text):
        char = text[i]
        if char == "}":
            if lazy and out:
                raise InterpolationError(f"invalid interpolation format near {text[max(0, i - 20) : i + 1]!r}")
            return "".join(out), i + 1
        if lazy:
            raise InterpolationError(f"invalid interpolation format near {text[max(0, i - 20) : i + 1]!r}")
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            value, i = _braced(text, i + 2, env)
            out.append(value)
        elif char == "$" and _NAME.match(text, i + 1):
            match = _NAME.match(text, i + 1)
            assert match is not None
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append(char)
            i += 1
    raise InterpolationError(f"unterminated ${{ in {text!r}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """A string as Compose reads it, with ``env`` the environment (and ``.env``) it sees."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            value, i = _braced(text, i + 2, env)
            out.append(value)
        elif text[i] == "$" and _NAME.match(text, i + 1):
            match = _NAME.match(text, i + 1)
            assert match is not None
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    """Every string value of a loaded compose document interpolated (keys are not, as in Compose)."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def variables(text: str) -> set[str]:
    """The variable names a compose file reads (``$$`` escapes excluded)."""
    unescaped = text.replace("$$", "")
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", unescaped)) | set(
        re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", unescaped)
    )


# --- the interpolation rules themselves, on the specification's examples --------------------------------------


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("$A/b", {"A": "x"}, "x/b"),
        ("${A}", {}, ""),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:-d}", {"A": "x"}, "x"),
        ("${A:+r}", {"A": "x"}, "r"),
        ("${A:+r}", {"A": ""}, ""),
        ("${A+r}", {"A": ""}, "r"),
        ("${A:-${B:-z}}", {}, "z"),
        ("${A:-${B}}", {"B": "y"}, "y"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("cost: $$5", {}, "cost: $5"),
        # The old compose line: right when unset, a stray brace once set.
        ("${M:-{}}", {}, "{}"),
        ("${M:-{}}", {"M": '{"a": "b"}'}, '{"a": "b"}}'),
        ("${M:-}", {"M": '{"a": "b"}'}, '{"a": "b"}'),
        ("${M:-}", {}, ""),
    ],
)
def test_interpolation_follows_the_specification(text: str, env: dict[str, str], expected: str) -> None:
    assert interpolate(text, env) == expected


@pytest.mark.parametrize(("text", "env"), [("${A:?set A}", {}), ("${A:?set A}", {"A": ""}), ("${A?set A}", {})])
def test_required_variables_stop_compose(text: str, env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match="set A"):
        interpolate(text, env)
    assert interpolate("${A?set A}", {"A": ""}) == ""


@pytest.mark.parametrize("text", ["${}", "${A", "${A B}", "${1A}"])
def test_malformed_expressions_are_refused(text: str) -> None:
    with pytest.raises(InterpolationError):
        interpolate(text, {"A": "x"})


# --- the repository's compose files ---------------------------------------------------------------------------


def test_the_compose_files_are_found() -> None:
    assert ROOT / "docker-compose.yml" in COMPOSE_FILES


def _setting_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith(("PROVENANCE_", "CHAIN_")) or key in ("DATABASE_URL", "RPC_URL", "REDIS_URL"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("set_all", [False, True], ids=["required-only", "every-variable-set"])
def test_the_compose_file_is_valid_compose(path: Path, set_all: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    text = path.read_text()
    names = variables(text)
    env = (
        {name: SAMPLES.get(name, "sample") for name in names}
        if set_all
        else {name: SAMPLES[name] for name in names & REQUIRED}
    )
    document = interpolate_tree(yaml.safe_load(text), env)
    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(document), key=lambda e: list(e.absolute_path))
    assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == []
    # What the service images would read: every setting validates, and the models are what was set.
    for name, service in document.get("services", {}).items():
        if name == "bot":  # the Telegram bot reads its own settings
            _settings_from(_setting_env(service), monkeypatch)  # clears the environment, then sets the bot's
            bot = BotSettings()
            webhook = SAMPLES["PROVENANCE_TELEGRAM_WEBHOOK_URL"] if set_all else None
            assert (bot.telegram_webhook_url or None) == webhook
            continue
        if "build" not in service or name not in ("api", "worker"):
            continue
        settings = _settings_from(_setting_env(service), monkeypatch)
        expected_models = json.loads(SAMPLES["PROVENANCE_MODELS"]) if set_all else {}
        assert settings.models == expected_models, name
        assert settings.rpc_url == SAMPLES["RPC_URL"]
        if set_all:
            assert settings.confirmations == 5 and settings.anchor_mode == "single", name


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_variable_has_a_sample_and_required_ones_stop_compose(path: Path) -> None:
    text = path.read_text()
    names = variables(text)
    assert names - SAMPLES.keys() <= {n for n in names if not n.startswith(("PROVENANCE_", "RPC_", "CHAIN_"))}
    for name in names & REQUIRED:
        env = {other: SAMPLES[other] for other in names & REQUIRED if other != name}
        with pytest.raises(InterpolationError, match=name):
            interpolate_tree(yaml.safe_load(text), env)
