"""Sending transactions: one nonce sequence per key, gas estimated with headroom, fees bumped on resend.

Every transaction the service sends (registrations, batch roots, NFT mints, deployments) goes
through one ``TxSender`` per account. Its lock hands out nonces one after the other, so
concurrent requests never reuse one; the next nonce is the larger of what the node reports as
pending and what this process already sent, so a restart or another sender on the same key
catches up instead of colliding.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted

from provenance.chain.artifacts import load_artifact
from provenance.errors import ChainError

GAS_HEADROOM = 1.25  # estimates are exact for the state they ran on; the block may differ a little
FEE_BUMP = 1.125  # a replacement must pay at least 10% more; 12.5% is what nodes commonly ask


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
    """Selector (hex, no 0x) -> (error name, argument types), from both contracts' ABIs."""
    errors: dict[str, tuple[str, list[str]]] = {}
    for name in ("ProvenanceRegistry", "ProvenanceNFT"):
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


class TxSender:
    def __init__(self, w3: Web3, account: LocalAccount) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = int(w3.eth.chain_id)
        self._lock = threading.Lock()
        self._next_nonce = 0

    @property
    def address(self) -> str:
        return self.account.address

    def _fees(self, bump: float) -> dict[str, int]:
        base = self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0
        tip = self.w3.eth.max_priority_fee
        return {"maxPriorityFeePerGas": int(tip * bump), "maxFeePerGas": int((2 * base + tip) * bump)}

    def send(
        self, tx: dict[str, Any], *, nonce: int | None = None, fee_bump: float = 1.0, label: str = "contract"
    ) -> tuple[str, int]:
        """Sign and send; returns (tx hash, nonce). A given ``nonce`` replaces an earlier transaction.

        A transaction the contract would refuse raises ``ChainError`` with the decoded reason;
        ``label`` names the contract in that message.
        """
        with self._lock:
            tx = {**tx, "from": self.account.address, "chainId": self.chain_id}
            if nonce is None:
                pending = int(self.w3.eth.get_transaction_count(self.account.address, "pending"))
                nonce = max(pending, self._next_nonce)
            tx["nonce"] = nonce
            if "gas" not in tx:
                try:
                    tx["gas"] = int(self.w3.eth.estimate_gas(tx) * GAS_HEADROOM)  # type: ignore[arg-type]
                except ContractLogicError as exc:
                    raise ChainError(f"The {label} refuses this transaction: {describe_revert(exc, label)}.") from None
            tx.update(self._fees(fee_bump))
            signed = self.account.sign_transaction(tx)
            tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction).to_0x_hex()
            self._next_nonce = max(self._next_nonce, nonce + 1)
            return tx_hash, nonce

    def resync(self) -> None:
        """Forget the local nonce counter: a transaction was dropped, so the node's count is right again."""
        with self._lock:
            self._next_nonce = 0

    def _unsigned(self, buildable: Any) -> dict[str, Any]:
        """A contract call or constructor as a bare transaction; ``send`` fills nonce, gas and fees."""
        try:
            # A placeholder gas keeps web3 from estimating here: ``send`` estimates with headroom.
            tx = dict(buildable.build_transaction({"from": self.account.address, "gas": 1}))
        except ContractLogicError as exc:
            raise ChainError(f"The contract refuses this transaction: {exc}") from None
        for key in ("gas", "nonce", "maxFeePerGas", "maxPriorityFeePerGas", "gasPrice"):
            tx.pop(key, None)
        return tx

    def call(
        self, function: Any, *, nonce: int | None = None, fee_bump: float = 1.0, label: str = "contract"
    ) -> tuple[str, int]:
        """Send a contract function call (``contract.functions.f(...)``)."""
        return self.send(self._unsigned(function), nonce=nonce, fee_bump=fee_bump, label=label)

    def call_and_wait(self, function: Any, *, timeout_s: float = 120.0, label: str = "contract") -> tuple[str, int]:
        """Send a call and wait for it to be mined; returns (tx hash, block number)."""
        tx_hash, _ = self.call(function, label=label)
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)  # type: ignore[arg-type]
        except TimeExhausted:
            raise ChainError(f"The {label} transaction {tx_hash} was not mined within {timeout_s:.0f}s.") from None
        if receipt["status"] != 1:
            raise ChainError(f"The {label} transaction {tx_hash} reverted.")
        return tx_hash, int(receipt["blockNumber"])

    def deploy(self, artifact: dict[str, Any], *args: Any, timeout_s: float = 120.0) -> tuple[str, int]:
        """Deploy a contract and wait for it; returns (address, block number)."""
        contract = self.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
        tx_hash, _ = self.send(self._unsigned(contract.constructor(*args)))
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout_s)  # type: ignore[arg-type]
        address = receipt.get("contractAddress")
        if receipt["status"] != 1 or not address:
            raise ChainError(f"Deployment of {artifact.get('contractName')} failed in transaction {tx_hash}.")
        return Web3.to_checksum_address(address), int(receipt["blockNumber"])
