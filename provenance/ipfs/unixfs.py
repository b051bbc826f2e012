"""A UnixFS file importer that reproduces Kubo's CIDv1 for ``ipfs add --cid-version=1``.

Kubo's defaults with CIDv1: fixed-size 256 KiB chunks (``size-262144``), raw leaves (codec 0x55),
a balanced DAG of dag-pb nodes (codec 0x70) with at most 174 links each, SHA-256 multihashes,
base32 CID strings. A file of one chunk is just its raw leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

CHUNK_SIZE = 262_144
MAX_LINKS = 174
RAW = 0x55
DAG_PB = 0x70
SHA2_256 = 0x12
UNIXFS_FILE = 2
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def varint(n: int) -> bytes:
    """Unsigned LEB128 (multiformats varint) of ``n``."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _base32(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    nbits = len(data) * 8
    pad = (5 - nbits % 5) % 5
    bits <<= pad
    nbits += pad
    return "".join(_B32[(bits >> (nbits - 5 * (i + 1))) & 31] for i in range(nbits // 5))


def _unbase32(text: str) -> bytes:
    bits = 0
    for ch in text:
        bits = (bits << 5) | _B32.index(ch)
    nbits = len(text) * 5
    extra = nbits % 8
    return (bits >> extra).to_bytes(nbits // 8, "big")


def cid_bytes(codec: int, block: bytes) -> bytes:
    """Binary CIDv1 of a block: version, codec, sha2-256 multihash."""
    return b"\x01" + varint(codec) + bytes([SHA2_256, 32]) + hashlib.sha256(block).digest()


def cid_to_str(binary_cid: bytes) -> str:
    """The base32 multibase string of a binary CID (``b...``)."""
    return "b" + _base32(binary_cid)


def cid_from_str(cid: str) -> bytes:
    """Parse a base32 CIDv1 string; raises ValueError for anything else."""
    if not cid.startswith("b") or len(cid) < 10 or any(c not in _B32 for c in cid[1:]):
        raise ValueError(f"not a base32 CIDv1: {cid!r}")
    raw = _unbase32(cid[1:])
    if raw[0] != 1:
        raise ValueError(f"not a CIDv1: {cid!r}")
    return raw


def cid_codec(cid: str) -> int:
    """The multicodec of a CIDv1 string (raw or dag-pb)."""
    raw = cid_from_str(cid)
    return raw[1]  # both codecs we produce fit in one varint byte


def _field_bytes(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


@dataclass(frozen=True)
class Node:
    """A block of the DAG: its binary CID, its bytes, file bytes below it, cumulative block size."""

    cid: bytes
    block: bytes
    file_size: int
    tree_size: int


def _leaf(chunk: bytes) -> Node:
    return Node(cid_bytes(RAW, chunk), chunk, len(chunk), len(chunk))


def _parent(children: list[Node]) -> Node:
    # dag-pb canonical form: links (field 2) first, then data (field 1). Kubo writes an empty Name.
    unixfs = _field_varint(1, UNIXFS_FILE) + _field_varint(3, sum(c.file_size for c in children))
    unixfs += b"".join(_field_varint(4, c.file_size) for c in children)
    links = b"".join(
        _field_bytes(2, _field_bytes(1, c.cid) + _field_bytes(2, b"") + _field_varint(3, c.tree_size)) for c in children
    )
    block = links + _field_bytes(1, unixfs)
    return Node(
        cid_bytes(DAG_PB, block),
        block,
        sum(c.file_size for c in children),
        len(block) + sum(c.tree_size for c in children),
    )


def build_dag(data: bytes) -> tuple[Node, list[Node]]:
    """Chunk and link ``data``; returns the root and every block (leaves first, root last)."""
    level = [_leaf(data[i : i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE)] or [_leaf(b"")]
    blocks = list(level)
    while len(level) > 1:
        level = [_parent(level[i : i + MAX_LINKS]) for i in range(0, len(level), MAX_LINKS)]
        blocks.extend(level)
    return level[0], blocks


def compute_cid(data: bytes) -> str:
    """The CIDv1 Kubo prints for ``ipfs add --cid-version=1`` of ``data``."""
    root, _ = build_dag(data)
    return cid_to_str(root.cid)


def child_cids(block: bytes) -> Iterator[bytes]:
    """Binary CIDs linked from a dag-pb block, in order."""
    pos = 0
    while pos < len(block):
        key, pos = _read_varint(block, pos)
        length, pos = _read_varint(block, pos)
        body = block[pos : pos + length]
        pos += length
        if key >> 3 != 2:
            continue
        inner = 0
        while inner < len(body):
            lkey, inner = _read_varint(body, inner)
            if lkey & 7 == 2:
                llen, inner = _read_varint(body, inner)
                if lkey >> 3 == 1:
                    yield body[inner : inner + llen]
                inner += llen
            else:
                _, inner = _read_varint(body, inner)
