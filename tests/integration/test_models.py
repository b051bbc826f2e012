"""Signed, registered models: register a diffusers folder and a LoRA, verify them (model-signing's own
verifier, the chain, the files), and generation that refuses unregistered ones (REQUIRE_REGISTERED_MODELS)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from model_signing import verifying
from safetensors.torch import save_file

from generator.models import ModelCatalog, ModelError
from generator.pipeline import GenerationRequest, Generator, LoraSpec
from generator.tiny import ensure_tiny_model
from provenance.api.app import create_app
from provenance.config import Settings
from provenance.db.models import JobStatus, RecordStatus
from provenance.errors import InputError, NotFoundError
from provenance.lineage.common import Creator, model_key
from provenance.lineage.model_files import NotAModelError, digest_lines
from provenance.runtime.models import model_gates
from provenance.runtime.services import Services
from tests.conftest import wait_for
from tests.integration.test_generation import make_lora

SMALL = {"steps": 2, "width": 64, "height": 64}
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The embedded stack with PROVENANCE_REQUIRE_REGISTERED_MODELS on."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("strict"), anchor_poll_interval_s=0.05, require_registered_models=True
    )
    opened = Services.open(settings)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def api(strict: Services) -> Iterator[TestClient]:
    """The API as the operator of the strict stack."""
    admin_key = (strict.settings.resolved_data_dir / "admin.key").read_text().strip()
    with TestClient(create_app(services=strict)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client


@pytest.fixture(scope="module")
def lora(strict: Services, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA for the tiny UNet, in the operator's LoRA folder (where API callers may name it)."""
    made = make_lora(tmp_path_factory.mktemp("made"))
    target = strict.settings.resolved_lora_dir / "style.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(made, target)
    return target


def registered(strict: Services, model_id: str) -> str:
    """Wait until the lineage anchorer registered the model on chain; its status."""
    return wait_for(lambda: (s := strict.models.get(model_id).status) in (RecordStatus.REGISTERED, "failed") and s, 60)


def run_job(client: TestClient, body: dict) -> dict:
    response = client.post("/v1/generations", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    return wait_for(
        lambda: (job := client.get(f"/v1/generations/{job_id}").json())["status"] in JobStatus.FINISHED and job, 120
    )


def test_register_a_folder_and_a_lora_then_verify(strict: Services, lora: Path, tmp_path: Path) -> None:
    models = strict.models
    folder = ensure_tiny_model(tmp_path / "tiny")
    (folder / "NOTES.md").write_text("a folder model: every file counts, not only the weights\n")
    creator = Creator(address="0x" + "11" * 20, bps=2500, name="Ada")
    base = models.register(folder, name="tiny", kind="base", creators=[creator])
    adapter = models.register(lora, name="style", kind="lora", base_model_id=base.id)
    assert base.status == adapter.status == RecordStatus.PENDING
    assert base.registry_key == model_key(base.digest) and base.signature_cid
    assert {f["path"] for f in base.files} >= {"model_index.json", "unet/diffusion_pytorch_model.safetensors"}
    assert [f["path"] for f in adapter.files] == ["style.safetensors"] and adapter.base_model_id == base.id
    # The digest is defined over the sorted (relative path, sha256) list; a single file's path is empty.
    assert base.digest == digest_lines(base.files, single=False)
    assert strict.store.cat(adapter.signature_cid).decode() == adapter.signature
    assert models.register(lora, name="again", kind="lora").id == adapter.id  # same files: the same row

    assert registered(strict, base.id) == registered(strict, adapter.id) == RecordStatus.REGISTERED
    for path, row in ((folder, base), (lora, adapter)):
        result = models.verify(path)
        assert result.ok, result.to_dict()
        assert (result.model_id, result.signature_valid, result.registered, result.changed) == (row.id, True, True, [])
        assert models.match(path) is not None and models.match(path).id == row.id  # type: ignore[union-attr]
    entry = strict.chain.registry.lookup(adapter.registry_key or "")
    assert entry.registered and entry.cid == adapter.signature_cid
    assert {m.id for m in models.list()} >= {base.id, adapter.id}
    assert [m.id for m in models.list(kind="lora")] == [adapter.id]
    assert models.get(base.id).creators == [creator.model_dump()]


def test_model_signings_own_verifier_accepts_with_the_published_key(
    strict: Services, api: TestClient, lora: Path, tmp_path: Path
) -> None:
    row = strict.models.match(lora) or strict.models.register(lora, name="style", kind="lora")
    keys = api.get("/v1/keys").json()["signing_keys"]
    public_pem = next(k["public_key_pem"] for k in keys if k["active"])
    (tmp_path / "key.pub").write_text(public_pem)
    bundle = api.get(f"/ipfs/{row.signature_cid}")
    assert bundle.status_code == 200
    (tmp_path / "model.sig").write_bytes(bundle.content)
    verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "key.pub").verify(lora, tmp_path / "model.sig")
    # Another key does not verify it.
    from cryptography.hazmat.primitives.asymmetric import ec

    from provenance.signing import public_pem as pem_of

    (tmp_path / "other.pub").write_text(pem_of(ec.generate_private_key(ec.SECP256R1()).public_key()))
    with pytest.raises(ValueError, match="Key mismatch"):
        verifying.Config().use_elliptic_key_verifier(public_key=tmp_path / "other.pub").verify(
            lora, tmp_path / "model.sig"
        )


