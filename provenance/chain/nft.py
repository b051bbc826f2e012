"""``ProvenanceNFT`` over web3.py: custodial mints and EIP-712 mint vouchers."""

from __future__ import annotations

from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError

from provenance.chain.artifacts import load_artifact
from provenance.chain.transactions import TxSender
from provenance.errors import ChainError

NFT = "ProvenanceNFT"
VOUCHER_TYPES = {
    "MintVoucher": [
        {"name": "contentHash", "type": "bytes32"},
        {"name": "metadataCid", "type": "string"},
        {"name": "to", "type": "address"},
        {"name": "nonce", "type": "uint256"},
        {"name": "expiry", "type": "uint256"},
    ]
}


def deploy_nft(
    sender: TxSender,
    registry_address: str,
    royalty_receiver: str,
    royalty_bps: int,
    *,
    owner: str | None = None,
    minter: str | None = None,
    timeout_s: float = 120.0,
) -> tuple[str, int]:
    """Deploy ProvenanceNFT bound to a registry; returns (address, block number).

    ``owner`` (the admin) and ``minter`` (the hot key) default to the deploying key.
    """
    return sender.deploy(
        load_artifact(NFT),
        registry_address,
        royalty_receiver,
        royalty_bps,
        owner or sender.address,
        minter or sender.address,
        timeout_s=timeout_s,
    )


class Web3Nft:
    """A deployed ProvenanceNFT: reads, custodial mints through a ``TxSender``, and voucher signing."""

    def __init__(self, w3: Web3, address: str, sender: TxSender | None, *, timeout_s: float = 120.0) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(address)
        self.sender = sender
        self.timeout_s = timeout_s
        self.contract = w3.eth.contract(address=self.address, abi=load_artifact(NFT)["abi"])

    @property
    def abi(self) -> list[dict[str, Any]]:
        """The contract's ABI from the compiled artifact (served to clients that talk to the contract)."""
        return load_artifact(NFT)["abi"]

    def owner(self) -> str:
        """The contract's owner (the admin key that manages minters)."""
        return Web3.to_checksum_address(self.contract.functions.owner().call())

    def is_minter(self, address: str) -> bool:
        """Whether ``address`` may mint and sign mint vouchers."""
        return bool(self.contract.functions.isMinter(Web3.to_checksum_address(address)).call())

    def owner_of(self, token_id: int) -> str | None:
        """The token's owner, or None if it has not been minted (the contract reverts for those)."""
        try:
            return Web3.to_checksum_address(self.contract.functions.ownerOf(token_id).call())
        except ContractLogicError:
            return None

    def token_uri(self, token_id: int) -> str:
        """``ipfs://<metadata CID>`` of a minted token; web3's ``ContractLogicError`` if it was not minted."""
        return str(self.contract.functions.tokenURI(token_id).call())

    def mint(
        self, to: str, sha256_hex: str, metadata_cid: str, root_hex: str | None, proof: list[str]
    ) -> tuple[str, int]:
        """Custodial mint; waits for the receipt. Returns (tx hash, block number)."""
        if self.sender is None:
            raise ChainError("No chain key configured to mint with.")
        function = self.contract.functions.mint(
            Web3.to_checksum_address(to),
            bytes.fromhex(sha256_hex),
            metadata_cid,
            bytes.fromhex(root_hex.removeprefix("0x")) if root_hex else bytes(32),
            [bytes.fromhex(p.removeprefix("0x")) for p in proof],
        )
        return self.sender.call_and_wait(function, timeout_s=self.timeout_s, label="NFT contract")

    def default_royalty_receiver(self) -> str:
        """Who a token without its own receiver pays royalties to (the owner's ``setDefaultRoyalty``).

        Read through token id 0, which never exists (an all-zero content hash cannot be registered) and which
        the service never gives a receiver of its own.
        """
        receiver, _ = self.contract.functions.royaltyInfo(0, 10_000).call()
        return Web3.to_checksum_address(receiver)

    def set_token_royalty_receiver(self, token_id: int, receiver: str) -> tuple[str, int]:
        """Name the royalty receiver of a token not minted yet (the contract refuses it afterwards); waits."""
        if self.sender is None:
            raise ChainError("No chain key configured to set a royalty receiver with.")
        function = self.contract.functions.setTokenRoyaltyReceiver(token_id, Web3.to_checksum_address(receiver))
        return self.sender.call_and_wait(function, timeout_s=self.timeout_s, label="NFT contract")

    def domain(self) -> dict[str, Any]:
        """The EIP-712 domain mint vouchers are signed under (name, version, this chain, this contract)."""
        return {
            "name": "ProvenanceNFT",
            "version": "1",
            "chainId": int(self.w3.eth.chain_id),
            "verifyingContract": self.address,
        }

    def sign_voucher(self, signer: LocalAccount, message: dict[str, Any]) -> str:
        """EIP-712 signature (65 bytes, hex) of a MintVoucher by a minter key."""
        signed = signer.sign_typed_data(self.domain(), VOUCHER_TYPES, message)
        return "0x" + bytes(signed.signature).hex()
