"""Generate and certify: the tiny local pipeline, the job API, reproduction, LoRA and schedulers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from generator.models import TINY_LABEL, ModelCatalog
from generator.pipeline import GenerationRequest, Generator, LoraSpec
from generator.tiny import build_tiny_pipeline
from provenance.config import Settings
from provenance.db.models import JobStatus
from provenance.jobs.reproduce import reproduce
from provenance.jobs.service import PromptFilter
from provenance.runtime.services import Services
from tests.conftest import wait_for

SMALL = {"steps": 3, "width": 256, "height": 256}


def make_lora(path: Path) -> Path:
    """A LoRA for the tiny UNet, built locally with peft (random, non-zero weights)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig, get_peft_model_state_dict

    pipe = build_tiny_pipeline()
    torch.manual_seed(5)
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    StableDiffusionPipeline.save_lora_weights(path, unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    return path / "pytorch_lora_weights.safetensors"


@pytest.fixture(scope="module")
def generator(tmp_path_factory: pytest.TempPathFactory) -> Generator:
    return Generator(ModelCatalog(tmp_path_factory.mktemp("models")), device="cpu")


def run_job(client: TestClient, body: dict) -> dict:
    response = client.post("/v1/generations", json=body)
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    return wait_for(
        lambda: (job := client.get(f"/v1/generations/{job_id}").json())["status"] in JobStatus.FINISHED and job,
        timeout=120,
    )


def test_tiny_pipeline_is_deterministic_and_labelled(generator: Generator) -> None:
    first = generator.generate(GenerationRequest("a lighthouse", seed=11, **SMALL))[0]
    again = generator.generate(GenerationRequest("a lighthouse", seed=11, **SMALL))[0]
    other = generator.generate(GenerationRequest("a lighthouse", seed=12, **SMALL))[0]
    assert np.array_equal(first.rgb, again.rgb) and not np.array_equal(first.rgb, other.rgb)
    assert first.rgb.shape == (256, 256, 3) and first.rgb.std() > 5
    prov = first.provenance
    assert prov["model"]["label"] == TINY_LABEL == "tiny-random (testing only)"
    assert set(prov["model"]["weights_sha256"]) == {
        "text_encoder/model.safetensors",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    }
    assert prov["pipeline_class"] == "StableDiffusionPipeline" and prov["scheduler"] == "EulerDiscreteScheduler"
    assert (prov["seed"], prov["steps"], prov["width"], prov["guidance_scale"]) == (11, 3, 256, 7.5)
    assert set(prov["versions"]) == {"provenance", "diffusers", "transformers", "torch"}


def test_prompt_privacy_records_only_the_hash(tmp_path: Path) -> None:
    private = Generator(ModelCatalog(tmp_path), device="cpu", prompt_privacy=True)
    prov = private.generate(GenerationRequest("my secret prompt", seed=1, **SMALL))[0].provenance
    assert "prompt" not in prov and "my secret prompt" not in json.dumps(prov)
    assert prov["prompt_sha256"] == hashlib.sha256(b"my secret prompt").hexdigest()


def test_schedulers_by_name_and_lora_with_weight(generator: Generator, tmp_path: Path) -> None:
    base = generator.generate(GenerationRequest("a fox", seed=3, **SMALL))[0]
    ddim = generator.generate(GenerationRequest("a fox", seed=3, scheduler="ddim", **SMALL))[0]
    assert ddim.provenance["scheduler"] == "DDIMScheduler" and not np.array_equal(base.rgb, ddim.rgb)
    lora = make_lora(tmp_path / "lora")
    full = generator.generate(GenerationRequest("a fox", seed=3, loras=(LoraSpec(str(lora), 1.0),), **SMALL))[0]
    off = generator.generate(GenerationRequest("a fox", seed=3, loras=(LoraSpec(str(lora), 0.0),), **SMALL))[0]
    assert not np.array_equal(base.rgb, full.rgb) and np.array_equal(base.rgb, off.rgb)
    assert full.provenance["loras"][0]["sha256"] == hashlib.sha256(lora.read_bytes()).hexdigest()
    after = generator.generate(GenerationRequest("a fox", seed=3, **SMALL))[0]
    assert np.array_equal(base.rgb, after.rgb), "adapters are unloaded after the request"


def test_generate_and_certify_through_the_api(client: TestClient) -> None:
    job = run_job(client, {"prompt": "a red fox in snow", "seed": 5, "num_images": 2, **SMALL})
    assert job["status"] == "succeeded", job
    assert job["progress"] == {"step": 3, "steps": 3} and len(job["records"]) == 2
    for index, item in enumerate(job["records"]):
        record = client.get(f"/v1/records/{item['record_id']}").json()
        gen = record["generation"]
        assert gen["seed"] == 5 + index and gen["index"] == index and gen["prompt"] == "a red fox in snow"
        assert (
            gen["model"]["label"] == "tiny-random (testing only)" and record["source_type"] == "trainedAlgorithmicMedia"
        )
        assert record["watermarked"] and record["job_id"] == job["job_id"]
        data = client.get(f"/v1/records/{item['record_id']}/image").content
        wait_for(lambda rid=item["record_id"]: client.get(f"/v1/records/{rid}").json()["status"] == "registered")
        result = client.post("/v1/verify", files={"file": ("g.png", data)}).json()
        assert result["verdict"] == "authentic" and result["record_id"] == item["record_id"]
        manifest = result["checks"]["c2pa"]["summary"]
        assert manifest["generation"]["model"]["weights_sha256"] == gen["model"]["weights_sha256"]
        assert manifest["actions"][0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")


@pytest.mark.parametrize(
    "body,code,fragment",
    [
        ({"prompt": "x", "width": 260, "height": 256}, "invalid_generation_request", "multiple of 8"),
        ({"prompt": "x", "width": 4096}, "invalid_generation_request", "between 64 and 2048"),
        ({"prompt": "x", "steps": 151}, "invalid_generation_request", "steps"),
        ({"prompt": "x", "scheduler": "warp-drive"}, "invalid_generation_request", "scheduler"),
        ({"prompt": "x", "num_images": 9}, "validation_error", "num_images"),
        ({"prompt": ""}, "validation_error", "prompt"),
        ({"prompt": "x", "model": "no-such-model"}, "unknown_model", "Unknown model"),
        ({"prompt": "x", "model": "someone/some-model"}, "unknown_model", "offline"),
        ({"prompt": "x", "loras": [{"path": "nope.safetensors"}]}, "unknown_model", "LoRA"),
    ],
)
def test_bad_requests_are_422_with_the_reason(client: TestClient, body: dict, code: str, fragment: str) -> None:
    response = client.post("/v1/generations", json=body)
    assert response.status_code == 422 and response.json()["error"] == code
    assert fragment in json.dumps(response.json()["detail"])


def test_prompt_blocklist(client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.jobs, "prompt_filter", PromptFilter(["forbidden thing"]))
    response = client.post("/v1/generations", json={"prompt": "a FORBIDDEN thing here", **SMALL})
    assert response.status_code == 422 and response.json()["error"] == "prompt_rejected"
    assert "forbidden thing" in response.json()["detail"]
    assert client.post("/v1/generations", json={"prompt": "a forbiddenthing", **SMALL}).status_code == 202


def test_broken_checkpoint_fails_the_job_with_a_clear_error(client: TestClient, services: Services) -> None:
    folder = services.settings.resolved_data_dir / "models" / "broken"
    build_tiny_pipeline().save_pretrained(folder)
    (folder / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not a safetensors file")
    job = run_job(client, {"prompt": "x", "model": "broken", **SMALL})
    assert job["status"] == "failed" and "Cannot load model" in job["error"] and job["records"] == []


def test_local_folder_model_and_lora_from_the_operators_folders(
    client: TestClient, services: Services, tmp_path: Path
) -> None:
    folder = services.settings.resolved_data_dir / "models" / "my-model"
    build_tiny_pipeline().save_pretrained(folder)
    lora = make_lora(tmp_path / "made")
    lora_dir = services.settings.resolved_lora_dir
    lora_dir.mkdir(parents=True, exist_ok=True)
    (lora_dir / "style.safetensors").write_bytes(lora.read_bytes())
    job = run_job(
        client, {"prompt": "x", "model": "my-model", "loras": [{"path": "style.safetensors", "weight": 0.7}], **SMALL}
    )
    assert job["status"] == "succeeded"
    gen = client.get(f"/v1/records/{job['records'][0]['record_id']}").json()["generation"]
    assert gen["model"]["kind"] == "folder" and gen["model"]["id"] == str(folder.resolve())
    assert gen["loras"][0]["file"] == "style.safetensors" and gen["loras"][0]["weight"] == 0.7


@pytest.mark.parametrize(
    "body",
    [
        {"prompt": "x", "model": "/etc"},
        {"prompt": "x", "model": "../../../tmp"},
        {"prompt": "x", "loras": [{"path": "/etc/passwd"}]},
        {"prompt": "x", "loras": [{"path": "../keys/active"}]},
    ],
)
def test_api_callers_cannot_name_server_paths(client: TestClient, body: dict) -> None:
    response = client.post("/v1/generations", json={**body, **SMALL})
    assert response.status_code == 422 and response.json()["error"] == "unknown_model"
    assert "must be a name inside" in response.json()["detail"]


def test_queue_full_is_429(client: TestClient, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.jobs.queue, "max_queued", 0)
    response = client.post("/v1/generations", json={"prompt": "x", **SMALL})
    assert response.status_code == 429 and response.json()["error"] == "queue_full"


def test_cancel_running_and_finished_jobs(client: TestClient) -> None:
    accepted = client.post("/v1/generations", json={"prompt": "slow", "steps": 150, "width": 512, "height": 512}).json()
    job_id = accepted["job_id"]
    wait_for(lambda: client.get(f"/v1/generations/{job_id}").json()["progress"]["step"] >= 1, timeout=60)
    cancelled = client.delete(f"/v1/generations/{job_id}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # the worker stops at its next step, certifies nothing, and moves on to the next job
    next_job = run_job(client, {"prompt": "next", **SMALL})
    assert next_job["status"] == "succeeded"
    final = client.get(f"/v1/generations/{job_id}").json()
    assert final["status"] == "cancelled" and final["records"] == [] and final["progress"]["step"] < 150
    again = client.delete(f"/v1/generations/{job_id}")
    assert again.status_code == 409 and again.json()["error"] == "job_finished"
    assert client.get("/v1/generations/nope").status_code == 404


def test_reproduce_matches_bit_for_bit(services: Services, client: TestClient) -> None:
    job = run_job(client, {"prompt": "a quiet harbour", "seed": 21, "num_images": 2, "scheduler": "euler_a", **SMALL})
    second = job["records"][1]["record_id"]
    report = reproduce(services.reproduction, second)
    assert report.pixels_match and report.psnr_db is None and report.weights_match and report.versions_match
    # A different seed on the record: the pixels no longer match, and the PSNR says by how much.
    record = services.repository.get(second)
    services.repository.set_status(second, record.status, generation={**record.generation, "seed": 99})
    changed = reproduce(services.reproduction, second)
    assert not changed.pixels_match and changed.psnr_db is not None and changed.psnr_db < 30


def test_worker_restart_retries_or_fails_unfinished_jobs(tmp_path: Path) -> None:
    """A process that died mid-job leaves it 'running'; the next start retries it, up to the limit."""
    settings = Settings(data_dir=tmp_path, job_max_attempts=2, anchor_poll_interval_s=0.05)
    first = Services.open(settings, start_worker=False)
    request = first.jobs.prepare({"prompt": "x", "seed": 1, **SMALL})
    retried = first.jobs.jobs.create(request, "local")
    exhausted = first.jobs.jobs.create(request, "local")
    for job_id, attempts in ((retried.id, 1), (exhausted.id, 2)):
        for _ in range(attempts):
            first.jobs.jobs.start(job_id)  # started, then the process "died"
    first.close()

    second = Services.open(settings)
    try:
        wait_for(lambda: second.jobs.get(retried.id).status in JobStatus.FINISHED, timeout=120)
        wait_for(lambda: second.jobs.get(exhausted.id).status in JobStatus.FINISHED, timeout=120)
        done, failed = second.jobs.get(retried.id), second.jobs.get(exhausted.id)
        assert done.status == "succeeded" and done.attempts == 2 and len(done.record_ids) == 1
        assert failed.status == "failed" and "gave up" not in (failed.error or "") and "giving up" in failed.error
    finally:
        second.close()


def test_single_file_checkpoint_loads_offline_with_a_config_folder(tmp_path: Path) -> None:
    """A .safetensors in the original SD 1.x layout, as model sites distribute them."""
    from tests.ldm_checkpoint import sd1_topology_pipeline, write_single_file

    pipe = sd1_topology_pipeline()
    pipe.save_pretrained(tmp_path / "diffusers")
    checkpoint = write_single_file(pipe, tmp_path / "downloads" / "my-model.safetensors")
    config_dir = tmp_path / "configs"
    pipe.save_pretrained(config_dir)
    for weights in config_dir.rglob("*.safetensors"):
        weights.unlink()  # a config folder carries no weights
    catalog = ModelCatalog(
        tmp_path / "models", aliases={"my-model": str(checkpoint)}, single_file_configs={"my-model": str(config_dir)}
    )
    generator = Generator(catalog, device="cpu")
    from_file = generator.generate(GenerationRequest("a boat", seed=4, model="my-model", **SMALL))[0]
    from_folder = generator.generate(GenerationRequest("a boat", seed=4, model=str(tmp_path / "diffusers"), **SMALL))[0]
    assert np.array_equal(from_file.rgb, from_folder.rgb), "same weights, same pixels"
    model = from_file.provenance["model"]
    assert model["kind"] == "single_file" and model["id"] == "my-model"
    assert model["weights_sha256"] == {"my-model.safetensors": hashlib.sha256(checkpoint.read_bytes()).hexdigest()}

    without_config = Generator(ModelCatalog(tmp_path / "models2"), device="cpu")
    with pytest.raises(Exception, match="config folder"):
        without_config.generate(GenerationRequest("a boat", model=str(checkpoint), **SMALL))


def test_benchmark_architectures_are_the_published_sizes() -> None:
    """bench-gen's sd15 / sdxl pipelines have exactly the published parameter counts (built on 'meta')."""
    from generator.architectures import build

    sizes = {}
    for arch in ("sd15", "sdxl"):
        pipe = build(arch, "meta", torch.float16)
        names = ["unet", "vae", "text_encoder"] + (["text_encoder_2"] if arch == "sdxl" else [])
        sizes[arch] = {n: sum(p.numel() for p in getattr(pipe, n).parameters()) for n in names}
    assert sizes["sd15"] == {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}
    assert sizes["sdxl"]["unet"] == 2_567_463_684 and sizes["sdxl"]["text_encoder_2"] == 694_659_840
