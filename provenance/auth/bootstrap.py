"""First start: an admin account and its key in ``<data_dir>/admin.key`` (0600).

The embedded default stays two commands: ``make run`` prints where the key is, ``curl`` reads it.
The CLI on the same data dir acts in-process as this account, so what it certifies, generates and
mints belongs to the account behind ``admin.key``.
"""

from __future__ import annotations

import fcntl
import logging
from pathlib import Path

from provenance.auth.accounts import AccountRepository
from provenance.auth.keys import SCOPES
from provenance.errors import AuthenticationError
from provenance.fsutil import write_private

log = logging.getLogger(__name__)
ADMIN_ACCOUNT = "admin"
ADMIN_KEY_FILE = "admin.key"


def bootstrap_admin(accounts: AccountRepository, data_dir: Path) -> str:
    """The admin account's id; creates the account, and a key in ``admin.key``, when missing.

    A key file that no longer works (revoked, or the database was replaced) is replaced by a new
    key for the admin account. The key itself is never logged, only the file's path.
    """
    path = data_dir / ADMIN_KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    # The API and a CLI command may start together on one data dir: one of them writes the file.
    with (data_dir / f".{ADMIN_KEY_FILE}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.is_file():
            try:
                caller = accounts.authenticate(path.read_text().strip())
            except AuthenticationError as exc:
                log.warning("%s does not work with this database (%s); writing a new admin key.", path, exc.detail)
            else:
                return caller.account_id
        account = accounts.ensure_account(ADMIN_ACCOUNT)
        # The operator's own key: every scope, no rate limit (--rate applies to keys made for others).
        info, key = accounts.create_key(account.id, list(SCOPES), name="admin (bootstrap)", rate_per_min=0)
        write_private(path, (key + "\n").encode())
        log.info("Admin API key %s written to %s (mode 0600): send it as 'Authorization: Bearer'.", info.key_id, path)
        return account.id
