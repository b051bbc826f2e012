"""``Registry`` over web3.py: deploy, register (one hash or a Merkle root), look up, follow transactions."""

from __future__ import annotations

from typing import Any

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import TransactionNotFound

from provenance.chain import BatchEntry, Entry, KeyStatus, TxOutcome
from provenance.chain.artifacts import load_artifact
from provenance.chain.reader import RegistryReader
from provenance.chain.rpc import JsonRpc, function_selector
from provenance.chain.transactions import TxSender, rpc_errors
from provenance.errors import ChainError, ChainUnavailableError, ConfigurationError

REGISTRY = "ProvenanceRegistry"
ZERO_ADDRESS = "0x" + "00" * 20

# Re-exported: older callers import the RPC helpers from here.
__all__ = [
    "REGISTRY",
    "ZERO_ADDRESS",
    "JsonRpc",
    "Web3Registry",
    "connect",
    "deploy_registry",
    "function_selector",
    "load_account",
]


def connect(rpc_url: str, timeout_s: float = 30.0) -> Web3:
    """A web3 client for ``rpc_url``, probed once so that a dead RPC fails here, clearly."""
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout_s}))
    try:
        w3.eth.chain_id  # noqa: B018 - a probe: fails fast on a dead RPC
    except Exception as exc:
        raise ConfigurationError(f"The chain RPC at {rpc_url} does not answer: {exc}") from None
    return w3


def deploy_registry(
    w3: Web3,
    account: LocalAccount,
    timeout_s: float = 120.0,
    *,
    owner: str | None = None,
    writer: str | None = None,
) -> tuple[str, int]:
    """Deploy ProvenanceRegistry from ``account``; returns (address, block number).

    ``owner`` and ``writer`` default to the deploying account; pass ``writer=ZERO_ADDRESS`` for none.
    """
    return TxSender(w3, account).deploy(
        load_artifact(REGISTRY), owner or account.address, writer or account.address, timeout_s=timeout_s
    )


