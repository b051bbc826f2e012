"""A dataset's items before they are registered: read, hashed, fingerprinted, checked for hygiene, stripped.

Every file is hashed (SHA-256 of its bytes) and decoded once: what does not decode as an image is reported
and left out of the tree. Each image gets its ISCC image code (64 bits, the code the fingerprint index uses)
so near-duplicates are found at registration and an edited copy is found later (``prove --near``). A stored
copy is the pixels re-encoded as PNG: no EXIF, XMP, ICC or text chunk of the original reaches IPFS or a trainer.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import iscc_lib
import numpy as np
from PIL import Image

from provenance.errors import InputError
from provenance.marks.fingerprint_codes import iscc_image_code, iscc_thumbnail

ITEM_TAG = b"provenance.dataset-item.v1"
NEAR_DISTANCE = 8  # Hamming distance (of 64 bits) at or under which two images are near-duplicates
MIN_SIDE = 512  # images smaller than this on a side are reported (too small for SD training)
CAPTIONS_FILE = "captions.jsonl"
MAX_PIXELS = 40_000_000  # an item larger than this is reported as not an image (a decompression bomb)


@dataclass(frozen=True)
class CaptionEntry:
    """One line of ``captions.jsonl``: the caption of a file, and its licence and source if given."""

    caption: str | None = None
    license: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ItemInput:
    """One file offered for a dataset: its path in the dataset ("/"-separated), bytes and caption line."""

    path: str
    data: bytes
    meta: CaptionEntry = field(default_factory=CaptionEntry)


@dataclass(frozen=True)
class PreparedItem:
    """An image item ready for the tree: hashes, size, ISCC code and (for storage) its stripped copy."""

    path: str
    size: int
    sha256: str
    width: int
    height: int
    iscc: str
    caption: str | None
    caption_sha256: str | None
    license: str | None
    source: str | None
    stripped: bytes | None  # the pixels re-encoded as PNG, when the item is to be stored

    @property
    def item_hash(self) -> bytes:
        """The item's 32-byte leaf value (the contract's item hash; ``MerkleTree`` hashes it into a leaf)."""
        return item_hash(self.sha256, self.caption_sha256)


@dataclass
class Hygiene:
    """What registration found: duplicates, near-duplicates, small images, files that are not images."""

    exact_duplicates: list[list[str]] = field(default_factory=list)  # groups of paths with the same bytes
    near_duplicates: list[dict[str, object]] = field(default_factory=list)  # {"a", "b", "distance"}
    small_images: list[dict[str, object]] = field(default_factory=list)  # {"path", "width", "height"}
    not_images: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}: left out of the tree
    exif_stripped: int = 0  # stored copies whose original carried metadata (all stored copies are stripped)

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        return {
            "exact_duplicates": self.exact_duplicates,
            "near_duplicates": self.near_duplicates,
            "small_images": self.small_images,
            "not_images": self.not_images,
            "exif_stripped": self.exif_stripped,
        }


def item_hash(image_sha256: str, caption_sha256: str | None) -> bytes:
    """``sha256(tag + image sha256 + (caption sha256 or 32 zero bytes))``: an image with its caption."""
    caption = bytes.fromhex(caption_sha256) if caption_sha256 else bytes(32)
    return hashlib.sha256(ITEM_TAG + bytes.fromhex(image_sha256) + caption).digest()


def iscc_distance(a: str, b: str) -> int:
    """Hamming distance between two ISCC image codes (``ISCC:...`` strings), of 64 bits."""
    return bin(_iscc_bits(a) ^ _iscc_bits(b)).count("1")


def _iscc_bits(code: str) -> int:
    return int.from_bytes(iscc_lib.iscc_decode(code.removeprefix("ISCC:"))[4], "big")


def read_captions(path: Path) -> dict[str, CaptionEntry]:
    """Parse ``captions.jsonl``: ``{"file", "caption", "license"?, "source"?}`` per line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read captions file {path.name}: {exc}") from None
    return parse_captions(lines, path.name)


def parse_captions(lines: Iterable[str], name: str = CAPTIONS_FILE) -> dict[str, CaptionEntry]:
    """Caption lines (JSON objects) by file path; a line that is not one is refused with its number."""
    entries: dict[str, CaptionEntry] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{name} line {number} is not JSON") from None
        if not isinstance(row, dict) or not isinstance(row.get("file"), str):
            raise InputError(f'{name} line {number} needs a "file" string')
        values = {k: row.get(k) for k in ("caption", "license", "source")}
        if any(v is not None and not isinstance(v, str) for v in values.values()):
            raise InputError(f"{name} line {number}: caption, license and source are strings")
        entries[row["file"].replace("\\", "/").removeprefix("./")] = CaptionEntry(**values)
    return entries


