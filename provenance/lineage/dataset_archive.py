"""The files of an uploaded dataset: a zip or tar archive, or a JSON list of items with base64 images."""

from __future__ import annotations

import base64
import binascii
import io
import tarfile
import zipfile
from collections.abc import Iterator
from typing import Any

from provenance.errors import InputError, PayloadTooLargeError
from provenance.lineage.dataset_items import CAPTIONS_FILE, CaptionEntry, ItemInput, attach_captions, parse_captions

MAX_MEMBERS = 20_000  # files one archive may hold


def _safe(name: str) -> str | None:
    """The member's path inside the dataset, or None for what is skipped (folders' metadata, hidden files)."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    if ".." in parts:
        raise InputError(f"archive member {name[:100]!r} points outside the archive")
    return "/".join(parts)


def _zip_members(data: bytes, limit: int) -> Iterator[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        infos = [i for i in archive.infolist() if not i.is_dir()]
        if len(infos) > MAX_MEMBERS:
            raise InputError(f"the archive holds {len(infos)} files; the limit is {MAX_MEMBERS}")
        if sum(i.file_size for i in infos) > limit:
            raise PayloadTooLargeError(f"the archive unpacks to more than {limit} bytes")
        for info in infos:
            yield info.filename, archive.read(info)


def _tar_members(data: bytes, limit: int) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        members = [m for m in archive.getmembers() if m.isfile()]  # links and devices are never read
        if len(members) > MAX_MEMBERS:
            raise InputError(f"the archive holds {len(members)} files; the limit is {MAX_MEMBERS}")
        if sum(m.size for m in members) > limit:
            raise PayloadTooLargeError(f"the archive unpacks to more than {limit} bytes")
        for member in members:
            extracted = archive.extractfile(member)
            if extracted is not None:
                yield member.name, extracted.read()


def archive_files(data: bytes, *, unpacked_limit: int) -> list[ItemInput]:
    """The files of a zip or tar (optionally compressed) archive, with ``captions.jsonl`` applied when present."""
    members = _zip_members if zipfile.is_zipfile(io.BytesIO(data)) else _tar_members
    files: dict[str, bytes] = {}
    try:
        for name, content in members(data, unpacked_limit):
            path = _safe(name)
            if path is not None:
                files[path] = content
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise InputError(f"the upload is not a readable zip or tar archive ({type(exc).__name__})") from None
    captions: dict[str, CaptionEntry] = {}
    if CAPTIONS_FILE in files:
        captions = parse_captions(files.pop(CAPTIONS_FILE).decode("utf-8", "replace").splitlines())
    return attach_captions([ItemInput(p, d) for p, d in sorted(files.items())], captions)


def json_files(items: list[dict[str, Any]]) -> list[ItemInput]:
    """The files of a JSON upload: ``[{"file", "image" (base64), "caption"?, "license"?, "source"?}]``."""
    files: list[ItemInput] = []
    seen: set[str] = set()
    for number, item in enumerate(items, 1):
        path = _safe(str(item.get("file") or ""))
        if path is None:
            raise InputError(f'item {number} needs a "file" name')
        if path in seen:
            raise InputError(f"item {number}: the file name {path!r} appears twice")
        seen.add(path)
        try:
            data = base64.b64decode(str(item.get("image") or ""), validate=True)
        except (binascii.Error, ValueError):
            raise InputError(f'item {number} ({path}): "image" is not base64') from None
        meta = CaptionEntry(**{k: item.get(k) for k in ("caption", "license", "source")})
        files.append(ItemInput(path, data, meta))
    return files