class Web3Registry:
    """The registry contract at ``address``, writing through ``sender``.

    Satisfies ``provenance.chain.Registry`` (and so ``ChainReader``): its reads go through a
    ``RegistryReader``, the same code a standalone verifier runs.
    """

    def __init__(
        self, w3: Web3, address: str, account: LocalAccount | None, *, rpc_url: str, sender: TxSender | None = None
    ) -> None:
        self.w3 = w3
        self.rpc_url = rpc_url
        self.address = Web3.to_checksum_address(address)
        self.account = account
        self.sender = sender or (TxSender(w3, account) if account is not None else None)
        self.chain_id = int(w3.eth.chain_id)
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact(REGISTRY)["abi"])
        # Reads go through plain JSON-RPC (see reader.py): the same code a standalone verifier runs.
        self.reader = RegistryReader(rpc_url, self.address)
        self._http = httpx.Client(timeout=30.0)  # JSON-RPC batches: many receipts in one request

    @property
    def abi(self) -> list[dict[str, Any]]:
        """The registry contract's ABI (from the committed artifact)."""
        return load_artifact(REGISTRY)["abi"]

    def rebind(self, address: str) -> None:
        """Point at a freshly deployed registry (a reset dev chain)."""
        self.address = Web3.to_checksum_address(address)
        self.contract = self.w3.eth.contract(address=self.address, abi=self.abi)
        self.reader = RegistryReader(self.rpc_url, self.address)

    def _require_sender(self) -> TxSender:
        if self.sender is None:
            raise ConfigurationError("No chain key configured: set CHAIN_PRIVATE_KEY or CHAIN_KEY_FILE.")
        return self.sender

    def is_deployed(self) -> bool:
        """True if there is contract code at the registry address."""
        return self.reader.has_code()

    def block_number(self) -> int:
        """The chain's latest block number."""
        return self.reader.block_number()

    def next_nonce(self) -> int:
        """The account's next nonce, counting transactions still pending."""
        assert self.account is not None
        with rpc_errors("reading the nonce"):
            return int(self.w3.eth.get_transaction_count(self.account.address, "pending"))

    # --- writes ---------------------------------------------------------------------------
    def submit(self, sha256_hex: str, cid: str, nonce: int | None = None) -> str:
        """Send ``register(hash, cid)``; returns the transaction hash without waiting for it."""
        return self._require_sender().call(
            self.contract.functions.register(bytes.fromhex(sha256_hex), cid), nonce=nonce
        )[0]

    def submit_many(self, items: list[tuple[str, str]]) -> list[str | ChainError]:
        """Send ``register(hash, cid)`` for each (sha256, cid) with consecutive nonces, without waiting.

        One result per item: the transaction hash, or the ``ChainError`` that kept it from going out.
        """
        sender = self._require_sender()
        txs = [sender.encode(self.contract.functions.register(bytes.fromhex(sha), cid)) for sha, cid in items]
        return [r if isinstance(r, ChainError) else r[0] for r in sender.send_many(txs, label="registry")]

    def submit_batch(self, root_hex: str, leaves_cid: str, count: int) -> str:
        """Send ``anchorBatch(root, leavesCid, count)``; returns the transaction hash."""
        function = self.contract.functions.anchorBatch(bytes.fromhex(root_hex.removeprefix("0x")), leaves_cid, count)
        return self._require_sender().call(function, label="registry")[0]

    def replace(self, tx_hash: str) -> str | None:
        """Send a stuck transaction again, same nonce, higher fee; None if there is nothing to replace."""
        replaced = self._require_sender().replace(tx_hash, label="registry")
        return replaced[0] if replaced is not None else None

    # --- transactions ---------------------------------------------------------------------
    def _batch(self, method: str, params: list[list[Any]]) -> list[Any]:
        """One JSON-RPC batch request; the results in order (None where the node has nothing)."""
        if not params:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": method, "params": p} for i, p in enumerate(params)]
        try:
            replies = self._http.post(self.rpc_url, json=payload).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ChainUnavailableError(f"The chain RPC at {self.rpc_url} did not answer: {exc}") from None
        if not isinstance(replies, list):
            raise ChainError(f"The chain RPC at {self.rpc_url} refused a batch request: {str(replies)[:200]}")
        by_id = {reply.get("id"): reply for reply in replies if isinstance(reply, dict)}
        results = []
        for i in range(len(params)):
            reply = by_id.get(i)
            if reply is None or "error" in reply:
                error = reply.get("error") if reply else "no answer"
                raise ChainError(f"{method} failed: {error}")
            results.append(reply.get("result"))
        return results

    def outcomes(self, tx_hashes: list[str]) -> list[TxOutcome | None]:
        """The receipts of many transactions in one request (None: not mined, or unknown)."""
        receipts = self._batch("eth_getTransactionReceipt", [[h] for h in tx_hashes])
        return [
            None
            if receipt is None
            else TxOutcome(success=int(receipt["status"], 16) == 1, block_number=int(receipt["blockNumber"], 16))
            for receipt in receipts
        ]

    def known(self, tx_hashes: list[str]) -> list[bool]:
        """Whether the node knows each transaction (mined or waiting in its pool), in one request."""
        return [tx is not None for tx in self._batch("eth_getTransactionByHash", [[h] for h in tx_hashes])]

    def outcome(self, tx_hash: str) -> TxOutcome | None:
        """The receipt of one transaction (None: not mined, or unknown)."""
        with rpc_errors("reading a receipt"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
        return TxOutcome(success=receipt["status"] == 1, block_number=int(receipt["blockNumber"]))

    def resync_nonce(self) -> None:
        """Read the nonce from the chain again (after a failed send)."""
        if self.sender is not None:
            self.sender.resync()

    def is_known(self, tx_hash: str) -> bool:
        """Whether the node knows the transaction (mined or pending)."""
        with rpc_errors("reading a transaction"):
            try:
                self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                return True
            except TransactionNotFound:
                return False

    # --- reads (live, from the contract) --------------------------------------------------
    def lookup(self, sha256_hex: str) -> Entry:
        """What the contract holds for a hash registered on its own."""
        return self.reader.lookup(sha256_hex)

    def batch(self, root_hex: str) -> BatchEntry:
        """What the contract holds for a batch root."""
        return self.reader.batch(root_hex)

    def is_registered(self, sha256_hex: str, root_hex: str | None = None, proof: list[str] | None = None) -> bool:
        """The contract's own verdict: registered alone (no root), or a proven leaf of an anchored root."""
        return self.reader.is_registered(sha256_hex, root_hex, proof)

    def owner(self) -> str:
        """The registry's owner (the admin key)."""
        return self.reader.owner()

    def is_writer(self, address: str) -> bool:
        """True if ``address`` may register content now."""
        return self.reader.is_writer(address)

    def writer_at(self, address: str, block: int) -> bool:
        """True if ``address`` was an allowed writer in block ``block``."""
        return self.reader.writer_at(address, block)

    def key_status(self, key_id_hex: str) -> KeyStatus:
        """Publication and revocation blocks of an ECDSA signing key."""
        return self.reader.key_status(key_id_hex)

    def key_valid_at(self, key_id_hex: str, block: int) -> bool:
        """True if the signing key was published and not revoked in block ``block``."""
        return self.reader.key_valid_at(key_id_hex, block)

    def is_trust_anchor(self, fingerprint_hex: str) -> bool:
        """True if a C2PA root's SHA-256 fingerprint is a trust anchor now."""
        return self.reader.is_trust_anchor(fingerprint_hex)

    def trust_anchors(self) -> list[str]:
        """The current trust anchors' SHA-256 fingerprints (hex)."""
        return self.reader.trust_anchors()

    def counts(self) -> tuple[int, int]:
        """(single entries, batches) on chain."""
        with rpc_errors("reading the registry"):
            return int(self.contract.functions.count().call()), int(self.contract.functions.batchCount().call())


def load_account(private_key: str | None) -> LocalAccount | None:
    """An account from a hex private key (as in a key file); None for an empty value."""
    if not private_key:
        return None
    try:
        return Account.from_key(private_key.strip())
    except (ValueError, TypeError):
        raise ConfigurationError("The chain private key is not a valid 32-byte hex key.") from None
