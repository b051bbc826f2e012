"""The provenance bundle's format: a self-validating pydantic model, and the typed error that says what is wrong.

``ProvenanceBundle.from_json`` (or ``from_dict``) checks the whole document as it parses it and raises
``BundleError`` naming the first missing or malformed field; ``to_json`` writes the canonical bytes
that are pinned on IPFS. Checking a file against a bundle is ``provenance.verify.bundle``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from provenance import __version__
from provenance.db.models import AnchorBatch, Record
from provenance.errors import InputError
from provenance.manifests.pki import C2paCredentials

FORMAT = "provenance-bundle/1"


class BundleError(InputError):
    """A bundle that is not one, or not a whole one: ``field`` names what is wrong (dotted path), or None.

    An ``InputError``: the API answers 400 and the CLI prints the message on one line, exit code 2.
    """

    def __init__(self, field: str | None, problem: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field
        self.problem = problem
        self.extra = {"field": field} if field else {}

    @classmethod
    def not_a_bundle(cls, data: Any) -> BundleError:
        """The document is not a provenance bundle at all (another format, or not an object)."""
        found = data.get("format") if isinstance(data, dict) else None
        return cls("format", "not a bundle", f"Not a provenance bundle (format {found!r}, expected {FORMAT!r}).")

    @classmethod
    def from_validation(cls, exc: ValidationError) -> BundleError:
        """The first thing pydantic found wrong, said as: incomplete (a field is missing) or malformed."""
        first = exc.errors()[0]
        loc = [str(p) for p in first.get("loc", ())]
        if first["type"] == "bundle_missing":
            loc.append(str((first.get("ctx") or {}).get("field")))
        where = ".".join(loc)
        if first["type"] in ("missing", "bundle_missing"):
            return cls(where, "missing", f"The bundle is incomplete: missing {where}.")
        problem = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        return cls(where, problem, f"The bundle is malformed: {where}: {problem}.")


def _hex32(value: str) -> str:
    """A Merkle node: 32 bytes of hex, with or without ``0x`` (kept as written)."""
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ValueError("not hex") from None
    if len(raw) != 32:
        raise ValueError(f"{len(raw)} bytes of hex, not 32")
    return value


MerkleNode = Annotated[str, AfterValidator(_hex32)]


class _Part(BaseModel):
    # Strict: a number written as a string (or the reverse) is malformed, never converted.
    model_config = ConfigDict(strict=True)


class BundleIssuer(_Part):
    """The software that built the bundle."""

    product: str
    version: str


class BundleSignature(_Part):
    """The record's ECDSA signature over the file bytes, and the key to check it with."""

    algorithm: str | None = "ECDSA-P256-SHA256"
    encoding: str | None = "base64 DER over the file bytes"
    value: str
    key_id: str = Field(description="hex SHA-256 of the public key's DER; must be published on the registry")
    public_key_pem: str


class BundleC2pa(_Part):
    """The C2PA signer's chain and candidate trust anchors (only those the registry publishes count)."""

    signer_chain_pem: str | None = None
    trust_anchors_pem: str


class MerkleClaim(_Part):
    """A batch registration: the anchored root and the proof that leads the file's hash to it."""

    root: MerkleNode
    proof: list[MerkleNode] = Field(default_factory=list)
    leaves_cid: str | None = None


class BundleChain(_Part):
    """Where the bundle says the file is registered (the sender's words: the verifier pins its own)."""

    chain_id: int
    registry_address: str
    mode: Literal["single", "batch"]
    tx_hash: str | None = None
    block_number: int | None = None
    merkle: MerkleClaim | None = None

    @model_validator(mode="after")
    def _batch_has_merkle(self) -> BundleChain:
        if self.mode == "batch" and self.merkle is None:
            raise PydanticCustomError("bundle_missing", "missing {field}", {"field": "merkle"})
        return self


class ProvenanceBundle(_Part):
    """One self-contained JSON with everything a verifier needs; validated as it is parsed.

    ``from_json`` / ``from_dict`` raise ``BundleError`` naming the first field that is missing or
    malformed; ``to_json`` gives the canonical bytes that are pinned (so the bundle's CID is
    reproducible). Types are checked, formats are not: a bundle whose hash or CID is wrong is a
    verdict (``mismatch``, ``invalid``), not an error.
    """

    format: Literal["provenance-bundle/1"] = "provenance-bundle/1"
    issuer: BundleIssuer | None = None
    record_id: str
    sha256: str
    media_type: str | None = None
    cid: str
    watermark_id: int | None = None
    signature: BundleSignature
    c2pa: BundleC2pa
    chain: BundleChain

    @classmethod
    def of_record(
        cls,
        record: Record,
        *,
        public_key_pem: str,
        credentials: C2paCredentials,
        chain_id: int,
        registry_address: str,
        batch: AnchorBatch | None,
    ) -> ProvenanceBundle:
        """The bundle of a record, with the service's public key, C2PA chain and registry."""
        merkle = None
        if record.batch_root:
            leaves_cid = batch.leaves_cid if batch else None
            merkle = MerkleClaim(root=record.batch_root, proof=record.merkle_proof or [], leaves_cid=leaves_cid)
        return cls(
            issuer=BundleIssuer(product="provenance", version=__version__),
            record_id=record.id,
            sha256=record.sha256,
            media_type=record.media_type,
            cid=record.cid,
            watermark_id=record.watermark_id,
            signature=BundleSignature(value=record.signature, key_id=record.key_id, public_key_pem=public_key_pem),
            c2pa=BundleC2pa(
                signer_chain_pem=credentials.chain_pem.decode(),
                trust_anchors_pem=credentials.trust_anchors_pem.decode(),
            ),
            chain=BundleChain(
                chain_id=chain_id,
                registry_address=registry_address,
                mode="batch" if merkle else "single",
                tx_hash=record.tx_hash,
                block_number=record.block_number,
                merkle=merkle,
            ),
        )

    @classmethod
    def from_dict(cls, data: Any) -> ProvenanceBundle:
        """Validate a parsed JSON document; ``BundleError`` says what is wrong with it."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError.not_a_bundle(data)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise BundleError.from_validation(exc) from None

    @classmethod
    def from_json(cls, text: str | bytes) -> ProvenanceBundle:
        """Parse and validate a bundle; ``BundleError`` for anything that is not a whole bundle."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BundleError(None, "not JSON", f"The bundle is not JSON: {exc}") from None
        return cls.from_dict(data)

    def as_dict(self) -> dict[str, Any]:
        """The bundle as JSON values (every field, unset ones as null)."""
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """Canonical serialisation (sorted keys): the pinned bytes, and so the bundle's CID, are reproducible."""
        return json.dumps(self.as_dict(), sort_keys=True, indent=1)


def build_bundle(
    record: Record,
    *,
    public_key_pem: str,
    credentials: C2paCredentials,
    chain_id: int,
    registry_address: str,
    batch: AnchorBatch | None,
) -> dict[str, Any]:
    """A record's bundle as a JSON object (see ``ProvenanceBundle.of_record``)."""
    return ProvenanceBundle.of_record(
        record,
        public_key_pem=public_key_pem,
        credentials=credentials,
        chain_id=chain_id,
        registry_address=registry_address,
        batch=batch,
    ).as_dict()


def bundle_bytes(bundle: ProvenanceBundle | dict[str, Any]) -> bytes:
    """Canonical serialisation: the pinned bytes, and so the bundle's CID, are reproducible."""
    if isinstance(bundle, ProvenanceBundle):
        return bundle.to_json().encode()
    return json.dumps(bundle, sort_keys=True, indent=1).encode()
