"""The anchoring worker: a daemon thread that runs anchoring passes while this process holds the writer lease.

Only one process per database anchors: the holder of the writer lease (``provenance/chain/writer.py``).
A CLI command that made records either becomes the writer for its run or leaves them to the running
one (``register_or_hand_over``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from provenance.anchoring.anchorer import Anchorer
from provenance.db.models import Record, RecordStatus
from provenance.db.repository import RecordRepository
from provenance.errors import ChainUnavailableError, ProvenanceError
from provenance.observability import metrics

if TYPE_CHECKING:
    from provenance.chain.writer import WriterLease

# The logger keeps the name it had before the module was split: log configurations and filters name it.
log = logging.getLogger("provenance.anchoring.anchor")


class AnchorWorker:
    """A daemon thread that anchors while this process holds the writer lease.

    Without the lease it only tries to take it every ``lease_retry_s`` (a database call, no RPC).
    With it, it runs ``Anchorer.run_once`` when woken or every poll interval; an idle pass makes no
    RPC call, and the registry's code is checked every ``health_check_s``. When the chain does not
    answer it backs off exponentially up to ``max_backoff_s``. It logs one line per change of
    state (writer or not, chain down or back), never a traceback per pass.
    """

    def __init__(
        self,
        anchorer: Anchorer,
        *,
        lease: WriterLease | None = None,
        poll_interval_s: float = 0.5,
        health_check_s: float = 5.0,
        lease_retry_s: float = 1.0,
        lease_check_s: float = 5.0,
        max_backoff_s: float = 30.0,
    ) -> None:
        self.anchorer = anchorer
        self.lease = lease
        self.poll_interval_s = poll_interval_s
        self.health_check_s = health_check_s
        self.lease_retry_s = lease_retry_s
        self.lease_check_s = lease_check_s
        self.max_backoff_s = max_backoff_s
        self.failing: str | None = None  # what the last pass failed with, while it keeps failing
        self._failures = 0
        self._following: bool | None = None  # None: not decided yet
        self._next_lease_try = 0.0
        self._last_lease_check = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="anchor-worker", daemon=True)

    @property
    def is_writer(self) -> bool:
        """Whether this process holds the writer lease (always, without a lease)."""
        return self.lease is None or self.lease.held

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def wake(self, _record: Record | None = None) -> None:
        """Run a pass now rather than at the next poll (a new record is waiting)."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (waiting up to 30 s for its pass) and release the lease."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if self.lease is not None:
            self.lease.release()

    def _check_chain(self) -> None:
        """A dev chain restarted without its state has no registry: repair it from the database."""
        registry = self.anchorer.registry
        if self.anchorer.on_chain_reset is not None and not registry.is_deployed():
            log.warning("the registry is gone from the chain (reset dev chain?); redeploying and re-anchoring")
            self.anchorer.on_chain_reset()
            self.anchorer.on_leadership()

    def _lead(self) -> bool:
        """True while this process is the chain writer; takes the lease when it is free."""
        lease = self.lease
        if lease is None:
            return True
        now = time.monotonic()
        if lease.held:
            if now - self._last_lease_check < self.lease_check_s:
                return True
            self._last_lease_check = now
            if lease.check():
                return True
            log.warning("lost the chain writer lease (%s); another process will anchor", lease.describe())
            self._following = None
        if now < self._next_lease_try:
            return False
        self._next_lease_try = now + self.lease_retry_s
        if lease.try_acquire():
            self._last_lease_check = now
            log.info("this process is the chain writer now (%s): it sends every registration", lease.describe())
            self._following = False
            self.anchorer.on_leadership()
            return True
        if self._following is not True:
            holder = lease.holder()
            log.info(
                "another process is the chain writer (%s%s); this one leaves registration to it",
                lease.describe(),
                f", held by {holder}" if holder else "",
            )
            self._following = True
        return False

    def _failed(self, state: str, what: str, exc: BaseException) -> float:
        """Note a failed pass; log only when the state changes. Returns the back-off delay."""
        self._failures += 1
        metrics.DEPENDENCY_ERRORS.labels(dependency=metrics.dependency_of(exc) or "chain", source="anchoring").inc()
        if self.failing != state:
            log.warning("anchoring paused: %s; retrying with back-off up to %.0fs", what, self.max_backoff_s)
            log.debug("anchoring failure", exc_info=exc)
            self.failing = state
        return min(self.poll_interval_s * 2 ** min(self._failures, 16), self.max_backoff_s)

    def _run(self) -> None:
        last_check = time.monotonic()
        while not self._stop.is_set():
            if not self._lead():
                self._stop.wait(min(self.lease_retry_s, self.poll_interval_s * 5))
                continue
            delay = self.poll_interval_s
            try:
                if time.monotonic() - last_check > self.health_check_s:
                    last_check = time.monotonic()
                    self._check_chain()
                self.anchorer.run_once()
                if self.failing is not None:
                    log.info("anchoring resumed after %d failed passes", self._failures)
                self.failing, self._failures = None, 0
            except ChainUnavailableError as exc:
                delay = self._failed("chain unavailable", f"the chain node does not answer ({exc.detail})", exc)
            except ProvenanceError as exc:
                delay = self._failed(exc.detail, exc.detail, exc)
            except Exception as exc:  # the RPC can fail in many ways; retry after a back-off
                delay = self._failed(type(exc).__name__, f"{type(exc).__name__}: {exc}", exc)
            if self.failing is not None:
                self._stop.wait(delay)  # wakes from new records do not shorten a back-off
            else:
                self._wake.wait(delay)
                self._wake.clear()


