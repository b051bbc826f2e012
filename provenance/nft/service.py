"""NFT minting for certified works: custodial mints and lazy-mint vouchers.

A token exists only for content the registry holds (alone, or as a proven leaf of an anchored
batch), one per content hash; the token id is the hash. Its ``tokenURI`` is ``ipfs://`` of an
ERC-721 metadata JSON pinned like the image. A voucher is an EIP-712 message signed by the
service's minter key; its holder redeems it from their own wallet and pays the gas. Vouchers carry
a random 256-bit nonce (each works once, on chain) and an expiry.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from web3 import Web3

from provenance.chain.nft import VOUCHER_TYPES, Web3Nft
from provenance.db.models import NftToken, NftVoucher, Record, RecordStatus
from provenance.db.repository import NftRepository, RecordRepository
from provenance.errors import (
    AlreadyMintedError,
    ChainError,
    DerivativeNotMintableError,
    InvalidAddressError,
    NftUnavailableError,
    NotFoundError,
    NotRegisteredError,
)
from provenance.ipfs import ContentStore
from provenance.lineage.royalties import RoyaltySplits

_HEX_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def checked_address(value: str, field: str = "to") -> str:
    """An Ethereum address a token or voucher goes to, in its EIP-55 checksummed form.

    All-lowercase or all-uppercase hex carries no checksum and is taken as typed; mixed case is an EIP-55
    checksum and must be right (a wrong one is a mistyped address: the token would go to an address nobody
    typed). The zero address is refused: a token sent there is lost. ``InvalidAddressError`` (422) names ``field``.
    """
    if not isinstance(value, str) or not _HEX_ADDRESS.fullmatch(value):
        raise InvalidAddressError(f"{field}: {value!r} is not an Ethereum address (0x followed by 40 hex digits).")
    digits = value[2:]
    if digits not in (digits.lower(), digits.upper()) and not Web3.is_checksum_address(value):
        raise InvalidAddressError(
            f"{field}: {value!r} is mixed case but its EIP-55 checksum is wrong (a typing mistake?); "
            "send the checksummed address, or all lowercase."
        )
    if int(digits, 16) == 0:
        raise InvalidAddressError(f"{field}: the zero address cannot own a token (it would be lost).")
    return Web3.to_checksum_address(value)


def metadata_for(record: Record) -> dict[str, Any]:
    """ERC-721 metadata JSON for a certified work."""
    attributes: list[dict[str, Any]] = [
        {"trait_type": "sha256", "value": record.sha256},
        {"trait_type": "record_id", "value": record.id},
        {"trait_type": "digital_source_type", "value": record.source_type},
        {"trait_type": "width", "value": record.width},
        {"trait_type": "height", "value": record.height},
    ]
    gen = record.generation or {}
    if gen:
        attributes += [
            {"trait_type": "model", "value": gen.get("model", {}).get("label")},
            {"trait_type": "seed", "value": gen.get("seed")},
            {"trait_type": "steps", "value": gen.get("steps")},
            {"trait_type": "scheduler", "value": gen.get("scheduler")},
        ]
    return {
        "name": f"Certified work {record.id[:8]}",
        "description": "An image certified by provenance: invisible watermark, signed C2PA manifest, "
        f"ECDSA signature and on-chain registration. Record {record.id}.",
        "image": f"ipfs://{record.cid}",
        "attributes": attributes,
    }


@dataclass
class MintResult:
    """A minted token: its id, the transaction, its metadata URI, the contract and the owner."""

    token_id: str
    tx_hash: str
    token_uri: str
    contract: str
    owner: str
    royalty_receiver: str | None = None  # the token's own receiver (a royalty splitter); None: the default


class NftService:
    """Mints a registered record's NFT, or signs a voucher for a wallet to redeem; one token per content hash."""

    def __init__(
        self,
        records: RecordRepository,
        tokens: NftRepository,
        store: ContentStore,
        nft: Web3Nft | None,
        *,
        voucher_ttl_s: int,
        royalties: RoyaltySplits | None = None,
    ) -> None:
        self.records = records
        self.tokens = tokens
        self.store = store
        self.nft = nft
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self.voucher_ttl_s = voucher_ttl_s
        self.royalties = royalties

    def _contract(self) -> Web3Nft:
        if self.nft is None:
            raise NftUnavailableError("No NFT contract is configured: set NFT_ADDRESS (see `provenance chain deploy`).")
        return self.nft

    def _prepare(self, record_id: str, to: str) -> tuple[Web3Nft, Record, str, str]:
        contract = self._contract()
        owner = checked_address(to)
        record = self.records.get(record_id)
        if record is None:
            raise NotFoundError(f"No record {record_id!r}.")
        if record.derived_from is not None:
            source = self.records.get(record.derived_from)
            if source is None or source.account_id != record.account_id:
                # The token would sell another account's work: the derivative's content is theirs first.
                raise DerivativeNotMintableError(
                    f"Record {record_id} is a derivative of record {record.derived_from}, certified by another "
                    "account: it cannot be minted."
                )
        if record.status != RecordStatus.REGISTERED:
            raise NotRegisteredError(
                f"Record {record_id} is {record.status}, not yet registered on chain; retry shortly."
            )
        if contract.owner_of(int(record.sha256, 16)) is not None or self.tokens.token_for(record_id) is not None:
            raise AlreadyMintedError(f"Record {record_id} is already minted (token id 0x{record.sha256}).")
        metadata_cid = self.store.add(json.dumps(metadata_for(record), indent=1).encode()).cid
        return contract, record, owner, metadata_cid

    def _route_royalties(self, contract: Web3Nft, record: Record) -> str | None:
        """Point the token's royalties at the split of its lineage's creators and the certifier, if any.

        Done before the mint (the contract fixes a token's receiver once it exists); None: the default receiver.
        """
        if self.royalties is None:
            return None
        receiver = self.royalties.receiver_for(record, contract)
        if receiver is not None:
            contract.set_token_royalty_receiver(int(record.sha256, 16), receiver)
        return receiver

    @contextmanager
    def _minting(self, record_id: str) -> Iterator[None]:
        """One mint per record at a time in this process; a second caller waits, then finds it minted."""
        with self._locks_guard:
            lock = self._locks.setdefault(record_id, threading.Lock())
        try:
            with lock:
                yield
        finally:
            with self._locks_guard:
                if not lock.locked():
                    self._locks.pop(record_id, None)

    def mint(self, record_id: str, to: str, *, account_id: str | None = None) -> MintResult:
        """Custodial mint: the service sends the transaction and waits for it. ``account_id``: who asked.

        Concurrent mints of one record: one wins, the others get ``AlreadyMintedError`` (409), whether
        they lose here (one mint per record at a time in this process) or on chain (another instance).
        """
        with self._minting(record_id):
            contract, record, owner, metadata_cid = self._prepare(record_id, to)
            royalty_receiver = self._route_royalties(contract, record)
            try:
                tx_hash, _ = contract.mint(
                    owner, record.sha256, metadata_cid, record.batch_root, record.merkle_proof or []
                )
            except ChainError as exc:
                if "already minted" in exc.detail:
                    raise AlreadyMintedError(
                        f"Record {record_id} is already minted (token id 0x{record.sha256})."
                    ) from None
                raise
            token_id = "0x" + record.sha256
            self.tokens.add_token(
                NftToken(
                    token_id=token_id,
                    record_id=record.id,
                    owner=owner,
                    metadata_cid=metadata_cid,
                    tx_hash=tx_hash,
                    minted_via="custodial",
                    account_id=account_id,
                )
            )
        token_uri = contract.token_uri(int(record.sha256, 16))
        return MintResult(token_id, tx_hash, token_uri, contract.address, owner, royalty_receiver)

    def voucher(
        self, record_id: str, to: str, ttl_s: int | None = None, *, account_id: str | None = None
    ) -> dict[str, Any]:
        """An EIP-712 voucher the holder redeems with ``redeem(voucher, signature, root, proof)``."""
        contract, record, owner, metadata_cid = self._prepare(record_id, to)
        assert contract.sender is not None
        royalty_receiver = self._route_royalties(contract, record)
        nonce = secrets.randbits(256)
        expiry = int(time.time()) + (ttl_s or self.voucher_ttl_s)
        message = {
            "contentHash": "0x" + record.sha256,
            "metadataCid": metadata_cid,
            "to": owner,
            "nonce": nonce,
            "expiry": expiry,
        }
        signable = {**message, "contentHash": bytes.fromhex(record.sha256)}
        signature = contract.sign_voucher(contract.sender.account, signable)
        self.tokens.add_voucher(
            NftVoucher(
                nonce=str(nonce),
                record_id=record.id,
                to=owner,
                expiry=expiry,
                metadata_cid=metadata_cid,
                account_id=account_id,
            )
        )
        return {
            "domain": contract.domain(),
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                **VOUCHER_TYPES,
            },
            "primaryType": "MintVoucher",
            "message": {**message, "nonce": str(nonce)},
            "signature": signature,
            "signer": contract.sender.address,
            "redeem": {
                "contract": contract.address,
                "function": "redeem((bytes32,string,address,uint256,uint256),bytes,bytes32,bytes32[])",
                "root": record.batch_root or "0x" + "00" * 32,
                "proof": record.merkle_proof or [],
            },
            "token_id": "0x" + record.sha256,
            "token_uri": f"ipfs://{metadata_cid}",
            "royalty_receiver": royalty_receiver,
        }
