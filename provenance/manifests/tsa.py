"""An RFC 3161 time-stamp authority for C2PA signatures.

A manifest whose signature carries a trusted time-stamp stays valid after the signing certificate
expires: verifiers check the certificate at the stamped time, not now. By default the service runs
its own TSA: a certificate issued by the service root CA (critical timeStamping EKU, see
``pki.issue_tsa_certificate``), answered by ``openssl ts -reply`` behind a small HTTP server on
127.0.0.1. ``PROVENANCE_TSA_URL`` points at a public TSA instead.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

from provenance.errors import ConfigurationError
from provenance.fsutil import write_atomic
from provenance.manifests import pki

log = logging.getLogger(__name__)

QUERY_TYPE = "application/timestamp-query"
REPLY_TYPE = "application/timestamp-reply"
# A TSA must name the policy its stamps are issued under. A 2.25 (UUID) OID needs no registration.
POLICY_OID = "2.25.254009498038932518310755354351396832930"
MAX_QUERY_BYTES = 64 * 1024  # a query is a hash and a nonce: a few hundred bytes
OPENSSL_TIMEOUT_S = 10.0

# Relative paths only: openssl runs in the TSA directory, so no path ever needs config-file quoting.
_CONFIG = f"""\
# Written by the provenance service; rewritten on every start.
[ tsa ]
default_tsa = tsa_config

[ tsa_config ]
serial = tsa.serial
crypto_device = builtin
signer_cert = tsa.cert.pem
signer_key = tsa.key.pem
signer_digest = sha256
default_policy = {POLICY_OID}
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


class LocalTimeStampAuthority:
    """``openssl ts -reply`` behind a threaded HTTP server on a free 127.0.0.1 port.

    ``directory`` holds ``tsa.cert.pem`` and ``tsa.key.pem`` (see ``pki.issue_tsa_certificate``);
    the openssl config, serial file and lock file are written next to them.
    """

    def __init__(self, directory: Path, *, host: str = "127.0.0.1", openssl: str | None = None) -> None:
        self.directory = directory
        self.host = host
        found = openssl or shutil.which("openssl")
        if not found:
            raise ConfigurationError(
                "The local time-stamp authority needs the openssl command (apt-get install openssl), "
                "or set PROVENANCE_TSA_URL to an RFC 3161 time-stamp authority."
            )
        self.openssl = found
        # One stamp at a time: openssl reads and rewrites the serial file without locking it.
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the running authority answers (``http://<host>:<port>/``)."""
        if self._server is None:
            raise RuntimeError("the time-stamp authority is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def start(self) -> str:
        """Write the openssl config, start serving and return the URL to hand to the signer."""
        if self._server is not None:
            return self.url
        for name in ("tsa.cert.pem", "tsa.key.pem"):
            if not (self.directory / name).exists():
                raise ConfigurationError(f"{self.directory / name} is missing: issue the TSA certificate first.")
        write_atomic(self.directory / "tsa.cnf", _CONFIG.encode())
        if not (self.directory / "tsa.serial").exists():
            write_atomic(self.directory / "tsa.serial", b"01\n")
        server = ThreadingHTTPServer((self.host, 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="provenance-tsa", daemon=True)
        self._thread.start()
        log.info("local time-stamp authority listening on %s", self.url)
        return self.url

    def close(self) -> None:
        """Stop serving; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LocalTimeStampAuthority:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reply(self, query: bytes) -> bytes:
        """The DER time-stamp response for a DER time-stamp query (raises ``ValueError`` if refused)."""
        with tempfile.TemporaryDirectory(prefix="provenance-tsa-") as tmp:
            query_path, reply_path = Path(tmp) / "query.tsq", Path(tmp) / "reply.tsr"
            query_path.write_bytes(query)
            command = [
                self.openssl, "ts", "-reply", "-config", "tsa.cnf", "-section", "tsa_config",
                "-queryfile", str(query_path), "-out", str(reply_path),
            ]  # fmt: skip
            # The thread lock orders this process's requests; the file lock orders other processes
            # (an API server and a worker) stamping with the same serial file.
            with self._lock, open(self.directory / "tsa.lock", "a") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
                result = subprocess.run(
                    command, cwd=self.directory, capture_output=True, timeout=OPENSSL_TIMEOUT_S, check=False
                )
            if result.returncode != 0 or not reply_path.exists():
                raise ValueError(result.stderr.decode(errors="replace").strip() or "openssl ts -reply failed")
            return reply_path.read_bytes()


def _handler_for(authority: LocalTimeStampAuthority) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """RFC 3161 over HTTP (section 3.4): POST a query, get a reply."""

        def do_POST(self) -> None:
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != QUERY_TYPE:
                self._send(415, b"expected " + QUERY_TYPE.encode(), "text/plain")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._send(411, b"Content-Length required", "text/plain")
                return
            if not 0 < length <= MAX_QUERY_BYTES:
                self._send(413, b"time-stamp query too large", "text/plain")
                return
            try:
                body = authority.reply(self.rfile.read(length))
            except (ValueError, subprocess.TimeoutExpired) as exc:
                log.warning("time-stamp request refused: %s", exc)
                self._send(400, b"bad time-stamp query", "text/plain")
                return
            self._send(200, body, REPLY_TYPE)

        def do_GET(self) -> None:
            self._send(405, b"POST an application/timestamp-query", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("tsa: " + format, *args)

    return Handler


def _nothing() -> None:
    """Closer for when there is no local server to stop."""


class TimeStampValues(Protocol):
    """What ``open_time_stamp_authority`` reads (``Settings`` has it)."""

    tsa_url: str | None
    c2pa_cert_chain: Path | None


def open_time_stamp_authority(
    settings: TimeStampValues, c2pa_dir: Path, *, needed: bool = True
) -> tuple[str | None, Callable[[], None]]:
    """The TSA URL for C2PA signing and a function that releases it.

    ``PROVENANCE_TSA_URL`` set: that authority, nothing started. The embedded CA: a local TSA
    whose certificate the service root issues (so verifiers that trust the root trust the stamp).
    An operator's own C2PA chain without a TSA URL: no time-stamp, since the service holds no key
    that the operator's verifiers would trust for one.
    """
    if not needed:  # a command that never signs (verify, key and trust administration)
        return None, _nothing
    if settings.tsa_url:
        return settings.tsa_url, _nothing
    if settings.c2pa_cert_chain is not None:
        log.warning(
            "C2PA manifests are signed without a time-stamp: set PROVENANCE_TSA_URL to an RFC 3161 "
            "time-stamp authority so signatures stay valid after the signing certificate expires."
        )
        return None, _nothing
    pki.issue_tsa_certificate(c2pa_dir)
    authority = LocalTimeStampAuthority(c2pa_dir)
    return authority.start(), authority.close
