"""Stage 3, C2PA: sign a manifest into the image, and read one back.

Signing and reading mirror each other: ``ManifestSigner`` embeds a claim with the actions, the
soft-binding (watermark) and the record id; ``ManifestReader`` reports whether a manifest is
present, valid and trusted, and summarises it. Both use c2pa-python's Builder / Signer / Reader
with an explicit ``Context`` so settings never leak through process-wide state.

An upload that arrives with its own C2PA manifest keeps its history: the signer records it as a
``parentOf`` ingredient (its manifest store copied in) and the first action is ``c2pa.opened``
instead of ``c2pa.created``. The reader reports each ingredient with its own signer and its own
validation: a trusted active manifest says nothing about whom to trust for the ingredient.
Signatures carry an RFC 3161 time-stamp when the signer is given a TSA URL (see ``tsa.py``).

Each validation status c2pa reports is attributed to the manifest its URL points into
(``self#jumbf=/c2pa/<label>/...``): a failure inside an ingredient's manifest (a CAWG identity
assertion that does not check, an untrusted signer) stays with that ingredient and never makes
the active manifest invalid. A manifest is then ``trusted``, ``valid`` (it checks, but its signer
is not on our trust list), ``invalid``, or ``unverifiable`` (it cannot be checked offline: a remote
manifest, a DID that needs the network, a pre-release format).
"""

# The stage's names, importable from here where callers have always found them: the vocabulary in
# ``vocabulary``, signing in ``builder``, reading in ``reader``.
from provenance.manifests.builder import ManifestSigner, SignedImage, build_manifest_definition  # noqa: F401
from provenance.manifests.reader import (  # noqa: F401
    BINDING_FAILURE_PREFIX,
    IDENTITY_FAILURE_PREFIXES,
    MAX_INGREDIENT_DEPTH,
    OFFLINE_FAILURES,
    TRUST_ONLY_FAILURES,
    Codes,
    ManifestReader,
    ManifestReport,
    ManifestState,
    Status,
    failure_class,
    judge,
    manifest_of,
)
from provenance.manifests.vocabulary import (  # noqa: F401
    FINGERPRINT_ALG,
    GENERATED_SOURCE_TYPE,
    IPTC,
    PARENT_INGREDIENT_ID,
    RECORD_ASSERTION,
    SOFT_BINDING_ALG,
    SOFT_BINDING_ASSERTION,
    SOURCE_TYPES,
    UPLOAD_INGREDIENT_ID,
    ManifestContent,
    c2pa_settings,
    source_type_uri,
)
