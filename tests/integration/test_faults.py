"""Faults are reported, not hidden: an unwritable blockstore or database and a dead chain node.

Real faults only. The tests run as root on the project's machines, where file modes do not stop
writes, so a path is made unwritable with the immutable attribute (``chattr +i``: even root cannot
write it, and writes through files already open fail too); as another user, ``chmod a-w`` does it.
The chain node is the anvil the services started, killed by its PID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from provenance.api.app import create_app
from provenance.chain.anvil import rpc_alive
from provenance.config import Settings
from provenance.db.models import JobStatus, RecordStatus
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for

ROOT = os.geteuid() == 0


@contextlib.contextmanager
def unwritable(*paths: Path, recursive: bool = False) -> Iterator[None]:
    """Make ``paths`` unwritable for this process (root included); restored on the way out."""
    targets = [p for p in paths if p.exists()]
    if ROOT:
        flags = ["-R"] if recursive else []
        subprocess.run(["chattr", *flags, "+i", *map(str, targets)], check=True)
    else:
        modes = {p: p.stat().st_mode for p in targets}
        for p in targets:
            p.chmod(modes[p] & ~0o222)
    try:
        yield
    finally:
        if ROOT:
            subprocess.run(["chattr", *flags, "-i", *map(str, targets)], check=True)
        else:
            for p, mode in modes.items():
                p.chmod(mode)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Services, TestClient]]:
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("faults"), anchor_poll_interval_s=0.05))
    services.jobs.runner.retry_delays_s = (0.5,) * 40  # about 20 s of retries, quick to notice a repair
    key = (services.settings.resolved_data_dir / "admin.key").read_text().strip()
    try:
        with TestClient(create_app(services=services), raise_server_exceptions=False) as client:
            client.headers["Authorization"] = f"Bearer {key}"
            yield services, client
    finally:
        services.close()


def certify(client: TestClient, name: str, **headers: str) -> dict:
    response = client.post("/v1/certify", files={"file": (name, encode(photo(name)))}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def registered(client: TestClient, record_id: str, timeout: float = 30.0) -> dict:
    return wait_for(
        lambda: (r := client.get(f"/v1/records/{record_id}").json())["status"] == RecordStatus.REGISTERED and r,
        timeout=timeout,
    )


def assert_503(response: object, code: str) -> dict:
    status, body = response.status_code, response.json()  # type: ignore[attr-defined]
    assert status == 503 and body["error"] == code and body["detail"], (status, body)
    return body


def pins(services: Services) -> set[str]:
    return {p.name for p in (services.settings.resolved_data_dir / "ipfs" / "pins").iterdir()}


def test_unwritable_blockstore_answers_503_storage_unavailable_and_recovers(stack: tuple[Services, TestClient]) -> None:
    services, client = stack
    record = registered(client, certify(client, "coffee.png")["record_id"])
    holder = {"record_id": record["record_id"], "to": Account.create().address}
    before_records, before_pins = services.repository.counts(), pins(services)

    with unwritable(services.settings.resolved_data_dir / "ipfs", recursive=True):
        upload = encode(photo("chelsea.png"))
        assert_503(client.post("/v1/certify", files={"file": ("chelsea.png", upload)}), "storage_unavailable")
        assert_503(client.get(f"/v1/records/{record['record_id']}/bundle"), "storage_unavailable")
        assert_503(client.post("/v1/nft/vouchers", json=holder), "storage_unavailable")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["down"] == ["ipfs"], health.json()
        assert "cannot be written" in health.json()["ipfs_state"]["error"]
        # Reading what is there still works: the gateway and the record image.
        assert client.get(f"/v1/records/{record['record_id']}/image").status_code == 200

    assert services.repository.counts() == before_records and pins(services) == before_pins, "nothing half-written"
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/certify", files={"file": ("chelsea.png", upload)}).status_code == 201
    assert client.get(f"/v1/records/{record['record_id']}/bundle").status_code == 200
    assert client.post("/v1/nft/vouchers", json=holder).status_code == 201


def test_unwritable_database_answers_503_storage_unavailable_and_recovers(
    stack: tuple[Services, TestClient],
) -> None:
    services, client = stack
    record = registered(client, certify(client, "rocket.jpg")["record_id"])  # also: the key was just used
    holder = {"record_id": record["record_id"], "to": Account.create().address}
    data_dir = services.settings.resolved_data_dir
    database = data_dir / "provenance.db"
    job = {"prompt": "a lighthouse", "steps": 2, "width": 64, "height": 64}

    # The database file, its write-ahead log and the folder (new journals). Never the -shm file:
    # SQLite maps it into memory, and a write to an immutable mapping kills the process (SIGBUS).
    with unwritable(database, Path(f"{database}-wal"), data_dir):
        upload = encode(photo("motorcycle_left.png"))
        before_pins = pins(services)
        assert_503(client.post("/v1/certify", files={"file": ("m.png", upload)}), "storage_unavailable")
        assert pins(services) == before_pins, "the image that could not be recorded was unpinned"
        assert_503(client.post("/v1/generations", json=job), "storage_unavailable")
        assert_503(client.post("/v1/nft/vouchers", json=holder), "storage_unavailable")
        health = client.get("/healthz")
        assert health.status_code == 503 and "database" in health.json()["down"], health.json()
        assert "does not take writes" in health.json()["database_state"]["error"]
        assert client.get(f"/v1/records/{record['record_id']}").status_code == 200  # reads still answer

    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/certify", files={"file": ("m.png", upload)}).status_code == 201
    assert client.post("/v1/nft/vouchers", json=holder).status_code == 201


def test_generation_job_retries_a_storage_fault_instead_of_failing(
    stack: tuple[Services, TestClient], caplog: pytest.LogCaptureFixture
) -> None:
    services, client = stack
    caplog.set_level(logging.WARNING, logger="provenance.jobs.runner")
    blockstore = services.settings.resolved_data_dir / "ipfs"
    with unwritable(blockstore, recursive=True):
        response = client.post(
            "/v1/generations", json={"prompt": "a lighthouse", "seed": 3, "steps": 2, "width": 64, "height": 64}
        )
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        # The diffusion runs; its certification then meets the read-only blockstore and waits.
        wait_for(
            lambda: any(job_id in r.getMessage() and "retrying" in r.getMessage() for r in caplog.records), timeout=180
        )
        assert client.get(f"/v1/generations/{job_id}").json()["status"] == JobStatus.RUNNING
    job = wait_for(
        lambda: (j := client.get(f"/v1/generations/{job_id}").json())["status"] in JobStatus.FINISHED and j, timeout=60
    )
    assert job["status"] == JobStatus.SUCCEEDED, job
    assert len(job["records"]) == 1 and job["error"] is None
    assert any(job_id in r.getMessage() and "worked again" in r.getMessage() for r in caplog.records)


def test_dead_chain_node_verify_says_unavailable_and_chain_writes_are_503(
    stack: tuple[Services, TestClient],
) -> None:
    services, client = stack
    body = certify(client, "astronaut.png")
    record = registered(client, body["record_id"])
    image = client.get(f"/v1/records/{record['record_id']}/image").content
    holder = {"record_id": record["record_id"], "to": Account.create().address}
    node = services.chain.node
    assert node is not None and node.process is not None and node.url is not None
    node.supervise = False  # keep it down while we look; the supervisor still reaps it
    try:
        os.kill(node.process.pid, signal.SIGKILL)
        wait_for(lambda: not rpc_alive(node.url or ""))

        result = client.post("/v1/verify", files={"file": ("a.png", image)})
        assert result.status_code == 200, result.text
        report = result.json()
        assert report["verdict"] == "unavailable" and report["record_id"] == record["record_id"], report
        assert report["checks"]["chain"]["status"] == "unavailable" and report["checks"]["chain"]["registered"] is None
        assert report["checks"]["exact"]["matched"] and report["checks"]["exact"]["signature_valid"]

        assert_503(client.post("/v1/nft/mint", json=holder), "chain_unavailable")
        assert_503(client.post("/v1/nft/vouchers", json=holder), "chain_unavailable")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json()["down"] == ["chain"]
        # Certifying does not need the chain: the record waits, pending, for the node.
        later = certify(client, "chelsea.png")
        assert later["status"] == RecordStatus.PENDING
    finally:
        node.supervise = True
    wait_for(lambda: rpc_alive(node.url or ""), timeout=30)
    registered(client, later["record_id"], timeout=90)  # the anchor worker backs off up to 30 s
    verdict = client.post("/v1/verify", files={"file": ("a.png", image)}).json()["verdict"]
    assert verdict == "authentic"
    minted = client.post("/v1/nft/mint", json=holder)
    assert minted.status_code == 201, minted.text


# The API contract around errors: 405 says what is allowed, OpenAPI says what is required.


def test_405_carries_allow_with_every_method_of_the_path(stack: tuple[Services, TestClient]) -> None:
    _, client = stack
    response = client.put("/v1/certify")
    assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "POST"
    # GET and DELETE of a job are two routes: both are named.
    job = client.patch("/v1/generations/0123")
    assert job.status_code == 405 and set(job.headers["Allow"].split(", ")) >= {"GET", "DELETE"}
    assert client.delete("/healthz").headers["Allow"].startswith("GET")


def test_openapi_declares_the_upload_required_and_the_idempotency_header(stack: tuple[Services, TestClient]) -> None:
    _, client = stack
    spec = client.get("/openapi.json").json()
    for path in ("/v1/certify", "/v1/verify"):
        ref = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
        schema = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert "file" in schema["required"], (path, schema)
        assert spec["paths"][path]["post"]["requestBody"]["required"] is True
    for path in ("/v1/certify", "/v1/generations"):
        params = {p["name"]: p for p in spec["paths"][path]["post"]["parameters"]}
        assert params["Idempotency-Key"]["in"] == "header" and not params["Idempotency-Key"].get("required")
        assert "503" in spec["paths"][path]["post"]["responses"]
    missing = client.post("/v1/certify", data={"source_type": "digitalArt"})
    assert missing.status_code == 422 and missing.json()["error"] == "validation_error"
