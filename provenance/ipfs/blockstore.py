"""The embedded IPFS blockstore: every block of the UnixFS DAG as a file named by its CID.

Blocks are written atomically (temp file + rename) and a pin is an empty file named by the root
CID, so a crash leaves at worst unpinned blocks, never a torn one. The gateway reads files back by
walking the DAG from the root.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from provenance.errors import NotFoundError, StorageUnavailableError
from provenance.fsutil import write_atomic
from provenance.ipfs import AddResult
from provenance.ipfs.unixfs import DAG_PB, build_dag, child_cids, cid_codec, cid_from_str, cid_to_str


class LocalBlockstore:
    """``ContentStore`` on the local disk."""

    def __init__(self, root: Path) -> None:
        self.blocks_dir = root / "blocks"
        self.pins_dir = root / "pins"
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        self.pins_dir.mkdir(parents=True, exist_ok=True)

    @property
    def description(self) -> str:
        """One line saying which store this is."""
        return "embedded blockstore"

    def _block_path(self, cid: str) -> Path:
        return self.blocks_dir / cid[-2:] / cid

    def add(self, data: bytes) -> AddResult:
        """Store the bytes' blocks and pin them (``StorageUnavailableError`` when the disk refuses)."""
        try:
            return self._add(data)
        except OSError as exc:  # read-only, full or broken disk: a fault to report (503), not a bug
            raise StorageUnavailableError(f"The blockstore cannot be written ({exc.strerror}); retry later.") from exc

    def check_writable(self) -> None:
        """Write and delete a scratch file next to the blocks and the pins (``/healthz``)."""
        for directory in (self.blocks_dir, self.pins_dir):
            try:
                fd, name = tempfile.mkstemp(dir=directory, prefix=".probe-")
                os.close(fd)
                os.unlink(name)
            except OSError as exc:
                raise StorageUnavailableError(f"The blockstore cannot be written ({exc.strerror}).") from exc

    def _add(self, data: bytes) -> AddResult:
        root, blocks = build_dag(data)
        cid = cid_to_str(root.cid)
        created = not (self.pins_dir / cid).exists()
        for node in blocks:
            path = self._block_path(cid_to_str(node.cid))
            if not path.exists():
                write_atomic(path, node.block)
        (self.pins_dir / cid).touch()
        return AddResult(cid=cid, size=len(data), created=created)

    def has(self, cid: str) -> bool:
        """Whether the CID is pinned and its blocks are all here."""
        try:
            cid_from_str(cid)
        except ValueError:
            return False
        return (self.pins_dir / cid).exists() and self._block_path(cid).exists()

    def _get_block(self, cid: str) -> bytes:
        try:
            return self._block_path(cid).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"Block {cid} is not in the blockstore.") from None
        except OSError as exc:
            raise StorageUnavailableError(f"The blockstore cannot be read ({exc.strerror}); retry later.") from exc

    def _walk(self, cid: str, out: bytearray) -> None:
        block = self._get_block(cid)
        if cid_codec(cid) != DAG_PB:
            out += block
            return
        for child in child_cids(block):
            self._walk(cid_to_str(child), out)

    def cat(self, cid: str) -> bytes:
        """The bytes of a pinned CID (``NotFoundError`` when absent)."""
        try:
            cid_from_str(cid)
        except ValueError as exc:
            raise NotFoundError(f"{exc}") from None
        out = bytearray()
        self._walk(cid, out)
        return bytes(out)

    def remove(self, cid: str) -> None:
        """Unpin and delete the DAG's blocks unless another pinned file shares them."""
        (self.pins_dir / cid).unlink(missing_ok=True)
        try:
            data = self.cat(cid)
        except NotFoundError:
            return
        _, blocks = build_dag(data)
        shared: set[str] = set()
        for pin in self.pins_dir.iterdir():
            if pin.name != cid:
                try:
                    _, other = build_dag(self.cat(pin.name))
                    shared.update(cid_to_str(b.cid) for b in other)
                except NotFoundError:
                    continue
        for node in blocks:
            name = cid_to_str(node.cid)
            if name not in shared:
                self._block_path(name).unlink(missing_ok=True)
