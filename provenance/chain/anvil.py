"""The embedded dev chain: an ``anvil`` process whose state lives in the data dir.

The binary comes from the npm package ``@foundry-rs/anvil-linux-amd64``. State is loaded from and
dumped to ``anvil-state.json`` (on exit and every second), so records registered yesterday are
still on chain today. A second process using the same data dir (the CLI next to a running
server) attaches to the running node instead of starting another.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from provenance.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parents[2]
NPM_ANVIL = REPO_ROOT / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_CHAIN_ID = 31337


def find_anvil(configured: Path | None = None) -> Path:
    for candidate in (configured, NPM_ANVIL, shutil.which("anvil")):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise ConfigurationError("anvil not found: run `make install` (it installs @foundry-rs/anvil-linux-amd64).")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rpc_alive(url: str, timeout: float = 1.0) -> bool:
    try:
        response = httpx.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=timeout
        )
        return response.status_code == 200 and "result" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


class AnvilNode:
    """Start, attach to, and stop the data dir's anvil."""

    def __init__(self, directory: Path, *, binary: Path | None = None, port: int = 0) -> None:
        self.directory = directory
        self.binary = binary
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self._info = directory / "anvil.json"

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

    def start(self, timeout_s: float = 30.0) -> str:
        """Return the RPC URL, starting anvil if no live node serves this data dir."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._attach():
            assert self.url is not None
            return self.url
        port = self.port or free_port()
        log = open(self.directory / "anvil.log", "ab")  # noqa: SIM115 - handed to the child process
        cmd = [
            str(find_anvil(self.binary)),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--state",
            str(self.directory / "anvil-state.json"),
            "--state-interval",
            "1",
            "--chain-id",
            str(ANVIL_CHAIN_ID),
        ]
        # Own session: a Ctrl-C in the terminal reaches the service, which then stops anvil cleanly.
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(
                    f"anvil exited with code {self.process.returncode}; see {self.directory / 'anvil.log'}"
                )
            if rpc_alive(url, timeout=0.5):
                self.url = url
                self._info.write_text(json.dumps({"pid": self.process.pid, "url": url}))
                return url
            time.sleep(0.05)
        self.stop()
        raise ConfigurationError(f"anvil did not answer on {url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        """Stop the node if this object started it; anvil dumps its state on SIGINT."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            self._info.unlink()
        self.process = None
