"""Merkle trees compatible with OpenZeppelin's ``MerkleProof`` (and its StandardMerkleTree leaves).

A leaf is ``keccak256(bytes.concat(keccak256(abi.encode(bytes32 contentHash))))``: hashing twice
keeps a leaf from ever being mistaken for an inner node. Inner nodes hash their two children in
sorted order, so a proof is just the list of siblings, and ``MerkleProof.verify`` on chain (or
``verify_proof`` here) accepts it. Leaves are sorted before building, so the same set of hashes
always gives the same root whatever order they were certified in.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import keccak


def leaf_of(content_hash: bytes) -> bytes:
    """The leaf of a 32-byte content hash: keccak256 twice."""
    if len(content_hash) != 32:
        raise ValueError("a content hash is 32 bytes")
    return keccak(keccak(content_hash))  # abi.encode(bytes32) is the 32 bytes themselves


def hash_pair(a: bytes, b: bytes) -> bytes:
    """An inner node: keccak256 of the two children, smaller first."""
    return keccak(a + b) if a < b else keccak(b + a)


@dataclass(frozen=True)
class MerkleTree:
    """A Merkle tree over content hashes, every layer kept (for proofs)."""

    leaves: tuple[bytes, ...]  # sorted leaf hashes
    layers: tuple[tuple[bytes, ...], ...]  # layers[0] = leaves, layers[-1] = (root,)

    @classmethod
    def build(cls, content_hashes: list[bytes]) -> MerkleTree:
        """The tree of a set of 32-byte content hashes (duplicates count once; order does not matter)."""
        if not content_hashes:
            raise ValueError("a tree needs at least one leaf")
        leaves = tuple(sorted({leaf_of(h) for h in content_hashes}))
        layers = [leaves]
        while len(layers[-1]) > 1:
            level = layers[-1]
            parents = tuple(
                hash_pair(level[i], level[i + 1]) if i + 1 < len(level) else level[i] for i in range(0, len(level), 2)
            )
            layers.append(parents)
        return cls(leaves, tuple(layers))

    @property
    def root(self) -> bytes:
        """The root hash (what the contract anchors)."""
        return self.layers[-1][0]

    def proof(self, content_hash: bytes) -> list[bytes]:
        """Siblings from the leaf up; an odd node promoted without a sibling adds nothing."""
        index = self.leaves.index(leaf_of(content_hash))
        proof = []
        for level in self.layers[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                proof.append(level[sibling])
            index //= 2
        return proof


def verify_proof(content_hash: bytes, proof: list[bytes], root: bytes) -> bool:
    """Whether ``proof`` takes the content hash's leaf to ``root``."""
    node = leaf_of(content_hash)
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node == root
