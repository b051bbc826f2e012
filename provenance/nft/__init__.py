"""Minting certified works as NFTs (ERC-721 with EIP-712 vouchers)."""
