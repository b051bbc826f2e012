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


def artifact_code_hash(name: str) -> str:
    """keccak256 of a contract's runtime code as compiled (hex, no ``0x``).

    For a contract without immutables this equals the hash of the code on chain, so a changed
    artifact is noticed. (The NFT contract has an immutable, filled in at deployment: there the
    on-chain hash differs by design, and only the recorded artifact hash can be compared.)
    """
    from eth_utils import keccak

    return keccak(hexstr=load_artifact(name)["deployedBytecode"]).hex()
