"""``deploy/kubernetes/``: every object validates against the Kubernetes schemas, and the wiring matches the code.

The schemas are the ones the ``kubernetes-validate`` package ships (the Kubernetes OpenAPI documents as JSON
schemas, one set per release), so validation needs no network and no cluster. Strict mode refuses unknown
fields, so a misspelt key fails here instead of being dropped by the API server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate.utils as kv
import pytest
import yaml

from provenance.cli.app import app as cli_app
from provenance.config import Settings
from provenance_bot.settings import BotSettings
from tests.e2e.test_deploy_files import setting_env_names

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.33.0"  # a release the clusters in use run; the schemas ship with kubernetes-validate


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


DOCS = _documents()
OBJECTS = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in DOCS}


def obj(kind: str, name: str) -> dict[str, Any]:
    assert (kind, name) in OBJECTS, f"no {kind} {name} in deploy/kubernetes/"
    return OBJECTS[(kind, name)]


def containers(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


@pytest.mark.parametrize(("file", "doc"), DOCS, ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in DOCS])
def test_every_object_validates_against_the_kubernetes_schema(file: str, doc: dict[str, Any]) -> None:
    kv.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_misspelt_field() -> None:
    broken = yaml.safe_load(yaml.safe_dump(obj("Deployment", "provenance-api")))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {"httpGet": {"path": "/healthz"}}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, KUBERNETES_VERSION, strict=True)
    wrong_type = yaml.safe_load(yaml.safe_dump(obj("Deployment", "provenance-api")))
    wrong_type["spec"]["replicas"] = "three"
    with pytest.raises(kv.ValidationError):
        kv.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_the_api_runs_several_replicas_behind_a_service_with_healthz_probes() -> None:
    api = obj("Deployment", "provenance-api")
    assert api["spec"]["replicas"] >= 2
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert api["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = containers(api)
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": 8000}  # PROVENANCE_PORT's default, the image's EXPOSE
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    service = obj("Service", "provenance-api")
    assert service["spec"]["selector"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_the_worker_requests_a_gpu_and_runs_celery() -> None:
    worker = obj("Deployment", "provenance-worker")
    (container,) = containers(worker)
    assert container["command"] == ["provenance", "worker"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_bot_runs_the_bot_command_once() -> None:
    bot = obj("Deployment", "provenance-bot")
    (container,) = containers(bot)
    assert container["command"] == ["provenance", "bot"]
    assert "bot" in {command.name for command in cli_app.registered_commands}
    assert bot["spec"]["replicas"] == 1 and bot["spec"]["strategy"]["type"] == "Recreate"


def _references(deployment: dict[str, Any]) -> Iterator[tuple[str, str]]:
    spec = deployment["spec"]["template"]["spec"]
    for container in spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield "Secret", ref["name"]
        mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
        assert mounted <= {volume["name"] for volume in spec.get("volumes", [])}
    for volume in spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]


@pytest.mark.parametrize("name", ["provenance-api", "provenance-worker", "provenance-bot"])
def test_every_reference_names_an_object_of_the_manifests(name: str) -> None:
    deployment = obj("Deployment", name)
    for kind, ref in _references(deployment):
        assert (kind, ref) in OBJECTS, (name, kind, ref)
    # Secret keys a pod reads exist in the Secret.
    secret = obj("Secret", "provenance-secrets")["stringData"]
    spec = deployment["spec"]["template"]["spec"]
    for container in spec["containers"]:
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secret, (name, ref)
    for volume in spec.get("volumes", []):
        for item in volume.get("secret", {}).get("items", []):
            assert item["key"] in secret, (name, item)


def _pod_env(name: str) -> dict[str, str]:
    """What a container of the Deployment sees: the ConfigMap, then its own env (Secret values included)."""
    (container,) = containers(obj("Deployment", name))
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(obj("ConfigMap", source["configMapRef"]["name"])["data"])
    secret = obj("Secret", "provenance-secrets")["stringData"]
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = secret[ref["key"]] if ref else item["value"]
    return env


def _bot_env_names() -> set[str]:
    prefix = BotSettings.model_config.get("env_prefix", "")
    return {f"{prefix}{name}".upper() for name in BotSettings.model_fields}


def test_every_setting_is_a_setting_of_the_service_or_the_bot() -> None:
    known = setting_env_names() | _bot_env_names()
    data = obj("ConfigMap", "provenance-settings")["data"]
    assert sorted(key for key in data if key not in known) == []
    for name in ("provenance-api", "provenance-worker", "provenance-bot"):
        assert sorted(key for key in _pod_env(name) if key not in known) == [], name


@pytest.mark.parametrize("name", ["provenance-api", "provenance-worker"])
def test_the_pod_environment_validates_as_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper() in setting_env_names():
            monkeypatch.delenv(key)
    env = _pod_env(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.data_dir == Path("/data")
    assert settings.database_url is not None and settings.database_url.startswith("postgresql+psycopg://")
    assert settings.job_backend == "celery" and settings.redis_url
    assert settings.models == {"sdxl": "/models/sdxl-base"}
    # The chain key file is the Secret's item, mounted where CHAIN_KEY_FILE says.
    (container,) = containers(obj("Deployment", name))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    keys = next(v for v in obj("Deployment", name)["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
    paths = {Path(mounts["keys"]) / item["path"] for item in keys["secret"]["items"]}
    assert settings.chain_key_file in paths
    # Shared state on the shared volume; models read-only.
    assert mounts["data"] == "/data" and mounts["models"] == "/models"
    assert all(m.get("readOnly") for m in container["volumeMounts"] if m["name"] in ("models", "keys"))


def test_the_bot_environment_validates_as_bot_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("PROVENANCE_"):
            monkeypatch.delenv(key)
    for key, value in _pod_env("provenance-bot").items():
        monkeypatch.setenv(key, value)
    settings = BotSettings()
    assert settings.service_url == "http://provenance-api:8000"
    assert settings.bot_data_dir == Path("/bot-data")
    (container,) = containers(obj("Deployment", "provenance-bot"))
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/bot-data"}
    assert settings.telegram_token is not None  # from the Secret


def test_pods_run_as_the_image_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--uid 10001" in dockerfile
    for name in ("provenance-api", "provenance-worker", "provenance-bot"):
        context = obj("Deployment", name)["spec"]["template"]["spec"]["securityContext"]
        assert context["runAsUser"] == 10001 and context["runAsNonRoot"] is True, name
