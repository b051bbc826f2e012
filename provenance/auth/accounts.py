"""``AccountRepository``: accounts and API keys in the database, and who a key belongs to."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from provenance.auth.keys import ADMIN_SCOPE, SCOPES, hash_key, hash_matches, key_id_of, new_key
from provenance.db.models import Account, ApiKey, utcnow
from provenance.errors import AuthenticationError, InputError, NotFoundError

# last_used_at is for people reading `apikey list`: minute precision is plenty and saves a write per request.
_TOUCH_EVERY_S = 60.0


@dataclass(frozen=True)
class Caller:
    """An authenticated request: the key that was sent and the account behind it."""

    account_id: str
    account_name: str
    key_id: str
    scopes: frozenset[str]
    rate_per_min: int | None  # None: the settings' default

    @property
    def is_admin(self) -> bool:
        """Whether the caller holds the admin scope."""
        return ADMIN_SCOPE in self.scopes

    def has(self, scope: str) -> bool:
        """``admin`` includes every other scope: the operator's key can do anything."""
        return scope in self.scopes or self.is_admin

    def may_act_for(self, account_id: str | None) -> bool:
        """Own resources, or anyone's with an admin key (records from before accounts have none)."""
        return self.is_admin or (account_id is not None and account_id == self.account_id)


@dataclass(frozen=True)
class KeyInfo:
    """A key as ``apikey list`` shows it: never the secret, which is not stored."""

    key_id: str
    name: str
    account_id: str
    account_name: str
    scopes: list[str]
    rate_per_min: int | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class AccountRepository:
    """Accounts and their API keys in the database."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    # --- accounts ---------------------------------------------------------------------------
    def account_named(self, name: str) -> Account | None:
        """An account by name."""
        with self._sessions() as session:
            return session.scalars(select(Account).where(Account.name == name)).first()

    def get_account(self, account_id: str) -> Account | None:
        """An account by id."""
        with self._sessions() as session:
            return session.get(Account, account_id)

    def ensure_account(self, name: str) -> Account:
        """The account with this name, created if new (two processes racing both get the same one)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InputError("An account name needs 1 to 100 characters.")
        existing = self.account_named(name)
        if existing is not None:
            return existing
        try:
            with self._sessions.begin() as session:
                account = Account(id=secrets.token_hex(16), name=name, created_at=utcnow())
                session.add(account)
            return account
        except IntegrityError:
            found = self.account_named(name)
            if found is None:
                raise
            return found

    def is_admin_account(self, account_id: str) -> bool:
        """Whether the account holds an unrevoked admin key: the operator's, exempt from per-account limits."""
        with self._sessions() as session:
            scopes = session.scalars(
                select(ApiKey.scopes).where(ApiKey.account_id == account_id, ApiKey.revoked_at.is_(None))
            ).all()
        return any(ADMIN_SCOPE in (row or []) for row in scopes)

    # --- keys -------------------------------------------------------------------------------
    def create_key(
        self, account_id: str, scopes: list[str], *, name: str, rate_per_min: int | None = None
    ) -> tuple[KeyInfo, str]:
        """A new key for an account: ``(info, key)``. Only the key's hash is written."""
        unknown = set(scopes) - set(SCOPES)
        if unknown or not scopes:
            raise InputError(f"Scopes must be some of {', '.join(SCOPES)}.")
        if rate_per_min is not None and rate_per_min < 0:
            raise InputError("A rate cannot be negative (0 means unlimited).")
        key_id, key = new_key()
        with self._sessions.begin() as session:
            account = session.get(Account, account_id)
            if account is None:
                raise NotFoundError(f"No account {account_id!r}.")
            row = ApiKey(
                id=key_id,
                account_id=account_id,
                name=name[:100],
                key_hash=hash_key(key),
                scopes=list(scopes),
                rate_per_min=rate_per_min,
                created_at=utcnow(),
            )
            session.add(row)
            info = _info(row, account)
        return info, key

    def authenticate(self, key: str) -> Caller:
        """The caller behind a key; AuthenticationError (401) for anything else."""
        key_id = key_id_of(key.strip())
        if key_id is None:
            raise AuthenticationError("That is not a provenance API key (pvk_...).", invalid_token=True)
        with self._sessions() as session:
            found = session.execute(
                select(ApiKey, Account).join(Account, Account.id == ApiKey.account_id).where(ApiKey.id == key_id)
            ).first()
        # Compare the hash before saying anything about the key id, so only its holder learns it was revoked.
        if found is None or not hash_matches(key.strip(), found[0].key_hash):
            raise AuthenticationError("Unknown API key.", invalid_token=True)
        row, account = found
        if row.revoked_at is not None:
            raise AuthenticationError(f"API key {key_id} was revoked.", invalid_token=True)
        self._touch(key_id)
        return Caller(
            account_id=account.id,
            account_name=account.name,
            key_id=row.id,
            scopes=frozenset(row.scopes),
            rate_per_min=row.rate_per_min,
        )

    def list_keys(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        """Every API key with its account, oldest first."""
        with self._sessions() as session:
            query = select(ApiKey, Account).join(Account, Account.id == ApiKey.account_id).order_by(ApiKey.created_at)
            if not include_revoked:
                query = query.where(ApiKey.revoked_at.is_(None))
            return [_info(row, account) for row, account in session.execute(query).all()]

    def revoke(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent); requests with it get 401 from then on."""
        with self._sessions.begin() as session:
            row = session.get(ApiKey, key_id.strip().removeprefix("pvk_")[:12])
            if row is None:
                raise NotFoundError(f"No API key {key_id!r} (see `provenance apikey list`).")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
            account = session.get(Account, row.account_id)
            assert account is not None
            return _info(row, account)

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._touched.get(key_id, -_TOUCH_EVERY_S) < _TOUCH_EVERY_S:
                return
            self._touched[key_id] = now
        with self._sessions.begin() as session:
            session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))


def _info(row: ApiKey, account: Account) -> KeyInfo:
    return KeyInfo(
        key_id=row.id,
        name=row.name,
        account_id=account.id,
        account_name=account.name,
        scopes=list(row.scopes),
        rate_per_min=row.rate_per_min,
        created_at=row.created_at,
        last_used_at=row.last_used_at,
        revoked_at=row.revoked_at,
    )
