"""``Idempotency-Key`` for ``POST /v1/certify`` and ``POST /v1/generations``: a retry never makes a second record.

The first request with a key claims ``(account, endpoint, key)`` in the database (a primary key, so
two instances racing on one key cannot both win) together with the SHA-256 of what was sent. When it
succeeds its answer (status and JSON body) is stored; for 24 hours every request with the same key,
account and body gets that answer again (header ``Idempotent-Replayed: true``), without a second
record or job. A request with the same key and a different body is refused (422
``idempotency_key_reused``). A retry that arrives while the first is still running waits for it;
after ``wait_s`` it gets 409 ``idempotency_key_in_progress`` with ``Retry-After``. A request that
fails stores nothing, so it can be retried with the same key; a claim left by a process that died
is taken over after ``lease_s``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from provenance.db.models import IdempotencyKey, utcnow
from provenance.errors import InputError, ProvenanceError

log = logging.getLogger(__name__)

Answer = TypeVar("Answer", bound=BaseModel)

HEADER = "Idempotency-Key"
TTL_S = 24 * 3600
_KEY = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII without spaces, as the IETF draft's examples


class IdempotencyKeyReusedError(ProvenanceError):
    """The key was used with a different request within its lifetime."""

    code = "idempotency_key_reused"


class IdempotencyInProgressError(ProvenanceError):
    """The first request with this key is still running after the wait (``retry_after_s`` says when to retry)."""

    code = "idempotency_key_in_progress"

    def __init__(self, detail: str, *, retry_after_s: int = 1) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


def request_digest(*parts: object) -> str:
    """The SHA-256 that says whether two requests are the same: JSON of ``parts`` (keys sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str) -> str:
    """``key`` if it is a valid ``Idempotency-Key`` (1 to 255 printable ASCII characters, no spaces)."""
    if not _KEY.fullmatch(key):
        raise InputError("Idempotency-Key must be 1 to 255 printable ASCII characters without spaces.")
    return key


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)  # SQLite drops the zone


@dataclass(frozen=True)
class Outcome:
    """An answer under a key: the status and JSON body, and whether it was replayed from an earlier request."""

    status_code: int
    body: dict[str, Any]
    replayed: bool


