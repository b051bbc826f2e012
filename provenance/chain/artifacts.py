"""Compiled contract artifacts, as ``contracts/compile.js`` writes them."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

ARTIFACTS_DIR = Path(__file__).resolve().parents[2] / "contracts" / "artifacts"


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of a contract by name, e.g. ``ProvenanceRegistry``."""
    return json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
