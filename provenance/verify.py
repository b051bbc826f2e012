"""Verification: the certification stages walked backwards, each reported on its own.

``Verifier.verify`` gathers evidence about an uploaded file (its hash, its C2PA manifest, its
watermark), resolves the record the evidence points to, then reads the chain and IPFS live.
The verdict is a small policy over those checks:

- ``invalid``: a C2PA manifest that fails validation, or a record signature that does not check;
- ``authentic``: exactly the certified bytes, signature valid, registered on chain;
- ``pending``: exactly the certified bytes, signature valid, not yet registered on chain;
- ``modified``: the watermark or manifest leads to a record but the bytes differ;
- ``unknown``: nothing leads to a record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from provenance import media, watermark
from provenance.chain import Registry
from provenance.db.models import Record
from provenance.db.repository import RecordRepository
from provenance.errors import ProvenanceError
from provenance.ipfs import ContentStore
from provenance.ipfs.unixfs import compute_cid
from provenance.manifest import ManifestReader, ManifestReport
from provenance.signing import sha256_hex, verify_signature

AUTHENTIC, PENDING, MODIFIED, UNKNOWN, INVALID = "authentic", "pending", "modified", "unknown", "invalid"


@dataclass
class Evidence:
    """Everything the checks found; filled stage by stage."""

    data: bytes
    mime_type: str
    sha256: str
    exact: Record | None = None
    signature_valid: bool | None = None
    c2pa: ManifestReport | None = None
    detection: watermark.Detection | None = None
    watermark_record: Record | None = None
    manifest_record: Record | None = None
    chain: dict[str, Any] = field(default_factory=dict)
    ipfs: dict[str, Any] = field(default_factory=dict)

    @property
    def record(self) -> Record | None:
        """The record the evidence leads to, strongest link first."""
        return self.exact or self.manifest_record or self.watermark_record


@dataclass
class VerificationResult:
    verdict: str
    record_id: str | None
    checks: dict[str, dict[str, Any]]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "record_id": self.record_id, "checks": self.checks}


def decide(ev: Evidence) -> str:
    """The verdict policy."""
    if ev.c2pa is not None and ev.c2pa.present and not ev.c2pa.valid:
        return INVALID
    if ev.exact is not None:
        if not ev.signature_valid:
            return INVALID
        return AUTHENTIC if ev.chain.get("registered") else PENDING
    if ev.record is not None:
        return MODIFIED
    return UNKNOWN


class Verifier:
    def __init__(
        self,
        *,
        repository: RecordRepository,
        manifest_reader: ManifestReader,
        store: ContentStore,
        registry: Registry,
        max_upload_bytes: int,
        max_pixels: int,
    ) -> None:
        self.repository = repository
        self.manifest_reader = manifest_reader
        self.store = store
        self.registry = registry
        self.max_upload_bytes = max_upload_bytes
        self.max_pixels = max_pixels

    # Each check fills its part of the evidence and returns its report.
    def _check_exact(self, ev: Evidence) -> dict[str, Any]:
        ev.exact = self.repository.by_sha256(ev.sha256)
        if ev.exact is None:
            return {"matched": False, "sha256": ev.sha256}
        key = self.repository.public_key(ev.exact.key_id)
        ev.signature_valid = key is not None and verify_signature(key, ev.data, ev.exact.signature)
        return {
            "matched": True,
            "sha256": ev.sha256,
            "record_id": ev.exact.id,
            "key_id": ev.exact.key_id,
            "signature": ev.exact.signature,
            "signature_valid": ev.signature_valid,
        }

    def _check_c2pa(self, ev: Evidence) -> dict[str, Any]:
        ev.c2pa = self.manifest_reader.read(ev.data, ev.mime_type)
        if ev.c2pa.record_id:
            ev.manifest_record = self.repository.get(ev.c2pa.record_id)
        return ev.c2pa.as_dict()

    def _check_watermark(self, ev: Evidence, rgb: np.ndarray) -> dict[str, Any]:
        ev.detection = watermark.detect(rgb)
        report: dict[str, Any] = {
            "detected": ev.detection.detected,
            "method": watermark.METHOD,
            "watermark_id": ev.detection.watermark_id,
            "corrected_errors": ev.detection.corrected_errors,
            "bit_errors": ev.detection.bit_errors,
            "rescale": ev.detection.scale,
            "record_id": None,
        }
        if ev.detection.reason:
            report["reason"] = ev.detection.reason
        if ev.detection.watermark_id is not None:
            ev.watermark_record = self.repository.by_watermark(ev.detection.watermark_id)
            report["record_id"] = ev.watermark_record.id if ev.watermark_record else None
            if ev.watermark_record is None:
                report["reason"] = "a payload was read but it names no record of this service"
        return report

    def _check_chain(self, ev: Evidence) -> dict[str, Any]:
        # Read live from the contract; the database only says where to look (which batch root).
        record = ev.record
        queried = record.sha256 if ev.exact is None and record is not None else ev.sha256
        base = {
            "chain_id": self.registry.chain_id,
            "registry_address": self.registry.address,
            "queried_sha256": queried,
        }
        try:
            if record is not None and record.batch_root:
                ev.chain = self._batch_entry(record, base)
            else:
                entry = self.registry.lookup(queried)
                ev.chain = {
                    **base,
                    "mode": "single",
                    "registered": entry.registered,
                    "registrant": entry.registrant,
                    "block_number": entry.block_number,
                    "timestamp": entry.timestamp,
                    "cid": entry.cid,
                }
        except Exception as exc:  # an unreachable RPC is a result, not a crash
            ev.chain = {**base, "registered": False, "error": f"chain lookup failed: {exc}"}
            return ev.chain
        if record is not None:
            ev.chain["tx_hash"] = record.tx_hash
        return ev.chain

    def _batch_entry(self, record: Record, base: dict[str, Any]) -> dict[str, Any]:
        assert record.batch_root is not None
        entry = self.registry.batch(record.batch_root)
        included = self.registry.is_registered(record.sha256, record.batch_root, record.merkle_proof or [])
        return {
            **base,
            "mode": "batch",
            "registered": entry.anchored and included,
            "batch_root": record.batch_root,
            "proof": record.merkle_proof,
            "proof_valid": included,
            "leaves_cid": entry.leaves_cid,
            "registrant": entry.registrant,
            "block_number": entry.block_number,
            "timestamp": entry.timestamp,
        }

    def _check_ipfs(self, ev: Evidence) -> dict[str, Any]:
        cid = ev.record.cid if ev.record is not None else compute_cid(ev.data)
        try:
            pinned = self.store.has(cid)
            error = None
        except ProvenanceError as exc:
            pinned, error = False, exc.detail
        ev.ipfs = {"cid": cid, "pinned": pinned, "store": self.store.description}
        if ev.exact is None and ev.record is not None:
            ev.ipfs["note"] = "CID of the original certified file"
        if error:
            ev.ipfs["error"] = error
        return ev.ipfs

    def verify(self, data: bytes) -> VerificationResult:
        timings: dict[str, float] = {}

        def timed(name: str, fn: Any, *args: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args)
            finally:
                timings[name] = (time.perf_counter() - start) * 1000

        start = time.perf_counter()
        fmt, rgb = media.decode_rgb(data, max_bytes=self.max_upload_bytes, max_pixels=self.max_pixels)
        timings["decode"] = (time.perf_counter() - start) * 1000
        ev = Evidence(data=data, mime_type=media.FORMATS[fmt], sha256=sha256_hex(data))
        checks: dict[str, dict[str, Any]] = {}
        checks["exact"] = timed("exact", self._check_exact, ev)
        checks["c2pa"] = timed("c2pa", self._check_c2pa, ev)
        checks["watermark"] = timed("watermark", self._check_watermark, ev, rgb)
        checks["chain"] = timed("chain", self._check_chain, ev)
        checks["ipfs"] = timed("ipfs", self._check_ipfs, ev)
        record = ev.record
        return VerificationResult(decide(ev), record.id if record else None, checks, timings)
