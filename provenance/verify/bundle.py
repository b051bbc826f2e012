"""The provenance bundle: one self-contained JSON with everything a verifier needs.

Built from a record, pinned on IPFS, and checked by ``verify_with_bundle`` with no access to the
service or its database: recompute the hash, check the ECDSA signature, ask the chain (one or more
RPC endpoints) about the hash or the Merkle root and proof, and validate the C2PA manifest.

A bundle is the sender's words. Nothing in it is trusted on its own say: the verifier pins the
registry (``TrustRoot``), and every key, anchor and registrant the bundle names must be published
on that registry by its owner. A bundle that names another registry, a key the registry never
published (or revoked before the registration), a registrant that was not a writer, or a C2PA
anchor the registry does not list is ``untrusted``.

Nor is one RPC trusted: every chain read goes through a ``CrossCheckedReader``, which pins one block
(``latest - confirmations``) and asks every endpoint given, at that block; endpoints that disagree
(a forked chain, a node that lies) or fail make the verdict ``untrusted``, naming them. A verdict
that rests on a development chain (anvil's 31337) says so in its reasons.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field

from provenance import __version__, media
from provenance.anchoring.merkle import verify_proof
from provenance.chain.devchain import development_chain_reason, is_development_chain
from provenance.chain.reader import CrossCheckedReader, RpcDisagreement
from provenance.db.models import AnchorBatch, Record
from provenance.errors import InputError, ProvenanceError
from provenance.ipfs.unixfs import compute_cid
from provenance.manifests.manifest import ManifestReader
from provenance.manifests.pki import C2paCredentials
from provenance.signing import sha256_hex, verify_signature
from provenance.trust.document import TrustDocument, TrustRoot, certificate_fingerprint, split_certificates

FORMAT = "provenance-bundle/1"


def build_bundle(
    record: Record,
    *,
    public_key_pem: str,
    credentials: C2paCredentials,
    chain_id: int,
    registry_address: str,
    batch: AnchorBatch | None,
) -> dict[str, Any]:
    merkle = None
    if record.batch_root:
        merkle = {
            "root": record.batch_root,
            "proof": record.merkle_proof or [],
            "leaves_cid": batch.leaves_cid if batch else None,
        }
    return {
        "format": FORMAT,
        "issuer": {"product": "provenance", "version": __version__},
        "record_id": record.id,
        "sha256": record.sha256,
        "media_type": record.media_type,
        "cid": record.cid,
        "watermark_id": record.watermark_id,
        "signature": {
            "algorithm": "ECDSA-P256-SHA256",
            "encoding": "base64 DER over the file bytes",
            "value": record.signature,
            "key_id": record.key_id,
            "public_key_pem": public_key_pem,
        },
        "c2pa": {
            "signer_chain_pem": credentials.chain_pem.decode(),
            "trust_anchors_pem": credentials.trust_anchors_pem.decode(),
        },
        "chain": {
            "chain_id": chain_id,
            "registry_address": registry_address,
            "mode": "batch" if merkle else "single",
            "tx_hash": record.tx_hash,
            "block_number": record.block_number,
            "merkle": merkle,
        },
    }


def bundle_bytes(bundle: dict[str, Any]) -> bytes:
    """Canonical serialisation: the pinned bytes, and so the bundle's CID, are reproducible."""
    return json.dumps(bundle, sort_keys=True, indent=1).encode()


BundleVerdict = Literal["authentic", "untrusted", "invalid", "mismatch"]
EXIT_CODES: dict[str, int] = {"authentic": 0, "mismatch": 1, "invalid": 1, "untrusted": 1}


class BundleReport(BaseModel):
    """The result of checking a file against a bundle and a pinned registry."""

    verdict: BundleVerdict
    reasons: list[str] = Field(
        default_factory=list,
        description="Why the verdict is not authentic, first cause first; last, what any verdict rests on "
        "(a development chain).",
    )
    pinned: TrustRoot | None = Field(description="The registry the verdict is relative to; None: nothing was pinned.")
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class _Findings:
    """Reasons collected while checking, by kind: trust failures make ``untrusted``, others ``invalid``.

    ``unpinned`` (nothing pinned, or the bundle names another registry) and ``unreliable`` (the RPC
    endpoints disagree or fail) outrank everything: the other checks then say nothing about the
    operator the verifier meant to trust. ``caveats`` do not change the verdict but are stated with it.
    """

    def __init__(self) -> None:
        self.unreliable: list[str] = []
        self.caveats: list[str] = []
        self.unpinned: list[str] = []
        self.untrusted: list[str] = []
        self.invalid: list[str] = []


