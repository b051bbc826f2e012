"""Sending transactions: one nonce sequence per key, gas estimated with headroom, fees bumped on resend.

Every transaction the service sends (registrations, batch roots, NFT mints, deployments) goes
through one ``TxSender`` per account. Its lock hands out nonces one after the other, so
concurrent requests never reuse one; the next nonce is the larger of what the node reports as
pending and what this process already sent, so a restart catches up instead of colliding. Other
processes with the same key are kept out by ``mutex`` (``provenance/chain/writer.py``), a lock
shared through the database or a file, held around choosing the nonce and sending.

``send_many`` sends a burst under one hold: consecutive nonces, one pending-count read, fees read
at most every few seconds, so that many registrations are in flight at once. ``replace`` re-sends a
stuck transaction with the same nonce and a higher fee. Whatever web3 raises comes out as the
service's own errors: ``ChainUnavailableError`` when the node does not answer, ``ChainError``
with a readable reason when it refuses.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

import httpx
from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3Exception, Web3RPCError

from provenance.chain.artifacts import load_artifact
from provenance.errors import ChainError, ChainUnavailableError, ProvenanceError

if TYPE_CHECKING:
    from provenance.chain.writer import SendMutex

GAS_HEADROOM = 1.25  # estimates are exact for the state they ran on; the block may differ a little
FEE_BUMP = 1.125  # a replacement must pay at least 10% more; 12.5% is what nodes commonly ask
FEE_CACHE_S = 2.0  # fees are read again after this long (a burst of sends reads them once)
NONCE_RETRIES = 3  # "nonce too low" (another sender got there first): read the count again, retry


# What the contracts' custom errors mean, in words an operator can act on. ``{label}`` names the
# contract ("registry", "NFT contract"), ``{0}`` is the error's first argument.
_REVERT_MESSAGES = {
    "OwnableUnauthorizedAccount": "only the {label} owner can do this ({0} is not the owner)",
    "OwnableInvalidOwner": "{0} cannot own the {label}",
    "RenounceDisabled": "the {label} cannot be left without an owner",
    "NotWriter": "{0} is not an allowed writer of the registry",
    "NotMinter": "{0} is not a minter of the NFT contract",
    "AlreadyRegistered": "0x{0} is already registered",
    "AlreadyMinted": "0x{0} is already minted",
    "NotRegistered": "0x{0} is not registered",
    "RoyaltyReceiverLocked": "token {0} is minted: its royalty receiver can no longer change",
    "KeyAlreadyPublished": "signing key {0} is already published",
    "KeyNotPublished": "signing key {0} was never published",
    "KeyAlreadyRevoked": "signing key {0} is already revoked",
    "TrustAnchorAlreadyAdded": "trust anchor {0} is already on the registry",
    "TrustAnchorNotFound": "trust anchor {0} is not on the registry",
    "ZeroAddress": "the zero address is not allowed here",
    "EmptyHash": "an all-zero hash is not allowed",
    "EmptyCid": "the CID is empty",
    "EmptyBatch": "a batch needs at least one leaf",
}


@cache
def _custom_errors() -> dict[str, tuple[str, list[str]]]:
    """Selector (hex, no 0x) -> (error name, argument types), from the contracts' ABIs."""
    errors: dict[str, tuple[str, list[str]]] = {}
    for name in ("ProvenanceRegistry", "ProvenanceNFT", "RoyaltySplitter"):
        for item in load_artifact(name)["abi"]:
            if item.get("type") == "error":
                types = [i["type"] for i in item.get("inputs", [])]
                selector = Web3.keccak(text=f"{item['name']}({','.join(types)})")[:4].hex()
                errors[selector] = (item["name"], types)
    return errors


def describe_revert(exc: ContractLogicError, label: str = "contract") -> str:
    """A readable sentence for a revert: custom errors decoded by name, with their arguments."""
    data = exc.data if isinstance(exc.data, str) else None
    if data and data.startswith("0x") and len(data) >= 10:
        known = _custom_errors().get(data[2:10])
        if known is not None:
            name, types = known
            try:
                values = abi_decode(types, bytes.fromhex(data[10:]))
                args = [
                    Web3.to_checksum_address(v) if t == "address" else v.hex() if isinstance(v, bytes) else v
                    for t, v in zip(types, values, strict=True)
                ]
            except Exception:  # malformed revert data: the name alone still helps
                args = []
            template = _REVERT_MESSAGES.get(name)
            if template is not None:
                try:
                    return template.format(*args, label=label)
                except IndexError:  # fewer arguments than the sentence needs
                    pass
            return f"{name}({', '.join(str(a) for a in args)})"
    return str(exc.message or exc)


