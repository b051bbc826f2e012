"""Read the registry with nothing but an RPC URL: raw JSON-RPC and ``eth_abi``, no web3 contract objects.

This is what a verifier outside the service uses (the bundle verifier is given only RPC URLs
and the registry address it pinned), and what ``Web3Registry`` uses on its hot read paths: web3's
call pipeline costs about 4 ms a call, a plain ``eth_call`` under 1 ms.

``RegistryReader`` reads through one RPC, at ``latest`` or at a fixed block (``at``); the plain
JSON-RPC under it is in ``rpc.py``. Both readers satisfy ``provenance.chain.ChainReader``.
``CrossCheckedReader`` trusts no single RPC: it pins one block (``latest - confirmations``), checks
every endpoint has the same block hash there, makes every read on every endpoint at that block and
raises ``RpcDisagreement`` when any answer differs (or an endpoint fails). ``RegistryReader.trust_history``
rebuilds the writers, signing keys and trust anchors from the registry's events, so whatever the owner
(or anyone holding the owner's key) added on chain can be listed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from provenance.chain import BatchEntry, Entry, KeyStatus
from provenance.chain.rpc import JsonRpc, block_tag, function_selector, hex32
from provenance.errors import ChainError, ChainUnavailableError, InputError

# Re-exported: callers import the RPC helpers from here.
__all__ = [
    "CrossCheckedReader",
    "JsonRpc",
    "RegistryReader",
    "RpcDisagreement",
    "TrustHistory",
    "block_tag",
    "function_selector",
    "hex32",
]


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


# Events (ProvenanceRegistry and OpenZeppelin's Ownable): topic 0 of each.
_WRITER_CHANGED = "0x" + keccak(text="WriterChanged(address,bool)").hex()
_KEY_PUBLISHED = "0x" + keccak(text="KeyPublished(bytes32,uint64)").hex()
_KEY_REVOKED = "0x" + keccak(text="KeyRevoked(bytes32,uint64)").hex()
_ANCHOR_ADDED = "0x" + keccak(text="TrustAnchorAdded(bytes32,uint64)").hex()
_ANCHOR_REMOVED = "0x" + keccak(text="TrustAnchorRemoved(bytes32,uint64)").hex()
_OWNERSHIP_TRANSFERRED = "0x" + keccak(text="OwnershipTransferred(address,address)").hex()
_TRUST_TOPICS = [_WRITER_CHANGED, _KEY_PUBLISHED, _KEY_REVOKED, _ANCHOR_ADDED, _ANCHOR_REMOVED, _OWNERSHIP_TRANSFERRED]


@dataclass
class TrustHistory:
    """The registry's trust root as its events tell it, from the deployment block to ``to_block``.

    ``writers``: address -> [since, until) block ranges (until None: still allowed);
    ``keys``: key id -> (published in block, revoked in block or None);
    ``anchors``: fingerprint -> [added, removed) block ranges. Key ids and fingerprints are lowercase hex.
    """

    from_block: int
    to_block: int
    writers: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)
    keys: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    anchors: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)


def _topic_hex(topic: str) -> str:
    return str(topic).removeprefix("0x").lower()


def _open_range(ranges: list[tuple[int, int | None]], block: int) -> None:
    if not ranges or ranges[-1][1] is not None:
        ranges.append((block, None))


def _close_range(ranges: list[tuple[int, int | None]], block: int) -> None:
    if ranges and ranges[-1][1] is None:
        ranges[-1] = (ranges[-1][0], block)


class RegistryReader:
    """Views of the ProvenanceRegistry at ``address``, through the RPC at ``rpc_url``.

    Reads are made at ``block`` (a block number) when given, else at ``latest``; ``at(n)`` gives a
    reader of the same RPC fixed at block ``n``.
    """

    def __init__(
        self,
        rpc_url: str,
        address: str,
        *,
        timeout_s: float = 30.0,
        block: int | None = None,
        rpc: JsonRpc | None = None,
    ) -> None:
        self.rpc_url = rpc_url
        self.address = to_checksum_address(address)
        self.rpc = rpc or JsonRpc(rpc_url, timeout_s)
        self.block = block

    @property
    def _tag(self) -> int | str:
        return "latest" if self.block is None else self.block

    def at(self, block: int) -> RegistryReader:
        """The same registry through the same RPC, every read made at block ``block``."""
        return RegistryReader(self.rpc_url, self.address, block=block, rpc=self.rpc)

    def _call(self, data: bytes, types: list[str]) -> tuple[Any, ...]:
        raw = self.rpc.call(self.address, data, self._tag)
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
        """The RPC's latest block number (not the fixed ``block``)."""
        return int(self.rpc.request("eth_blockNumber", []), 16)

    def block_hash(self, number: int) -> str:
        """The hash of block ``number`` on this RPC's chain; ``ChainError`` if it has no such block."""
        block = self.rpc.request("eth_getBlockByNumber", [hex(number), False])
        if not isinstance(block, dict) or not block.get("hash"):
            raise ChainError(f"The chain RPC at {self.rpc_url} has no block {number}.")
        return str(block["hash"]).lower()

    def code(self) -> bytes:
        """The runtime code at the registry address (empty if none)."""
        return self.code_at(self._tag)

    def code_at(self, block: int | str) -> bytes:
        """The runtime code at the registry address in block ``block``."""
        result = self.rpc.request("eth_getCode", [self.address, block_tag(block)])
        return bytes.fromhex(str(result).removeprefix("0x"))

    def has_code(self) -> bool:
        """True if there is contract code at the registry address."""
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

    # --- the trust root's history (events) --------------------------------------------------------
    def logs(self, from_block: int, to_block: int, topics: list[str]) -> list[dict[str, Any]]:
        """The registry's logs with topic 0 in ``topics``, in block order.

        A node that refuses the range (providers cap the blocks or results of one ``eth_getLogs``) is
        asked again for each half, down to single blocks; a node that does not answer at all is not.
        """
        if from_block > to_block:
            return []
        query = {"address": self.address, "fromBlock": hex(from_block), "toBlock": hex(to_block), "topics": [topics]}
        try:
            found = self.rpc.request("eth_getLogs", [query])
        except ChainUnavailableError:
            raise
        except ChainError:
            if from_block == to_block:
                raise
            middle = (from_block + to_block) // 2
            return self.logs(from_block, middle, topics) + self.logs(middle + 1, to_block, topics)
        if not isinstance(found, list):
            raise ChainError(f"The chain RPC at {self.rpc_url} sent a malformed eth_getLogs reply.")
        return found

    def deployment_block(self, to_block: int) -> int:
        """The block the registry was deployed in (binary search on its code), or 0 if the node cannot tell.

        A node without the old state (not an archive node) fails the search; scanning from block 0
        is then slower but loses nothing. ``trust_history`` checks the answer against the
        constructor's ``OwnershipTransferred`` event and scans from 0 when it is not there.
        """
        low, high = 0, to_block
        try:
            if not self.code_at(high):
                return 0
            while low < high:
                middle = (low + high) // 2
                if self.code_at(middle):
                    high = middle
                else:
                    low = middle + 1
        except ChainUnavailableError:
            raise
        except ChainError:
            return 0
        return low

    def trust_history(self, to_block: int | None = None, from_block: int | None = None) -> TrustHistory:
        """Writers, signing keys and trust anchors from the registry's events, up to ``to_block``.

        ``to_block`` defaults to the reader's fixed block, else the latest one; ``from_block`` to the
        deployment block. Everything the owner's key ever did to the trust root is in these events.
        """
        end = to_block if to_block is not None else self.block if self.block is not None else self.block_number()
        start = from_block if from_block is not None else self.deployment_block(end)
        found = self.logs(start, end, _TRUST_TOPICS)
        deployed = any(
            log.get("topics")
            and log["topics"][0] == _OWNERSHIP_TRANSFERRED
            and int(_topic_hex(log["topics"][1]) or "0", 16) == 0
            for log in found
        )
        if start > 0 and not deployed:  # the search was misled (pruned state): scan everything
            start, found = 0, self.logs(0, end, _TRUST_TOPICS)
        history = TrustHistory(from_block=start, to_block=end)
        for log in sorted(found, key=lambda g: (int(g["blockNumber"], 16), int(g.get("logIndex") or "0x0", 16))):
            topics = [_topic_hex(t) for t in log.get("topics") or []]
            if len(topics) < 2:
                continue
            kind, subject, block = "0x" + topics[0], topics[1], int(log["blockNumber"], 16)
            if kind == _WRITER_CHANGED:
                writer = to_checksum_address("0x" + subject[-40:])
                ranges = history.writers.setdefault(writer, [])
                allowed = int(str(log.get("data") or "0x0").removeprefix("0x") or "0", 16) != 0
                (_open_range if allowed else _close_range)(ranges, block)
            elif kind == _KEY_PUBLISHED:
                history.keys[subject] = (block, None)
            elif kind == _KEY_REVOKED and subject in history.keys:
                history.keys[subject] = (history.keys[subject][0], block)
            elif kind == _ANCHOR_ADDED:
                _open_range(history.anchors.setdefault(subject, []), block)
            elif kind == _ANCHOR_REMOVED:
                _close_range(history.anchors.setdefault(subject, []), block)
        return history


