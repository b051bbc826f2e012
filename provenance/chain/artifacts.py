"""Compiled contract artifacts, as ``contracts/compile.js`` writes them.

They ship inside the package (``provenance/chain/compiled/*.json``) and are read through
``importlib.resources``, so an installed wheel deploys the same contracts as a checkout.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

ARTIFACTS_DIR: Traversable = resources.files("provenance.chain") / "compiled"


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """ABI and bytecode of a contract by name, e.g. ``ProvenanceRegistry``."""
    return json.loads((ARTIFACTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def artifact_names() -> list[str]:
    """Names of the shipped artifacts (``ProvenanceNFT``, ``ProvenanceRegistry``)."""
    return sorted(entry.name.removesuffix(".json") for entry in ARTIFACTS_DIR.iterdir() if entry.name.endswith(".json"))


def artifact_code_hash(name: str) -> str:
    """keccak256 of a contract's runtime code as compiled (hex, no ``0x``).

    For a contract without immutables this equals the hash of the code on chain, so a changed
    artifact is noticed. (The NFT contract has an immutable, filled in at deployment: there the
    on-chain hash differs by design, and only the recorded artifact hash can be compared.)
    """
    from eth_utils import keccak

    return keccak(hexstr=load_artifact(name)["deployedBytecode"]).hex()
