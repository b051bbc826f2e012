"""The embedded dev chain: an ``anvil`` process whose state lives in the data dir.

The binary is ``PROVENANCE_ANVIL_BINARY``, ``anvil`` on ``PATH`` or the npm package
``@foundry-rs/anvil-linux-amd64`` (see ``find_anvil``). State is loaded from and
dumped to ``anvil-state.json`` (on exit and every second), so records registered yesterday are
still on chain today. A second process using the same data dir (the CLI next to a running
server) attaches to the running node instead of starting another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_ANVIL_PATH = Path("node_modules") / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
NPM_ANVIL = REPO_ROOT / NPM_ANVIL_PATH  # in a checkout after `make install`
ANVIL_CHAIN_ID = 31337


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_anvil(configured: Path | None = None) -> Path:
    """The anvil binary: ``PROVENANCE_ANVIL_BINARY``, else ``anvil`` on ``PATH``, else the npm package.

    The npm package is looked for in the checkout this module runs from (``make install``) and then in
    the working directory; an installed wheel has neither, so it needs the setting or ``PATH``.
    """
    if configured is not None:
        path = configured.expanduser()
        if _executable(path):
            return path
        raise ConfigurationError(f"PROVENANCE_ANVIL_BINARY is set to {configured}, which is not an executable file.")
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    for candidate in (NPM_ANVIL, Path.cwd() / NPM_ANVIL_PATH):
        if _executable(candidate):
            return candidate
    raise ConfigurationError(
        "anvil not found: set PROVENANCE_ANVIL_BINARY to its path, put `anvil` on PATH, or run `make install` "
        "in a checkout (npm package @foundry-rs/anvil-linux-amd64). Or set RPC_URL to use an external node."
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS reports free now (another process may still take it first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rpc_alive(url: str, timeout: float = 1.0) -> bool:
    """Whether a JSON-RPC node answers ``eth_chainId`` at ``url`` within ``timeout`` seconds."""
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


class AnvilNode:
    """Start, attach to, supervise and stop the data dir's anvil.

    A node this process started is supervised: a thread polls the child (which reaps it when it dies,
    so no zombie is left) and starts it again on the same port with the same ``--state`` file, after
    ``restart_backoff_s`` seconds, doubling up to ``max_backoff_s`` while restarts fail. The RPC URL
    never changes, so every client keeps working once the node is back. One log line per change of
    state (died, could not be restarted, back). Set ``supervise = False`` to leave a dead node down
    (the supervisor keeps reaping; it restarts the node as soon as ``supervise`` is true again).
    """

    def __init__(
        self,
        directory: Path,
        *,
        binary: Path | None = None,
        port: int = 0,
        restart_backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        poll_interval_s: float = 0.2,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._info = directory / "anvil.json"
        self.supervise = True
        self.restart_backoff_s = restart_backoff_s
        self.max_backoff_s = max_backoff_s
        self.poll_interval_s = poll_interval_s
        self.restarts = 0  # how many times the supervisor brought the node back
        # Called (on the supervisor thread) each time the node is back: anvil dumps its state every
        # second, so a node that was killed may have lost its last blocks and its owner must repair.
        self.on_restart: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._good_copy_mtime = 0.0  # the state file's mtime when it was last kept as the good copy

    def _attach(self) -> bool:
        try:
            info = json.loads(self._info.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            return False
        if rpc_alive(info["url"]):
            self.url = info["url"]
            return True
        return False

    @property
    def state_file(self) -> Path:
        """Where anvil dumps its state (every second and on exit)."""
        return self.directory / "anvil-state.json"

    @property
    def good_state_file(self) -> Path:
        """The last state dump seen complete: what a restart falls back to when a crash cut the dump short."""
        return self.directory / "anvil-state.good.json"

    def _keep_good_copy(self) -> None:
        """Copy a complete new state dump aside (at most every few seconds, on the supervisor thread).

        anvil rewrites its state file in place, so a node killed mid-dump (the OOM killer, a SIGKILL) leaves it cut
        short, and anvil then refuses to start at all. A dump that ends with its closing brace is complete.
        """
        try:
            mtime = self.state_file.stat().st_mtime
            if mtime - self._good_copy_mtime < 5.0:
                return
            data = self.state_file.read_bytes()
        except OSError:
            return
        if data.lstrip().startswith(b"{") and data.rstrip().endswith(b"}"):
            write_atomic(self.good_state_file, data)
            self._good_copy_mtime = mtime

    def _repair_state(self) -> None:
        """Before a restart: a state file that does not parse is replaced by the good copy (or set aside)."""
        try:
            json.loads(self.state_file.read_bytes())
            return
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            pass
        broken = self.state_file.with_name(f"anvil-state.broken-{int(time.time())}.json")
        os.replace(self.state_file, broken)
        if self.good_state_file.exists():
            shutil.copyfile(self.good_state_file, self.state_file)
            log.warning(
                "anvil's state dump was cut short by the crash (kept as %s); restarting from the last "
                "complete dump: blocks after it are lost and are repaired after the restart",
                broken.name,
            )
        else:
            log.warning(
                "anvil's state dump was cut short by the crash (kept as %s) and there is no complete copy: "
                "the chain restarts empty and is repaired after the restart",
                broken.name,
            )

    def _command(self, port: int) -> list[str]:
        return [
            str(find_anvil(self.binary)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state",
            str(self.state_file),
            "--state-interval",
            "1",
            "--chain-id",
            str(ANVIL_CHAIN_ID),
        ]

    def _launch(self, port: int, timeout_s: float) -> subprocess.Popen[bytes]:
        """Start anvil on ``port`` and wait until it answers; on failure nothing is left running."""
        log_file = open(self.directory / "anvil.log", "ab")  # noqa: SIM115 - handed to the child process
        # Own session: a Ctrl-C in the terminal reaches the service, which then stops anvil cleanly.
        process = subprocess.Popen(
            self._command(port), stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
        log_file.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ConfigurationError(
                    f"anvil exited with code {process.returncode}; see {self.directory / 'anvil.log'}"
                )
            if rpc_alive(url, timeout=0.5):
                return process
            time.sleep(0.05)
        _terminate(process)
        raise ConfigurationError(f"anvil did not answer on {url} within {timeout_s:.0f}s")

    def _write_info(self) -> None:
        assert self.process is not None
        self._info.write_text(json.dumps({"pid": self.process.pid, "url": self.url}))

    def start(self, timeout_s: float = 30.0) -> str:
        """Return the RPC URL, starting (and supervising) anvil if no live node serves this data dir."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._attach():
            assert self.url is not None
            return self.url
        self.port = self.port or free_port()  # kept: a restarted node answers on the same URL
        self.process = self._launch(self.port, timeout_s)
        self.url = f"http://127.0.0.1:{self.port}"
        self._write_info()
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="anvil-supervisor", daemon=True)
        self._supervisor.start()
        return self.url

    def _supervise(self) -> None:
        delay = self.poll_interval_s
        died: subprocess.Popen[bytes] | None = None  # the dead process while the node is down
        restart_failed = False
        while not self._stopping.wait(delay):
            process = self.process
            if process is None:  # stopped, or taken over by its owner
                return
            if died is None:
                if process.poll() is None:  # poll() also reaps a dead child
                    delay = self.poll_interval_s
                    self._keep_good_copy()
                    continue
                died, delay = process, self.restart_backoff_s
                log.warning(
                    "anvil (pid %d) exited with code %s; restarting it on port %d with its state in %.1fs",
                    process.pid,
                    process.returncode,
                    self.port,
                    delay,
                )
                continue
            if not self.supervise:
                delay = self.poll_interval_s
                continue
            try:
                with self._lock:
                    if self._stopping.is_set() or self.process is not died:
                        return
                    self._repair_state()
                    self.process = self._launch(self.port, timeout_s=10.0)
                    self._write_info()
            except (ConfigurationError, OSError) as exc:
                delay = min(delay * 2, self.max_backoff_s)
                if not restart_failed:
                    log.error(
                        "anvil could not be restarted (%s); retrying with backoff up to %.0fs", exc, self.max_backoff_s
                    )
                    restart_failed = True
                continue
            self.restarts += 1
            log.warning("anvil is back on port %d (pid %d, restart %d)", self.port, self.process.pid, self.restarts)
            died, restart_failed, delay = None, False, self.poll_interval_s
            if self.on_restart is not None:
                try:
                    self.on_restart()
                except Exception:
                    log.exception("repairing after the anvil restart failed")

    def stop(self) -> None:
        """Stop the node if this object started it; anvil dumps its state on SIGINT."""
        self._stopping.set()
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(timeout=15)
        self._supervisor = None
        with self._lock:
            if self.process is None:
                return
            _terminate(self.process)
            with contextlib.suppress(FileNotFoundError):
                self._info.unlink()
            self.process = None


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGINT (anvil dumps its state), then SIGKILL after 10 s; always reaped."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
