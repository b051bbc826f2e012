"""The provenance bundle: one self-contained JSON with everything a verifier needs.

Built from a record, pinned on IPFS, and checked by ``verify_with_bundle`` with no access to the
service or its database: recompute the hash, check the ECDSA signature, ask the chain (one or more
RPC endpoints) about the hash or the Merkle root and proof, and validate the C2PA manifest.

The bundle's format (``ProvenanceBundle``, validated as it is parsed, and ``BundleError``) is in
``bundle_format.py``; the registration check (writer, key, hash or Merkle proof, CID) is the one the
online verifier runs too (``registration.py``).

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
from collections.abc import Sequence
from typing import Any, Literal, cast

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, Field

from provenance import media
from provenance.chain.devchain import development_chain_reason, is_development_chain
from provenance.chain.reader import CrossCheckedReader, RpcDisagreement
from provenance.errors import InputError
from provenance.ipfs.unixfs import compute_cid
from provenance.manifests.manifest import ManifestReader
from provenance.manifests.pki import C2paCredentials
from provenance.signing import sha256_hex, verify_signature
from provenance.trust.document import TrustDocument, TrustRoot, certificate_fingerprint, split_certificates
from provenance.verify.bundle_checks import (
    BundleChecks,
    RegistrationCheck,
    RpcCheck,
    SignatureCheck,
    TrustCheck,
)
from provenance.verify.bundle_format import (
    FORMAT,
    BundleC2pa,
    BundleChain,
    BundleError,
    BundleIssuer,
    BundleSignature,
    MerkleClaim,
    ProvenanceBundle,
    build_bundle,
    bundle_bytes,
)
from provenance.verify.registration import KeyAtRegistration, Registration, check_registration

# Re-exported: the bundle's format lives in bundle_format.py; callers import it from here too.
__all__ = [
    "EXIT_CODES",
    "FORMAT",
    "BundleC2pa",
    "BundleChain",
    "BundleError",
    "BundleIssuer",
    "BundleReport",
    "BundleSignature",
    "MerkleClaim",
    "ProvenanceBundle",
    "build_bundle",
    "bundle_bytes",
    "verify_with_bundle",
]

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
        """The CLI's exit code for this verdict (0 only for authentic)."""
        return EXIT_CODES[self.verdict]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
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

    def verdict(self) -> BundleVerdict:
        """What the findings amount to: unreliable or unpinned first, then invalid, then untrusted."""
        if self.unreliable or self.unpinned:
            return "untrusted"
        if self.invalid:
            return "invalid"
        return "untrusted" if self.untrusted else "authentic"

    def reasons(self) -> list[str]:
        """Every reason, first cause first; the caveats last."""
        return self.unreliable + self.unpinned + self.invalid + self.untrusted + self.caveats


