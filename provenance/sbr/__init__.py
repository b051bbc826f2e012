"""The C2PA Soft Binding Resolution API: the service's manifest repository in the ecosystem's own terms.

``store`` takes the C2PA manifest store (JUMBF) out of a certified file, the bytes ``GET /manifests/{id}``
answers (``application/c2pa``). The routes are in ``provenance/api/routes/soft_binding.py``; the vendored
OpenAPI document of the specification is ``c2pa-sbr-openapi.json`` (see its NOTICE).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from provenance.sbr.store import manifest_store

SPEC_FILE = "c2pa-sbr-openapi.json"


def specification() -> dict[str, Any]:
    """The vendored OpenAPI document of the C2PA Soft Binding Resolution API (a fresh copy each call)."""
    text = resources.files(__package__).joinpath(SPEC_FILE).read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


__all__ = ["SPEC_FILE", "manifest_store", "specification"]