def _field(bundle: dict[str, Any], *path: str) -> Any:
    value: Any = bundle
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise InputError(f"The bundle is incomplete: missing {'.'.join(path)}.")
        value = value[key]
    return value


def _check_trust(
    bundle: dict[str, Any], pin: TrustRoot | None, reader: CrossCheckedReader, found: _Findings
) -> dict[str, Any]:
    chain_id = reader.chain_id()
    named_chain, named_registry = _field(bundle, "chain", "chain_id"), _field(bundle, "chain", "registry_address")
    report: dict[str, Any] = {
        "rpc_chain_id": chain_id,
        "bundle_chain_id": named_chain,
        "bundle_registry": named_registry,
        "pinned": pin.model_dump() if pin else None,
    }
    if chain_id != named_chain:
        found.invalid.append(f"the RPC serves chain {chain_id}, the bundle names chain {named_chain}")
    if pin is None:
        found.unpinned.append(
            "no trust root pinned: pass --registry ADDRESS (or --trust trust.json) with the registry the operator "
            f"publishes; this bundle names registry {named_registry} on chain {named_chain}, which proves nothing by "
            "itself"
        )
    elif not pin.names(named_chain, named_registry):
        found.unpinned.append(
            f"the bundle names registry {named_registry} on chain {named_chain}, not the pinned " + pin.describe()
        )
    elif pin.chain_id is not None and pin.chain_id != chain_id:
        found.untrusted.append(f"the RPC serves chain {chain_id}, the pinned registry is on chain {pin.chain_id}")
    report["development_chain"] = is_development_chain(chain_id)
    if report["development_chain"]:
        found.caveats.append(development_chain_reason(chain_id))
    report["registry_has_code"] = reader.has_code()
    if not report["registry_has_code"]:
        found.invalid.append(f"there is no contract at {reader.address} on chain {chain_id} at block {reader.block}")
    report["ok"] = not found.unpinned and not found.untrusted and not found.invalid
    return report


