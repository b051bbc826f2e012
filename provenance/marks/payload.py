"""The watermark's payload: the keyed codec that turns a public watermark id into embedded bits, and the key.

The 32-bit watermark id, sealed with the service's secret mark key (a keyed 32-bit permutation),
followed by Reed-Solomon parity (6 bytes, correcting up to three wrong bytes), and the whole 80-bit
codeword XORed with a keyed mask. The public ``watermark_id`` (returned by certify, in the record and
in the C2PA soft-binding assertion) is therefore not enough to forge a record's mark: the embedded
bits depend on the key. The mask also means a flat or grey image, whose blocks all vote alike, does
not read as a valid codeword. A decode only counts when the codeword is valid; the chance that an
unmarked image yields one is ``codeword_acceptance_probability``.

The key also decides the embedding layout (``MarkLayout``): which payload bit each block of the chroma
component carries and each block's lattice offset (see ``provenance.marks.watermark``), and the luminance
component's cell layout (``provenance.marks.luma``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from reedsolo import ReedSolomonError, RSCodec

from provenance.errors import ConfigurationError
from provenance.fsutil import write_private
from provenance.marks.luma import LumaLayout

ID_BYTES = 4
PARITY_BYTES = 6
PAYLOAD_BITS = (ID_BYTES + PARITY_BYTES) * 8
# Layout versions: 2 is the keyed layout; 1 the library's (marks embedded before keyed layouts, still read for them).
LAYOUT_VERSION = 2
LEGACY_LAYOUT = 1
# The keyed layout repeats every LAYOUT_PERIOD blocks: LAYOUT_GROUPS runs of 80 blocks, each run a keyed
# permutation of the 80 payload bits. 5120 blocks is more than a 512x512 image holds (4096), so ordinary
# images see no repetition at all, and any 80 consecutive blocks of a run carry every bit once.
LAYOUT_GROUPS = 64
LAYOUT_PERIOD = PAYLOAD_BITS * LAYOUT_GROUPS

_rs = RSCodec(PARITY_BYTES)


@dataclass(frozen=True, eq=False)
class MarkLayout:
    """Which payload bit each block carries, and the offset of its quantisation lattice.

    Block ``k`` (reading order on the Haar approximation band of U, 4x4 blocks) carries payload bit
    ``bits[k % period]``, quantised on the lattice ``dither[k % period] * step + step * Z``. Readers
    use the phase ``((s0 - d_k) mod step) / step``: 0.25 for a 0, 0.75 for a 1. Positions are
    absolute in the reading order of the image as it was marked, which is what the confirmation after
    alignment reads in (the original's grid).
    """

    bits: np.ndarray  # int64 (period,): payload bit index
    dither: np.ndarray  # float64 (period,): lattice offset as a fraction of the step, in [0, 1)

    @classmethod
    def stock(cls, length: int = PAYLOAD_BITS) -> MarkLayout:
        """The library's own layout: block ``k`` carries bit ``k % length`` on the lattice ``s0 // step``."""
        return cls(np.arange(length, dtype=np.int64), np.zeros(length))

    @classmethod
    def from_secret(cls, secret: bytes) -> MarkLayout:
        """The keyed layout: a function of the key only.

        The randomness is SHAKE-256 of ``HMAC-SHA256(key, "provenance watermark layout v2")``, turned into
        a permutation by sorting 64-bit values and into offsets by 32-bit fractions: plain arithmetic on
        a standard hash, so the layout of an existing mark never changes with a NumPy upgrade (NumPy
        does not promise that ``Generator`` methods keep their streams across versions).
        """
        seed = hmac.new(secret, b"provenance watermark layout v2", hashlib.sha256).digest()
        stream = hashlib.shake_256(seed).digest(LAYOUT_PERIOD * 12)
        sort_keys = np.frombuffer(stream, dtype=">u8", count=LAYOUT_PERIOD).reshape(LAYOUT_GROUPS, PAYLOAD_BITS)
        bits = np.argsort(sort_keys, axis=1, kind="stable").astype(np.int64).ravel()
        offsets = np.frombuffer(stream, dtype=">u4", count=LAYOUT_PERIOD, offset=LAYOUT_PERIOD * 8)
        return cls(bits, offsets.astype(np.float64) / 2.0**32)

    @property
    def period(self) -> int:
        """Blocks after which the layout repeats."""
        return int(self.bits.shape[0])

    def of_blocks(self, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Payload bit index and dither (fraction of the step) of blocks ``first .. first + count - 1``."""
        index = (first + np.arange(count)) % self.period
        return self.bits[index], self.dither[index]


class MarkKey:
    """The secret that turns a public watermark id into the bits that are embedded.

    ``seal`` is a keyed permutation of 32-bit ids (an 8-round Feistel network with HMAC-SHA256 as
    its round function), so the embedded value reveals nothing about the key and cannot be made for
    a new id without it; ``mask`` is a keyed 80-bit pattern XORed over the whole codeword;
    ``layout`` the keyed embedding (which bit each block carries, each block's lattice offset),
    derived once per key.
    """

    ROUNDS = 8

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ConfigurationError("The watermark key must be at least 16 bytes.")
        self._secret = secret
        digest = hmac.new(secret, b"provenance watermark mask v1", hashlib.sha256).digest()
        self.mask = np.unpackbits(np.frombuffer(digest[: ID_BYTES + PARITY_BYTES], dtype=np.uint8))
        self.layout = MarkLayout.from_secret(secret)
        self.layout_version = LAYOUT_VERSION
        self._legacy: MarkKey | None = None
        self._luma_layout: LumaLayout | None = None

    @property
    def luma_layout(self) -> LumaLayout:
        """The keyed cell layout of the luminance component (``provenance.marks.luma``), derived on first use."""
        if self._luma_layout is None:
            self._luma_layout = LumaLayout.from_secret(self._secret)
        return self._luma_layout

    def legacy(self) -> MarkKey:
        """The same key with the library's layout (``LEGACY_LAYOUT``): how marks made before the keyed layout read.

        Made once and kept: every blind read of a service holding such records asks for it.
        """
        if self._legacy is None:
            old = copy.copy(self)
            old.layout, old.layout_version, old._legacy = MarkLayout.stock(), LEGACY_LAYOUT, None
            self._legacy = old
        return self._legacy

    def for_layout(self, version: int | None) -> MarkKey:
        """The key to read a record's mark with: its own layout version (None: the current one)."""
        return self.legacy() if version == LEGACY_LAYOUT else self

    @classmethod
    def generate(cls) -> MarkKey:
        """A new random 32-byte key."""
        return cls(secrets.token_bytes(32))

    @classmethod
    def load_or_create(cls, path: Path) -> MarkKey:
        """Read the key file (hex), creating it with mode 0600 on first use."""
        if not path.exists():
            write_private(path, secrets.token_hex(32).encode())
        try:
            return cls(bytes.fromhex(path.read_text().strip()))
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"Cannot read the watermark key {path}: {exc}") from None

    def _round(self, index: int, half: int) -> int:
        mac = hmac.new(self._secret, bytes([index]) + half.to_bytes(2, "big"), hashlib.sha256).digest()
        return int.from_bytes(mac[:2], "big")

    def seal(self, watermark_id: int) -> bytes:
        """The keyed permutation of a 32-bit id, as 4 bytes (what the codeword carries)."""
        left, right = watermark_id >> 16, watermark_id & 0xFFFF
        for index in range(self.ROUNDS):
            left, right = right, left ^ self._round(index, right)
        return ((left << 16) | right).to_bytes(ID_BYTES, "big")

    def unseal(self, sealed: bytes) -> int:
        """The id a sealed value stands for (the inverse of ``seal``)."""
        value = int.from_bytes(sealed, "big")
        left, right = value >> 16, value & 0xFFFF
        for index in reversed(range(self.ROUNDS)):
            left, right = right ^ self._round(index, left), left
        return (left << 16) | right


def encode_payload(watermark_id: int, key: MarkKey) -> np.ndarray:
    """The bits embedded for an id: the sealed id, Reed-Solomon parity, XORed with the key's mask."""
    if not 0 <= watermark_id < 2 ** (8 * ID_BYTES):
        raise ValueError("watermark id must fit in 32 bits")
    codeword = bytes(_rs.encode(key.seal(watermark_id)))
    return np.unpackbits(np.frombuffer(codeword, dtype=np.uint8)) ^ key.mask


def decode_payload(bits: np.ndarray, key: MarkKey) -> tuple[int, int] | None:
    """Return (watermark_id, corrected byte errors) for a valid codeword, else None."""
    codeword = np.packbits(bits.astype(np.uint8) ^ key.mask).tobytes()
    try:
        message, _, errata = _rs.decode(codeword)
    except ReedSolomonError:
        return None
    return key.unseal(bytes(message)), len(errata)


def codeword_acceptance_probability(corrected_errors: int) -> float:
    """Chance that a uniformly random 80-bit word lies within ``corrected_errors`` bytes of a codeword.

    There are 2^32 codewords of 10 bytes; the Hamming ball of radius e around one holds
    sum_{i<=e} C(10, i) * 255^i words, out of 2^80. For the largest radius the decoder accepts (3)
    this is about 7.1e-6; for a reading that needed no correction, 3.6e-15.
    """
    symbols = ID_BYTES + PARITY_BYTES
    ball = sum(math.comb(symbols, i) * 255**i for i in range(corrected_errors + 1))
    return float(2 ** (8 * ID_BYTES) * ball) / float(2 ** (8 * symbols))
