"""The shape of each check in an offline bundle report (``BundleReport.checks``), as typed dictionaries.

The report is a JSON document (``provenance verify --bundle --json`` prints it, scripts index it by name), so the
checks stay plain dictionaries at run time, keys in the order the checks write them; these types say which keys
each check may write, so the verifier's code is checked against them. A key is present only when the check got
that far (``total=False``). The C2PA check also carries every field of the manifest reader's report, which has
its own shape, so it stays a ``dict``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict


class HashCheck(TypedDict, total=False):
    """The file's SHA-256 against the bundle's."""

    ok: bool
    sha256: str
    expected: str


class RpcCheck(TypedDict, total=False):
    """The RPC endpoints read, whether they agreed, and the block every read was pinned to."""

    ok: bool
    endpoints: list[str]
    confirmations: int
    agree: bool
    error: str
    block: int | None
    block_hash: str | None
    latest: dict[str, int]


class TrustCheck(TypedDict, total=False):
    """The chain the RPC serves, what the bundle names, what was pinned, and whether the registry has code."""

    rpc_chain_id: int
    bundle_chain_id: int
    bundle_registry: str
    pinned: dict[str, Any] | None
    development_chain: bool
    registry_has_code: bool
    ok: bool


class SignatureCheck(TypedDict, total=False):
    """The ECDSA signature over the file, against the bundled key, and the key's id."""

    ok: bool
    signature_valid: bool
    key_id_matches: bool
    key_id: str


class KeyStatus(TypedDict):
    """The signing key on the registry: published, from which block, revoked at which block."""

    published: bool
    valid_from_block: int | None
    revoked_at_block: int | None


class RegistrationCheck(TypedDict, total=False):
    """The registration at the pinned block: the entry (single) or the Merkle proof (batch), writer and key."""

    registry_address: str
    mode: Literal["single", "batch"]
    read_at_block: int | None
    root_anchored: bool | None
    proof_valid: bool | None
    contract_says_registered: bool | None
    leaves_cid: str | None
    registrant: str | None
    block_number: int | None
    timestamp: int | None
    cid_matches: bool | None
    not_yet_registered: bool
    registered: bool
    registrant_was_writer: bool
    key_valid_at_registration: bool
    key_status: KeyStatus
    ok: bool


class IpfsBundleCheck(TypedDict, total=False):
    """The file's CID against the bundle's."""

    ok: bool
    cid: str


class BundleChecks(TypedDict, total=False):
    """Every check of a bundle verification, by name (the checks that did not run are absent)."""

    hash: HashCheck
    rpc: RpcCheck
    trust: TrustCheck
    signature: SignatureCheck
    chain: RegistrationCheck
    c2pa: dict[str, Any]  # ok, the anchors published and not, then the manifest reader's report
    ipfs: IpfsBundleCheck
