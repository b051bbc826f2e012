"""Reading: whether an image's C2PA manifest is present, valid and trusted, and what it says.

The reader reports each ingredient with its own signer and its own validation: a trusted active
manifest says nothing about whom to trust for the ingredient. Each validation status c2pa reports is
attributed to the manifest its URL points into (``self#jumbf=/c2pa/<label>/...``): a failure inside an
ingredient's manifest (a CAWG identity assertion that does not check, an untrusted signer) stays with
that ingredient and never makes the active manifest invalid.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import c2pa

from provenance.manifests.pki import C2paCredentials
from provenance.manifests.vocabulary import (
    RECORD_ASSERTION,
    SOFT_BINDING_ASSERTION,
    c2pa_settings,
    is_manifest_not_found,
)

ManifestState = Literal["absent", "trusted", "valid", "invalid", "unverifiable"]

# Failure codes that only say "not on our trust list": what they are about checks out. The C2PA claim
# signer's, a CAWG X.509 identity credential's, and a CAWG identity claims aggregation issuer's.
TRUST_ONLY_FAILURES = frozenset(
    {"signingCredential.untrusted", "cawg.x509.credential.untrusted", "cawg.ica.untrusted_issuer"}
)
# A CAWG identity assertion is supplementary to the C2PA claim it sits in: c2pa-rs tolerates every
# ``cawg.x509.*`` failure in a manifest's state (``is_tolerated_manifest_failure_code``), and c2pa-python
# 0.38 reports a manifest whose ``cawg.identity.*`` checks fail as Valid. They are reported, and they keep
# the manifest from being trusted, but they do not make the claim invalid. We never show a CAWG identity
# as a fact.
IDENTITY_FAILURE_PREFIXES = ("cawg.x509.", "cawg.identity.")
# Checks that need the network, which this service does not use to verify: not a failure of the manifest.
OFFLINE_FAILURES = frozenset({"cawg.ica.did_unavailable"})
# A failure about the active claim's binding to an ingredient (its manifest swapped, edited or missing).
BINDING_FAILURE_PREFIX = "ingredient."


@dataclass
class ManifestReport:
    """The C2PA check: present, valid, trusted, and what the active manifest says.

    ``state`` is one of ``absent``, ``trusted``, ``valid`` (it checks, but its signer is not on our
    trust list), ``invalid`` and ``unverifiable`` (it cannot be checked here: a remote manifest,
    which is never fetched, a check that needs the network, a format c2pa does not read); ``valid``
    and ``trusted`` are the same facts as booleans. They are about the active manifest alone, and
    ``failures`` lists only its failures: each ingredient in ``ingredients`` carries its own
    signer, state and failures, never inherited from the active one, and never counted against it.
    ``time_stamp`` says whether the active signature carries an RFC 3161 time-stamp c2pa accepts.
    ``validation_state`` is c2pa's own overall state for the file (ingredients included).
    """

    present: bool
    valid: bool = False
    trusted: bool = False
    validation_state: str | None = None
    failures: list[str] = field(default_factory=list)
    record_id: str | None = None
    watermark_id: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    ingredients: list[dict[str, Any]] = field(default_factory=list)
    time_stamp: dict[str, Any] = field(default_factory=lambda: _time_stamp(_no_codes(), {}))
    state: ManifestState | None = None  # None: derived from present / valid / trusted

    def __post_init__(self) -> None:
        derived: ManifestState = (
            "absent"
            if not self.present
            else "trusted"
            if self.valid and self.trusted
            else "valid"
            if self.valid
            else "invalid"
        )
        if self.state is None or (self.state != "unverifiable" and self.state != derived):
            self.state = derived
        if self.state == "unverifiable":
            self.valid = self.trusted = False  # not known to check: never valid, never trusted
        self.trusted = self.trusted and self.valid

    def as_dict(self) -> dict[str, Any]:
        """The report as the verifier's C2PA evidence fields."""
        return {
            "present": self.present,
            "state": self.state,
            "valid": self.valid,
            "trusted": self.trusted,
            "validation_state": self.validation_state,
            "failures": self.failures,
            "record_id": self.record_id,
            "summary": self.summary,
            "time_stamp": self.time_stamp,
            "ingredients": self.ingredients,
        }