class IdempotencyStore:
    """The claimed keys and their stored answers, as ``IdempotencyKey`` rows in the database."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        ttl_s: float = TTL_S,
        wait_s: float = 60.0,
        lease_s: float = 600.0,
        poll_s: float = 0.05,
    ) -> None:
        self._sessions = sessions
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.lease_s = lease_s
        self.poll_s = poll_s

    def _claim(self, account_id: str, endpoint: str, key: str, digest: str) -> Outcome | None:
        """None when this request claimed the key (it runs); the stored answer when one is there."""
        deadline = time.monotonic() + self.wait_s
        while True:
            now = utcnow()
            try:
                with self._sessions.begin() as session:
                    session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at < now))
                    session.add(
                        IdempotencyKey(
                            account_id=account_id,
                            endpoint=endpoint,
                            key=key,
                            request_sha256=digest,
                            created_at=now,
                            expires_at=now + dt.timedelta(seconds=self.ttl_s),
                        )
                    )
                return None
            except IntegrityError:
                pass  # the key is taken: by an answer to replay, or by a request still running
            with self._sessions() as session:
                row = session.get(IdempotencyKey, (account_id, endpoint, key))
            if row is None:
                continue  # the other request failed (or expired) meanwhile: claim it again
            if row.request_sha256 != digest:
                raise IdempotencyKeyReusedError(
                    f"Idempotency-Key {key!r} was used with a different request in the last "
                    f"{self.ttl_s / 3600:g} hours; use a new key for a new request."
                )
            if row.status_code is not None:
                return Outcome(row.status_code, row.response or {}, replayed=True)
            if (now - _aware(row.created_at)).total_seconds() > self.lease_s:
                log.warning("taking over idempotency key %r of %s: its first request never finished", key, endpoint)
                with self._sessions.begin() as session:
                    _delete_unfinished(session, account_id, endpoint, key)
                continue
            if time.monotonic() > deadline:
                raise IdempotencyInProgressError(
                    f"A request with Idempotency-Key {key!r} is still running; retry shortly.", retry_after_s=2
                )
            time.sleep(self.poll_s)

    def _release(self, account_id: str, endpoint: str, key: str) -> None:
        try:
            with self._sessions.begin() as session:
                _delete_unfinished(session, account_id, endpoint, key)
        except Exception:  # the request's own error matters more; the lease frees the key later
            log.warning("could not release idempotency key %r of %s", key, endpoint, exc_info=True)

    def _complete(self, account_id: str, endpoint: str, key: str, status_code: int, body: dict[str, Any]) -> None:
        with self._sessions.begin() as session:
            row = session.get(IdempotencyKey, (account_id, endpoint, key))
            if row is not None:
                row.status_code = status_code
                row.response = body

    def run(
        self,
        *,
        account_id: str,
        endpoint: str,
        key: str,
        digest: str,
        call: Callable[[], tuple[int, dict[str, Any]]],
    ) -> Outcome:
        """Run ``call`` once per (account, endpoint, key); later requests get its answer back."""
        check_key(key)
        stored = self._claim(account_id, endpoint, key, digest)
        if stored is not None:
            return stored
        try:
            status_code, body = call()
        except BaseException:
            self._release(account_id, endpoint, key)  # nothing stored: the client may retry with this key
            raise
        self._complete(account_id, endpoint, key, status_code, body)
        return Outcome(status_code, body, replayed=False)


def respond(
    sessions: sessionmaker[Session],
    *,
    account_id: str,
    endpoint: str,
    key: str,
    digest: str,
    call: Callable[[], tuple[int, dict[str, Any]]],
) -> JSONResponse:
    """The route's answer under an ``Idempotency-Key``: the first answer, replayed for a retry."""
    outcome = IdempotencyStore(sessions).run(
        account_id=account_id, endpoint=endpoint, key=key, digest=digest, call=call
    )
    return JSONResponse(
        outcome.body,
        status_code=outcome.status_code,
        headers={HEADER: key, "Idempotent-Replayed": "true" if outcome.replayed else "false"},
    )


class Idempotent:
    """One request's ``Idempotency-Key`` (or none): the route's work runs once per key, account and request.

    The routes that create something (``POST /v1/certify``, ``POST /v1/generations``) get one from the
    ``IdempotencyDep`` dependency and hand it their work; without a key the work simply runs.
    """

    def __init__(self, sessions: sessionmaker[Session], key: str | None) -> None:
        self._sessions = sessions
        self.key = key

    def run(
        self,
        work: Callable[[], Answer],
        *,
        account_id: str,
        endpoint: str,
        status_code: int,
        digest: Callable[[], str],
    ) -> Answer | JSONResponse:
        """``work()``'s answer; under a key, the first answer with ``status_code`` (replayed for a retry).

        ``digest`` (called only when a key was sent) says what the request was: ``request_digest(...)``.
        """
        if self.key is None:
            return work()
        return respond(
            self._sessions,
            account_id=account_id,
            endpoint=endpoint,
            key=self.key,
            digest=digest(),
            call=lambda: (status_code, work().model_dump(mode="json")),
        )


def _delete_unfinished(session: Session, account_id: str, endpoint: str, key: str) -> None:
    """Free a claim whose request never stored an answer (a finished one is kept for replays)."""
    session.execute(
        delete(IdempotencyKey).where(
            IdempotencyKey.account_id == account_id,
            IdempotencyKey.endpoint == endpoint,
            IdempotencyKey.key == key,
            IdempotencyKey.status_code.is_(None),
        )
    )