def register_or_hand_over(
    anchorer: Anchorer,
    repository: RecordRepository,
    lease: WriterLease,
    record_ids: list[str],
    *,
    wait: bool,
    timeout_s: float,
    say: Callable[[str], None],
) -> dict[str, str]:
    """What a CLI command does with the records it just made (``drive_registration`` over their statuses)."""

    def statuses() -> dict[str, str]:
        found = {rid: repository.get(rid) for rid in record_ids}
        return {rid: (r.status if r is not None else "missing") for rid, r in found.items()}

    return drive_registration(anchorer, lease, statuses, wait=wait, timeout_s=timeout_s, say=say, what="these records")


def drive_registration(
    anchorer: Anchorer,
    lease: WriterLease,
    statuses: Callable[[], dict[str, str]],
    *,
    wait: bool,
    timeout_s: float,
    say: Callable[[str], None],
    what: str,
) -> dict[str, str]:
    """Register what a CLI command just wrote as pending (records, or lineage rows the anchorer's followers take).

    If no other process is the chain writer, this one becomes it for its run: it anchors (and, with ``wait``,
    waits until every status is registered or failed), then releases the lease. Otherwise it sends nothing, says in
    one line that the running writer registers ``what``, and with ``wait`` waits for that. A chain failure is said
    in one line too; the rows stay pending for the next writer. Returns the last statuses.
    """

    def done(current: dict[str, str]) -> bool:
        return all(s in (RecordStatus.REGISTERED, RecordStatus.FAILED) for s in current.values())

    deadline = time.monotonic() + timeout_s
    if lease.try_acquire():
        try:
            anchorer.on_leadership()
            while True:
                try:
                    anchorer.run_once()
                except ProvenanceError as exc:
                    say(f"registration not finished: {exc.detail}; left pending for the next chain writer")
                    return statuses()
                current = statuses()
                if done(current) or not wait or time.monotonic() > deadline:
                    return current
                time.sleep(0.2)
        finally:
            lease.release()
    holder = lease.holder()
    say(
        "a running service is the chain writer for this database"
        + (f" ({holder})" if holder else "")
        + f": it registers {what}"
    )
    while True:
        current = statuses()
        if done(current) or not wait or time.monotonic() > deadline:
            return current
        time.sleep(0.2)
