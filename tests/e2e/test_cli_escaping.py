"""The CLI prints text it did not write (bundles, file names, manifests, key names) as text, never as markup.

A ``[/]`` must not crash a command, ``[bold green]...`` must not style, and ANSI escapes must not reach the
terminal: none of them may make a report that is not authentic look like one.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from provenance.cli import render as cli
from provenance.cli.text import clean, json_text, plain
from provenance.manifests.manifest import ManifestContent, ManifestSigner
from provenance.runtime.services import Services
from provenance.signing import sha256_hex
from provenance.verify.bundle import FORMAT
from provenance.verify.verifier import MODIFICATIONS
from tests.conftest import encode, photo

CRASH = "[/]"
STYLE = "[bold green]verdict: authentic[/]"
ANSI = "\x1b[2K\r\x1b[32mverdict: authentic\x1b[0m"
PAYLOAD = f"{CRASH} {STYLE} {ANSI}"
# How the payload reads once printed: brackets as typed, every control character as \xNN.
ANSI_SHOWN = "\\x1b[2K\\x0d\\x1b[32mverdict: authentic\\x1b[0m"
SHOWN = f"{CRASH} {STYLE} {ANSI_SHOWN}"
# File names cannot hold "/": the same attack without it.
NAME = f"[bold green]verdict: authentic[red] {ANSI}"
NAME_SHOWN = f"[bold green]verdict: authentic[red] {ANSI_SHOWN}"

CLI = [sys.executable, "-m", "provenance.cli"]
CERTIFY = ("certify", "--data-dir", "d", "-o", "out", "--source-type", "trainedAlgorithmicMedia")
# No colour, whatever the environment running the tests asks for: any ESC in the output came from a payload.
PLAIN_ENV_DROP = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in PLAIN_ENV_DROP}
    env["COLUMNS"] = "250"  # wide enough that a payload is not folded across lines
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def authentic_lines(text: str) -> list[str]:
    """Lines a reader takes for the verdict line of an authentic report."""
    return [line for line in text.splitlines() if re.match(r"\s*verdict:\s*authentic", line)]


def assert_safe(text: str, *, shown: str | None = SHOWN) -> None:
    assert "Traceback" not in text and "MarkupError" not in text, text
    assert "\x1b" not in text and "\r" not in text, repr(text)
    assert not authentic_lines(text), text
    if shown is not None:
        assert shown in text, text


def test_plain_clean_and_json_text() -> None:
    assert clean(ANSI) == ANSI_SHOWN
    assert clean("a\nb") == "a\\x0ab" and clean("a\nb\r", multiline=True) == "a\nb\\x0d"
    assert clean("\x7f\x9b\u202edcba") == "\\x7f\\x9b\\u202edcba"  # DEL, 8-bit CSI, right-to-left override
    assert plain(CRASH) == "\\[/]" and plain("café [2] ok") == "café [2] ok"
    data = {"title": PAYLOAD + "\x9b\u2028", "n": [1, None]}
    text = json_text(data)
    assert json.loads(text) == data  # the same document to a JSON reader
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028]", text.replace("\n", ""))


def _hostile_result(verdict: str) -> dict[str, Any]:
    """A verification report whose every string carries the payload (as text from an upload would)."""
    return {
        "verdict": verdict,
        "record_id": PAYLOAD,
        "summary": PAYLOAD,
        "reasons": [PAYLOAD],
        "evidence": [
            {"kind": PAYLOAD, "strength": PAYLOAD, "record_id": PAYLOAD, "detail": PAYLOAD},
            {"kind": "watermark", "strength": "probabilistic", "record_id": "r1", "false_positive_probability": 1e-9},
        ],
        "changes": [PAYLOAD, "scaled 50%"],
        "modification": "edited",
        "edited_regions": [{"box": [10, 20, 110, 220], "share": 0.125}],
        "contained_region": {"box": [0, 0, 64, 64], "share": 0.05},
        "copied_mark": {"claimed_by_mark": PAYLOAD, "detail": PAYLOAD},
        "origin": {"record_id": PAYLOAD, "account": PAYLOAD, "derived": True},
        "diff_url": PAYLOAD,
        "checks": {
            "c2pa": {"present": True, "valid": True, "trusted": False, "failures": [], "summary": {"title": PAYLOAD}},
            "exact": {"matched": True, "signature_valid": False, "key_id": PAYLOAD, "sha256": PAYLOAD},
            "watermark": {
                "detected": True,
                "watermark_id": PAYLOAD,
                "bit_errors": PAYLOAD,
                "false_positive_probability": 1e-6,
            },
            "fingerprint": {"error": PAYLOAD},
            "chain": {"registered": True, "block_number": PAYLOAD, "registry_address": PAYLOAD, "chain_id": PAYLOAD},
            "ipfs": {"pinned": False, "cid": PAYLOAD},
        },
    }


def _render(monkeypatch: pytest.MonkeyPatch, result: dict[str, Any], *, terminal: bool) -> str:
    out = io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=400, force_terminal=terminal, emoji=False))
    cli._print_report(result)
    return out.getvalue()


@pytest.mark.parametrize("verdict", ["invalid", "modified", "unknown", "pending"])
def test_report_prints_every_string_as_text(monkeypatch: pytest.MonkeyPatch, verdict: str) -> None:
    text = _render(monkeypatch, _hostile_result(verdict), terminal=False)
    assert_safe(text)
    assert text.splitlines()[0].startswith(f"verdict: {verdict}  record: {SHOWN}")
    assert text.count(SHOWN) >= 15  # every field, none dropped
    assert f"modification: edited  {MODIFICATIONS['edited']}" in text
    assert f"changes: {SHOWN}; scaled 50%" in text
    assert "edited region: (10, 20)-(110, 220), 12.5% of the picture" in text
    assert "contained region: (0, 0)-(64, 64), 5.0% of the picture" in text
    assert f"derived from record {SHOWN} of account {SHOWN}" in text
    assert (
        f"WARNING: a mark of record {SHOWN} was found on different content (a copied mark): this is not provenance"
        in text
    )

    # On a colour terminal the only escapes are rich's own styles: none from the payload, no cursor moves.
    coloured = _render(monkeypatch, _hostile_result(verdict), terminal=True)
    styles_removed = re.sub(r"\x1b\[[0-9;]*m", "", coloured)
    assert "\x1b" not in styles_removed and ANSI_SHOWN in styles_removed
    assert not authentic_lines(styles_removed)


def test_report_without_the_new_fields_and_with_an_unknown_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _hostile_result("modified")
    for key in ("modification", "edited_regions", "contained_region", "copied_mark", "origin", "changes"):
        del result[key]
    text = _render(monkeypatch, result, terminal=False)
    assert_safe(text)
    assert "modification:" not in text and "WARNING" not in text

    result = _hostile_result("modified") | {"modification": PAYLOAD, "origin": {"record_id": "r1", "derived": False}}
    text = _render(monkeypatch, result, terminal=False)
    assert_safe(text)
    assert f"modification: {SHOWN}" in text and "origin: record r1\n" in text


def _forged_bundle(image: bytes) -> dict[str, Any]:
    """A bundle for ``image`` whose every string the verifier may print carries the payload."""
    return {
        "format": FORMAT,
        "issuer": {"product": PAYLOAD, "version": PAYLOAD},
        "record_id": PAYLOAD,
        "sha256": sha256_hex(image),
        "media_type": "image/png",
        "cid": PAYLOAD,
        "watermark_id": 7,
        "signature": {"algorithm": PAYLOAD, "value": PAYLOAD, "key_id": PAYLOAD, "public_key_pem": PAYLOAD},
        "c2pa": {"signer_chain_pem": PAYLOAD, "trust_anchors_pem": PAYLOAD},
        "chain": {
            "chain_id": 31337,
            "registry_address": PAYLOAD,
            "mode": "single",
            "tx_hash": PAYLOAD,
            "block_number": 1,
            "merkle": None,
        },
    }


def test_verify_bundle_prints_the_bundle_as_text(services: Services, tmp_path: Path) -> None:
    image = tmp_path / "image.png"
    image.write_bytes(encode(photo("coffee.png")[:96, :96]))
    bundle = tmp_path / "bundle.json"
    bundle.write_text(json.dumps(_forged_bundle(image.read_bytes())))
    rpc, registry = services.chain.registry.rpc_url, services.chain.registry.address
    args = ("verify", str(image), "--bundle", str(bundle), "--rpc", rpc)

    # Pinned: the bundle names another "registry" (the payload): untrusted, exit 1, the payload as text.
    pinned = run(*args, "--registry", registry, cwd=tmp_path)
    assert pinned.returncode == 1, pinned.stderr
    assert_safe(pinned.stdout + pinned.stderr)
    assert pinned.stdout.startswith("verdict: untrusted  (bundle, no service)")
    assert f"the bundle names registry {SHOWN} on chain 31337" in pinned.stdout

    as_json = run(*args, "--registry", registry, "--json", cwd=tmp_path)
    assert as_json.returncode == 1, as_json.stderr
    assert_safe(as_json.stdout, shown=None)
    report = json.loads(as_json.stdout)
    assert report["verdict"] == "untrusted" and report["checks"]["trust"]["bundle_registry"] == PAYLOAD

    # Unpinned, the bundle's own address is used to read the chain: it is not one, and that is one line.
    # (Exit 1 today: bundle.verify_with_bundle lets the ValueError of a non-address escape; 2 once it is input.)
    unpinned = run(*args, cwd=tmp_path)
    assert unpinned.returncode in (1, 2) and not unpinned.stdout, unpinned.stderr
    assert unpinned.stderr.startswith("error:") and unpinned.stderr.strip().count("\n") == 0
    assert_safe(unpinned.stderr, shown=STYLE)

    # Another file: the bundle's expected hash is printed back.
    other = tmp_path / "other.png"
    other.write_bytes(encode(photo("chelsea.png")[:96, :96]))
    hostile_hash = _forged_bundle(image.read_bytes()) | {"sha256": PAYLOAD}
    bundle.write_text(json.dumps(hostile_hash))
    mismatch = run("verify", str(other), "--bundle", str(bundle), "--rpc", rpc, "--registry", registry, cwd=tmp_path)
    assert mismatch.returncode == 1, mismatch.stderr
    assert_safe(mismatch.stdout + mismatch.stderr)
    assert mismatch.stdout.startswith("verdict: mismatch")

    # A bundle that is not one: the message quotes the payload, on one line, exit 2.
    bundle.write_text(json.dumps({"format": PAYLOAD}))
    bad = run(*args, "--registry", registry, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and bad.stderr.strip().count("\n") == 0
    assert_safe(bad.stdout + bad.stderr, shown=f"{CRASH} {STYLE}")  # the message quotes it with repr()


def test_certify_and_verify_print_names_and_manifest_titles_as_text(tmp_path: Path) -> None:
    from provenance.manifests import pki

    (tmp_path / f"{NAME}.png").write_bytes(encode(photo("astronaut.png")[:128, :128]))
    (tmp_path / f"{NAME}.txt.png").write_text("not an image")
    certified = run(*CERTIFY, "--", f"{NAME}.png", f"{NAME}.txt.png", cwd=tmp_path)
    assert certified.returncode == 1, certified.stderr  # one file is not an image
    assert_safe(certified.stdout + certified.stderr, shown=NAME_SHOWN)
    assert certified.stdout.startswith(f"certified {NAME_SHOWN}.png -> out/{NAME_SHOWN}.certified.png  record ")
    assert f"error: {NAME_SHOWN}.txt.png: " in certified.stderr

    as_json = run(*CERTIFY, "--json", "--no-wait", "--", f"{NAME}.png", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert_safe(as_json.stdout, shown=None)
    assert json.loads(as_json.stdout)["file"] == f"{NAME}.png"

    # A picture signed by someone else's C2PA CA, whose manifest title and record id are the payload.
    pki.create_ca(tmp_path / "foreign", organization="Foreign Camera Co")
    foreign = pki.load_or_create(tmp_path / "foreign")
    signed = ManifestSigner(foreign).sign(
        encode(photo("chelsea.png")[:128, :128]),
        "image/png",
        ManifestContent(record_id=PAYLOAD, title=PAYLOAD, source_type="digitalCapture"),
    )
    (tmp_path / "foreign.png").write_bytes(signed)
    report = run("verify", "foreign.png", "--data-dir", "d", cwd=tmp_path)
    assert report.returncode == 1, report.stderr  # not authentic
    assert_safe(report.stdout + report.stderr)
    assert report.stdout.startswith("verdict: ")
    as_json = run("verify", "foreign.png", "--data-dir", "d", "--json", cwd=tmp_path)
    assert as_json.returncode == 1
    assert_safe(as_json.stdout, shown=None)
    assert json.loads(as_json.stdout)["checks"]["c2pa"]["summary"]["title"] == PAYLOAD

    missing = run("verify", f"{NAME}-missing.png", "--data-dir", "d", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert_safe(missing.stderr, shown=f"error: no such file: {NAME_SHOWN}-missing.png")


def test_api_key_names_are_printed_as_text(tmp_path: Path) -> None:
    created = run("apikey", "create", "--name", PAYLOAD, "--scopes", "verify", "--data-dir", "d", cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    assert_safe(created.stdout + created.stderr)
    assert f"for account {SHOWN} (" in created.stdout

    listed = run("apikey", "list", "--data-dir", "d", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert_safe(listed.stdout)
    key_id = next(line.split()[0] for line in listed.stdout.splitlines() if SHOWN in line)

    revoked = run("apikey", "revoke", key_id, "--data-dir", "d", cwd=tmp_path)
    assert revoked.returncode == 0, revoked.stderr
    assert_safe(revoked.stdout)
    assert f"revoked key {key_id} of account {SHOWN}" in revoked.stdout

    unknown = run("apikey", "revoke", PAYLOAD, "--data-dir", "d", cwd=tmp_path)
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.startswith("error:") and unknown.stderr.strip().count("\n") == 0
    assert_safe(unknown.stderr, shown=None)

    bad_scope = run("apikey", "create", "--name", "x", "--scopes", PAYLOAD, "--data-dir", "d", cwd=tmp_path)
    assert bad_scope.returncode == 2 and bad_scope.stderr.strip().count("\n") == 0
    assert_safe(bad_scope.stderr, shown=None)