def _summarise(manifest: dict[str, Any]) -> tuple[dict[str, Any], str | None, int | None]:
    record_id = watermark_id = generation = None
    actions: list[dict[str, Any]] = []
    soft_bindings: list[dict[str, Any]] = []
    for assertion in manifest.get("assertions", []):
        label, data = assertion.get("label", ""), assertion.get("data", {})
        if label.startswith("c2pa.actions"):
            actions.extend(data.get("actions", []))
        elif label.startswith(SOFT_BINDING_ASSERTION):
            soft_bindings += [{"alg": data.get("alg"), "value": b.get("value")} for b in data.get("blocks", [])]
        elif label == RECORD_ASSERTION:
            record_id, watermark_id = data.get("record_id"), data.get("watermark_id")
            generation = data.get("generation")
    signature = manifest.get("signature_info", {})
    summary = {
        "label": manifest.get("label"),
        "title": manifest.get("title"),
        "claim_generator": [
            f"{g.get('name')} {g.get('version', '')}".strip() for g in manifest.get("claim_generator_info", [])
        ],
        "actions": [{"action": a.get("action"), "digitalSourceType": a.get("digitalSourceType")} for a in actions],
        "signer": signature.get("common_name") or signature.get("issuer"),
        "issuer": signature.get("issuer"),
        "signed_at": signature.get("time"),
        "soft_bindings": soft_bindings,
    }
    if generation:
        summary["generation"] = generation
    return summary, record_id, watermark_id


Codes = dict[str, list[str]]  # "success" / "informational" / "failure" -> status codes
_KINDS = ("success", "informational", "failure")
Status = dict[str, Any]  # one c2pa validation status: code, url, explanation


def _no_codes() -> Codes:
    return {kind: [] for kind in _KINDS}


def _items(results: dict[str, Any] | None, kind: str) -> list[Status]:
    items = (results or {}).get(kind) or []
    return [item for item in items if isinstance(item, dict)]


def _codes(results: dict[str, Any] | None) -> Codes:
    return {kind: [str(item.get("code")) for item in _items(results, kind)] for kind in _KINDS}


def _check(code: str) -> str:
    """The check a status code reports on: ``signingCredential.untrusted`` -> ``signingCredential``."""
    return code.rsplit(".", 1)[0]


def _apply_deltas(recorded: Codes, deltas: Codes) -> Codes:
    """An ingredient's status now: what was recorded at signing, overridden by the reader's deltas.

    C2PA stores the ingredient's validation results as its signer saw them; a validator reports
    only where its own result differs (the "ingredient deltas"). A delta replaces every recorded
    entry about the same check, so an ingredient recorded as trusted but untrusted here reads
    as untrusted, and the other way round.
    """
    replaced = {_check(code) for kind in _KINDS for code in deltas[kind]}
    return {kind: [c for c in recorded[kind] if _check(c) not in replaced] + deltas[kind] for kind in _KINDS}


def _time_stamp(codes: Codes, signature: dict[str, Any]) -> dict[str, Any]:
    """Whether the signature carries an RFC 3161 time-stamp, and what c2pa made of it."""
    stamp_codes = [code for kind in _KINDS for code in codes[kind] if code.startswith("timeStamp.")]
    return {
        "present": bool(stamp_codes),
        "validated": "timeStamp.validated" in codes["success"],  # the token matches this signature
        "trusted": "timeStamp.trusted" in codes["success"],  # the TSA chains to a trust anchor
        "time": signature.get("time") if stamp_codes else None,
        "codes": stamp_codes,
    }


def failure_class(code: str) -> Literal["trust", "identity", "offline", "fatal"]:
    """What a failure code means for the manifest it is about (see the constants above)."""
    if code in TRUST_ONLY_FAILURES:
        return "trust"
    if code.startswith(IDENTITY_FAILURE_PREFIXES):
        return "identity"
    if code in OFFLINE_FAILURES:
        return "offline"
    return "fatal"


def judge(codes: Codes) -> ManifestState:
    """One manifest's state from its own status codes (those attributed to it)."""
    classes = {failure_class(code) for code in codes["failure"]}
    if "fatal" in classes:
        return "invalid"
    if "offline" in classes:
        return "unverifiable"
    if not classes and "signingCredential.trusted" in codes["success"]:
        return "trusted"
    return "valid"


_JUMBF_MANIFEST = re.compile(r"^self#jumbf=/?c2pa/([^/]+)")


def manifest_of(url: Any, labels: Iterable[str], default: str) -> str:
    """The manifest a status URL points into (``self#jumbf=/c2pa/<label>/...``); ``default`` otherwise."""
    match = _JUMBF_MANIFEST.match(url) if isinstance(url, str) else None
    return match.group(1) if match and match.group(1) in labels else default