T = TypeVar("T")


class RpcDisagreement(ChainError):
    """The RPC endpoints gave different answers, or some failed while others answered.

    Nothing read from the chain can then be relied on; the message names the endpoints and what
    they disagreed on.
    """


def _show(text: str) -> str:
    return text if len(text) <= 160 else text[:157] + "..."


class CrossCheckedReader:
    """The registry read through several RPC endpoints that must all agree, at one pinned block.

    The first read pins a block: ``min(latest over the endpoints) - confirmations`` (never below 0).
    Every endpoint must serve the same chain id and the same block hash at that block; then every
    read is made on every endpoint at that block and the answers compared. Any difference, or an
    endpoint that fails while another answers, raises ``RpcDisagreement``; if every endpoint fails
    the first endpoint's ``ChainError`` is raised as is (no answer at all is not a disagreement).
    The methods are ``RegistryReader``'s, so a caller does not care how many endpoints there are.
    """

    def __init__(
        self, rpc_urls: str | Sequence[str], address: str, *, confirmations: int = 0, timeout_s: float = 30.0
    ) -> None:
        urls = [rpc_urls] if isinstance(rpc_urls, str) else list(rpc_urls)
        urls = list(dict.fromkeys(u.strip() for u in urls if u and u.strip()))  # the same URL twice proves nothing
        if not urls:
            raise InputError("No chain RPC URL given.")
        if confirmations < 0:
            raise InputError(f"--confirmations must be 0 or more, not {confirmations}.")
        self.address = to_checksum_address(address)
        self.confirmations = confirmations
        self.readers = [RegistryReader(url, self.address, timeout_s=timeout_s) for url in urls]
        self.block: int | None = None  # pinned on the first read
        self.block_hash: str | None = None
        self.latest: dict[str, int] = {}
        self._chain_id: int | None = None

    @property
    def rpc_urls(self) -> list[str]:
        """The endpoints read, in order (duplicates dropped)."""
        return [r.rpc_url for r in self.readers]

    def _each(self, what: str, fn: Callable[[RegistryReader], T]) -> dict[str, T]:
        """``fn`` on every endpoint; answers by URL. A failure next to an answer is a disagreement."""
        answers: dict[str, T] = {}
        failures: dict[str, ChainError] = {}
        for reader in self.readers:
            try:
                answers[reader.rpc_url] = fn(reader)
            except RpcDisagreement:
                raise
            except ChainError as exc:
                failures[reader.rpc_url] = exc
        if failures and not answers:
            raise next(iter(failures.values()))
        if failures:
            failed = "; ".join(f"{url} failed ({exc.detail})" for url, exc in failures.items())
            raise RpcDisagreement(
                f"the RPC endpoints disagree on {what}: {failed}, while {', '.join(answers)} answered"
            )
        return answers

    def _agree(self, what: str, fn: Callable[[RegistryReader], T]) -> T:
        answers = self._each(what, fn)
        distinct: dict[str, list[str]] = {}
        for url, value in answers.items():
            distinct.setdefault(repr(value), []).append(url)  # compared in full, shown shortened
        if len(distinct) > 1:
            said = "; ".join(f"{', '.join(urls)} says {_show(shown)}" for shown, urls in distinct.items())
            raise RpcDisagreement(f"the RPC endpoints disagree on {what}: {said}")
        return next(iter(answers.values()))

    def pin(self) -> int:
        """Pin the block every read is made at (once); returns it."""
        if self.block is not None:
            return self.block
        self._chain_id = self._agree("the chain id", lambda r: r.chain_id())
        self.latest = self._each("the latest block", lambda r: r.block_number())
        block = max(min(self.latest.values()) - self.confirmations, 0)
        self.block_hash = self._agree(f"the hash of block {block}", lambda r: r.block_hash(block))
        self.block = block
        self.readers = [r.at(block) for r in self.readers]
        return block

    def confirm(self) -> None:
        """Check again that every endpoint still has the pinned block hash (no reorg while reading)."""
        if self.block is None:
            return
        block = self.block
        now = self._agree(f"the hash of block {block}", lambda r: r.block_hash(block))
        if now != self.block_hash:
            raise RpcDisagreement(
                f"block {block} changed while it was read ({self.block_hash} then {now}): a reorganisation; "
                "verify again, with more --confirmations"
            )

    def _read(self, what: str, fn: Callable[[RegistryReader], T]) -> T:
        block = self.pin()
        return self._agree(f"{what} at block {block}", fn)

    # --- RegistryReader's views -------------------------------------------------------------------
    def chain_id(self) -> int:
        """The chain id every endpoint serves."""
        self.pin()
        assert self._chain_id is not None
        return self._chain_id

    def has_code(self) -> bool:
        """True if there is contract code at the registry address at the pinned block."""
        return self._read("the registry's code", lambda r: r.code_hash()) != keccak(b"").hex()

    def code_hash(self) -> str:
        """keccak256 of the registry's runtime code at the pinned block."""
        return self._read("the registry's code", lambda r: r.code_hash())

    def lookup(self, sha256_hex: str) -> Entry:
        """What the contract holds for a hash registered on its own, at the pinned block."""
        return self._read(f"lookup({sha256_hex[:16]}…)", lambda r: r.lookup(sha256_hex))

    def batch(self, root_hex: str) -> BatchEntry:
        """What the contract holds for a batch root, at the pinned block."""
        return self._read(f"batch({root_hex[:18]}…)", lambda r: r.batch(root_hex))

    def is_registered(self, sha256_hex: str, root_hex: str | None = None, proof: list[str] | None = None) -> bool:
        """The contract's own verdict on a hash (or a proven leaf), at the pinned block."""
        return self._read(f"isRegistered({sha256_hex[:16]}…)", lambda r: r.is_registered(sha256_hex, root_hex, proof))

    def owner(self) -> str:
        """The registry's owner at the pinned block."""
        return self._read("owner()", lambda r: r.owner())

    def is_writer(self, address: str) -> bool:
        """True if ``address`` is an allowed writer at the pinned block."""
        return self._read(f"isWriter({address})", lambda r: r.is_writer(address))

    def writer_at(self, address: str, block: int) -> bool:
        """True if ``address`` was an allowed writer in block ``block``."""
        return self._read(f"writerAt({address}, {block})", lambda r: r.writer_at(address, block))

    def writers(self) -> list[str]:
        """The addresses allowed to write at the pinned block."""
        return self._read("writers()", lambda r: r.writers())

    def key_status(self, key_id_hex: str) -> KeyStatus:
        """Publication and revocation blocks of a signing key, as of the pinned block."""
        return self._read(f"signingKey({key_id_hex[:16]}…)", lambda r: r.key_status(key_id_hex))

    def key_valid_at(self, key_id_hex: str, block: int) -> bool:
        """True if the key was published and not yet revoked in block ``block``."""
        return self._read(f"keyValidAt({key_id_hex[:16]}…, {block})", lambda r: r.key_valid_at(key_id_hex, block))

    def is_trust_anchor(self, fingerprint_hex: str) -> bool:
        """True if a C2PA root's fingerprint is a trust anchor at the pinned block."""
        return self._read(f"isTrustAnchor({fingerprint_hex[:16]}…)", lambda r: r.is_trust_anchor(fingerprint_hex))

    def trust_anchors(self) -> list[str]:
        """The trust anchors' fingerprints at the pinned block."""
        return self._read("trustAnchors()", lambda r: r.trust_anchors())