class ContractRefusedError(ChainError):
    """The contract would revert this transaction (a decoded custom error says why): retrying will not help."""


def rpc_message(exc: BaseException) -> str:
    """The node's own words for an RPC error, on one line."""
    message = getattr(exc, "message", None) or str(exc)
    return " ".join(str(message).split())[:300]


def _is_nonce_clash(exc: BaseException) -> bool:
    text = rpc_message(exc).lower()
    return any(clue in text for clue in ("nonce too low", "replacement transaction underpriced", "already been used"))


@contextlib.contextmanager
def rpc_errors(what: str, label: str = "contract") -> Iterator[None]:
    """Turn whatever web3 and the HTTP stack raise into ``ChainUnavailableError`` / ``ChainError``."""
    try:
        yield
    except ProvenanceError:
        raise
    except ContractLogicError as exc:
        raise ContractRefusedError(f"The {label} refuses this transaction: {describe_revert(exc, label)}.") from None
    except TimeExhausted as exc:
        raise ChainError(f"{what}: {rpc_message(exc)}") from None
    except (OSError, httpx.HTTPError) as exc:  # requests' ConnectionError and Timeout are OSErrors
        raise ChainUnavailableError(f"The chain node does not answer ({what}): {rpc_message(exc)}") from None
    except (Web3RPCError, _NodeRefused) as exc:
        raise ChainError(f"The chain node refused {what}: {rpc_message(exc)}") from None
    except Web3Exception as exc:
        if "connect" in rpc_message(exc).lower():
            raise ChainUnavailableError(f"The chain node does not answer ({what}): {rpc_message(exc)}") from None
        raise ChainError(f"{what} failed: {rpc_message(exc)}") from None


