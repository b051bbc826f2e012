"""API key format, hashing and parsing of the CLI's ``--scopes`` and ``--rate``.

A key reads ``pvk_<key id>_<secret>``: the prefix makes a leaked key recognisable (secret
scanners, logs), the 12-hex-digit key id is public (listings, revocation) and finds the row, and
the secret is 256 random bits. Because the key has that much entropy, a single SHA-256 is enough
to store it safely: a slow password hash protects guessable secrets, which these are not.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

KEY_PREFIX = "pvk_"
SCOPES = ("certify", "generate", "mint", "verify", "train", "admin")
ADMIN_SCOPE = "admin"
_KEY = re.compile(r"^pvk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_RATE = re.compile(r"^\s*(\d+)\s*(?:/\s*(s|sec|second|m|min|minute))?\s*$")


def new_key() -> tuple[str, str]:
    """A fresh ``(key_id, key)``; the key is shown once and never stored."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    """The stored form of an API key: hex SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id inside a well-formed key, or None."""
    match = _KEY.match(key)
    return match.group(1) if match else None


def hash_matches(key: str, stored_hash: str) -> bool:
    """Whether a key matches a stored hash (constant time)."""
    return hmac.compare_digest(hash_key(key), stored_hash)


def parse_scopes(text: str) -> list[str]:
    """``certify,generate`` -> ``["certify", "generate"]``; unknown names raise ValueError."""
    scopes = [s.strip().lower() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        given = ", ".join(unknown) or "(none given)"
        raise ValueError(f"unknown scope {given}: use a comma list of {', '.join(SCOPES)}")
    return sorted(set(scopes), key=SCOPES.index)


def parse_rate(text: str) -> int:
    """``120/min``, ``120`` (per minute) or ``2/s`` -> requests per minute; 0 means unlimited."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"bad rate {text!r}: use N/min (or N/s); 0 means unlimited")
    count, unit = int(match.group(1)), match.group(2) or "min"
    return count * 60 if unit.startswith("s") else count