def attach_captions(files: list[ItemInput], captions: dict[str, CaptionEntry]) -> list[ItemInput]:
    """The files with their caption lines; captions naming files that are not there are refused."""
    names = {f.path for f in files}
    missing = sorted(set(captions) - names)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"captions name files that are not in the dataset: {shown}")
    return [ItemInput(f.path, f.data, captions.get(f.path, CaptionEntry())) for f in files]


def folder_files(folder: Path) -> list[ItemInput]:
    """Every regular file under ``folder`` (sorted, hidden files and ``captions.jsonl`` skipped)."""
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    items = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if not path.is_file() or path.is_symlink() or any(part.startswith(".") for part in relative.split("/")):
            continue
        if relative == CAPTIONS_FILE:
            continue
        items.append(ItemInput(relative, path.read_bytes()))
    return items


def _decode(data: bytes) -> tuple[Image.Image | None, str]:
    """The decoded image (RGB or RGBA), or None with the reason it is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                return None, f"{image.width}x{image.height} is more pixels than {MAX_PIXELS}"
            image.load()
    except Exception as exc:  # PIL raises many kinds for what is not an image
        return None, f"not an image ({type(exc).__name__})"
    return image, ""


def _has_metadata(image: Image.Image) -> bool:
    info_keys = set(image.info) - {"dpi", "gamma", "transparency", "aspect", "jfif", "jfif_version",
                                   "jfif_unit", "jfif_density", "progressive", "progression"}  # fmt: skip
    return bool(info_keys) or bool(image.getexif())


def stripped_png(image: Image.Image) -> bytes:
    """The pixels alone, as PNG: a new image from the decoded pixels, so no metadata of the original survives."""
    mode = "RGBA" if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info else "RGB"
    pixels = np.asarray(image.convert(mode))
    out = io.BytesIO()
    Image.fromarray(pixels, mode).save(out, "PNG")
    return out.getvalue()


def prepare(files: list[ItemInput], *, store: bool) -> tuple[list[PreparedItem], Hygiene]:
    """Hash, decode and fingerprint each file; the image items (in the given order) and the hygiene report."""
    hygiene = Hygiene()
    items: list[PreparedItem] = []
    for f in files:
        image, reason = _decode(f.data)
        if image is None:
            hygiene.not_images.append({"path": f.path, "reason": reason})
            continue
        rgb = np.asarray(image.convert("RGB"))
        code, _ = iscc_image_code(iscc_thumbnail(rgb))
        caption = f.meta.caption
        stripped = None
        if store:
            stripped = stripped_png(image)
            hygiene.exif_stripped += _has_metadata(image)
        items.append(
            PreparedItem(
                path=f.path,
                size=len(f.data),
                sha256=hashlib.sha256(f.data).hexdigest(),
                width=image.width,
                height=image.height,
                iscc=code,
                caption=caption,
                caption_sha256=hashlib.sha256(caption.encode()).hexdigest() if caption is not None else None,
                license=f.meta.license,
                source=f.meta.source,
                stripped=stripped,
            )
        )
        if image.width < MIN_SIDE or image.height < MIN_SIDE:
            hygiene.small_images.append({"path": f.path, "width": image.width, "height": image.height})
    _duplicates(items, hygiene)
    return items, hygiene


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _duplicates(items: list[PreparedItem], hygiene: Hygiene) -> None:
    """Exact duplicates (same bytes) and near-duplicates (ISCC distance <= ``NEAR_DISTANCE``) between items."""
    by_hash: dict[str, list[str]] = {}
    first: dict[str, PreparedItem] = {}  # one item per distinct content
    for item in items:
        by_hash.setdefault(item.sha256, []).append(item.path)
        first.setdefault(item.sha256, item)
    hygiene.exact_duplicates = [paths for paths in by_hash.values() if len(paths) > 1]
    firsts = list(first.values())
    if len(firsts) < 2:
        return
    # All pairs at once: XOR of 64-bit codes and a popcount; 10,000 images are 50 M pairs, done in row chunks.
    bits = np.array([_iscc_bits(i.iscc) for i in firsts], dtype=np.uint64)
    for start in range(0, len(bits), 256):
        chunk = bits[start : start + 256, None] ^ bits[None, :]
        distances = _POPCOUNT[chunk.view(np.uint8)].reshape(chunk.shape[0], len(bits), 8).sum(-1)
        rows, cols = np.nonzero(distances <= NEAR_DISTANCE)
        for row, col in zip(rows, cols, strict=True):
            a = start + int(row)
            if a < col:
                hygiene.near_duplicates.append(
                    {"a": firsts[a].path, "b": firsts[col].path, "distance": int(distances[row, col])}
                )
