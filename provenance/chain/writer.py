"""One chain writer per database, elected through the database; one nonce sequence per key across processes.

However many service instances, CLI commands and workers share a database, only the holder of the
**writer lease** anchors records (sends ``register`` and ``anchorBatch``): the others leave their
records ``pending`` for it. On PostgreSQL the lease is a session-level advisory lock
(``pg_try_advisory_lock``) held on a connection of its own, so it works across machines and is
released by the server the moment the holder's connection dies (a killed process, a lost
machine). On SQLite (one machine by nature) it is an exclusive ``flock`` on
``<database file>.writer.lock``, which the kernel releases when the process dies.

Transactions other than anchoring (custodial NFT mints, owner operations with a one-key setup) can
still come from any process with the key. Every send therefore happens under a **send mutex**
shared by all processes using the key (a blocking advisory lock keyed by the address on
PostgreSQL, ``<database file>.nonce-<address>.lock`` on SQLite); inside it the sender takes the
larger of the node's pending count and its own counter, so two processes never pick the same nonce.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from provenance.errors import ChainError

log = logging.getLogger(__name__)

WRITER_LEASE_NAME = "provenance:chain-writer"


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def holder_label() -> str:
    """Who holds a lease, for messages: host and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


class WriterLease(Protocol):
    """The right to anchor: at most one holder per database at any time."""

    @property
    def held(self) -> bool:
        """Whether this object believes it holds the lease (no round trip; ``check`` confirms it)."""
        ...

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True if this object holds it now."""
        ...

    def check(self) -> bool:
        """Still held? (False once the connection that held it is gone.)"""
        ...

    def release(self) -> None:
        """Give the lease up (a no-op if not held) so another process can take it."""
        ...

    def holder(self) -> str | None:
        """Who holds it (host and pid) if known."""
        ...

    def describe(self) -> str:
        """What kind of lock backs the lease, for messages."""
        ...


class SendMutex(Protocol):
    """A mutual exclusion shared by every process that sends with one key."""

    def hold(self) -> contextlib.AbstractContextManager[None]:
        """A context in which no other thread or process sending with the key is inside its own ``hold``."""
        ...

    def close(self) -> None:
        """Free what the mutex keeps open (a database session); call once, at shutdown."""
        ...


# --- files (SQLite: one machine) ---------------------------------------------------------------
class FileLease:
    """``flock(LOCK_EX | LOCK_NB)`` on a lock file; the kernel drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True while this object keeps the locked file open."""
        return self._file is not None

    def try_acquire(self) -> bool:
        """Take the lock without waiting and write our holder label into the file; False if another has it."""
        with self._lock:
            if self._file is not None:
                return True
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - kept open while the lease is held
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(holder_label() + "\n")
            handle.flush()
            self._file = handle
            return True

    def check(self) -> bool:
        """Same as ``held``: a flock cannot be lost while its file stays open in this process."""
        return self.held

    def release(self) -> None:
        """Blank the holder label, unlock and close the file; a no-op if not held."""
        with self._lock:
            if self._file is None:
                return
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
                self._file.flush()
                fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def holder(self) -> str | None:
        """The label the current holder wrote into the lock file; None if empty or unreadable."""
        try:
            return self.path.read_text().strip() or None
        except OSError:
            return None

    def describe(self) -> str:
        """``file lock <path>``, for messages."""
        return f"file lock {self.path}"


class FileMutex:
    """A blocking ``flock`` around each send; a thread lock first, since flock is per open file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the thread lock, then block on an exclusive flock of the file until the block ends."""
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def close(self) -> None:
        """Nothing to free: each ``hold`` opens and closes its own file."""
        pass


# --- PostgreSQL (many machines) -----------------------------------------------------------------
class _PgSession:
    """One dedicated connection (advisory locks belong to a session), opened lazily, reopened after loss."""

    def __init__(self, engine: Engine, application_name: str) -> None:
        # A separate engine without a pool: the connection is never shared or recycled behind our back.
        self._engine = create_engine(
            engine.url, poolclass=NullPool, connect_args={"application_name": application_name[:63]}
        )
        self.connection: Connection | None = None

    def connect(self) -> Connection:
        if self.connection is None:
            self.connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        return self.connection

    def scalar(self, sql: str, **params: Any) -> Any:
        return self.connect().execute(text(sql), params).scalar()

    def execute(self, sql: str) -> None:
        self.connect().execute(text(sql))

    def drop(self) -> None:
        if self.connection is not None:
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = None

    def dispose(self) -> None:
        self.drop()
        self._engine.dispose()


class PgLease:
    """``pg_try_advisory_lock`` on a dedicated connection: the server frees it when that session ends."""

    def __init__(self, engine: Engine, name: str = WRITER_LEASE_NAME) -> None:
        self.key = advisory_key(name)
        self._session = _PgSession(engine, f"provenance writer {holder_label()}")
        self._held = False
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        """True since the last successful acquire, until ``release`` or a failed ``check``; no round trip."""
        return self._held

    def try_acquire(self) -> bool:
        """Try the advisory lock without waiting; False too when the database cannot be reached."""
        with self._lock:
            if self._held:
                return True
            try:
                self._held = bool(self._session.scalar("SELECT pg_try_advisory_lock(:k)", k=self.key))
            except Exception as exc:  # the database is unreachable: not the leader
                log.debug("writer lease: %s", exc)
                self._session.drop()
                self._held = False
            return self._held

    def check(self) -> bool:
        """Ping the lease's session; if it is gone the server has freed the lock, so this is False."""
        with self._lock:
            if not self._held:
                return False
            try:
                self._session.scalar("SELECT 1")
            except Exception:
                self._session.drop()  # the session (and with it the lock) is gone
                self._held = False
            return self._held

    def release(self) -> None:
        """Unlock (errors ignored) and close the dedicated connection and its engine."""
        with self._lock:
            if self._held:
                with contextlib.suppress(Exception):
                    self._session.scalar("SELECT pg_advisory_unlock(:k)", k=self.key)
            self._held = False
            self._session.dispose()

    def holder(self) -> str | None:
        """The holder's host and pid, read from the application name of the session holding the lock.

        None if nobody holds it or the database cannot be reached.
        """
        try:
            name = self._session.scalar(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = :k LIMIT 1",
                k=self.key,
            )
        except Exception:
            self._session.drop()
            return None
        return str(name).removeprefix("provenance writer ") if name else None

    def describe(self) -> str:
        """``PostgreSQL advisory lock``, for messages."""
        return "PostgreSQL advisory lock"