def _failure_text(item: Status) -> str:
    return f"{item.get('code')}: {item.get('explanation') or ''}".strip().rstrip(":")


MAX_INGREDIENT_DEPTH = 16  # a chain deeper than this is reported truncated, not walked


@dataclass
class _Attributed:
    """The reader's statuses, each filed under the manifest it is about."""

    by_manifest: dict[str, dict[str, list[Status]]] = field(default_factory=dict)
    deltas: dict[str, Codes] = field(default_factory=dict)  # ingredient assertion URI -> its manifest's deltas

    def add(self, label: str, kind: str, item: Status) -> None:
        self.by_manifest.setdefault(label, {k: [] for k in _KINDS})[kind].append(item)

    def items(self, label: str, kind: str) -> list[Status]:
        return self.by_manifest.get(label, {}).get(kind, [])

    def codes(self, label: str) -> Codes:
        return {kind: [str(item.get("code")) for item in self.items(label, kind)] for kind in _KINDS}


def _attribute(store: dict[str, Any], active_label: str) -> _Attributed:
    """File every status c2pa reports under the manifest its URL points into.

    c2pa lists under ``activeManifest`` what it checked now, whatever manifest that was in: a CAWG
    identity assertion inside an ingredient's manifest reports there with a URL into the ingredient.
    Ingredient deltas belong to the ingredient's manifest, except failures of the active claim's
    binding to that ingredient (``ingredient.*``, or a URL into the active manifest): those say
    this file's provenance no longer holds together. Without ``validation_results`` (older
    readers), the flat ``validation_status`` list of failures is filed the same way.
    """
    labels = set(store.get("manifests") or {})
    attributed = _Attributed()
    results = store.get("validation_results")
    if not isinstance(results, dict):
        for item in store.get("validation_status") or []:
            if isinstance(item, dict):
                attributed.add(manifest_of(item.get("url"), labels, active_label), "failure", item)
        return attributed
    active = results.get("activeManifest") or {}
    for kind in _KINDS:
        for item in _items(active, kind):
            attributed.add(manifest_of(item.get("url"), labels, active_label), kind, item)
    for delta in results.get("ingredientDeltas") or []:
        if not isinstance(delta, dict):
            continue
        uri = str(delta.get("ingredientAssertionURI", ""))
        kept = _no_codes()
        for kind in _KINDS:
            for item in _items(delta.get("validationDeltas"), kind):
                code = str(item.get("code"))
                binding = code.startswith(BINDING_FAILURE_PREFIX) or (
                    manifest_of(item.get("url"), labels, "") == active_label and active_label != ""
                )
                if kind == "failure" and binding and failure_class(code) == "fatal":
                    attributed.add(active_label, kind, {**item, "code": code, "ingredient": uri})
                else:
                    kept[kind].append(code)
        attributed.deltas[uri] = kept
    return attributed


def _ingredients(
    store: dict[str, Any], manifest_label: str, attributed: _Attributed, depth: int = 0
) -> list[dict[str, Any]]:
    """Each ingredient of one manifest, with its own manifest's signer and validation, recursively."""
    manifests = store.get("manifests", {})
    reports: list[dict[str, Any]] = []
    for ingredient in manifests.get(manifest_label, {}).get("ingredients", []):
        label = ingredient.get("active_manifest")
        manifest = manifests.get(label, {}) if label else {}
        report: dict[str, Any] = {
            "title": ingredient.get("title"),
            "relationship": ingredient.get("relationship"),
            "format": ingredient.get("format"),
            "has_manifest": bool(label),
        }
        if label:
            uri = f"self#jumbf=/c2pa/{manifest_label}/c2pa.assertions/{ingredient.get('label')}"
            recorded = _codes((ingredient.get("validation_results") or {}).get("activeManifest"))
            codes = _apply_deltas(recorded, attributed.deltas.get(uri, _no_codes()))
            # What the reader found inside the ingredient's manifest now (e.g. its CAWG identity).
            codes = _apply_deltas(codes, attributed.codes(label))
            state = judge(codes)
            summary, _, _ = _summarise(manifest)
            report.update(
                manifest=label,
                claim_generator=summary["claim_generator"],
                signer=summary["signer"],
                issuer=summary["issuer"],
                actions=summary["actions"],
                state=state,
                valid=state in ("trusted", "valid"),
                trusted=state == "trusted",
                validation_state={"trusted": "Trusted", "valid": "Valid"}.get(state, "Invalid"),
                failures=list(dict.fromkeys(codes["failure"])),
                validation=codes,
                time_stamp=_time_stamp(codes, manifest.get("signature_info", {})),
                ingredients=(
                    _ingredients(store, label, attributed, depth + 1)
                    if depth < MAX_INGREDIENT_DEPTH
                    else [{"truncated": True}]
                ),
            )
        reports.append(report)
    return reports


