"""Scale-out on real processes: many service instances, workers and CLI runs share one chain key.

Two ``provenance serve`` processes and two Celery workers on one PostgreSQL, one Redis and one
anvil (all on 127.0.0.1, all started here): every record is registered exactly once, no log
mentions a nonce error, and when the writer is killed the other instance takes over. And a CLI
``certify`` next to a running server on the same SQLite data dir leaves registration to the server.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from sqlalchemy import create_engine, text
from web3 import Web3

from provenance.chain.anvil import find_anvil, rpc_alive
from provenance.chain.artifacts import load_artifact
from provenance.chain.registry import connect
from provenance.chain.setup import deploy_contracts, embedded_key, fund_dev_accounts
from provenance.chain.transactions import TxSender
from tests.conftest import _free_port, wait_for

NONCE_ERRORS = ("nonce too low", "nonce too high", "replacement transaction underpriced", "already known")


def small_png(seed: int, size: int = 64) -> bytes:
    """A unique small image: below 256 px no mark is embedded, so certification is quick."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "provenance.cli", *args],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process this test started (its own session: the group is its children only)."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def serving(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=2).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def wait_serving(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not serving(url):
        assert process.poll() is None, f"the server exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"the server did not answer: {log.read_text()[-3000:]}"
        time.sleep(0.2)


def assert_clean_logs(logs: list[Path]) -> None:
    for log in logs:
        content = log.read_text(errors="replace")
        lower = content.lower()
        for clue in NONCE_ERRORS:
            assert clue not in lower, f"{log.name} mentions {clue!r}: {content[-3000:]}"
        assert "Traceback" not in content, f"{log.name} has a traceback: {content[-4000:]}"


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One anvil started here, the contracts deployed from an owner key, an operator key as writer."""
    workdir = tmp_path_factory.mktemp("chain")
    port = _free_port()
    proc = subprocess.Popen(
        [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--chain-id", "31337"],
        stdout=(workdir / "anvil.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: rpc_alive(url), timeout=30)
        owner, operator = embedded_key(workdir, "owner.key"), embedded_key(workdir, "operator.key")
        w3 = connect(url)
        fund_dev_accounts(w3, owner.address, operator.address)
        deployment = deploy_contracts(TxSender(w3, owner), 500, writer=operator.address)
        yield {
            "url": url,
            "w3": w3,
            "operator": operator.address,
            "owner_key": workdir / "owner.key",
            "operator_key": workdir / "operator.key",
            **deployment,
        }
    finally:
        stop(proc)


def operator_transactions(w3: Web3, operator: str, since_block: int) -> list[dict[str, Any]]:
    """Every transaction the operator key sent after ``since_block``, with its receipt status."""
    found = []
    for number in range(since_block + 1, int(w3.eth.block_number) + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == operator:  # type: ignore[index]
                receipt = w3.eth.get_transaction_receipt(tx["hash"])  # type: ignore[index]
                found.append({"hash": tx["hash"].to_0x_hex(), "nonce": tx["nonce"], "status": receipt["status"]})  # type: ignore[index]
    return found


def test_two_servers_two_workers_one_key_register_everything_once(
    tmp_path: Path, postgres_url: str, redis_url: str, chain: dict[str, Any]
) -> None:
    # A database of its own on the shared test cluster.
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("DROP DATABASE IF EXISTS scaleout"))
        connection.execute(text("CREATE DATABASE scaleout"))
    admin.dispose()
    database_url = postgres_url.rsplit("/", 1)[0] + "/scaleout"
    data_dir = tmp_path / "shared"  # what a shared volume would hold: keys, CA, blockstore
    env = {
        **os.environ,
        "PROVENANCE_DATA_DIR": str(data_dir),
        "DATABASE_URL": database_url,
        "RPC_URL": chain["url"],
        "REGISTRY_ADDRESS": chain["registry_address"],
        "NFT_ADDRESS": chain["nft_address"],
        "CHAIN_KEY_FILE": str(chain["operator_key"]),
        "CHAIN_OWNER_KEY_FILE": str(chain["owner_key"]),
        "REDIS_URL": redis_url,
        "PROVENANCE_JOB_BACKEND": "celery",
        "PROVENANCE_FINGERPRINT_ENABLED": "false",
        "PROVENANCE_ANCHOR_POLL_INTERVAL_S": "0.1",
        "PROVENANCE_WRITER_RETRY_S": "0.3",
    }
    start_block = int(chain["w3"].eth.block_number)
    logs = {name: tmp_path / f"{name}.log" for name in ("server-a", "server-b", "worker-1", "worker-2")}
    ports = {"server-a": _free_port(), "server-b": _free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        # The first start creates the keys, the CA and the schema; the others find them.
        processes["server-a"] = start(["serve", "--port", str(ports["server-a"])], env, logs["server-a"])
        wait_serving(urls["server-a"], processes["server-a"], logs["server-a"])
        processes["server-b"] = start(["serve", "--port", str(ports["server-b"])], env, logs["server-b"])
        processes["worker-1"] = start(["worker"], env, logs["worker-1"])
        processes["worker-2"] = start(["worker"], env, logs["worker-2"])
        wait_serving(urls["server-b"], processes["server-b"], logs["server-b"])
        headers = {"Authorization": "Bearer " + (data_dir / "admin.key").read_text().strip()}
        clients = {name: httpx.Client(base_url=url, headers=headers, timeout=60) for name, url in urls.items()}

        def generate(name: str) -> str:
            reply = clients[name].post(
                "/v1/generations", json={"prompt": f"a kite over {name}", "steps": 1, "width": 64, "height": 64}
            )
            assert reply.status_code == 202, reply.text
            return str(reply.json()["job_id"])

        def certify(i: int) -> str:
            return certify_on(clients["server-a" if i % 2 == 0 else "server-b"], i)

        with ThreadPoolExecutor(10) as pool:
            # A generation through each instance (the Celery workers run them) while 200 certifications
            # go to both instances, 8 at a time.
            generations = [pool.submit(generate, name) for name in ("server-a", "server-b")]
            record_ids = list(pool.map(certify, range(200)))
            jobs = [g.result() for g in generations]
        assert len(set(record_ids)) == 200

        for job_id in jobs:
            job = wait_for(
                lambda job_id=job_id: (
                    (j := clients["server-a"].get(f"/v1/generations/{job_id}").json())["status"]
                    in ("succeeded", "failed")
                    and j
                ),
                timeout=180,
                interval=0.3,
            )
            assert job["status"] == "succeeded", job
            record_ids += [r["record_id"] for r in job["records"]]

        engine = create_engine(database_url)

        def statuses() -> dict[str, int]:
            with engine.connect() as connection:
                rows = connection.execute(text("SELECT status, count(*) FROM records GROUP BY status")).all()
            return {str(status): int(n) for status, n in rows}

        wait_for(lambda: statuses() == {"registered": len(record_ids)}, timeout=60, interval=0.2)

        # Exactly one instance was the writer.
        writers = [n for n in ("server-a", "server-b") if "is the chain writer now" in logs[n].read_text()]
        assert len(writers) == 1, {n: logs[n].read_text()[-2000:] for n in ("server-a", "server-b")}

        # Every record exactly once on chain: alone, or as a leaf of one anchored batch.
        registry = chain["w3"].eth.contract(
            address=chain["registry_address"], abi=load_artifact("ProvenanceRegistry")["abi"]
        )
        with engine.connect() as connection:
            singles = connection.execute(text("SELECT sha256, tx_hash FROM records WHERE batch_root IS NULL")).all()
            batches = connection.execute(text("SELECT root, count, tx_hash FROM anchor_batches")).all()
            batched = connection.execute(text("SELECT count(*) FROM records WHERE batch_root IS NOT NULL")).scalar()
        assert len(singles) + int(batched or 0) == len(record_ids) == 202
        assert sum(int(b.count) for b in batches) == batched
        assert int(registry.functions.count().call()) == len(singles)
        assert int(registry.functions.batchCount().call()) == len(batches)
        sent = operator_transactions(chain["w3"], chain["operator"], start_block)
        assert all(tx["status"] == 1 for tx in sent), "no transaction reverted (no double registration)"
        assert len(sent) == len(singles) + len(batches), "one transaction per single record or batch, no more"
        assert sorted(tx["nonce"] for tx in sent) == list(range(sent[0]["nonce"], sent[0]["nonce"] + len(sent)))
        assert {tx["hash"] for tx in sent} == {s.tx_hash for s in singles} | {b.tx_hash for b in batches}

        # The writer dies without a word: the other instance takes over within seconds.
        writer, survivor = writers[0], ("server-b" if writers[0] == "server-a" else "server-a")
        stop(processes.pop(writer), signal.SIGKILL)
        later = [certify_on(clients[survivor], 1000 + i) for i in range(10)]
        wait_for(
            lambda: all(clients[survivor].get(f"/v1/records/{r}").json()["status"] == "registered" for r in later),
            timeout=30,
            interval=0.2,
        )
        assert "is the chain writer now" in logs[survivor].read_text()
        engine.dispose()
        for client in clients.values():
            client.close()
    finally:
        for process in processes.values():
            stop(process)
    assert_clean_logs(list(logs.values()))


def certify_on(client: httpx.Client, seed: int) -> str:
    reply = client.post("/v1/certify", files={"file": (f"{seed}.png", small_png(seed), "image/png")})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["record_id"])


def test_cli_certify_next_to_a_running_server_leaves_registration_to_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {**os.environ, "PROVENANCE_DATA_DIR": str(data_dir), "PROVENANCE_FINGERPRINT_ENABLED": "false"}
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = start(["serve", "--port", str(port)], env, log)
    try:
        wait_serving(url, server, log)
        headers = {"Authorization": "Bearer " + (data_dir / "admin.key").read_text().strip()}
        client = httpx.Client(base_url=url, headers=headers, timeout=60)
        images = []
        for i in range(3):
            path = tmp_path / f"in{i}.png"
            path.write_bytes(small_png(500 + i))
            images.append(path)
        with ThreadPoolExecutor(4) as pool:
            # The server is busy registering its own records while the CLI runs.
            served = pool.map(lambda i: certify_on(client, 600 + i), range(12))
            runs = []
            for run in range(3):
                out = tmp_path / f"out{run}"
                copies = [tmp_path / f"run{run}-{p.name}" for p in images]
                for source, copy in zip(images, copies, strict=True):
                    # Same pixels, different bytes each run (a PNG text chunk): three new records a run.
                    image = Image.open(source)
                    info = PngInfo()
                    info.add_text("run", str(run))
                    image.save(copy, "PNG", pnginfo=info)
                command = [sys.executable, "-m", "provenance.cli", "certify", *map(str, copies), "-o", str(out)]
                runs.append(
                    subprocess.run(
                        [*command, "--json"],
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=120,
                    )
                )
            served_ids = list(served)
        for result in runs:
            assert result.returncode == 0, result.stderr[-3000:]
            assert "Traceback" not in result.stderr and "nonce" not in result.stderr.lower(), result.stderr[-3000:]
            assert "a running service is the chain writer" in result.stderr, result.stderr[-2000:]
            assert result.stdout.count('"status": "registered"') == 3, result.stdout
        for record_id in served_ids:
            wait_for(lambda r=record_id: client.get(f"/v1/records/{r}").json()["status"] == "registered")
        client.close()
    finally:
        stop(server)
    assert_clean_logs([log])
