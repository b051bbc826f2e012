"""``provenance serve --workers N``: what the parent process prepares once, and the app factory each worker runs.

uvicorn starts N worker processes (spawned, each a fresh interpreter) that accept on one socket. Each
opens its own ``Services`` on the same data dir and database, so whatever lives in the database is
shared already: records, idempotency claims (a primary key: two workers racing on one key cannot both
win), jobs, the fingerprint rows (each worker's index catches up from the database at most once a
second per lookup). The rest is settled here:

- **Once, in the parent, before any worker starts**: the database is migrated, the keys, the C2PA CA
  and the admin API key are created, and the chain is opened: the embedded anvil is started (or
  attached to), the contracts deployed on the first start and the trust root published. The parent
  keeps (and supervises) the embedded node; the workers attach to it through ``chain/anvil.json``
  and never start their own.
- **The chain writer lease** (``provenance.chain.writer``): every worker runs an anchor worker, and only
  the one holding the lease registers records; the others certify and leave their records ``pending``.
- **Per process**: the pixel budget is divided by N, and without Redis the rate limits and quotas
  are counted in a SQLite file of the data dir (``provenance.runtime.access``).
- **Metrics**: ``PROMETHEUS_MULTIPROC_DIR`` (``<data_dir>/metrics``, emptied at start, unless the operator set
  one), so ``/metrics`` answered by any worker sums all of them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from provenance.chain.anvil import AnvilNode
from provenance.config import Settings
from provenance.errors import ConfigurationError
from provenance.observability.metrics import MULTIPROCESS_ENV

log = logging.getLogger(__name__)

APP_FACTORY = "provenance.runtime.processes:worker_app"  # what uvicorn imports in each worker process
WORKERS_ENV = "PROVENANCE_WORKERS"


def metrics_directory(settings: Settings) -> Path:
    """Where the workers keep their metric files: the operator's ``PROMETHEUS_MULTIPROC_DIR``, else
    ``<data_dir>/metrics``, which is emptied (a killed process's files would otherwise stay in the sums)."""
    configured = os.environ.get(MULTIPROCESS_ENV)
    if configured:
        return Path(configured)
    directory = settings.resolved_data_dir / "metrics"
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def prepare_shared(settings: Settings) -> AnvilNode | None:
    """Everything the workers would otherwise race on, done once: migrate, keys, chain (started, deployed,
    trust published). Returns the embedded node this process keeps running for the workers (None: external
    chain, or a node another process runs); the caller stops it after the workers are gone."""
    from provenance.auth import AccountRepository, bootstrap_admin
    from provenance.runtime.chain import open_chain_parts
    from provenance.runtime.storage import open_storage

    with contextlib.ExitStack() as opened:
        storage = open_storage(settings, opened)
        bootstrap_admin(AccountRepository(storage.sessions), settings.resolved_data_dir)  # one admin.key, not N
        parts = open_chain_parts(settings, storage, opened)
        node = parts.chain.node
        parts.chain.node = None  # kept running when the stack closes the rest (engine, lease, clients)
        if node is not None:
            node.on_restart = None  # the repair after a restart needs an anchorer; the writer worker reconciles
        return node if node is not None and node.process is not None else None


def worker_environment(settings: Settings, workers: int, metrics_dir: Path) -> dict[str, str]:
    """The variables a spawned worker needs to open the same settings as the parent: the resolved data
    dir, the process count, the metrics directory. The rest of the environment is inherited as is."""
    return {
        "PROVENANCE_DATA_DIR": str(settings.resolved_data_dir),
        WORKERS_ENV: str(workers),
        MULTIPROCESS_ENV: str(metrics_dir),
    }


@contextlib.contextmanager
def shared_parts(settings: Settings, workers: int) -> Iterator[None]:
    """Prepare the data dir, chain and metrics directory for ``workers`` processes; export what they read
    (``os.environ``: spawned workers inherit it); stop the embedded node at the end."""
    directory = metrics_directory(settings)
    os.environ.update(worker_environment(settings, workers, directory))
    node = prepare_shared(settings)
    try:
        yield
    finally:
        if node is not None:
            node.stop()


def _bind_error(settings: Settings) -> str:
    """Why the address cannot be bound, in the words of the OS (lower case, as uvicorn's single process says it)."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return "see the line above"


def run_workers(settings: Settings, workers: int, log_config: dict[str, Any] | None) -> bool:
    """Serve with ``workers`` processes until a signal stops them (what ``uvicorn.run(workers=...)`` does).

    Returns False if a worker failed to start (its error is in the log above): uvicorn then stops the
    others and returns normally, and the caller must exit non-zero. A port that cannot be bound exits
    here (``ConfigurationError``), before any worker starts.
    """
    from uvicorn import Config
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = Config(
        APP_FACTORY,
        factory=True,
        workers=workers,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=log_config,
    )
    try:
        sock = config.bind_socket()
    except SystemExit:  # uvicorn logged the reason and would exit 1; the CLI answers one line and exits 2
        raise ConfigurationError(f"Cannot listen on {settings.host}:{settings.port}: {_bind_error(settings)}") from None
    supervisor = Multiprocess(config, sockets=[sock])
    supervisor.run()
    return not any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn ``factory=True``): settings from the environment the parent
    exported, logging in the configured format, its own ``Services`` opened in the app's lifespan."""
    from provenance.api.app import create_app
    from provenance.observability.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format)
    return create_app(settings)