_REMOTE_URL = re.compile(r"(https?://\S+)")


def _unreadable(exc: Exception) -> ManifestReport:
    """A manifest c2pa will not read: remote or pre-release ones cannot be checked here; others fail."""
    message = " ".join(str(exc).split())
    if "RemoteManifest" in type(exc).__name__ or message.startswith("Remote:") or "remote manifest" in message:
        found = _REMOTE_URL.search(message)
        where = f" at {found.group(1)[:200]}" if found else ""
        return ManifestReport(
            present=True,
            state="unverifiable",
            failures=[f"manifest.remote: the manifest is stored remotely{where}; this service never fetches it"],
        )
    if "prerelease" in message.lower():
        return ManifestReport(
            present=True,
            state="unverifiable",
            failures=["manifest.prerelease: a pre-release (pre-1.0) C2PA manifest, which c2pa does not validate"],
        )
    return ManifestReport(present=True, valid=False, validation_state="Invalid", failures=[message[:300]])


class ManifestReader:
    """Reads and validates C2PA manifests, trusting the configured anchors."""

    def __init__(self, credentials: C2paCredentials) -> None:
        self._credentials = credentials

    def read(self, image_bytes: bytes, mime_type: str) -> ManifestReport:
        """Report on the file's manifest store; never raises for what the file contains."""
        with c2pa.Context(settings=c2pa_settings(self._credentials, thumbnail=False)) as context:
            try:
                with c2pa.Reader(mime_type, io.BytesIO(image_bytes), None, context) as reader:
                    store = json.loads(reader.json())
            except c2pa.C2paError as exc:
                if is_manifest_not_found(exc):
                    return ManifestReport(present=False)
                return _unreadable(exc)
            except Exception as exc:  # whatever a hostile file makes the reader raise
                return _unreadable(exc)
        if not isinstance(store, dict):
            return _unreadable(ValueError("the manifest store is not a JSON object"))
        return self._report(store)

    def _report(self, store: dict[str, Any]) -> ManifestReport:
        state_c2pa = store.get("validation_state")
        active_label = str(store.get("active_manifest") or "")
        found = store.get("manifests")
        manifests: dict[str, Any] = found if isinstance(found, dict) else {}
        candidate = manifests.get(active_label)
        active: dict[str, Any] = candidate if isinstance(candidate, dict) else {}
        summary, record_id, watermark_id = _summarise(active)
        attributed = _attribute({**store, "manifests": manifests}, active_label)
        failures = [
            _failure_text(item) if "ingredient" not in item else f"ingredient {item['ingredient']}: {item.get('code')}"
            for item in attributed.items(active_label, "failure")
        ]
        active_codes = attributed.codes(active_label)
        if not active:
            failures.append("manifest.active.missing: the store names no active manifest it contains")
            active_codes["failure"].append("manifest.active.missing")
        state = judge(active_codes)
        # c2pa's overall state also counts ingredients, so the active manifest is judged on its own
        # codes above. An "Invalid" with no failure anywhere to explain it is still taken at c2pa's word.
        explained = any(attributed.items(label, "failure") for label in attributed.by_manifest) or any(
            codes["failure"] for codes in attributed.deltas.values()
        )
        if state_c2pa == "Invalid" and not explained and state in ("trusted", "valid"):
            state = "invalid"
            failures.append("validation_state: c2pa reports the manifest store Invalid without a failure code")
        return ManifestReport(
            present=True,
            state=state,
            valid=state in ("trusted", "valid"),
            trusted=state == "trusted",
            validation_state=state_c2pa if isinstance(state_c2pa, str) else None,
            failures=failures,
            record_id=record_id,
            watermark_id=watermark_id,
            summary=summary,
            ingredients=_ingredients({**store, "manifests": manifests}, active_label, attributed),
            time_stamp=_time_stamp(active_codes, active.get("signature_info") or {}),
        )
