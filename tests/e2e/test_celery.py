"""Celery GPU workers over a real Redis: the same job code, and no job lost when a worker dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from provenance.api.app import create_app
from provenance.config import Settings
from provenance.runtime.services import Services
from tests.conftest import _free_port, wait_for

SMALL = {"steps": 3, "width": 256, "height": 256}


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[tuple[Services, TestClient, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("celery-data")
    env = {
        **os.environ,
        "PROVENANCE_DATA_DIR": str(data_dir),
        "PROVENANCE_JOB_BACKEND": "celery",
        "REDIS_URL": redis_url,
        "PROVENANCE_CELERY_VISIBILITY_TIMEOUT_S": "4",
    }
    settings = Settings(data_dir=data_dir, job_backend="celery", redis_url=redis_url, anchor_poll_interval_s=0.05)
    services = Services.open(settings)
    with TestClient(create_app(services=services)) as client:
        client.headers["Authorization"] = "Bearer " + (data_dir / "admin.key").read_text().strip()
        yield services, client, env
    services.close()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "provenance.cli", "worker"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(worker: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if worker.poll() is None:
        os.killpg(worker.pid, sig)
        worker.wait(timeout=60)


def test_job_runs_on_a_celery_worker(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _services, client, env = stack
    metrics_port = _free_port()
    worker = start_worker({**env, "PROVENANCE_WORKER_METRICS_PORT": str(metrics_port)}, tmp_path / "worker.log")
    try:
        job_id = client.post("/v1/generations", json={"prompt": "a kite", "seed": 2, "num_images": 2, **SMALL}).json()[
            "job_id"
        ]
        job = wait_for(
            lambda: (j := client.get(f"/v1/generations/{job_id}").json())["status"] == "succeeded" and j, timeout=180
        )
        assert len(job["records"]) == 2 and job["attempts"] == 1
        record_id = job["records"][0]["record_id"]
        wait_for(lambda: client.get(f"/v1/records/{record_id}").json()["status"] == "registered")
        data = client.get(f"/v1/records/{record_id}/image").content
        assert client.post("/v1/verify", files={"file": ("x.png", data)}).json()["verdict"] == "authentic"
        # The worker serves its own metrics (PROVENANCE_WORKER_METRICS_PORT): the job it ran is counted there.
        families = {
            f.name: f
            for f in text_string_to_metric_families(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
        }
        [succeeded] = [
            s
            for s in families["provenance_job_duration_seconds"].samples
            if s.name.endswith("_count") and s.labels.get("outcome") == "succeeded"
        ]
        assert succeeded.value == 1
    finally:
        stop(worker)


def test_a_worker_killed_mid_job_leaves_it_retried(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _services, client, env = stack
    log = tmp_path / "worker.log"
    first = start_worker(env, log)
    # Long enough to be killed mid-way (after step 2 of 12), short enough that the retry takes seconds: the
    # time goes into diffusion steps, not waiting (Redis hands the unacked task to the next worker at its start,
    # once the 4 s visibility timeout has passed).
    job_id = client.post(
        "/v1/generations", json={"prompt": "slow", "seed": 4, "steps": 12, "width": 256, "height": 256}
    ).json()["job_id"]
    try:
        wait_for(lambda: client.get(f"/v1/generations/{job_id}").json()["progress"]["step"] >= 2, timeout=180)
    finally:
        stop(first, signal.SIGKILL)  # the machine died: no goodbye, no ack
    assert client.get(f"/v1/generations/{job_id}").json()["status"] == "running"
    second = start_worker(env, log)
    try:
        job = wait_for(
            lambda: (j := client.get(f"/v1/generations/{job_id}").json())["status"] in ("succeeded", "failed") and j,
            timeout=240,
            interval=0.5,
        )
        assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
        assert job["attempts"] == 2 and len(job["records"]) == 1
        assert job["progress"]["step"] == job["progress"]["steps"] == 12  # the retry ran the whole job again
    finally:
        stop(second)


def test_queue_bound_uses_the_broker_queue(stack, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    services, client, _ = stack
    queue = services.jobs.queue  # the Celery queue holds its bound (built from the settings' job_queue_size)
    monkeypatch.setattr(queue, "config", dataclasses.replace(queue.config, queue_size=0))  # type: ignore[attr-defined]
    response = client.post("/v1/generations", json={"prompt": "x", **SMALL})
    assert response.status_code == 429 and response.json()["error"] == "queue_full"
