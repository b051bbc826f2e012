"""LoRA training that knows where it came from: the tiny pipeline trains a few steps on CPU on a registered dataset.

Real components: the dataset registered by ``DatasetService`` (files hashed, Merkle root), the LoRA signed and
registered by ``ModelRegistry``, the job on the service's local queue, the LoRA loaded by the generator.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors import safe_open
from safetensors.torch import save_file

from generator.models import ModelCatalog, ModelError
from generator.pipeline import GenerationRequest, Generator, LoraSpec
from provenance.config import Settings
from provenance.db.models import JobStatus
from provenance.lineage.datasets import DatasetChangedError, DatasetService
from provenance.lineage.training import (
    META_PREFIX,
    Lineage,
    PlainExample,
    TrainingParams,
    TrainingRequestError,
    read_lineage,
    train_lora,
)
from provenance.lineage.training_jobs import TrainingService, TrainingSpec
from provenance.runtime.services import Services
from provenance.runtime.trainings import training_service
from tests.conftest import encode, wait_for

# Tiny and quick: 64 px, three steps; a high learning rate so three steps move the weights visibly.
FAST = TrainingParams(rank=4, steps=3, lr=5e-3, resolution=64, seed=7)
CONTRACT_KEYS = {"base_model_digest", "dataset_id", "dataset_root", "params", "versions", "training_id"}


def _images(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(18)
    out = []
    for i in range(count):
        base = np.zeros((72, 80, 3), np.uint8) + np.array([i * 15 % 255, 255 - i * 13 % 255, i * 7 % 255], np.uint8)
        out.append(np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8))
    return out


def _write_dataset(folder: Path, count: int = 16) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for i, rgb in enumerate(_images(count)):
        (folder / f"img{i:02d}.png").write_bytes(encode(rgb))
        lines.append(json.dumps({"file": f"img{i:02d}.png", "caption": f"a swatch number {i}"}))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def setup(services: Services, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("training")
    datasets = DatasetService(services.sessions, services.store, services.keys, services.chain.registry)
    folder = _write_dataset(root / "data")
    unpinned = datasets.register_folder(folder, name="swatches").dataset
    pinned = datasets.register_folder(_write_dataset(root / "pinned"), name="swatches-pinned", pin=True).dataset
    return {
        "root": root,
        "folder": folder,
        "unpinned": unpinned,
        "pinned": pinned,
        "service": training_service(services),
    }


def _generate(generator: Generator, lora: Path | None) -> np.ndarray:
    loras = (LoraSpec(str(lora), 1.0),) if lora else ()
    request = GenerationRequest("a swatch number 3", seed=5, steps=2, width=64, height=64, loras=loras)
    return generator.generate(request)[0].rgb


def test_train_register_and_load(services: Services, setup: dict[str, Any]) -> None:
    service: TrainingService = setup["service"]
    out = setup["root"] / "out" / "swatch.safetensors"
    spec = TrainingSpec(setup["unpinned"].id, "tiny-random", FAST, name="swatch", data=setup["folder"], output=out)
    steps: list[tuple[int, int, float]] = []
    run = service.run(service.create(spec).id, on_step=lambda *a: steps.append(a))

    assert run.status == JobStatus.SUCCEEDED, run.error
    assert [s[:2] for s in steps] == [(1, 3), (2, 3), (3, 3)] and all(np.isfinite(s[2]) for s in steps)
    assert run.step == 3 and run.loss == pytest.approx(steps[-1][2], abs=1e-6) and run.output_path == str(out)
    # The metadata holds the contract's keys, and they name this run, dataset and base model.
    with safe_open(str(out), framework="pt") as fh:
        metadata = fh.metadata()
    assert {k.removeprefix(META_PREFIX) for k in metadata if k.startswith(META_PREFIX)} == CONTRACT_KEYS
    lineage = read_lineage(out)
    assert lineage["training_id"] == run.id and lineage["dataset_id"] == setup["unpinned"].id
    assert lineage["dataset_root"] == setup["unpinned"].root and lineage["base_model_digest"] == run.base_digest
    assert {k: lineage["params"][k] for k in ("rank", "steps", "lr", "resolution", "seed")} == {
        "rank": 4, "steps": 3, "lr": 5e-3, "resolution": 64, "seed": 7,
    }  # fmt: skip
    assert {"torch", "diffusers", "peft"} <= set(lineage["versions"]) and run.params["versions"] == lineage["versions"]
    # The loss curve is beside the weights, one row per step.
    curve = out.with_name("swatch.loss.csv").read_text().splitlines()
    assert curve[0] == "step,loss" and len(curve) == 4
    # Registered as a signed LoRA of this dataset and run (the anchorer puts it on chain).
    model = services.models.get(str(run.model_id))
    assert model.kind == "lora" and model.training_id == run.id and model.dataset_id == setup["unpinned"].id
    assert model.digest == services.models.digest_of(out)[0]
    # The generator loads it into the tiny pipeline, and it changes the picture.
    generator = Generator(ModelCatalog(services.settings.resolved_data_dir / "models"), device="cpu")
    assert not np.array_equal(_generate(generator, None), _generate(generator, out))


def test_same_seed_same_weights(setup: dict[str, Any], tmp_path: Path) -> None:
    from generator.tiny import build_tiny_pipeline

    examples = [PlainExample(rgb, f"c{i}") for i, rgb in enumerate(_images(4))]
    lineage = Lineage("00" * 32, "d", "0x" + "00" * 32, "t")
    params = TrainingParams(rank=2, steps=2, lr=1e-3, resolution=64, seed=3)
    first = train_lora(build_tiny_pipeline(), examples, params, tmp_path / "a.safetensors", lineage)
    again = train_lora(build_tiny_pipeline(), examples, params, tmp_path / "b.safetensors", lineage)
    assert first.losses == again.losses
    with safe_open(str(first.path), "pt") as a, safe_open(str(again.path), "pt") as b:
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_a_changed_dataset_is_refused_naming_the_file(setup: dict[str, Any], tmp_path: Path) -> None:
    service: TrainingService = setup["service"]
    folder = tmp_path / "copy"
    shutil.copytree(setup["folder"], folder)
    data = bytearray((folder / "img05.png").read_bytes())
    data[-20] ^= 1  # one byte inside the image data
    (folder / "img05.png").write_bytes(bytes(data))
    out = tmp_path / "never.safetensors"
    run = service.create(TrainingSpec(setup["unpinned"].id, "tiny-random", FAST, data=folder, output=out))
    with pytest.raises(DatasetChangedError, match=r"img05\.png"):
        service.run(run.id)
    failed = service.get(run.id)
    assert failed.status == JobStatus.FAILED and "img05.png" in str(failed.error)
    assert not out.exists() and not list(tmp_path.glob("never*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"params": TrainingParams(rank=0, steps=3)}, "rank must be between 1"),
        ({"params": TrainingParams(steps=0)}, "steps must be between 1"),
        ({"params": TrainingParams(lr=0)}, "lr must be above 0"),
        ({"params": TrainingParams(resolution=100)}, "resolution must be a multiple of 8"),
        ({"dataset_id": "nope"}, "Unknown dataset 'nope'"),
        ({"base_model": "no-such-model"}, "Unknown model 'no-such-model'"),
    ],
)
def test_bad_requests_are_clear_errors(
    setup: dict[str, Any], tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    service: TrainingService = setup["service"]
    values = {"dataset_id": setup["unpinned"].id, "base_model": "tiny-random", "params": FAST}
    out = tmp_path / "x.safetensors"
    with pytest.raises(TrainingRequestError, match=message):
        service.create(TrainingSpec(**{**values, **change}, data=setup["folder"], output=out))
    assert not list(tmp_path.iterdir())


def test_an_existing_output_is_never_overwritten(setup: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "taken.safetensors").write_bytes(b"mine")
    spec = TrainingSpec(
        setup["unpinned"].id, "tiny-random", FAST, data=setup["folder"], output=tmp_path / "taken.safetensors"
    )
    with pytest.raises(TrainingRequestError, match="exists already"):
        setup["service"].create(spec)
    assert (tmp_path / "taken.safetensors").read_bytes() == b"mine"


def test_cancel_between_steps_leaves_no_file(setup: dict[str, Any], tmp_path: Path) -> None:
    service: TrainingService = setup["service"]
    out = tmp_path / "cancelled.safetensors"
    run = service.create(TrainingSpec(setup["unpinned"].id, "tiny-random", FAST, data=setup["folder"], output=out))

    def cancel_after_first(step: int, _steps: int, _loss: float) -> None:
        if step == 1:
            service.cancel(run.id)

    finished = service.run(run.id, on_step=cancel_after_first)
    assert finished.status == JobStatus.CANCELLED and finished.step <= 1 and finished.model_id is None
    assert not list(tmp_path.iterdir())


def test_a_lora_for_another_architecture_is_a_clear_error(services: Services, tmp_path: Path) -> None:
    wide = tmp_path / "sd15-style.safetensors"  # an SD 1.5 layer width on the tiny UNet's layer name
    layer = "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    save_file({f"{layer}.lora.down.weight": torch.ones(4, 320), f"{layer}.lora.up.weight": torch.ones(320, 4)}, wide)
    missing = tmp_path / "sdxl-style.safetensors"  # a layer the tiny UNet does not have
    layer = "unet.down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k"
    save_file({f"{layer}.lora.down.weight": torch.ones(4, 64), f"{layer}.lora.up.weight": torch.ones(64, 4)}, missing)
    generator = Generator(ModelCatalog(services.settings.resolved_data_dir / "models"), device="cpu")
    with pytest.raises(ModelError, match=r"a LoRA for another model: its layer .* is 320 wide where this"):
        _generate(generator, wide)
    with pytest.raises(ModelError, match=r"a LoRA for another model: this StableDiffusionPipeline has no layer"):
        _generate(generator, missing)
    _generate(generator, None)  # and the pipeline is left as it was


def test_training_job_through_the_api(client: TestClient, anonymous_client: TestClient, setup: dict[str, Any]) -> None:
    body = {"dataset_id": setup["pinned"].id, "rank": 4, "steps": 2, "lr": 1e-3, "resolution": 64, "seed": 1}
    response = client.post("/v1/trainings", json=body)
    assert response.status_code == 202, response.text
    status_url = response.json()["status_url"]
    done = wait_for(lambda: (r := client.get(status_url).json())["status"] in JobStatus.FINISHED and r, timeout=180)
    assert done["status"] == "succeeded", done
    assert done["step"] == done["steps"] == 2 and done["model_id"] and done["loss"] is not None
    assert done["lora_file"].startswith("trained/") and "data" not in done["params"]
    assert client.get(f"/v1/models/{done['model_id']}").json()["training_id"] == done["training_id"]
    # A finished run cannot be cancelled; bad requests are 4xx with a JSON body; no key, no training.
    assert client.post(f"{status_url}/cancel").json()["error"] == "job_finished"
    bad = client.post("/v1/trainings", json={**body, "rank": 0})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_training_request"
    unpinned = client.post("/v1/trainings", json={**body, "dataset_id": setup["unpinned"].id})
    assert unpinned.status_code == 400 and "--data" in unpinned.json()["detail"]
    assert anonymous_client.post("/v1/trainings", json=body).status_code == 401
    assert client.get("/v1/trainings/nope").status_code == 404


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dataset", "nope", "--steps", "0"], "steps must be between 1"),
        (["--dataset", "nope", "--rank", "0", "--resolution", "100"], "rank must be between 1"),
        (["--dataset", "nope", "--steps", "2"], "Unknown dataset 'nope'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "provenance.cli",
            "train",
            "lora",
            *args,
            "--data-dir",
            str(tmp_path / "data"),
            "-o",
            str(tmp_path / "lora.safetensors"),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        timeout=180,
    )
    assert done.returncode == 2, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lora.safetensors").exists()


def test_a_training_runs_on_a_celery_worker(redis_url: str, tmp_path: Path) -> None:
    """The Celery backend: the run goes to the broker's queue and a `provenance worker` process trains it."""
    import os
    import signal

    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "PROVENANCE_DATA_DIR": str(data_dir),
        "PROVENANCE_JOB_BACKEND": "celery",
        "REDIS_URL": redis_url,
    }
    settings = Settings(data_dir=data_dir, job_backend="celery", redis_url=redis_url, anchor_poll_interval_s=0.05)
    services = Services.open(settings)
    worker = None
    try:
        datasets = DatasetService(services.sessions, services.store, services.keys, services.chain.registry)
        dataset = datasets.register_folder(_write_dataset(tmp_path / "pinned"), name="celery", pin=True).dataset
        service = training_service(services)
        run = service.submit(TrainingSpec(dataset.id, "tiny-random", TrainingParams(rank=2, steps=2, resolution=64)))
        worker = subprocess.Popen(
            [sys.executable, "-m", "provenance.cli", "worker"],
            env=env,
            stdout=(tmp_path / "worker.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        done = wait_for(lambda: (r := service.get(run.id)).status in JobStatus.FINISHED and r, timeout=240)
        assert done.status == JobStatus.SUCCEEDED, done.error
        assert done.model_id and Path(str(done.output_path)).is_file()
        assert read_lineage(Path(str(done.output_path)))["training_id"] == run.id
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        services.close()