def _check_trust(
    bundle: ProvenanceBundle, pin: TrustRoot | None, reader: CrossCheckedReader, found: _Findings
) -> TrustCheck:
    chain_id = reader.chain_id()
    named_chain, named_registry = bundle.chain.chain_id, bundle.chain.registry_address
    report: TrustCheck = {
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


def _check_signature(data: bytes, bundle: ProvenanceBundle, found: _Findings) -> SignatureCheck:
    sig = bundle.signature
    try:
        der = serialization.load_pem_public_key(sig.public_key_pem.encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id_ok = hashlib.sha256(der).hexdigest() == sig.key_id
    except ValueError:
        key_id_ok = False
    signature_ok = verify_signature(sig.public_key_pem, data, sig.value)
    if not signature_ok:
        found.invalid.append("the ECDSA signature does not check against the bundled key")
    if not key_id_ok:
        found.invalid.append("the bundled public key does not hash to the key id")
    return {
        "ok": signature_ok and key_id_ok,
        "signature_valid": signature_ok,
        "key_id_matches": key_id_ok,
        "key_id": sig.key_id,
    }


def _not_yet(bundle: ProvenanceBundle, reader: CrossCheckedReader) -> str | None:
    """Why an entry missing at the pinned block may only be unconfirmed yet, or None."""
    claimed = bundle.chain.block_number
    if claimed is None or reader.block is None or claimed <= reader.block:
        return None
    latest = min(reader.latest.values()) if reader.latest else reader.block
    return (
        f"not yet registered at block {reader.block} (latest {latest} minus {reader.confirmations} confirmations); "
        f"the bundle says block {claimed}: verify again once that block has {reader.confirmations} confirmations"
    )


def _check_chain(bundle: ProvenanceBundle, sha: str, reader: CrossCheckedReader, found: _Findings) -> RegistrationCheck:
    merkle = bundle.chain.merkle if bundle.chain.mode == "batch" else None
    reg = check_registration(
        reader,
        sha,
        key_id=bundle.signature.key_id,
        cid=None if merkle is not None else bundle.cid,
        batch_root=merkle.root if merkle is not None else None,
        proof=merkle.proof if merkle is not None else None,
    )
    report: RegistrationCheck = {
        "registry_address": reader.address,
        "mode": bundle.chain.mode,
        "read_at_block": reader.block,
    }
    if merkle is not None:
        report["root_anchored"] = reg.root_anchored
        report["proof_valid"] = reg.proof_valid
        report["contract_says_registered"] = reg.contract_says_registered
        report["leaves_cid"] = reg.leaves_cid
        _where(report, reg)
        if reg.proof_valid and not reg.root_anchored and (later := _not_yet(bundle, reader)):
            found.untrusted.append(f"the batch root is {later}")
            report["not_yet_registered"] = True
        elif not reg.proof_valid or not reg.contract_says_registered:
            found.invalid.append("the Merkle proof does not lead to an anchored root")
    else:
        report["registered"] = reg.found
        _where(report, reg)
        report["cid_matches"] = reg.cid_matches
        if not reg.found and (later := _not_yet(bundle, reader)):
            found.untrusted.append(f"the hash is {later}")
            report["not_yet_registered"] = True
        elif not reg.found:
            found.invalid.append(f"the hash is not registered on {reader.address} (read at block {reader.block})")
        elif not reg.cid_matches:
            found.invalid.append("the registry holds another CID for this hash")
    report["registered"] = reg.registered
    if reg.registered and reg.key is not None:
        _writer_and_key(reg.registrant, reg.block_number, reg.registrant_was_writer, reg.key, report, found)
    report["ok"] = reg.holds
    return report


def _where(report: RegistrationCheck, reg: Registration) -> None:
    """The registration's registrant, block and time, in that order of the report."""
    report["registrant"] = reg.registrant
    report["block_number"] = reg.block_number
    report["timestamp"] = reg.timestamp


def _writer_and_key(
    registrant: str | None,
    block: int | None,
    was_writer: bool | None,
    key: KeyAtRegistration,
    report: RegistrationCheck,
    found: _Findings,
) -> None:
    """Report (and give the reasons against) the registrant and the key, judged at the registration block."""
    report["registrant_was_writer"] = bool(was_writer)
    report["key_valid_at_registration"] = key.valid_at_registration
    report["key_status"] = {
        "published": key.published,
        "valid_from_block": key.valid_from_block,
        "revoked_at_block": key.revoked_at_block,
    }
    if not was_writer:
        found.untrusted.append(f"the registrant {registrant} was not a writer of the registry at block {block}")
    if not key.published:
        found.untrusted.append(f"the signing key {key.key_id[:16]}… was never published on the registry")
    elif not key.valid_at_registration:
        found.untrusted.append(
            f"the signing key {key.key_id[:16]}… was not valid at the registration block {block} (valid from block "
            f"{key.valid_from_block}, revoked at block {key.revoked_at_block})"
        )


def _check_c2pa(
    data: bytes,
    fmt: str,
    bundle: ProvenanceBundle,
    reader: CrossCheckedReader,
    extra_anchors: str,
    found: _Findings,
) -> dict[str, Any]:
    # Candidate anchors come from the bundle (and the trust document); only those the registry publishes count.
    candidates = split_certificates(bundle.c2pa.trust_anchors_pem + "\n" + extra_anchors)
    published: list[tuple[str, x509.Certificate]] = []
    refused: list[tuple[str, x509.Certificate]] = []
    for cert in candidates:
        fp = certificate_fingerprint(cert)
        (published if reader.is_trust_anchor(fp) else refused).append((fp, cert))
    anchors_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for _, c in published)
    credentials = C2paCredentials(chain_pem=b"", private_key_pem=b"", trust_anchors_pem=anchors_pem)
    manifest = ManifestReader(credentials).read(data, media.FORMATS[fmt])
    names_record = manifest.record_id == bundle.record_id
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


def _read_chain(
    data: bytes,
    fmt: str,
    bundle: ProvenanceBundle,
    reader: CrossCheckedReader,
    pin: TrustRoot | None,
    trust: TrustDocument | None,
    found: _Findings,
) -> BundleChecks:
    """Every check that reads the chain, at the reader's pinned block; endpoints that disagree stop them."""
    rpc: RpcCheck = {"ok": False, "endpoints": reader.rpc_urls, "confirmations": reader.confirmations}
    checks: BundleChecks = {"rpc": rpc}
    try:
        checks["trust"] = _check_trust(bundle, pin, reader, found)
        checks["signature"] = _check_signature(data, bundle, found)
        if checks["trust"]["registry_has_code"]:
            checks["chain"] = _check_chain(bundle, sha256_hex(data), reader, found)
            extra = "".join(a.certificate_pem or "" for a in trust.c2pa_trust_anchors) if trust is not None else ""
            checks["c2pa"] = _check_c2pa(data, fmt, bundle, reader, extra, found)
        reader.confirm()  # the pinned block did not change under the reads
        rpc["ok"] = True
        rpc["agree"] = True
    except RpcDisagreement as exc:
        found.unreliable.append(exc.detail)
        rpc["agree"] = False
        rpc["error"] = exc.detail
    return checks


def _parse(bundle: ProvenanceBundle | dict[str, Any], data: bytes) -> tuple[ProvenanceBundle, str]:
    """The bundle, validated, and the file's format; the format is checked before the rest of the bundle."""
    if isinstance(bundle, ProvenanceBundle):
        parsed = bundle
    elif not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        raise BundleError.not_a_bundle(bundle)
    fmt = media.sniff_format(data)
    if fmt is None:
        raise InputError("The file is not a PNG, JPEG or WebP image.")
    if not isinstance(bundle, ProvenanceBundle):
        parsed = ProvenanceBundle.from_dict(bundle)
    return parsed, fmt


def verify_with_bundle(
    data: bytes,
    bundle: ProvenanceBundle | dict[str, Any],
    rpc_url: str | Sequence[str],
    pin: TrustRoot | None = None,
    trust: TrustDocument | None = None,
    *,
    confirmations: int = 0,
) -> BundleReport:
    """Check ``data`` against a bundle using only the bundle, chain RPCs and the pinned registry.

    ``bundle`` is a ``ProvenanceBundle`` or its parsed JSON (validated here). ``pin`` (or ``trust``,
    whose pin is used) names the registry every check is made against; without one the report is at
    best ``untrusted`` and says what to pin. ``rpc_url`` is one endpoint or several: all are read at
    the block ``latest - confirmations`` and must agree, else the verdict is ``untrusted`` with the
    disagreement as its first reason. Raises ``BundleError`` (an ``InputError``) for a bundle that is
    not a whole one, ``InputError`` for a file that is not an image or a negative ``confirmations``,
    ``ChainError`` when no RPC answers at all.
    """
    parsed, fmt = _parse(bundle, data)
    if trust is not None:
        pin = pin or trust.pin()
    found = _Findings()
    sha = sha256_hex(data)
    checks: BundleChecks = {"hash": {"ok": sha == parsed.sha256, "sha256": sha, "expected": parsed.sha256}}
    if sha != parsed.sha256:
        # Not the bundle's file: nothing else about it can be concluded from this bundle.
        return BundleReport(
            verdict="mismatch",
            reasons=["the file is not the one this bundle describes"],
            pinned=pin,
            checks=_document(checks),
        )
    # Every chain read goes to the pinned registry; the bundle's own address is used only when nothing is pinned.
    address = pin.registry_address if pin is not None else parsed.chain.registry_address
    try:
        reader = CrossCheckedReader(rpc_url, address, confirmations=confirmations)
    except ValueError:
        raise BundleError(
            "chain.registry_address", "not an address", f"The bundle's registry address {address!r} is not an address."
        ) from None
    checks.update(_read_chain(data, fmt, parsed, reader, pin, trust, found))
    cid_ok = compute_cid(data) == parsed.cid
    checks["ipfs"] = {"ok": cid_ok, "cid": parsed.cid}
    if not cid_ok:
        found.invalid.append("the file's CID is not the bundle's CID")
    rpc = checks["rpc"]
    rpc["block"] = reader.block
    rpc["block_hash"] = reader.block_hash
    rpc["latest"] = reader.latest
    return BundleReport(verdict=found.verdict(), reasons=found.reasons(), pinned=pin, checks=_document(checks))


def _document(checks: BundleChecks) -> dict[str, dict[str, Any]]:
    """The typed checks as the report's JSON document: the same dictionaries, keys in the order they were written."""
    return cast("dict[str, dict[str, Any]]", checks)
