"""``provenance apikey``: create, list and revoke API keys (the database only; no chain, no IPFS)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from provenance.auth.accounts import AccountRepository
from provenance.auth.keys import SCOPES, parse_rate, parse_scopes
from provenance.cli.common import DataDir
from provenance.cli.render import console, fail
from provenance.cli.text import clean
from provenance.config import Settings
from provenance.errors import ProvenanceError

# Names come from callers: every value is printed through clean() with markup off (render's consoles: emoji off).
apikey_app = typer.Typer(help="API keys: Authorization: Bearer KEY for the HTTP API.", no_args_is_help=True)
"""The ``apikey`` command group."""


@contextmanager
def _accounts(data_dir: Path | None) -> Iterator[AccountRepository]:
    from provenance.db.session import make_engine, migrate, session_factory

    settings = Settings(data_dir=data_dir) if data_dir is not None else Settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.effective_database_url)
    try:
        migrate(engine)
        yield AccountRepository(session_factory(engine))
    finally:
        engine.dispose()


@apikey_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="Account the key acts for; created if new.")],
    scopes: Annotated[str, typer.Option("--scopes", help=f"Comma list of {', '.join(SCOPES)}.")],
    rate: Annotated[
        str | None, typer.Option("--rate", help="Requests per minute, N/min (0: unlimited; default from settings).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a key and print it, last and once: only its SHA-256 is stored."""
    try:
        scope_list = parse_scopes(scopes)
        rate_per_min = parse_rate(rate) if rate is not None else None
    except ValueError as exc:
        fail(str(exc))
    try:
        with _accounts(data_dir) as accounts:
            account = accounts.ensure_account(name)
            info, key = accounts.create_key(account.id, scope_list, name=name, rate_per_min=rate_per_min)
    except ProvenanceError as exc:
        fail(exc.detail)
    rate_text = "default rate" if info.rate_per_min is None else _rate(info.rate_per_min)
    console.print(
        f"created key {clean(info.key_id)} for account {clean(info.account_name)} ({clean(info.account_id)}): "
        f"scopes {clean(','.join(info.scopes))}, {rate_text}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(
        "Store the key now; it is not shown again. Send it as 'Authorization: Bearer KEY'.",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    # Last line, alone and unstyled, so `provenance apikey create ... | tail -1` is the key.
    print(key)


@apikey_app.command("list")
def list_keys(
    data_dir: DataDir = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys (ids, accounts, scopes, rates; never the keys themselves)."""
    try:
        with _accounts(data_dir) as accounts:
            keys = accounts.list_keys(include_revoked=all_keys)
    except ProvenanceError as exc:
        fail(exc.detail)
    if not keys:
        console.print("no keys (the first start of the service writes one to <data_dir>/admin.key)", highlight=False)
        return
    # One line per key (no table that folds in a narrow terminal or a pipe): easy to grep and cut.
    rows = [("KEY ID", "ACCOUNT", "SCOPES", "RATE", "CREATED", "LAST USED", "STATUS")]
    for k in keys:
        rows.append(
            (
                clean(k.key_id),
                clean(k.account_name),
                clean(",".join(k.scopes)),
                "default" if k.rate_per_min is None else _rate(k.rate_per_min),
                f"{k.created_at:%Y-%m-%d %H:%M}",
                f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "-",
                "revoked" if k.revoked_at else "active",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        console.print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@apikey_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key id from `provenance apikey list`.")],
    data_dir: DataDir = None,
) -> None:
    """Revoke a key: requests that send it get 401 from now on."""
    try:
        with _accounts(data_dir) as accounts:
            info = accounts.revoke(key_id)
    except ProvenanceError as exc:
        fail(exc.detail)
    console.print(
        f"revoked key {clean(info.key_id)} of account {clean(info.account_name)}", highlight=False, markup=False
    )


def _rate(per_min: int) -> str:
    return "unlimited" if per_min == 0 else f"{per_min}/min"
