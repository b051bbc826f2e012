"""The Celery backend: GPU workers on many machines, Redis as broker, the same job code.

Start a worker with ``provenance worker`` (or ``celery -A provenance.runtime.worker worker``)
using the same settings as the API (database, data dir or Kubo, chain). This module knows the job
code, not the wiring: it takes a ``CeleryConfig`` (the runtime reads it from the settings), and the
worker's ``JobRunner`` comes from the opener the runtime installs (``serve_runner``), so jobs/ never
imports the composition root or the settings. Tasks are acknowledged late and rejected when their
worker dies, so Redis hands them to another worker after the visibility timeout; the job's
``attempts`` counter then decides between a retry and ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis
from celery import Celery, signals

from provenance.errors import ConfigurationError, QueueFullError

if TYPE_CHECKING:
    from provenance.jobs.runner import JobRunner

log = logging.getLogger(__name__)
TASK_NAME = "provenance.generate"


@dataclass(frozen=True)
class CeleryConfig:
    """What the Celery backend uses: the Redis broker, its queue, the visibility timeout and the queue's bound."""

    redis_url: str | None
    queue: str
    visibility_timeout_s: float
    queue_size: int  # jobs waiting in the broker queue before a new one is refused


def configure_celery(celery: Celery, config: CeleryConfig) -> Celery:
    """``celery`` on the Redis broker of ``config``: late acknowledgement, one task at a time per worker."""
    if not config.redis_url:
        raise ConfigurationError("The celery job backend needs REDIS_URL (e.g. redis://127.0.0.1:6379/0).")
    celery.conf.update(
        broker_url=config.redis_url,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=config.queue,
        broker_transport_options={"visibility_timeout": config.visibility_timeout_s},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


def make_celery(config: CeleryConfig) -> Celery:
    """A new Celery app configured by ``configure_celery`` (the API side's sender)."""
    return configure_celery(Celery("provenance"), config)


class CeleryJobQueue:
    """The API side: enqueue job ids; the bound is the broker queue's length."""

    name = "celery"

    def __init__(self, config: CeleryConfig) -> None:
        self.config = config
        self.celery = make_celery(config)
        self._redis = redis.Redis.from_url(config.redis_url or "")

    def start(self) -> None:
        """Nothing to start on the API side: the workers run elsewhere."""
        pass

    def check_capacity(self) -> None:
        """Refuse a job (QueueFullError) when the broker queue already holds job_queue_size jobs."""
        try:
            waiting = int(self._redis.llen(self.config.queue))  # type: ignore[arg-type]
        except redis.RedisError as exc:
            raise ConfigurationError(f"Redis at {self.config.redis_url} is unreachable: {exc}") from None
        if waiting >= self.config.queue_size:
            raise QueueFullError(f"The generation queue is full ({waiting} jobs waiting); retry later.")

    def enqueue(self, job_id: str) -> None:
        """Hand the job id to the broker; a worker runs it."""
        self.celery.send_task(TASK_NAME, args=[job_id], queue=self.config.queue)

    def stop(self) -> None:
        """Close the Redis connection."""
        self._redis.close()


# --- worker side -------------------------------------------------------------------------------
# The worker's app, with its task registered below. The runtime (provenance.runtime.worker) configures it on
# import from the same environment as the API (REDIS_URL, DATABASE_URL, PROVENANCE_DATA_DIR...).
app = Celery("provenance")

# Opens the worker's runner on its first task: the runner, and how to close what was opened for it.
RunnerOpener = Callable[[], "tuple[JobRunner, Callable[[], None]]"]


class _Worker:
    """This worker process's runner, opened on the first task and closed when the worker shuts down."""

    opener: RunnerOpener | None = None
    runner: JobRunner | None = None
    close: Callable[[], None] | None = None


def serve_runner(opener: RunnerOpener) -> None:
    """Set how this worker process opens its ``JobRunner`` (the runtime's wiring; called before tasks run)."""
    _Worker.opener = opener


def _runner() -> JobRunner:
    if _Worker.runner is None:
        if _Worker.opener is None:
            raise ConfigurationError(
                "This Celery app has no job runner: start workers with `provenance worker` "
                "or `celery -A provenance.runtime.worker worker`."
            )
        _Worker.runner, _Worker.close = _Worker.opener()
    return _Worker.runner


@signals.worker_shutdown.connect
def _close(**_: object) -> None:
    close, _Worker.runner, _Worker.close = _Worker.close, None, None
    if close is not None:
        close()


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True)
def generate(job_id: str) -> None:
    """The worker's task: run both phases of the job."""
    _runner().run(job_id)


def run_worker(config: CeleryConfig, loglevel: str = "INFO", opener: RunnerOpener | None = None) -> None:
    """Start a worker in this process (``provenance worker``) on the queue of ``config``.

    ``opener``: how the worker opens its runner (see ``serve_runner``); None keeps the one installed.
    """
    if opener is not None:
        serve_runner(opener)
    if not config.redis_url:
        raise ConfigurationError("A worker needs REDIS_URL (e.g. redis://127.0.0.1:6379/0).")
    app.worker_main(["worker", "--pool=solo", "--concurrency=1", "-Q", config.queue, f"--loglevel={loglevel}"])
