"""What several command groups share: the ``--data-dir`` option, settings, the services and registration."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from provenance.cli.render import fail, say
from provenance.config import Settings

if TYPE_CHECKING:
    from provenance.runtime.services import Services

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default ./data or PROVENANCE_DATA_DIR).")
]
"""The ``--data-dir`` option every command takes."""


def settings_for(data_dir: Path | None, **overrides: Any) -> Settings:
    """``Settings`` from the environment, with ``--data-dir`` and the options given (``None``: not given)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if data_dir is not None:
        values["data_dir"] = data_dir
    return Settings(**values)


def open_services(settings: Settings, *, start_worker: bool = False, signing: bool = True) -> Services:
    """The services a command needs; ``signing=False`` for commands that never sign a manifest."""
    from provenance.runtime.services import Services

    return Services.open(settings, start_worker=start_worker, signing=signing)


def wait_registered(services: Any, record_ids: list[str], timeout_s: float, *, wait: bool = True) -> dict[str, str]:
    """Register the records: as the chain writer if no service is running, else leave it to the service."""
    from provenance.anchoring.anchor import register_or_hand_over

    return register_or_hand_over(
        services.anchorer,
        services.repository,
        services.writing.lease,
        record_ids,
        wait=wait,
        timeout_s=timeout_s,
        say=say,
    )


def parse_creator(text: str) -> Any:
    """``ADDRESS:BPS[:NAME]`` (a ``--creator`` option) as a ``Creator``; a bad one is a one-line error, exit 2."""
    from pydantic import ValidationError

    from provenance.lineage.common import Creator

    parts = text.split(":", 2)
    if len(parts) < 2 or not parts[1].strip().isdigit():
        fail(f"--creator {text!r}: write ADDRESS:BPS[:NAME] (BPS in basis points, 10000 = 100%)")
    try:
        return Creator(address=parts[0], bps=int(parts[1]), name=parts[2] if len(parts) > 2 else None)
    except ValidationError as exc:
        fail(f"--creator {text!r}: {exc.errors()[0]['msg']}")
