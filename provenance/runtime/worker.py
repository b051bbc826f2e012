"""The Celery worker's wiring: ``provenance worker`` (or ``celery -A provenance.runtime.worker worker``).

The job code (``provenance.jobs.celery_app``) does not import the composition root; this module
installs the opener that gives a worker process its ``JobRunner`` from ``Services``.
"""

from __future__ import annotations

from collections.abc import Callable

from provenance.config import Settings
from provenance.jobs import celery_app
from provenance.jobs.runner import JobRunner
from provenance.runtime.services import Services


def open_worker_runner() -> tuple[JobRunner, Callable[[], None]]:
    """Open the services from the environment (no anchor worker of its own) and hand out their job runner."""
    services = Services.open(Settings(), start_worker=False)
    return services.jobs.runner, services.close


celery_app.serve_runner(open_worker_runner)  # on import, so `celery -A provenance.runtime.worker` finds it
app = celery_app.app


def run_worker(loglevel: str = "INFO") -> None:
    """Start a Celery generation worker in this process. Settings come from the environment."""
    celery_app.run_worker(loglevel, open_worker_runner)