def _check_signature(data: bytes, bundle: dict[str, Any], found: _Findings) -> dict[str, Any]:
    sig = _field(bundle, "signature")
    pem = str(_field(bundle, "signature", "public_key_pem"))
    try:
        der = serialization.load_pem_public_key(pem.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id_ok = hashlib.sha256(der).hexdigest() == sig.get("key_id")
    except ValueError:
        key_id_ok = False
    signature_ok = verify_signature(pem, data, str(sig.get("value", "")))
    if not signature_ok:
        found.invalid.append("the ECDSA signature does not check against the bundled key")
    if not key_id_ok:
        found.invalid.append("the bundled public key does not hash to the key id")
    return {
        "ok": signature_ok and key_id_ok,
        "signature_valid": signature_ok,
        "key_id_matches": key_id_ok,
        "key_id": sig.get("key_id"),
    }


def _not_yet(bundle: dict[str, Any], reader: CrossCheckedReader) -> str | None:
    """Why an entry missing at the pinned block may only be unconfirmed yet, or None."""
    claimed = bundle["chain"].get("block_number")
    if not isinstance(claimed, int) or reader.block is None or claimed <= reader.block:
        return None
    latest = min(reader.latest.values()) if reader.latest else reader.block
    return (
        f"not yet registered at block {reader.block} (latest {latest} minus {reader.confirmations} confirmations); "
        f"the bundle says block {claimed}: verify again once that block has {reader.confirmations} confirmations"
    )


def _check_chain(bundle: dict[str, Any], sha: str, reader: CrossCheckedReader, found: _Findings) -> dict[str, Any]:
    chain = _field(bundle, "chain")
    report: dict[str, Any] = {
        "registry_address": reader.address,
        "mode": chain.get("mode"),
        "read_at_block": reader.block,
    }
    if chain.get("mode") == "batch":
        merkle = _field(bundle, "chain", "merkle")
        root_hex = str(merkle["root"])
        proof_hex = [str(p) for p in merkle.get("proof", [])]
        proof_ok = verify_proof(
            bytes.fromhex(sha),
            [bytes.fromhex(p.removeprefix("0x")) for p in proof_hex],
            bytes.fromhex(root_hex.removeprefix("0x")),
        )  # checked here, then by the contract itself
        entry = reader.batch(root_hex)
        on_chain = reader.is_registered(sha, root_hex, proof_hex)
        registered = entry.anchored and proof_ok and on_chain
        report.update(
            root_anchored=entry.anchored,
            proof_valid=proof_ok,
            contract_says_registered=on_chain,
            leaves_cid=entry.leaves_cid,
            registrant=entry.registrant,
            block_number=entry.block_number,
            timestamp=entry.timestamp,
        )
        if proof_ok and not entry.anchored and (later := _not_yet(bundle, reader)):
            found.untrusted.append(f"the batch root is {later}")
            report["not_yet_registered"] = True
        elif not proof_ok or not on_chain:
            found.invalid.append("the Merkle proof does not lead to an anchored root")
    else:
        single = reader.lookup(sha)
        registered = single.registered and single.cid == bundle.get("cid")
        report.update(
            registered=single.registered,
            registrant=single.registrant,
            block_number=single.block_number,
            timestamp=single.timestamp,
            cid_matches=single.cid == bundle.get("cid"),
        )
        if not single.registered and (later := _not_yet(bundle, reader)):
            found.untrusted.append(f"the hash is {later}")
            report["not_yet_registered"] = True
        elif not single.registered:
            found.invalid.append(f"the hash is not registered on {reader.address} (read at block {reader.block})")
        elif single.cid != bundle.get("cid"):
            found.invalid.append("the registry holds another CID for this hash")
    report["registered"] = registered
    block, registrant = report.get("block_number"), report.get("registrant")
    if registered and block is not None and registrant:
        # Registered by an address the owner allowed, with a key the owner published, both at that block.
        report["registrant_was_writer"] = reader.writer_at(registrant, int(block))
        key_id = str(_field(bundle, "signature", "key_id"))
        status = reader.key_status(key_id)
        report["key_valid_at_registration"] = reader.key_valid_at(key_id, int(block))
        report["key_status"] = {
            "published": status.published,
            "valid_from_block": status.valid_from,
            "revoked_at_block": status.revoked_at,
        }
        if not report["registrant_was_writer"]:
            found.untrusted.append(f"the registrant {registrant} was not a writer of the registry at block {block}")
        if not status.published:
            found.untrusted.append(f"the signing key {key_id[:16]}… was never published on the registry")
        elif not report["key_valid_at_registration"]:
            found.untrusted.append(
                f"the signing key {key_id[:16]}… was not valid at the registration block {block} (valid from block "
                f"{status.valid_from}, revoked at block {status.revoked_at})"
            )
    report["ok"] = (
        registered and report.get("registrant_was_writer", False) and report.get("key_valid_at_registration", False)
    )
    return report


def _check_c2pa(
    data: bytes, fmt: str, bundle: dict[str, Any], reader: CrossCheckedReader, extra_anchors: str, found: _Findings
) -> dict[str, Any]:
    # Candidate anchors come from the bundle (and the trust document); only those the registry publishes count.
    candidates = split_certificates(str(_field(bundle, "c2pa", "trust_anchors_pem")) + "\n" + extra_anchors)
    published: list[tuple[str, x509.Certificate]] = []
    refused: list[tuple[str, x509.Certificate]] = []
    for cert in candidates:
        fp = certificate_fingerprint(cert)
        (published if reader.is_trust_anchor(fp) else refused).append((fp, cert))
    anchors_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in published)
    credentials = C2paCredentials(chain_pem=b"", private_key_pem=b"", trust_anchors_pem=anchors_pem)
    manifest = ManifestReader(credentials).read(data, media.FORMATS[fmt])
    names_record = manifest.record_id == bundle.get("record_id")
    ok = manifest.present and manifest.valid and manifest.trusted and names_record
    if not manifest.present:
        found.invalid.append("the file has no C2PA manifest")
    elif not manifest.valid:
        found.invalid.append("the C2PA manifest fails validation: " + "; ".join(manifest.failures))
    elif not manifest.trusted:
        found.untrusted.append("the C2PA signer does not chain to a trust anchor published on the registry")
    elif not names_record:
        found.invalid.append("the C2PA manifest names another record")
    return {
        "ok": ok,
        "anchors_published": sorted({fp for fp, _ in published}),
        "anchors_not_published": sorted({fp for fp, _ in refused}),
        **manifest.as_dict(),
    }