class PgMutex:
    """``pg_advisory_lock`` / ``pg_advisory_unlock`` around each send, keyed by the sending address."""

    def __init__(self, engine: Engine, name: str, timeout_s: float = 30.0) -> None:
        self.key = advisory_key(name)
        self.timeout_ms = int(timeout_s * 1000)
        self._session = _PgSession(engine, f"provenance sender {holder_label()}")
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the advisory lock for the block, waiting at most ``timeout_s``.

        Raises ``ChainError`` if the lock cannot be taken (timeout or database unreachable).
        """
        with self._lock:
            try:
                self._session.execute(f"SET lock_timeout = {self.timeout_ms}")
                self._session.scalar("SELECT pg_advisory_lock(:k)", k=self.key)
            except Exception as exc:
                self._session.drop()
                raise ChainError(f"Could not take the transaction lock in the database: {exc}") from None
            try:
                yield
            finally:
                try:
                    self._session.scalar("SELECT pg_advisory_unlock(:k)", k=self.key)
                except Exception:
                    self._session.drop()  # closing the session frees the lock too

    def close(self) -> None:
        """Close the dedicated connection and its engine."""
        self._session.dispose()


def _lock_base(engine: Engine, data_dir: Path) -> Path:
    """Where a file-locked database keeps its lock files: next to the SQLite file itself, so every
    process using that database finds the same locks, whatever its data dir."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        return Path(database).expanduser().resolve()
    return data_dir / "provenance"


def open_writer_lease(engine: Engine, data_dir: Path) -> WriterLease:
    """The writer lease for this database: an advisory lock on PostgreSQL, a file lock otherwise
    (``<database file>.writer.lock``, by default ``<data_dir>/provenance.db.writer.lock``)."""
    if engine.dialect.name == "postgresql":
        return PgLease(engine)
    base = _lock_base(engine, data_dir)
    return FileLease(base.with_name(base.name + ".writer.lock"))


def open_send_mutex(engine: Engine, data_dir: Path, address: str) -> SendMutex:
    """The mutex every process sending from ``address`` shares."""
    if engine.dialect.name == "postgresql":
        return PgMutex(engine, f"provenance:nonce:{address.lower()}")
    base = _lock_base(engine, data_dir)
    return FileMutex(base.with_name(f"{base.name}.nonce-{address.lower()}.lock"))


class ChainWriting:
    """What one process holds to write to the chain safely: the writer lease and its senders' mutexes."""

    def __init__(self, lease: WriterLease, mutexes: list[SendMutex]) -> None:
        self.lease = lease
        self.mutexes = mutexes

    def close(self) -> None:
        """Release the writer lease and close every send mutex."""
        self.lease.release()
        for mutex in self.mutexes:
            mutex.close()


def open_chain_writing(engine: Engine, data_dir: Path, senders: list[Any]) -> ChainWriting:
    """The lease for this database, and a shared send mutex on each distinct sender (``TxSender``) given."""
    mutexes: list[SendMutex] = []
    seen: set[int] = set()
    for sender in senders:
        if sender is None or id(sender) in seen or getattr(sender, "mutex", None) is not None:
            continue
        seen.add(id(sender))
        sender.mutex = open_send_mutex(engine, data_dir, sender.address)
        mutexes.append(sender.mutex)
    return ChainWriting(open_writer_lease(engine, data_dir), mutexes)
