"""The C2PA manifest store (JUMBF) embedded in a certified file, taken out as the ``.c2pa`` sidecar bytes.

Where each format keeps it (C2PA specification, "Embedding manifests into assets"): PNG in one ``caBX``
chunk; JPEG in APP11 segments (``JP`` common identifier, box instance, sequence number), the first carrying
the JUMBF superbox header and each further segment repeating it (8 bytes: LBox, TBox) before its payload;
WebP in one ``C2PA`` RIFF chunk. The result is the store as c2pa reads it from an ``application/c2pa`` stream.
"""

from __future__ import annotations

import struct

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(data: bytes) -> bytes | None:
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        if kind == b"caBX":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def _jpeg(data: bytes) -> bytes | None:
    parts: dict[int, list[tuple[int, bytes]]] = {}
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no APP11 after the headers
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        segment = data[pos + 4 : pos + 2 + length]
        if marker == 0xEB and segment[:2] == b"JP" and len(segment) >= 16:
            instance, sequence = struct.unpack_from(">HI", segment, 2)
            if segment[12:16] == b"jumb":
                parts.setdefault(instance, []).append((sequence, segment[8:]))
        pos += 2 + length
    for pieces in parts.values():
        pieces.sort()
        first = pieces[0][1]
        # Later segments repeat the superbox's LBox and TBox: only the first keeps them.
        store = first + b"".join(piece[8:] for _, piece in pieces[1:])
        if b"c2pa" in store[:64]:  # the manifest store superbox (label "c2pa"), not another JUMBF box
            return store
    return None


def _webp(data: bytes) -> bytes | None:
    pos = 12
    while pos + 8 <= len(data):
        kind, length = struct.unpack_from("<4sI", data, pos)
        if kind == b"C2PA":
            return data[pos + 8 : pos + 8 + length]
        pos += 8 + length + (length & 1)
    return None


def manifest_store(data: bytes) -> bytes | None:
    """The C2PA manifest store embedded in a PNG, JPEG or WebP file; None when it carries none."""
    if data.startswith(_PNG_SIGNATURE):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None


def active_manifest_label(store: bytes) -> str | None:
    """The active manifest's label (``urn:c2pa:...``, the SBR manifest id) of a manifest store; None if unreadable."""
    import io
    import json

    import c2pa

    try:
        with c2pa.Reader("application/c2pa", io.BytesIO(store)) as reader:
            label = json.loads(reader.json()).get("active_manifest")
    except (c2pa.C2paError, ValueError):
        return None
    return label if isinstance(label, str) else None