class _NodeRefused(Exception):
    """A JSON-RPC error answer from the node on the raw path (``rpc_errors`` makes it a ``ChainError``)."""

    def __init__(self, message: str, data: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


def _hex_tx(tx: dict[str, Any]) -> dict[str, Any]:
    """A transaction dict as JSON-RPC wants it: quantities as hex strings."""
    out: dict[str, Any] = {}
    for key, value in tx.items():
        if key == "chainId" or (key == "to" and not value):  # a deployment has no recipient
            continue
        if isinstance(value, bytes):
            out[key] = "0x" + value.hex()
        else:
            out[key] = hex(value) if isinstance(value, int) else value
    return out


class TxSender:
    """Signs and sends every transaction from one account: nonces in order, gas with headroom, fees bumped."""

    def __init__(self, w3: Web3, account: LocalAccount, *, mutex: SendMutex | None = None) -> None:
        self.w3 = w3
        self.account = account
        with rpc_errors("reading the chain id"):
            self.chain_id = int(w3.eth.chain_id)
        # The hot path (estimate, send) goes straight to the node over HTTP: web3's request
        # pipeline asks for the chain id again on every call and costs several milliseconds.
        self._url: str | None = getattr(w3.provider, "endpoint_uri", None)
        self._http = httpx.Client(timeout=30.0) if self._url else None
        self.mutex = mutex  # shared with other processes sending from this key; set by the service
        self._lock = threading.Lock()
        self._next_nonce = 0
        self._fee_cache: tuple[float, int, int] | None = None  # (when, base fee, tip)

    @property
    def address(self) -> str:
        """The checksummed address transactions are sent from."""
        return self.account.address

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock, self.mutex.hold() if self.mutex is not None else contextlib.nullcontext():
            yield

    def _fees(self, bump: float, *, fresh: bool = False) -> dict[str, int]:
        now = time.monotonic()
        if fresh or self._fee_cache is None or now - self._fee_cache[0] > FEE_CACHE_S:
            with rpc_errors("reading the fees"):
                latest_base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
                latest_tip = self.w3.eth.max_priority_fee
            self._fee_cache = (now, int(latest_base), int(latest_tip))
        _, base, tip = self._fee_cache
        return {"maxPriorityFeePerGas": int(tip * bump), "maxFeePerGas": int((2 * base + tip) * bump)}

    def _pending_count(self) -> int:
        with rpc_errors("reading the nonce"):
            return int(self.w3.eth.get_transaction_count(self.account.address, "pending"))

    def _rpc(self, method: str, params: list[Any]) -> Any:
        """One raw JSON-RPC call; an error answer raises ``_NodeRefused``, no answer an ``httpx`` error."""
        assert self._http is not None and self._url is not None
        reply = self._http.post(self._url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        try:
            body = reply.json()
        except ValueError:  # a proxy or gateway in front of a dead node answers with an error page
            raise ChainUnavailableError(
                f"The chain RPC at {self._url} answered {reply.status_code} without JSON-RPC."
            ) from None
        if not isinstance(body, dict):
            raise _NodeRefused(f"malformed answer to {method}")
        if "error" in body:
            error = body["error"] if isinstance(body["error"], dict) else {"message": str(body["error"])}
            data = error.get("data")
            raise _NodeRefused(str(error.get("message", error)), data if isinstance(data, str) else None)
        return body.get("result")

    def _estimate(self, tx: dict[str, Any], label: str) -> int:
        if self._http is None:
            with rpc_errors("estimating gas", label):
                return int(self.w3.eth.estimate_gas(tx))  # type: ignore[arg-type]
        call = _hex_tx({k: v for k, v in tx.items() if k in ("from", "to", "data", "value", "nonce")})
        with rpc_errors("estimating gas", label):
            try:
                return int(self._rpc("eth_estimateGas", [call]), 16)
            except _NodeRefused as exc:
                if exc.data or "revert" in exc.message.lower():
                    raise ContractLogicError(exc.message, data=exc.data) from None
                raise

    def _sign_and_send(self, tx: dict[str, Any], fee_bump: float, label: str) -> str:
        """Estimate gas (a refusal raises ``ChainError`` with the decoded reason), add fees, sign, send."""
        if "gas" not in tx:
            tx["gas"] = int(self._estimate(tx, label) * GAS_HEADROOM)
        tx.update(self._fees(fee_bump))
        signed = self.account.sign_transaction(tx)
        try:
            if self._http is None:
                return str(self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex())
            return str(self._rpc("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()]))
        except (Web3RPCError, _NodeRefused) as exc:
            if "already known" in rpc_message(exc).lower():  # this very transaction is in the pool
                return "0x" + bytes(signed.hash).hex()
            raise

    def _send_locked(self, tx: dict[str, Any], nonce: int | None, fee_bump: float, label: str) -> tuple[str, int]:
        explicit = nonce is not None
        if nonce is None:
            nonce = max(self._pending_count(), self._next_nonce)
        for attempt in range(NONCE_RETRIES + 1):
            candidate = {**tx, "from": self.account.address, "chainId": self.chain_id, "nonce": nonce}
            with rpc_errors("sending the transaction", label):
                try:
                    tx_hash = self._sign_and_send(candidate, fee_bump, label)
                except (Web3RPCError, _NodeRefused) as exc:
                    if explicit or attempt == NONCE_RETRIES or not _is_nonce_clash(exc):
                        raise
                    # Another sender used this nonce (a process outside the mutex): take the next free one.
                    nonce = max(self._pending_count(), nonce + 1)
                    continue
            self._next_nonce = max(self._next_nonce, nonce + 1)
            return tx_hash, nonce
        raise ChainError("Could not find a free nonce for the transaction.")  # pragma: no cover - loop returns

    def send(
        self, tx: dict[str, Any], *, nonce: int | None = None, fee_bump: float = 1.0, label: str = "contract"
    ) -> tuple[str, int]:
        """Sign and send; returns (tx hash, nonce). A given ``nonce`` replaces an earlier transaction.

        A transaction the contract would refuse raises ``ChainError`` with the decoded reason;
        ``label`` names the contract in that message.
        """
        with self._exclusive():
            return self._send_locked(dict(tx), nonce, fee_bump, label)

    def send_many(self, txs: list[dict[str, Any]], *, label: str = "contract") -> list[tuple[str, int] | ChainError]:
        """Send a burst with consecutive nonces under one hold of the locks; one result per transaction.

        A transaction the contract refuses gets its ``ChainError`` and uses no nonce. If the node
        stops answering, that transaction and every later one get the ``ChainUnavailableError``.
        """
        results: list[tuple[str, int] | ChainError] = []
        with self._exclusive():
            for tx in txs:
                if results and isinstance(results[-1], ChainUnavailableError):
                    results.append(results[-1])
                    continue
                try:
                    results.append(self._send_locked(dict(tx), None, 1.0, label))
                except ChainError as exc:
                    results.append(exc)
        return results

    def replace(self, tx_hash: str, *, label: str = "contract") -> tuple[str, int] | None:
        """Send a stuck transaction again with the same nonce and a fee at least ``FEE_BUMP`` higher.

        Returns (new hash, nonce), or None when there is nothing to replace (the node no longer has
        it, or its nonce was mined meanwhile).
        """
        with self._exclusive():
            with rpc_errors("reading a pending transaction", label):
                try:
                    old = self.w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
                except TransactionNotFound:
                    return None
            if old.get("blockNumber") is not None:
                return None
            fees = self._fees(1.0, fresh=True)
            old_tip = int(old.get("maxPriorityFeePerGas") or old.get("gasPrice") or 0)
            old_max = int(old.get("maxFeePerGas") or old.get("gasPrice") or 0)
            tip = max(fees["maxPriorityFeePerGas"], math.ceil(old_tip * FEE_BUMP))
            tx: dict[str, Any] = {
                "from": self.account.address,
                "to": old["to"],
                "data": old["input"],
                "value": int(old.get("value") or 0),
                "gas": int(old["gas"]),
                "chainId": self.chain_id,
                "nonce": int(old["nonce"]),
                "maxPriorityFeePerGas": tip,
                "maxFeePerGas": max(fees["maxFeePerGas"], math.ceil(old_max * FEE_BUMP), tip),
            }
            signed = self.account.sign_transaction(tx)
            with rpc_errors("replacing a stuck transaction", label):
                try:
                    new_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()
                except Web3RPCError as exc:
                    if "nonce too low" in rpc_message(exc).lower():
                        return None  # the original (or another replacement) was mined meanwhile
                    raise
            return str(new_hash), int(old["nonce"])

    def resync(self) -> None:
        """Forget the local nonce counter: a transaction was dropped, so the node's count is right again."""
        with self._lock:
            self._next_nonce = 0

    def encode(self, function: Any) -> dict[str, Any]:
        """A contract function call as a bare transaction (to, data); ``send`` fills nonce, gas and fees.

        Encoded directly: web3's ``build_transaction`` asks the node for defaults it then throws away.
        """
        try:
            return {"to": function.address, "data": function._encode_transaction_data(), "value": 0}
        except AttributeError:  # not a bound contract function: the general path
            return self._unsigned(function)

    def _unsigned(self, buildable: Any) -> dict[str, Any]:
        """A contract call or constructor as a bare transaction; ``send`` fills nonce, gas and fees."""
        try:
            # A placeholder gas keeps web3 from estimating here: ``send`` estimates with headroom.
            with rpc_errors("building the transaction"):
                tx = dict(buildable.build_transaction({"from": self.account.address, "gas": 1}))
        except ContractLogicError as exc:
            raise ContractRefusedError(f"The contract refuses this transaction: {exc}") from None
        for key in ("gas", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
            tx.pop(key, None)
        return tx

    def call(
        self, function: Any, *, nonce: int | None = None, fee_bump: float = 1.0, label: str = "contract"
    ) -> tuple[str, int]:
        """Send a contract function call (``contract.functions.f(...)``)."""
        return self.send(self.encode(function), nonce=nonce, fee_bump=fee_bump, label=label)

    def call_and_wait(self, function: Any, *, timeout_s: float = 120.0, label: str = "contract") -> tuple[str, int]:
        """Send a call and wait for it to be mined; returns (tx hash, block number)."""
        tx_hash, _ = self.call(function, label=label)
        try:
            with rpc_errors(f"waiting for the {label} transaction", label):
                receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)  # type: ignore[arg-type]
        except ChainError as exc:
            if isinstance(exc, ChainUnavailableError):
                raise
            raise ChainError(f"The {label} transaction {tx_hash} was not mined within {timeout_s:.0f}s.") from None
        if receipt["status"] != 1:
            raise ChainError(f"The {label} transaction {tx_hash} reverted.")
        return tx_hash, int(receipt["blockNumber"])

    def deploy(self, artifact: dict[str, Any], *args: Any, timeout_s: float = 120.0) -> tuple[str, int]:
        """Deploy a contract and wait for it; returns (address, block number)."""
        contract = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx_hash, _ = self.send(self._unsigned(contract.constructor(*args)))
        with rpc_errors(f"deploying {artifact.get('contractName')}"):
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)  # type: ignore[arg-type]
        address = receipt.get("contractAddress")
        if receipt["status"] != 1 or not address:
            raise ChainError(f"Deployment of {artifact.get('contractName')} failed in transaction {tx_hash}.")
        return Web3.to_checksum_address(address), int(receipt["blockNumber"])
