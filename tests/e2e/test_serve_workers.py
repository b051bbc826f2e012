"""``provenance serve --workers 2`` on the embedded stack: two processes behind one port, one chain writer.

One real server (its anvil, SQLite, blockstore, all on 127.0.0.1, started here and stopped by pid). Which
worker answered a request is read from the JSON log: every line carries the request id (sent by the
test as ``X-Request-Id``) and the pid of the process that wrote it.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import create_engine, text

from provenance.chain.registry import connect, load_account
from tests.conftest import _free_port, decode, encode, photo, wait_for
from tests.e2e.test_scaleout import assert_clean_logs, operator_transactions, small_png, start, stop, wait_serving

PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png"]


class Server:
    """A running ``serve --workers 2`` and what the test reads of it."""

    def __init__(self, url: str, data_dir: Path, log: Path, process: subprocess.Popen[bytes]) -> None:
        self.url, self.data_dir, self.log, self.process = url, data_dir, log, process
        key = (data_dir / "admin.key").read_text().strip()
        self.headers = {"Authorization": f"Bearer {key}"}

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines so far (the first line, the banner, is text)."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                found.append(json.loads(line))
        return found

    def served_by(self, request_id: str) -> int:
        """The pid of the worker whose access line carries ``request_id``."""

        def pid() -> int | None:
            for line in self.lines():
                if line.get("request_id") == request_id and line["logger"] == "uvicorn.access":
                    return int(line["pid"])
            return None

        return int(wait_for(pid, timeout=10))

    def send(self, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, int]:
        """One request on a connection of its own (so either worker may take it); the answer and who served it."""
        request_id = uuid.uuid4().hex
        headers = {**kwargs.pop("headers", {}), "X-Request-Id": request_id}
        with httpx.Client(base_url=self.url, timeout=120) as client:
            response = client.request(method, path, headers=headers, **kwargs)
        return response, self.served_by(request_id)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("workers")
    data_dir = workdir / "data"
    env = {
        **os.environ,
        "PROVENANCE_DATA_DIR": str(data_dir),
        "PROVENANCE_LOG_FORMAT": "json",
        "PROVENANCE_ANCHOR_MODE": "single",  # one transaction per record: the count below is exact
        "PROVENANCE_ANCHOR_POLL_INTERVAL_S": "0.1",
        "PROVENANCE_WRITER_RETRY_S": "0.3",
        "PROVENANCE_RATE_LIMIT_PUBLIC_PER_MIN": "100000",
        "PROVENANCE_PIXEL_BUDGET": "60000000",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("PROVENANCE_WORKERS", None)
    port = _free_port()
    log = workdir / "server.log"
    process = start(["serve", "--port", str(port), "--workers", "2"], env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_serving(url, process, log, timeout=180)
        served = Server(url, data_dir, log, process)
        # The port answers once one worker is up; the other may still be loading (a loaded machine): wait for both.
        wait_for(lambda: len(worker_pids(served)) == 2, timeout=120, interval=0.2)
        yield served
    finally:
        stop(process)  # its own session: the parent and its two workers; the parent stops the anvil it started
    assert not (data_dir / "chain" / "anvil.json").exists(), "the parent left the embedded anvil running"
    assert_clean_logs([log])


def worker_pids(server: Server) -> set[int]:
    return {int(line["pid"]) for line in server.lines() if line["message"] == "Application startup complete."}


def test_two_workers_share_one_port_one_chain_writer_and_the_records(server: Server) -> None:
    assert len(worker_pids(server)) == 2

    # Photos and small images, certified 6 at a time, each request on a connection of its own.
    uploads = [(name, encode(photo(name))) for name in PHOTOS] + [(f"s{i}.png", small_png(900 + i)) for i in range(8)]

    def certify(upload: tuple[str, bytes]) -> tuple[dict[str, Any], int]:
        response, pid = server.send("POST", "/v1/certify", files={"file": upload}, headers=server.headers)
        assert response.status_code == 201, response.text
        return response.json(), pid

    with ThreadPoolExecutor(6) as pool:
        certified = list(pool.map(certify, uploads))
    record_ids = [body["record_id"] for body, _ in certified]
    assert len(set(record_ids)) == len(uploads)
    certifiers = {pid for _, pid in certified}
    while len(certifiers) < 2:  # the kernel hands each connection to either worker; go on until both took one
        body, pid = certify((f"more{len(record_ids)}.png", small_png(1000 + len(record_ids))))
        record_ids.append(body["record_id"])
        certifiers.add(pid)
        assert len(record_ids) < 60, "one worker took every connection"
    assert certifiers == worker_pids(server)

    # Exactly one process is the chain writer; the other only certifies and leaves registration to it.
    writers = {int(line["pid"]) for line in server.lines() if "is the chain writer now" in line["message"]}
    assert len(writers) == 1, writers
    (writer,) = writers
    others = worker_pids(server) - writers
    leaving = {int(line["pid"]) for line in server.lines() if "another process is the chain writer" in line["message"]}
    assert others and others <= leaving
    holder = (server.data_dir / "provenance.db.writer.lock").read_text()
    assert f"pid {writer}" in holder

    engine = create_engine(f"sqlite:///{server.data_dir / 'provenance.db'}")

    def statuses() -> dict[str, int]:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT status, count(*) FROM records GROUP BY status")).all()
        return {str(status): int(n) for status, n in rows}

    wait_for(lambda: statuses() == {"registered": len(record_ids)}, timeout=120, interval=0.2)
    with engine.connect() as connection:
        hashes = {str(h) for (h,) in connection.execute(text("SELECT tx_hash FROM records")).all()}
    engine.dispose()
    rpc = json.loads((server.data_dir / "chain" / "anvil.json").read_text())["url"]
    operator = load_account((server.data_dir / "chain" / "operator.key").read_text())
    assert operator is not None
    sent = [tx for tx in operator_transactions(connect(rpc), operator.address, 0) if tx["hash"] in hashes]
    # One registration each, none reverted (no process registered a record twice), nonces in one sequence.
    assert len(sent) == len(record_ids) and all(tx["status"] == 1 for tx in sent)
    nonces = sorted(tx["nonce"] for tx in sent)
    assert len(set(nonces)) == len(nonces)

    # A record certified by one worker is found by a verify the other worker answers: the exact copy (the
    # database) and a mirrored copy (the fingerprint index, which the other process caught up from the database).
    for (body, certifier), name in zip(certified[: len(PHOTOS)], PHOTOS, strict=True):
        image = httpx.get(f"{server.url}/v1/records/{body['record_id']}/image", timeout=60).content
        mirrored = encode(np.ascontiguousarray(decode(image)[:, ::-1]))
        for upload, verdict in ((image, "authentic"), (mirrored, "modified")):
            for _ in range(30):  # until the other worker takes the connection
                response, pid = server.send("POST", "/v1/verify", files={"file": (name, upload)})
                assert response.status_code == 200, response.text
                result = response.json()
                assert result["verdict"] == verdict and result["record_id"] == body["record_id"], (name, result)
                if pid != certifier:
                    break
            assert pid != certifier, "every verify went to the worker that certified"
            if verdict == "modified":
                assert result["checks"]["fingerprint"]["record_id"] == body["record_id"], result["checks"]


def test_rate_limits_are_counted_once_across_workers(server: Server) -> None:
    """Without Redis both workers count in one SQLite file: every answer in one window has its own remaining count
    (two counters in memory would hand out the same numbers twice)."""
    seen: dict[str, list[tuple[int, int]]] = {}  # window end -> (remaining, pid)
    pids: set[int] = set()
    while len(pids) < 2 or sum(len(v) for v in seen.values()) < 12:
        response, pid = server.send("GET", "/healthz")  # any route; without a key: counted per address
        pids.add(pid)
        assert response.headers["X-RateLimit-Limit"] == "100000"
        seen.setdefault(response.headers["X-RateLimit-Reset"], []).append(
            (int(response.headers["X-RateLimit-Remaining"]), pid)
        )
        assert sum(len(v) for v in seen.values()) < 80, "one worker took every connection"
    for answers in seen.values():
        remaining = [r for r, _ in answers]
        assert len(set(remaining)) == len(remaining), answers


def test_metrics_sum_the_workers(server: Server) -> None:
    for i in range(4):  # certifications of its own, whichever worker takes them
        response, _ = server.send(
            "POST", "/v1/certify", files={"file": (f"m{i}.png", small_png(2000 + i))}, headers=server.headers
        )
        assert response.status_code == 201, response.text
    text_out = httpx.get(f"{server.url}/metrics", timeout=30).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1]) for line in text_out.splitlines() if line and line[0] != "#"
    }
    # Each worker holds half of the 60 MP budget; the live sum is the configured budget.
    assert samples["provenance_pixel_budget_capacity_pixels"] == 60_000_000
    assert (server.data_dir / "metrics").is_dir()
    counted = {k: v for k, v in samples.items() if k.startswith("provenance_certifications_total")}
    with create_engine(f"sqlite:///{server.data_dir / 'provenance.db'}").connect() as connection:
        records = int(connection.execute(text("SELECT count(*) FROM records")).scalar() or 0)
    assert records and sum(counted.values()) == records, counted


def test_an_idempotency_key_makes_one_record_whichever_worker_takes_the_retries(server: Server) -> None:
    """Four concurrent requests with one key, each on its own connection: one record, the others replay it."""
    covered: set[int] = set()
    for round_ in range(10):
        key = uuid.uuid4().hex
        upload = (f"idem{round_}.png", small_png(3000 + round_))
        headers = {**server.headers, "Idempotency-Key": key}

        def certify(_: int, upload: tuple[str, bytes] = upload, headers: dict[str, str] = headers) -> Any:
            return server.send("POST", "/v1/certify", files={"file": upload}, headers=headers)

        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(certify, range(4)))
        assert all(response.status_code == 201 for response, _ in answers), [r.text for r, _ in answers]
        assert len({response.json()["record_id"] for response, _ in answers}) == 1
        assert sum(response.headers.get("Idempotent-Replayed") == "true" for response, _ in answers) == 3
        pids = {pid for _, pid in answers}
        if len(pids) == 2:
            covered = pids
            break
    assert len(covered) == 2, "every round went to one worker"
