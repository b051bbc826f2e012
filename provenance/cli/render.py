"""What the CLI prints: the consoles, the one-line error, JSON output and the verification reports.

Every command prints through :data:`console` (stdout) and :data:`err` (stderr). No emoji codes:
":warning:" in a file name or a title is text, not a picture. Values the CLI did not write itself go
through :func:`~provenance.cli.text.plain` (markup strings, table cells) or
:func:`~provenance.cli.text.clean` (``markup=False``): see :mod:`provenance.cli.text`.

The reports read the keys of ``VerificationResult.as_dict()`` and ``BundleReport`` as the verifiers
write them; the fields a verifier may not fill (``modification``, ``edited_regions``, ...) are read
with ``.get``.
"""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from provenance.chain.devchain import DEV_CHAIN_WARNING
from provenance.cli.text import clean, json_text, plain

console = Console(emoji=False)
"""Standard output: reports, results, JSON."""
err = Console(stderr=True, soft_wrap=True, emoji=False)  # one line per error, whatever the terminal width
"""Standard error: errors, warnings, progress bars."""

VERDICT_COLOURS = {
    "authentic": "green",
    "pending": "yellow",
    "unavailable": "yellow",
    "modified": "yellow",
    "unknown": "white",
    "invalid": "red",
    "untrusted": "red",
    "mismatch": "red",
}
"""The colour of each verdict word in a text report."""


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2. ``message`` is printed as text: it may quote file names and manifests."""
    err.print(f"[red]error:[/red] {plain(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def print_error(detail: Any) -> None:
    """``error: DETAIL`` on stderr as one line of text: how ``main`` reports an error no command caught."""
    err.print(f"error: {clean(detail)}", markup=False, highlight=False)


def print_json(data: Any) -> None:
    """One JSON document on stdout, as text (no markup, no emoji, no control character)."""
    console.print(json_text(data), markup=False, highlight=False, soft_wrap=True)


def say(line: str) -> None:
    """A progress line on stderr, as text (a line from a lower layer, e.g. the registration hand-over)."""
    err.print(clean(line), markup=False, highlight=False, soft_wrap=True)


def verdict_markup(verdict: Any) -> str:
    """The verdict word in its colour; anything unexpected is printed as text, in white."""
    colour = VERDICT_COLOURS.get(verdict, "white") if isinstance(verdict, str) else "white"
    return f"[bold {colour}]{plain(verdict)}[/]"


def _box(region: Any) -> str:
    """``(x0, y0)-(x1, y1), N% of the picture`` for a region dict (``box`` and ``share``)."""
    if not isinstance(region, dict):
        return plain(region)
    box, share = region.get("box"), region.get("share")
    where = (
        f"({plain(box[0])}, {plain(box[1])})-({plain(box[2])}, {plain(box[3])})"
        if isinstance(box, list | tuple) and len(box) == 4
        else plain(box)
    )
    return f"{where}, {share:.1%} of the picture" if isinstance(share, int | float) else where


def print_report(result: dict[str, Any]) -> None:
    """The verification report as text: what ``--json`` says, for a person.

    Every string in ``result`` may carry text from the upload (manifest titles, record ids claimed by a
    manifest, error details), so each goes through :func:`plain`. The fields the verifier may not fill
    yet (``modification``, ``edited_regions``, ...) are read with ``.get``.
    """
    verdict = result.get("verdict")
    console.print(
        f"verdict: {verdict_markup(verdict)}  record: {plain(result.get('record_id') or '-')}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(plain(result.get("summary") or ""), highlight=False, soft_wrap=True)
    for reason in result.get("reasons") or []:
        lead = "note:" if DEV_CHAIN_WARNING in reason else "because"
        console.print(f"  {lead} {plain(reason)}", highlight=False, soft_wrap=True)
    for item in result.get("evidence") or []:
        odds = item.get("false_positive_probability")
        extra = f", false-positive probability {odds:.1e}" if isinstance(odds, int | float) else ""
        console.print(
            f"  evidence: {plain(item.get('kind'))} ({plain(item.get('strength'))}{extra}) "
            f"record {plain(item.get('record_id') or '-')}",
            highlight=False,
            soft_wrap=True,
        )
    print_modification(result)
    print_checks(result.get("checks") or {})
    print_lineage(result.get("lineage"))


def _mark(value: Any) -> str:
    return "yes" if value is True else "NO" if value is False else "-"


def print_lineage(lineage: Any) -> None:
    """The lineage chain image -> model / LoRA -> dataset, one line per link with each check (text, never markup)."""
    if not isinstance(lineage, dict):
        return
    console.print(f"lineage: {plain(lineage.get('status'))}  {plain(lineage.get('summary') or '')}", highlight=False)
    for link in lineage.get("links") or []:
        target = link.get("model_id") or link.get("dataset_id") or "unregistered"
        weight = f" weight {link.get('weight')}" if link.get("weight") is not None else ""
        console.print(
            f"  {plain(link.get('parent'))} -> {plain(link.get('kind'))} {plain(link.get('name') or '-')} "
            f"[{plain(target)}]{plain(weight)}: {plain(link.get('status'))}; hash {_mark(link.get('hash_matches'))}, "
            f"signature {_mark(link.get('signature_valid'))}, on chain {_mark(link.get('registered_on_chain'))}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    {plain(link.get('reason') or '')}", highlight=False, soft_wrap=True)


# The name tests/e2e/test_cli_escaping.py renders a hostile report with.
_print_report = print_report


def print_modification(result: dict[str, Any]) -> None:
    """Modification kind, changes, regions, origin and a copied mark: the part of ``--json`` about edits."""
    from provenance.verify.verifier import MODIFICATIONS

    kind = result.get("modification")
    if kind:
        sentence = MODIFICATIONS.get(kind, "") if isinstance(kind, str) else ""
        console.print(f"modification: [bold]{plain(kind)}[/]  {plain(sentence)}", highlight=False, soft_wrap=True)
    changes = result.get("changes") or []
    if changes:
        console.print(f"changes: {'; '.join(plain(change) for change in changes)}", highlight=False, soft_wrap=True)
    for region in result.get("edited_regions") or []:
        console.print(f"  edited region: {_box(region)}", highlight=False, soft_wrap=True)
    contained = result.get("contained_region")
    if contained:
        console.print(
            f"  contained region: {_box(contained)} (where the certified content sits)", highlight=False, soft_wrap=True
        )
    origin = result.get("origin")
    if isinstance(origin, dict) and origin.get("record_id"):
        account = origin.get("account")
        by = f" of account {plain(account)}" if account else ""
        how = "derived from" if origin.get("derived") else "origin:"
        console.print(f"{how} record {plain(origin['record_id'])}{by}", highlight=False, soft_wrap=True)
    copied = result.get("copied_mark")
    if isinstance(copied, dict) and copied:
        console.print(
            f"[bold red]WARNING[/]: a mark of record {plain(copied.get('claimed_by_mark') or '-')} was found on "
            "different content (a copied mark): this is not provenance",
            highlight=False,
            soft_wrap=True,
        )
        if copied.get("detail"):
            console.print(f"  {plain(copied['detail'])}", highlight=False, soft_wrap=True)


def print_checks(checks: dict[str, Any]) -> None:
    """One table row per check; every cell is escaped (rich renders markup in ``str`` cells)."""
    table = Table(show_header=True, header_style="bold")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details", overflow="fold")
    c2pa = checks.get("c2pa") or {}
    found = c2pa.get("summary")
    summary: dict[str, Any] = found if isinstance(found, dict) else {}
    c2pa_details = [str(failure) for failure in c2pa.get("failures") or []]
    if summary.get("title"):  # the manifest's own title, beside its failures
        c2pa_details.append(f"title {summary['title']}")
    table.add_row(
        "c2pa",
        "valid, trusted"
        if c2pa.get("trusted")
        else ("valid, NOT trusted" if c2pa.get("valid") else ("invalid" if c2pa.get("present") else "absent")),
        plain("; ".join(c2pa_details)),
    )
    exact = checks.get("exact") or {}
    table.add_row(
        "exact",
        "match" if exact.get("matched") else "no match",
        f"signature {'valid' if exact.get('signature_valid') else 'INVALID'}, "
        f"key {plain(str(exact.get('key_id'))[:16])}…"
        if exact.get("matched")
        else plain(exact.get("sha256") or ""),
    )
    wm = checks.get("watermark") or {}
    odds = wm.get("false_positive_probability")
    table.add_row(
        "watermark",
        "detected" if wm.get("detected") else "not found",
        f"id {plain(wm.get('watermark_id'))}, {plain(wm.get('bit_errors'))} bit errors"
        + (f", false-positive probability {odds:.1e}" if isinstance(odds, int | float) else "")
        if wm.get("detected")
        else plain(wm.get("reason") or ""),
    )
    ch = checks.get("chain") or {}
    table.add_row(
        "chain",
        "registered" if ch.get("registered") else "not registered",
        f"block {plain(ch.get('block_number'))}, registry {plain(ch.get('registry_address'))} "
        f"on chain {plain(ch.get('chain_id'))}"
        if ch.get("registered")
        else plain(ch.get("error") or ""),
    )
    ip = checks.get("ipfs") or {}
    table.add_row("ipfs", "pinned" if ip.get("pinned") else "not pinned", plain(ip.get("cid") or ""))
    console.print(table)


def print_bundle_report(report: Any, as_json: bool) -> None:
    """A ``BundleReport``: every string in it may come from the bundle, so each goes through :func:`plain`."""
    if as_json:
        print_json(report.as_dict())
        return
    console.print(f"verdict: {verdict_markup(report.verdict)}  (bundle, no service)", highlight=False)
    if report.pinned is None:
        console.print("[yellow]nothing pinned[/yellow]: pass --registry ADDRESS or --trust trust.json", highlight=False)
    else:
        console.print(f"pinned: {plain(report.pinned.describe())}", highlight=False, soft_wrap=True)
    for reason in report.reasons:
        # The development-chain sentence is a caveat on any verdict, not a cause of it.
        lead = "note:" if DEV_CHAIN_WARNING in reason else "because"
        console.print(f"  {lead} {plain(reason)}", highlight=False, soft_wrap=True)
    for name, check in report.checks.items():
        state = "[green]ok[/green]" if check.get("ok") else "[red]FAILED[/red]"
        detail = check.get("error") or ", ".join(
            f"{k}={v}" for k, v in check.items() if k not in ("ok", "summary", "failures", "ingredients")
        )
        console.print(f"  {plain(name):<10} {state}  {plain(detail)}", highlight=False, soft_wrap=True)
