"""Shared fixtures: real components only (anvil, c2pa, files on disk, PostgreSQL)."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from provenance.api.app import create_app
from provenance.config import Settings
from provenance.runtime.services import Services

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
PHOTOS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png"]


def photo(name: str) -> np.ndarray:
    """A natural photo shipped in scikit-image's data folder, as RGB uint8."""
    return np.asarray(Image.open(SKIMAGE_DATA / name).convert("RGB"))


def encode(rgb: np.ndarray, fmt: str = "PNG", **kwargs: object) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, fmt, **kwargs)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """The embedded stack in a temporary data dir: SQLite, anvil, blockstore, own CA."""
    opened = Services.open(Settings(data_dir=tmp_path_factory.mktemp("data"), anchor_poll_interval_s=0.05))
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def admin_key(services: Services) -> str:
    """The key the first start wrote to <data_dir>/admin.key."""
    return (services.settings.resolved_data_dir / "admin.key").read_text().strip()


@pytest.fixture(scope="session")
def client(services: Services, admin_key: str) -> Iterator[TestClient]:
    """The API as the operator: every request sends the admin key (all scopes, no rate limit)."""
    with TestClient(create_app(services=services)) as test_client:
        test_client.headers["Authorization"] = f"Bearer {admin_key}"
        yield test_client


@pytest.fixture(scope="session")
def anonymous_client(services: Services) -> Iterator[TestClient]:
    """The API without a key: public reads only."""
    with TestClient(create_app(services=services)) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on 127.0.0.1 for the test module that asks (``make test`` installs it)."""
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for(ping, timeout=20)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (``make test`` installs the server)."""
    bindirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    initdb = str(bindirs[-1] / "initdb") if bindirs else shutil.which("initdb")
    assert initdb, "PostgreSQL server binaries not found: run `make test`, which installs them"
    bindir = Path(initdb).parent
    workdir = Path(tempfile.mkdtemp(prefix="provenance-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(workdir, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    pgdata = workdir / "pgdata"
    subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(pgdata), "-U", "provenance", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(pgdata),
            "-l",
            str(workdir / "log"),
            "-w",
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "provenance", "provenance"],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg://provenance@127.0.0.1:{port}/provenance"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