def verify_with_bundle(
    data: bytes,
    bundle: dict[str, Any],
    rpc_url: str | Sequence[str],
    pin: TrustRoot | None = None,
    trust: TrustDocument | None = None,
    *,
    confirmations: int = 0,
) -> BundleReport:
    """Check ``data`` against a bundle using only the bundle, chain RPCs and the pinned registry.

    ``pin`` (or ``trust``, whose pin is used) names the registry every check is made against; without
    one the report is at best ``untrusted`` and says what to pin. ``rpc_url`` is one endpoint or
    several: all are read at the block ``latest - confirmations`` and must agree, else the verdict is
    ``untrusted`` with the disagreement as its first reason. Raises ``InputError`` for a file that is
    not an image, a bundle that is not one or a negative ``confirmations``, ``ChainError`` when no RPC
    answers at all.
    """
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        found_format = bundle.get("format") if isinstance(bundle, dict) else None
        raise InputError(f"Not a provenance bundle (format {found_format!r}, expected {FORMAT!r}).")
    fmt = media.sniff_format(data)
    if fmt is None:
        raise InputError("The file is not a PNG, JPEG or WebP image.")
    if trust is not None:
        pin = pin or trust.pin()
    found = _Findings()
    checks: dict[str, dict[str, Any]] = {}
    sha = sha256_hex(data)
    expected = str(_field(bundle, "sha256"))
    checks["hash"] = {"ok": sha == expected, "sha256": sha, "expected": expected}
    if sha != expected:
        # Not the bundle's file: nothing else about it can be concluded from this bundle.
        return BundleReport(
            verdict="mismatch", reasons=["the file is not the one this bundle describes"], pinned=pin, checks=checks
        )
    # Every chain read goes to the pinned registry; the bundle's own address is used only when nothing is pinned.
    address = pin.registry_address if pin is not None else str(_field(bundle, "chain", "registry_address"))
    try:
        reader = CrossCheckedReader(rpc_url, address, confirmations=confirmations)
    except ValueError:
        raise InputError(f"The bundle's registry address {address!r} is not an address.") from None
    checks["rpc"] = {"ok": False, "endpoints": reader.rpc_urls, "confirmations": confirmations}
    try:
        checks["trust"] = _check_trust(bundle, pin, reader, found)
        checks["signature"] = _check_signature(data, bundle, found)
        if checks["trust"]["registry_has_code"]:
            checks["chain"] = _check_chain(bundle, sha, reader, found)
            extra = "".join(a.certificate_pem or "" for a in trust.c2pa_trust_anchors) if trust is not None else ""
            checks["c2pa"] = _check_c2pa(data, fmt, bundle, reader, extra, found)
        reader.confirm()  # the pinned block did not change under the reads
        checks["rpc"].update(ok=True, agree=True)
    except RpcDisagreement as exc:
        found.unreliable.append(exc.detail)
        checks["rpc"].update(agree=False, error=exc.detail)
    except ProvenanceError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise InputError(f"The bundle is malformed: {exc}") from None
    cid_ok = compute_cid(data) == bundle.get("cid")
    checks["ipfs"] = {"ok": cid_ok, "cid": bundle.get("cid")}
    if not cid_ok:
        found.invalid.append("the file's CID is not the bundle's CID")
    checks["rpc"].update(block=reader.block, block_hash=reader.block_hash, latest=reader.latest)
    if found.unreliable or found.unpinned:
        verdict: BundleVerdict = "untrusted"
    elif found.invalid:
        verdict = "invalid"
    elif found.untrusted:
        verdict = "untrusted"
    else:
        verdict = "authentic"
    reasons = found.unreliable + found.unpinned + found.invalid + found.untrusted + found.caveats
    return BundleReport(verdict=verdict, reasons=reasons, pinned=pin, checks=checks)
