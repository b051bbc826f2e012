"""``provenance serve`` and ``provenance worker``: the long-running processes (HTTP API, Celery worker)."""

from __future__ import annotations

from typing import Annotated

import typer

from provenance import __version__
from provenance.cli.common import DataDir, settings_for
from provenance.cli.render import err, fail
from provenance.cli.text import clean
from provenance.errors import ProvenanceError
from provenance.observability.logs import configure_logging, uvicorn_log_config


def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Worker processes (default: PROVENANCE_WORKERS, else the number of cores with the Celery job "
            "backend, 1 with the local one).",
        ),
    ] = None,
) -> None:
    """Start the HTTP API on the configured stack (embedded by default)."""
    import os

    import uvicorn

    from provenance.api.app import create_app

    settings = settings_for(data_dir, host=host, port=port, workers=workers)
    # Default: one process per core this process may run on, when generation jobs run on Celery. The local job
    # runner lives in the serving process (each process would run its own and re-run unfinished jobs at start), so
    # the embedded default serves from one process unless asked for more.
    cores = len(os.sched_getaffinity(0))
    processes = settings.workers or (cores if settings.job_backend == "celery" else 1)
    configure_logging(settings.log_format)  # text, or JSON lines with the request id (PROVENANCE_LOG_FORMAT)
    err.print(
        f"provenance {__version__}: data in {clean(settings.resolved_data_dir)}; "
        f"web page on http://{clean(settings.host)}:{settings.port}/, "
        f"API docs on http://{clean(settings.host)}:{settings.port}/docs"
        + (f"; {processes} worker processes" if processes > 1 else ""),
        markup=False,
        highlight=False,
    )
    if processes > 1 and settings.job_backend == "local":
        err.print(
            "note: with PROVENANCE_JOB_BACKEND=local every worker process runs its own generation thread, and each "
            "re-runs the jobs left unfinished at the last stop; use Celery to generate with several processes.",
            markup=False,
            highlight=False,
        )
    log_config = uvicorn_log_config(settings.log_format)
    host, port = settings.host, settings.port
    if processes == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", log_config=log_config)
        return
    from provenance.runtime.processes import run_workers, shared_parts

    try:
        with shared_parts(settings, processes):  # migrated, chain started and deployed once; node kept here
            started = run_workers(settings, processes, log_config)
    except ProvenanceError as exc:
        fail(exc.detail)
    if not started:
        fail("A worker process failed to start (see the lines above); the service stopped.")


def worker(data_dir: DataDir = None) -> None:
    """Run a Celery generation worker (PROVENANCE_JOB_BACKEND=celery, REDIS_URL set)."""
    import os

    if data_dir is not None:
        os.environ["PROVENANCE_DATA_DIR"] = str(data_dir)
    from provenance.runtime.worker import run_worker

    try:
        run_worker()
    except ProvenanceError as exc:
        fail(exc.detail)
