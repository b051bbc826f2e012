"""The provenance bundle: one self-contained JSON with everything a verifier needs.

Built from a record, pinned on IPFS, and checked by ``verify_with_bundle`` with no access to the
service or its database: recompute the hash, check the ECDSA signature with the bundled key, ask
the chain (any RPC endpoint) about the hash or the Merkle root and proof, and validate the C2PA
manifest against the bundled trust anchor.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from provenance import __version__, media
from provenance.chain.registry import JsonRpc, function_selector
from provenance.db.models import AnchorBatch, Record
from provenance.errors import InputError
from provenance.ipfs.unixfs import compute_cid
from provenance.manifest import ManifestReader
from provenance.merkle import verify_proof
from provenance.pki import C2paCredentials
from provenance.signing import sha256_hex, verify_signature

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


@dataclass
class BundleReport:
    verdict: str
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "checks": self.checks}


def _chain_check(bundle: dict[str, Any], sha: str, rpc_url: str) -> dict[str, Any]:
    chain = bundle["chain"]
    rpc = JsonRpc(rpc_url)
    try:
        reply = httpx.post(
            rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=30
        ).json()
        chain_id = int(reply["result"], 16)
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return {"ok": False, "error": f"the RPC at {rpc_url} did not answer: {exc}"}
    report: dict[str, Any] = {
        "rpc_chain_id": chain_id,
        "registry_address": chain["registry_address"],
        "mode": chain["mode"],
    }
    if chain_id != chain["chain_id"]:
        return {
            **report,
            "ok": False,
            "error": f"the RPC serves chain {chain_id}, the bundle names chain {chain['chain_id']}",
        }
    from eth_abi import decode, encode

    address = chain["registry_address"]
    if chain["mode"] == "single":
        raw = rpc.call(address, function_selector("lookup(bytes32)") + bytes.fromhex(sha))
        registered, _registrant, block, timestamp, cid = decode(["bool", "address", "uint64", "uint64", "string"], raw)
        ok = bool(registered) and cid == bundle["cid"]
        return {
            **report,
            "ok": ok,
            "registered": bool(registered),
            "block_number": int(block),
            "timestamp": int(timestamp),
            "cid_matches": cid == bundle["cid"],
        }
    merkle = chain["merkle"]
    root = bytes.fromhex(merkle["root"].removeprefix("0x"))
    proof = [bytes.fromhex(p.removeprefix("0x")) for p in merkle["proof"]]
    proof_ok = verify_proof(bytes.fromhex(sha), proof, root)  # checked here, then by the contract itself
    raw = rpc.call(address, function_selector("batch(bytes32)") + root)
    anchored, _registrant, block, timestamp, _count, leaves_cid = decode(
        ["bool", "address", "uint64", "uint64", "uint32", "string"], raw
    )
    args = encode(["bytes32", "bytes32", "bytes32[]"], [bytes.fromhex(sha), root, proof])
    on_chain = decode(["bool"], rpc.call(address, function_selector("isRegistered(bytes32,bytes32,bytes32[])") + args))[
        0
    ]
    return {
        **report,
        "ok": bool(anchored) and proof_ok and bool(on_chain),
        "root_anchored": bool(anchored),
        "proof_valid": proof_ok,
        "contract_says_registered": bool(on_chain),
        "block_number": int(block),
        "timestamp": int(timestamp),
        "leaves_cid": leaves_cid,
    }


def verify_with_bundle(data: bytes, bundle: dict[str, Any], rpc_url: str) -> BundleReport:
    """Check ``data`` against a bundle using only the bundle and a chain RPC."""
    if bundle.get("format") != FORMAT:
        raise InputError(f"Not a provenance bundle (format {bundle.get('format')!r}, expected {FORMAT!r}).")
    fmt = media.sniff_format(data)
    if fmt is None:
        raise InputError("The file is not a PNG, JPEG or WebP image.")
    checks: dict[str, dict[str, Any]] = {}
    sha = sha256_hex(data)
    checks["hash"] = {"ok": sha == bundle["sha256"], "sha256": sha, "expected": bundle["sha256"]}

    sig = bundle["signature"]
    try:
        der = serialization.load_pem_public_key(sig["public_key_pem"].encode()).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id_ok = hashlib.sha256(der).hexdigest() == sig["key_id"]
    except ValueError:
        key_id_ok = False
    signature_ok = verify_signature(sig["public_key_pem"], data, sig["value"])
    checks["signature"] = {
        "ok": signature_ok and key_id_ok,
        "signature_valid": signature_ok,
        "key_id_matches": key_id_ok,
        "key_id": sig["key_id"],
    }

    checks["chain"] = _chain_check(bundle, sha, rpc_url)

    credentials = C2paCredentials(
        chain_pem=bundle["c2pa"]["signer_chain_pem"].encode(),
        private_key_pem=b"",
        trust_anchors_pem=bundle["c2pa"]["trust_anchors_pem"].encode(),
    )
    manifest = ManifestReader(credentials).read(data, media.FORMATS[fmt])
    checks["c2pa"] = {
        "ok": manifest.present and manifest.valid and manifest.record_id == bundle["record_id"],
        **manifest.as_dict(),
    }
    checks["ipfs"] = {"ok": compute_cid(data) == bundle["cid"], "cid": bundle["cid"]}

    if not checks["hash"]["ok"]:
        verdict = "mismatch"  # not the bundle's file: nothing else about it can be concluded from this bundle
    elif all(c["ok"] for c in checks.values()):
        verdict = "authentic"
    else:
        verdict = "invalid"
    return BundleReport(verdict, checks)
