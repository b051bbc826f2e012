"""Plain JSON-RPC for the registry reads: one HTTP client, ``eth_call`` at a block, ABI helpers.

The lowest layer of the chain readers (``reader.py``): no web3, no contract objects, so a verifier
outside the service needs nothing but an RPC URL.
"""

from __future__ import annotations

from typing import Any

import httpx
from eth_utils import keccak

from provenance.errors import ChainError, ChainUnavailableError, InputError


def function_selector(signature: str) -> bytes:
    """The 4-byte selector of a function signature such as ``lookup(bytes32)``."""
    return keccak(text=signature)[:4]


def hex32(value: str) -> bytes:
    """32 bytes from hex with or without ``0x`` (a SHA-256, key id, fingerprint or Merkle node)."""
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise InputError(f"Not a hex string: {value!r}.") from None
    if len(raw) != 32:
        raise InputError(f"Expected 32 bytes of hex, got {len(raw)}: {value!r}.")
    return raw


class JsonRpc:
    """Plain JSON-RPC over HTTP; every failure (dead node, RPC error) is a ``ChainError``."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self._http = httpx.Client(timeout=timeout_s)

    def request(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC call; returns its ``result``."""
        payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            reply = self._http.post(self.url, json=payload).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ChainUnavailableError(f"The chain RPC at {self.url} did not answer: {exc}") from None
        if not isinstance(reply, dict) or ("error" not in reply and "result" not in reply):
            raise ChainError(f"The chain RPC at {self.url} sent a malformed reply.")
        if "error" in reply:
            error = reply["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise ChainError(f"{method} failed: {message}")
        return reply["result"]

    def call(self, to: str, data: bytes, block: int | str = "latest") -> bytes:
        """``eth_call`` at ``block`` (a number or a tag, default ``latest``); returns the raw return data."""
        result = self.request("eth_call", [{"to": to, "data": "0x" + data.hex()}, block_tag(block)])
        return bytes.fromhex(str(result).removeprefix("0x"))


def block_tag(block: int | str) -> str:
    """A JSON-RPC block parameter: a number as hex quantity, a tag (``latest``, ``finalized``) as is."""
    return hex(block) if isinstance(block, int) else block
