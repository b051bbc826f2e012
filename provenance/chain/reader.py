"""Read the registry with nothing but an RPC URL: raw JSON-RPC and ``eth_abi``, no web3 contract objects.

This is what a verifier outside the service uses (the bundle verifier is given only an RPC URL
and the registry address it pinned), and what ``Web3Registry`` uses on its hot read paths: web3's
call pipeline costs about 4 ms a call, a plain ``eth_call`` under 1 ms.
"""

from __future__ import annotations

from typing import Any

import httpx
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from provenance.chain import BatchEntry, Entry, KeyStatus
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

    def call(self, to: str, data: bytes) -> bytes:
        """``eth_call`` against the latest block; returns the raw return data."""
        result = self.request("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"])
        return bytes.fromhex(str(result).removeprefix("0x"))


_LOOKUP = function_selector("lookup(bytes32)")
_BATCH = function_selector("batch(bytes32)")
_IS_REGISTERED = function_selector("isRegistered(bytes32,bytes32,bytes32[])")
_WRITER_AT = function_selector("writerAt(address,uint64)")
_IS_WRITER = function_selector("isWriter(address)")
_WRITERS = function_selector("writers()")
_SIGNING_KEY = function_selector("signingKey(bytes32)")
_KEY_VALID_AT = function_selector("keyValidAt(bytes32,uint64)")
_IS_TRUST_ANCHOR = function_selector("isTrustAnchor(bytes32)")
_TRUST_ANCHORS = function_selector("trustAnchors()")
_OWNER = function_selector("owner()")
_PENDING_OWNER = function_selector("pendingOwner()")


class RegistryReader:
    """Views of the ProvenanceRegistry at ``address``, through the RPC at ``rpc_url``."""

    def __init__(self, rpc_url: str, address: str, *, timeout_s: float = 30.0) -> None:
        self.rpc_url = rpc_url
        self.address = to_checksum_address(address)
        self.rpc = JsonRpc(rpc_url, timeout_s)

    def _call(self, data: bytes, types: list[str]) -> tuple[Any, ...]:
        raw = self.rpc.call(self.address, data)
        try:
            return tuple(abi_decode(types, raw))
        except Exception as exc:  # eth_abi raises several kinds; all mean "not our contract"
            raise ChainError(
                f"Unexpected answer from {self.address}: is it a ProvenanceRegistry of this version? ({exc})"
            ) from None

    # --- the chain --------------------------------------------------------------------------------
    def chain_id(self) -> int:
        """The chain id the RPC serves (compare it with the pinned one)."""
        return int(self.rpc.request("eth_chainId", []), 16)

    def block_number(self) -> int:
        return int(self.rpc.request("eth_blockNumber", []), 16)

    def code(self) -> bytes:
        """The runtime code at the registry address (empty if none)."""
        return bytes.fromhex(str(self.rpc.request("eth_getCode", [self.address, "latest"])).removeprefix("0x"))

    def has_code(self) -> bool:
        return len(self.code()) > 0

    def code_hash(self) -> str:
        """keccak256 of the runtime code, hex: compare it with an artifact's ``deployedBytecode``."""
        return keccak(self.code()).hex()

    # --- content ----------------------------------------------------------------------------------
    def lookup(self, sha256_hex: str) -> Entry:
        """What the contract holds for a hash registered on its own."""
        registered, registrant, block_number, timestamp, cid = self._call(
            _LOOKUP + hex32(sha256_hex), ["bool", "address", "uint64", "uint64", "string"]
        )
        if not registered:
            return Entry(registered=False)
        return Entry(True, to_checksum_address(registrant), int(block_number), int(timestamp), cid)

    def batch(self, root_hex: str) -> BatchEntry:
        """What the contract holds for a batch root."""
        anchored, registrant, block_number, timestamp, count, leaves_cid = self._call(
            _BATCH + hex32(root_hex), ["bool", "address", "uint64", "uint64", "uint32", "string"]
        )
        if not anchored:
            return BatchEntry(anchored=False)
        return BatchEntry(
            True, to_checksum_address(registrant), int(block_number), int(timestamp), int(count), leaves_cid
        )

    def is_registered(self, sha256_hex: str, root_hex: str | None = None, proof: list[str] | None = None) -> bool:
        """The contract's own verdict: registered alone (no root), or a proven leaf of an anchored root."""
        root = hex32(root_hex) if root_hex else bytes(32)
        args = abi_encode(
            ["bytes32", "bytes32", "bytes32[]"], [hex32(sha256_hex), root, [hex32(p) for p in proof or []]]
        )
        return bool(self._call(_IS_REGISTERED + args, ["bool"])[0])

    # --- the trust root ---------------------------------------------------------------------------
    def owner(self) -> str:
        """The admin address that publishes writers, keys and trust anchors."""
        return to_checksum_address(self._call(_OWNER, ["address"])[0])

    def pending_owner(self) -> str | None:
        """The address a transfer of ownership waits on, or None."""
        pending = to_checksum_address(self._call(_PENDING_OWNER, ["address"])[0])
        return None if int(pending, 16) == 0 else pending

    def is_writer(self, address: str) -> bool:
        """True if ``address`` may register content now."""
        return bool(self._call(_IS_WRITER + abi_encode(["address"], [to_checksum_address(address)]), ["bool"])[0])

    def writer_at(self, address: str, block: int) -> bool:
        """True if ``address`` was an allowed writer in block ``block``."""
        args = abi_encode(["address", "uint64"], [to_checksum_address(address), block])
        return bool(self._call(_WRITER_AT + args, ["bool"])[0])

    def writers(self) -> list[str]:
        """The addresses allowed to write now."""
        return [to_checksum_address(a) for a in self._call(_WRITERS, ["address[]"])[0]]

    def key_status(self, key_id_hex: str) -> KeyStatus:
        """Whether a signing key was published, from which block, and when it was revoked."""
        published, valid_from, revoked_at = self._call(_SIGNING_KEY + hex32(key_id_hex), ["bool", "uint64", "uint64"])
        if not published:
            return KeyStatus(published=False)
        return KeyStatus(True, int(valid_from), int(revoked_at) or None)

    def key_valid_at(self, key_id_hex: str, block: int) -> bool:
        """True if the key was published and not yet revoked in block ``block``."""
        args = hex32(key_id_hex) + abi_encode(["uint64"], [block])
        return bool(self._call(_KEY_VALID_AT + args, ["bool"])[0])

    def is_trust_anchor(self, fingerprint_hex: str) -> bool:
        """True if the SHA-256 of a C2PA root certificate (DER) is a trust anchor now."""
        return bool(self._call(_IS_TRUST_ANCHOR + hex32(fingerprint_hex), ["bool"])[0])

    def trust_anchors(self) -> list[str]:
        """The trust anchors' SHA-256 fingerprints (lowercase hex, no ``0x``)."""
        return [bytes(f).hex() for f in self._call(_TRUST_ANCHORS, ["bytes32[]"])[0]]
