"""The registry owner's side: publish and revoke signing keys, trust anchors, writers, minters, ownership.

The owner (admin) key is kept apart from the hot key that registers content and mints: the hot
key is on every service instance, the owner key only where the trust root is managed. Every
method here sends one transaction per contract from the owner key, waits until it is mined and
returns ``(tx hash, block number)``; a transaction the contract refuses raises ``ChainError``
with the reason in words ("only the registry owner can do this ...").
"""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract import Contract

from provenance.chain.artifacts import load_artifact
from provenance.chain.nft import NFT
from provenance.chain.reader import hex32
from provenance.chain.registry import REGISTRY
from provenance.chain.transactions import TxSender
from provenance.errors import ChainError, ConfigurationError

Receipt = tuple[str, int]


class RegistryAdmin:
    """Owner operations on the ProvenanceRegistry at ``registry_address`` (and its NFT contract, if any).

    ``sender`` lets the admin share the ``TxSender`` of an identical hot key (one nonce sequence per
    key); by default it gets its own.
    """

    def __init__(
        self,
        w3: Web3,
        registry_address: str,
        nft_address: str | None,
        owner_account: LocalAccount,
        timeout_s: float = 120.0,
        *,
        sender: TxSender | None = None,
    ) -> None:
        self.w3 = w3
        self.account = owner_account
        self.timeout_s = timeout_s
        # Two senders on one key would race for nonces: share the hot key's when it is the same key.
        same_key = sender is not None and sender.address == owner_account.address
        self.sender = sender if same_key and sender is not None else TxSender(w3, owner_account)
        self.rebind(registry_address, nft_address)

    @property
    def address(self) -> str:
        """The admin key's address."""
        return self.account.address

    def rebind(self, registry_address: str, nft_address: str | None) -> None:
        """Point at freshly deployed contracts (a reset dev chain)."""
        self.registry_address = Web3.to_checksum_address(registry_address)
        self.nft_address = Web3.to_checksum_address(nft_address) if nft_address else None
        self.registry = self.w3.eth.contract(address=self.registry_address, abi=load_artifact(REGISTRY)["abi"])
        self.nft = (
            self.w3.eth.contract(address=self.nft_address, abi=load_artifact(NFT)["abi"]) if self.nft_address else None
        )

    def _send(self, function: Any, label: str) -> Receipt:
        return self.sender.call_and_wait(function, timeout_s=self.timeout_s, label=label)

    def _registry(self, function: Any) -> Receipt:
        return self._send(function, "registry")

    def _require_nft(self) -> Contract:
        if self.nft is None:
            raise ConfigurationError("No NFT contract configured: set NFT_ADDRESS.")
        return self.nft

    # --- reads ----------------------------------------------------------------------------------
    def owner(self) -> str:
        """The registry's current owner."""
        return Web3.to_checksum_address(self.registry.functions.owner().call())

    def pending_owner(self) -> str | None:
        """Who a started ownership transfer of the registry waits on, or None."""
        pending = Web3.to_checksum_address(self.registry.functions.pendingOwner().call())
        return None if int(pending, 16) == 0 else pending

    def is_owner(self) -> bool:
        """True if this admin's key owns the registry (and the NFT contract, if any)."""
        owners = [self.owner()]
        if self.nft is not None:
            owners.append(Web3.to_checksum_address(self.nft.functions.owner().call()))
        return all(o == self.address for o in owners)

    # --- signing keys ---------------------------------------------------------------------------
    def publish_key(self, key_id_hex: str) -> Receipt:
        """Publish an ECDSA signing key id: its signatures count from the block this lands in."""
        return self._registry(self.registry.functions.publishKey(hex32(key_id_hex)))

    def revoke_key(self, key_id_hex: str) -> Receipt:
        """Revoke a signing key from the block this lands in on."""
        return self._registry(self.registry.functions.revokeKey(hex32(key_id_hex)))

    def ensure_key_published(self, key_id_hex: str) -> bool:
        """Publish the key unless it already was (even if since revoked); True if a transaction was sent."""
        published = bool(self.registry.functions.signingKey(hex32(key_id_hex)).call()[0])
        if published:
            return False
        self.publish_key(key_id_hex)
        return True

    # --- C2PA trust anchors ---------------------------------------------------------------------
    def add_trust_anchor(self, fingerprint_hex: str) -> Receipt:
        """Trust a C2PA root by the SHA-256 of its DER certificate."""
        return self._registry(self.registry.functions.addTrustAnchor(hex32(fingerprint_hex)))

    def remove_trust_anchor(self, fingerprint_hex: str) -> Receipt:
        """Stop trusting a C2PA root (SHA-256 of its DER); ``ContractRefusedError`` if it was not trusted."""
        return self._registry(self.registry.functions.removeTrustAnchor(hex32(fingerprint_hex)))

    def ensure_trust_anchor(self, fingerprint_hex: str) -> bool:
        """Add the trust anchor unless present; True if a transaction was sent."""
        if self.registry.functions.isTrustAnchor(hex32(fingerprint_hex)).call():
            return False
        self.add_trust_anchor(fingerprint_hex)
        return True

    # --- writers and minters --------------------------------------------------------------------
    def set_writer(self, address: str, allowed: bool) -> Receipt:
        """Allow or forbid ``address`` to register content, from the block this lands in."""
        return self._registry(self.registry.functions.setWriter(Web3.to_checksum_address(address), allowed))

    def set_minter(self, address: str, allowed: bool) -> Receipt:
        """Allow or forbid ``address`` to mint and sign mint vouchers on the NFT contract."""
        nft = self._require_nft()
        return self._send(nft.functions.setMinter(Web3.to_checksum_address(address), allowed), "NFT contract")

    def ensure_writer(self, address: str) -> bool:
        """Make ``address`` a writer and, with an NFT contract, a minter; True if anything was sent."""
        sent = False
        if not self.registry.functions.isWriter(Web3.to_checksum_address(address)).call():
            self.set_writer(address, True)
            sent = True
        if self.nft is not None and not self.nft.functions.isMinter(Web3.to_checksum_address(address)).call():
            self.set_minter(address, True)
            sent = True
        return sent

    # --- ownership (Ownable2Step) ---------------------------------------------------------------
    def _contracts(self) -> list[tuple[str, Contract]]:
        contracts: list[tuple[str, Contract]] = [("registry", self.registry)]
        if self.nft is not None:
            contracts.append(("NFT contract", self.nft))
        return contracts

    def transfer_ownership(self, new_owner: str) -> list[Receipt]:
        """Step one on the registry and the NFT contract: ``new_owner`` becomes the pending owner.

        Nothing changes until the new owner calls ``accept_ownership``, so a mistyped address
        cannot lock the trust root away. Returns one receipt per contract (registry first).
        """
        target = Web3.to_checksum_address(new_owner)
        if int(target, 16) == 0:
            raise ChainError("The new owner cannot be the zero address.")
        return [self._send(c.functions.transferOwnership(target), label) for label, c in self._contracts()]

    def accept_ownership(self) -> list[Receipt]:
        """Step two, sent by the new owner's key on every contract that waits on it."""
        receipts = []
        for label, contract in self._contracts():
            pending = Web3.to_checksum_address(contract.functions.pendingOwner().call())
            if pending == self.address:
                receipts.append(self._send(contract.functions.acceptOwnership(), label))
        if not receipts:
            raise ChainError(f"No ownership transfer to {self.address} is pending on the registry or NFT contract.")
        return receipts
