"""Linked accounts: Telegram user -> the API key, encrypted with Fernet under a 0600 key file."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from provenance_bot.settings import BotConfigError

KEY_FILE = "link.key"
DB_FILE = "links.db"


def _load_or_create_key(path: Path) -> bytes:
    """The Fernet key; written once with mode 0600, refused when others may read it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise BotConfigError(
                f"{path} is readable by others (mode {stat.S_IMODE(mode):o}): chmod 600 {path}."
            ) from None
        return path.read_bytes().strip()
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


class LinkStore:
    """Which API key each Telegram user linked. Only ciphertext is written; the key file stays beside it."""

    def __init__(self, data_dir: Path) -> None:
        self._fernet = Fernet(_load_or_create_key(data_dir / KEY_FILE))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(data_dir / DB_FILE, check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS links (user_id INTEGER PRIMARY KEY, key BLOB NOT NULL, account TEXT NOT NULL)"
        )
        self._db.commit()
        os.chmod(data_dir / DB_FILE, 0o600)

    def link(self, user_id: int, api_key: str, account: str) -> None:
        """Bind ``user_id`` to ``api_key`` (replacing an earlier link)."""
        token = self._fernet.encrypt(api_key.encode())
        with self._lock:
            self._db.execute("REPLACE INTO links (user_id, key, account) VALUES (?, ?, ?)", (user_id, token, account))
            self._db.commit()

    def unlink(self, user_id: int) -> bool:
        """Forget the user's key; whether there was one."""
        with self._lock:
            done = self._db.execute("DELETE FROM links WHERE user_id = ?", (user_id,)).rowcount
            self._db.commit()
        return bool(done)

    def key(self, user_id: int) -> str | None:
        """The user's API key, decrypted; None when not linked (or the key file changed)."""
        with self._lock:
            row = self._db.execute("SELECT key FROM links WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            return None
        try:
            return self._fernet.decrypt(row[0]).decode()
        except InvalidToken:
            return None

    def close(self) -> None:
        """Close the database."""
        self._db.close()