def test_models_api_lists_and_reads(strict: Services, api: TestClient, lora: Path) -> None:
    row = strict.models.match(lora) or strict.models.register(lora, name="style", kind="lora")
    listed = api.get("/v1/models").json()["models"]
    assert row.id in {m["model_id"] for m in listed}
    one = api.get(f"/v1/models/{row.id}").json()
    assert (one["digest"], one["kind"], one["signature_cid"]) == (row.digest, "lora", row.signature_cid)
    assert api.get("/v1/models", params={"kind": "lora"}).status_code == 200
    missing = api.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    assert api.get("/v1/models", params={"kind": "other"}).status_code == 422


def test_generation_refuses_unregistered_models_and_a_changed_lora(
    strict: Services, api: TestClient, lora: Path
) -> None:
    tiny_dir = strict.settings.resolved_data_dir / "models" / "tiny-random"
    refused = api.post("/v1/generations", json={"prompt": "x", **SMALL})
    # The built-in tiny model (made at first use) is refused until it is registered.
    assert refused.status_code == 422 and refused.json()["error"] == "unregistered_model"
    assert "tiny-random" in refused.json()["detail"]
    strict.models.register(tiny_dir, name="tiny-random", kind="base")
    if strict.models.match(lora) is None:
        strict.models.register(lora, name="style", kind="lora")
    body = {"prompt": "a fox", "seed": 3, "loras": [{"path": "style.safetensors", "weight": 0.8}], **SMALL}
    job = run_job(api, body)
    assert job["status"] == JobStatus.SUCCEEDED, job

    data = bytearray(lora.read_bytes())
    data[-1] ^= 0x01  # one byte of the LoRA's last tensor
    lora.write_bytes(bytes(data))
    result = strict.models.verify(lora)
    assert not result.ok and result.changed == ["style.safetensors"] and not result.signature_valid
    assert result.model_id is not None  # the registered LoRA it was, found by its file name

    response = api.post("/v1/generations", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "unregistered_model" and "style.safetensors" in response.json()["detail"]

    # The same check where the generator loads (a GPU worker process): the job would fail with it.
    _, generator_gate = model_gates(strict.settings, strict.sessions)
    generator = Generator(ModelCatalog(tiny_dir.parent), device="cpu", model_gate=generator_gate)
    request = GenerationRequest("a fox", seed=3, loras=(LoraSpec(str(lora), 0.8),), **SMALL)
    with pytest.raises(ModelError, match=r"style\.safetensors"):
        generator.generate(request)


def test_bad_input_is_a_clear_error(strict: Services, tmp_path: Path) -> None:
    models = strict.models
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 32)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no weights here")
    save_file({"w": torch.zeros(2, 2)}, str(tmp_path / "tiny.safetensors"))
    for path, fragment in (
        (tmp_path / "missing", "no such file"),
        (tmp_path / "notes.txt", "not a model file"),
        (tmp_path / "broken.safetensors", "not a readable .safetensors"),
        (tmp_path / "empty", "without weight files"),
    ):
        with pytest.raises(NotAModelError, match=fragment):
            models.register(path, name="x", kind="lora")
        with pytest.raises(NotAModelError):
            models.verify(path)
    with pytest.raises(InputError, match="kind"):
        models.register(tmp_path / "tiny.safetensors", name="x", kind="checkpoint")
    with pytest.raises(InputError, match="10000"):
        models.register(
            tmp_path / "tiny.safetensors",
            name="x",
            kind="lora",
            creators=[Creator(address="0x" + "22" * 20, bps=9000), Creator(address="0x" + "33" * 20, bps=2000)],
        )
    with pytest.raises(NotFoundError):
        models.get("nope")
    unknown = models.verify(tmp_path / "tiny.safetensors")  # a model nobody registered
    assert not unknown.ok and unknown.model_id is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["verify", "/nonexistent/model.safetensors"], "no such file"),
        (["register", "pyproject.toml"], "not a model"),
        (["register", "pyproject.toml", "--kind", "checkpoint"], "--kind"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "provenance.cli", "models", *args, "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
