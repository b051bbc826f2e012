"""provenance: certify AI-generated images and verify them back.

Every certified image carries an invisible watermark, a signed C2PA manifest and an ECDSA
signature over its bytes; it is pinned to IPFS and its hash is registered on an Ethereum
contract. Verification walks the same stages backwards.

The public library face, for third parties who verify offline (names load on first use, so
``import provenance`` stays cheap)::

    from provenance import ProvenanceBundle, TrustRoot, verify_with_bundle

    bundle = ProvenanceBundle.from_json(bundle_json)
    report = verify_with_bundle(image_bytes, bundle, rpc_url, pin=TrustRoot(...))  # report.verdict, .reasons
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
PRODUCT_NAME = "provenance"

# name -> module that defines it (imported lazily: each pulls in image and chain libraries)
_PUBLIC = {
    "verify_with_bundle": "provenance.verify.bundle",
    "BundleReport": "provenance.verify.bundle",
    "ProvenanceBundle": "provenance.verify.bundle_format",
    "BundleError": "provenance.verify.bundle_format",
    "TrustRoot": "provenance.trust.document",
    "TrustDocument": "provenance.trust.document",
    "VerificationResult": "provenance.verify.report",
}

__all__ = ["PRODUCT_NAME", "__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Load a public name from the module that defines it (PEP 562)."""
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'provenance' has no attribute {name!r}")
