"""The embedded anvil is supervised: killed by its PID, it is reaped and comes back with its state."""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from provenance.chain.anvil import AnvilNode, rpc_alive
from provenance.config import Settings
from provenance.db.models import RecordStatus
from provenance.runtime.services import Services
from tests.conftest import encode, photo, wait_for

ANVIL_LOG = "provenance.chain.anvil"


def zombie_children() -> list[int]:
    """PIDs of this process's children that died and were never reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == os.getpid():
            found.append(int(stat.parent.name))
    return found


def exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def messages(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ANVIL_LOG and text in r.getMessage()]


def test_killed_anvil_is_reaped_and_restarted_with_its_state(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=ANVIL_LOG)
    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    try:
        certified = services.certifier.certify(encode(photo("coffee.png")))

        def registered() -> bool:
            services.anchorer.run_once()
            return services.repository.get(certified.record.id).status == RecordStatus.REGISTERED

        wait_for(registered)
        assert services.verifier.verify(certified.data).verdict == "authentic"
        node = services.chain.node
        assert node is not None and node.process is not None and node.url is not None
        url, old_pid, address = node.url, node.process.pid, services.chain.registry.address
        time.sleep(2.5)  # anvil dumps its state every second: the registration is in the state file

        os.kill(old_pid, signal.SIGKILL)  # the anvil this test's services started, by its PID
        wait_for(lambda: node.restarts == 1 and rpc_alive(url), timeout=30)

        assert node.process is not None and node.process.pid != old_pid and node.url == url
        assert not exists(old_pid), "the killed anvil was reaped"
        assert zombie_children() == []
        # The state file came back with it: same registry, the record still registered and authentic.
        assert services.chain.registry.is_deployed() and services.chain.registry.address == address
        assert services.chain.registry.lookup(certified.record.sha256).registered
        assert services.verifier.verify(certified.data).verdict == "authentic"
        assert len(messages(caplog, "restarting it on port")) == 1
        assert len(messages(caplog, "is back on port")) == 1
    finally:
        services.close()
    assert node.process is None and zombie_children() == []


def test_restart_backs_off_while_the_port_is_taken_and_logs_each_change_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ANVIL_LOG)
    node = AnvilNode(tmp_path / "chain", restart_backoff_s=0.3, max_backoff_s=1.0)
    url = node.start()
    try:
        assert node.process is not None
        old_pid = node.process.pid
        os.kill(old_pid, signal.SIGKILL)
        # Take the port before the supervisor tries again (a real fault: another program grabbed it).
        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_for(lambda: _try_bind(blocker, node.port), timeout=5, interval=0.01)
        blocker.listen()
        try:
            wait_for(lambda: messages(caplog, "could not be restarted"), timeout=15)
            time.sleep(3)  # several more failed attempts, each with a longer wait
            assert node.restarts == 0 and not exists(old_pid)
            assert len(messages(caplog, "could not be restarted")) == 1, "one line for the change, not per try"
            assert zombie_children() == [], "failed restarts are reaped too"
        finally:
            blocker.close()
        wait_for(lambda: node.restarts == 1 and rpc_alive(url), timeout=30)
        assert len(messages(caplog, "restarting it on port")) == 1
        assert len(messages(caplog, "is back on port")) == 1
    finally:
        node.stop()
    assert zombie_children() == []


def test_supervise_off_leaves_a_dead_node_down_until_switched_back_on(tmp_path: Path) -> None:
    node = AnvilNode(tmp_path / "chain", restart_backoff_s=0.2)
    url = node.start()
    try:
        assert node.process is not None
        node.supervise = False
        os.kill(node.process.pid, signal.SIGKILL)
        time.sleep(1.5)
        assert not rpc_alive(url) and node.restarts == 0 and zombie_children() == []
        node.supervise = True
        wait_for(lambda: node.restarts == 1 and rpc_alive(url), timeout=30)
    finally:
        node.stop()


def _try_bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_a_state_dump_cut_short_by_the_crash_restarts_from_the_last_complete_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """anvil rewrites its state in place: killed mid-dump, the file is cut short and anvil refuses it (exit 2).

    The supervisor keeps the last complete dump aside and restarts from it, so the node comes back.
    """
    caplog.set_level(logging.INFO, logger=ANVIL_LOG)
    services = Services.open(Settings(data_dir=tmp_path / "data"), start_worker=False)
    try:
        certified = services.certifier.certify(encode(photo("chelsea.png")))

        def registered() -> bool:
            services.anchorer.run_once()
            return services.repository.get(certified.record.id).status == RecordStatus.REGISTERED

        wait_for(registered)
        node = services.chain.node
        assert node is not None and node.process is not None and node.url is not None
        # The good copy is refreshed at most every 5 s: wait until it holds the registration's block.
        registered_at = time.time()
        wait_for(
            lambda: node.good_state_file.exists() and node.good_state_file.stat().st_mtime > registered_at + 1.5,
            timeout=20,
        )
        node.restart_backoff_s = 1.0
        os.kill(node.process.pid, signal.SIGKILL)
        # What a crash mid-dump leaves: the first half of the file.
        data = node.state_file.read_bytes()
        node.state_file.write_bytes(data[: len(data) // 2])
        wait_for(lambda: node.restarts == 1 and rpc_alive(node.url or ""), timeout=30)
        assert messages(caplog, "cut short by the crash")
        assert list(node.directory.glob("anvil-state.broken-*.json")), "the broken dump is kept for a post-mortem"
        assert services.chain.registry.lookup(certified.record.sha256).registered
    finally:
        services.close()
