"""A failed start closes what it opened: no anvil, thread or port left behind.

Every case starts from a fresh data dir and makes the start fail at a chosen step: after anvil, the
local time-stamp authority and the anchor worker are up (the Celery job backend without REDIS_URL, checked
last), or
before anything is started (a bad watermark key, an unreadable C2PA key, a database that does not
answer), or after everything is up (`provenance serve` on a port that is taken). The anvil process is found
twice over: its PID, read from ``anvil.json`` while the start runs, must be gone afterwards, and no process may
name the data dir on its command line.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.prefix) / "bin" / "provenance"


def _alive(pid: int) -> bool:
    """True while the PID exists, zombies included (a child nobody reaped is not gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _processes_naming(path: Path) -> list[int]:
    """PIDs whose command line mentions ``path`` (anvil's ``--state`` lives in the data dir)."""
    needle = str(path).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"anvil" in cmdline:
            found.append(int(entry.name))
    return found


@contextmanager
def anvil_pids(data_dir: Path) -> Iterator[set[int]]:
    """Collect every anvil PID the data dir's ``anvil.json`` names while the block runs."""
    info = data_dir / "chain" / "anvil.json"
    seen: set[int] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            with suppress(OSError, ValueError, KeyError):
                seen.add(int(json.loads(info.read_text())["pid"]))
            done.wait(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield seen
    finally:
        done.set()
        watcher.join()


def _assert_nothing_left(data_dir: Path, pids: set[int]) -> None:
    for pid in pids:
        wait_for(lambda pid=pid: not _alive(pid), timeout=10)
    # Nothing restarted it either (a supervisor left running would bring it back).
    time.sleep(1.5)
    assert _processes_naming(data_dir) == []
    assert not (data_dir / "chain" / "anvil.json").exists()


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


def test_a_start_failing_after_anvil_stops_anvil_the_worker_and_the_tsa(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, job_backend="celery")  # no REDIS_URL: refused as the jobs open, last
    threads_before = set(threading.enumerate())
    with anvil_pids(data) as pids, pytest.raises(ConfigurationError, match="REDIS_URL"):
        Services.open(settings)
    # anvil did start (the failure came after it) ...
    assert pids, "anvil.json never named a process"
    assert (data / "chain" / "deployment.json").is_file()
    # ... and is gone, reaped, not restarted.
    _assert_nothing_left(data, pids)
    # The anchor worker, the local time-stamp authority and the supervisor threads are stopped too.
    wait_for(lambda: not _new_threads(threads_before), timeout=10)
    # The data dir is usable again straight away: a good start on it works and closes cleanly.
    with anvil_pids(data) as pids_again:
        services = Services.open(Settings(data_dir=data), start_worker=False)
        services.close()
    assert pids_again and not pids_again & pids
    _assert_nothing_left(data, pids_again)


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(
            lambda d: Settings(data_dir=d, watermark_key_file=_write(d.parent / "mark.key", "not hex")),
            id="watermark-key",
        ),
        pytest.param(
            lambda d: Settings(
                data_dir=d,
                c2pa_cert_chain=_write(d.parent / "chain.pem", "-----BEGIN CERTIFICATE-----\n"),
                c2pa_private_key=d.parent / "missing.key",
            ),
            id="c2pa-key",
        ),
        pytest.param(
            lambda d: Settings(data_dir=d, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none"),
            id="database-url",
        ),
    ],
)
def test_a_start_failing_on_local_configuration_starts_no_anvil(
    tmp_path: Path, broken: Callable[[Path], Settings]
) -> None:
    data = tmp_path / "data"
    settings = broken(data)
    threads_before = set(threading.enumerate())
    with anvil_pids(data) as pids, pytest.raises(Exception) as failure:
        Services.open(settings)
    assert not isinstance(failure.value, AssertionError)
    # Checked before the chain: anvil was never started, so nothing can be left of it.
    assert pids == set()
    assert not (data / "chain" / "anvil.log").exists()
    assert _processes_naming(data) == []
    wait_for(lambda: not _new_threads(threads_before), timeout=10)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROVENANCE_") and key != "REDIS_URL"}
    env.update(extra)
    return env


def test_serve_that_fails_to_start_leaves_no_anvil(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _clean_env(PROVENANCE_JOB_BACKEND="celery", PROVENANCE_PORT="1")  # never reached: the start fails first
    with anvil_pids(data) as pids:
        result = subprocess.run(
            [str(CLI), "serve", "--data-dir", str(data)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode != 0
    assert "REDIS_URL" in result.stdout + result.stderr
    assert pids, "anvil.json never named a process"
    _assert_nothing_left(data, pids)


def test_serve_on_a_busy_port_leaves_no_anvil(tmp_path: Path) -> None:
    """The port is bound after the services opened: uvicorn's failure still closes them."""
    data = tmp_path / "data"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with anvil_pids(data) as pids:
            result = subprocess.run(
                [str(CLI), "serve", "--data-dir", str(data), "--port", str(port)],
                cwd=tmp_path,
                env=_clean_env(),
                capture_output=True,
                text=True,
                timeout=120,
            )
    assert result.returncode != 0
    assert "address already in use" in result.stderr
    assert pids, "anvil.json never named a process"
    _assert_nothing_left(data, pids)


def test_a_cli_command_that_fails_to_start_exits_2_and_leaves_no_anvil(tmp_path: Path) -> None:
    data = tmp_path / "data"
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    with anvil_pids(data) as pids:
        result = subprocess.run(
            [str(CLI), "verify", str(image), "--data-dir", str(data)],
            cwd=tmp_path,
            env=_clean_env(PROVENANCE_JOB_BACKEND="celery"),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2, result.stderr
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert pids, "anvil.json never named a process"
    _assert_nothing_left(data, pids)


@pytest.mark.parametrize(
    ("variable", "name"), [("PROVENANCE_JOB_BACKEND", "job_backend"), ("PROVENANCE_ANCHOR_MODE", "anchor_mode")]
)
def test_a_bad_mode_is_named_as_the_settings_are_read_and_nothing_starts(
    tmp_path: Path, variable: str, name: str
) -> None:
    """Modes are ``Literal`` settings: a bad one is refused before the data dir or the chain is touched."""
    data = tmp_path / "data"
    with pytest.raises(ConfigurationError, match=f"^{variable} must be .* not 'nonsense'\\.$"):
        Settings(data_dir=data, **{name: "nonsense"})
    image = tmp_path / "image.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    result = subprocess.run(
        [str(CLI), "verify", str(image), "--data-dir", str(data)],
        cwd=tmp_path,
        env=_clean_env(**{variable: "nonsense"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable} must be "), result.stderr
    assert lines[0].endswith("not 'nonsense'.") and "Traceback" not in result.stderr
    assert not data.exists()


def test_an_anvil_setting_that_points_nowhere_is_named_and_nothing_is_left(tmp_path: Path) -> None:
    data = tmp_path / "data"
    threads_before = set(threading.enumerate())
    with pytest.raises(ConfigurationError, match="PROVENANCE_ANVIL_BINARY"):
        Services.open(Settings(data_dir=data, anvil_binary=tmp_path / "no-such-anvil"))
    assert _processes_naming(data) == []
    wait_for(lambda: not _new_threads(threads_before), timeout=10)


def test_a_read_only_open_starts_no_time_stamp_authority(tmp_path: Path) -> None:
    """Commands that never sign (verify, keys, trust) open with ``signing=False``: no TSA; verify still works."""
    settings = Settings(data_dir=tmp_path / "data")
    writer = Services.open(settings, start_worker=False)
    try:
        assert writer.tsa_url is not None  # the embedded CA signs with the local time-stamp authority
        certified = writer.certifier.certify(encode(photo("astronaut.png")))
        writer.anchorer.run_once()
    finally:
        writer.close()
    threads_before = set(threading.enumerate())
    reader = Services.open(settings, start_worker=False, signing=False)
    try:
        assert reader.tsa_url is None
        assert "provenance-tsa" not in {t.name for t in _new_threads(threads_before)}
        assert reader.verifier.verify(certified.data).verdict == "authentic"
    finally:
        reader.close()
