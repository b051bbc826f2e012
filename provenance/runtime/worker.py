"""The Celery worker's wiring: ``provenance worker`` (or ``celery -A provenance.runtime.worker worker``).

The job code (``provenance.jobs.celery_app``) does not import the composition root or the settings; this
module configures its Celery app from the environment's settings and installs the opener that gives a
worker process its ``JobRunner`` from ``Services``.
"""

from __future__ import annotations

from collections.abc import Callable

from provenance.config import Settings
from provenance.jobs import celery_app
from provenance.jobs.runner import JobRunner
from provenance.lineage import training_celery
from provenance.runtime.jobs import celery_config
from provenance.runtime.services import Services
from provenance.runtime.trainings import open_worker_trainer


def open_worker_runner() -> tuple[JobRunner, Callable[[], None]]:
    """Open the services from the environment (no anchor worker of its own) and hand out their job runner."""
    services = Services.open(Settings(), start_worker=False)
    return services.jobs.runner, services.close


# On import, so `celery -A provenance.runtime.worker` finds a configured app and its runner. Without REDIS_URL
# the app stays unconfigured (importing must not fail); starting a worker then says REDIS_URL is needed.
_config = celery_config(Settings())
if _config.redis_url:
    celery_app.configure_celery(celery_app.app, _config)
celery_app.serve_runner(open_worker_runner)
training_celery.serve_trainer(open_worker_trainer)  # LoRA trainings run on the same workers and queue
app = celery_app.app


def run_worker(loglevel: str = "INFO") -> None:
    """Start a Celery generation worker in this process. Settings come from the environment.

    With ``PROVENANCE_WORKER_METRICS_PORT`` the worker also serves its metrics (prometheus-client's own HTTP
    server, on all interfaces of the worker's host), so Prometheus scrapes workers that share no disk with the API.
    """
    settings = Settings()
    if settings.worker_metrics_port is not None:
        from prometheus_client import start_http_server

        from provenance.observability.http import process_registry

        start_http_server(settings.worker_metrics_port, registry=process_registry())
    celery_app.run_worker(celery_config(settings), loglevel, open_worker_runner)
