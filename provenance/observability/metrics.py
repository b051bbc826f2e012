"""The service's Prometheus metrics, defined once for every process (API, CLI, Celery worker).

Counters and histograms are module-level objects that the code paths count into with one call
(``metrics.VERDICTS.labels(verdict=...).inc()``). Labels are bounded sets only: route templates, status
codes, verdicts, error codes, dependency names. Never a raw path, an account, a key or an address.

Multiprocess mode: when ``PROMETHEUS_MULTIPROC_DIR`` names a directory before the process starts,
prometheus-client keeps every value in memory-mapped files there, one per process, and ``/metrics``
sums them (several uvicorn workers, Celery workers on the same host or volume). Without it, values
live in this process's default registry. Values read at scrape time (the anchoring backlog, the job
queue) are not here: ``provenance.observability.http`` collects them from the database on each scrape.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os

from prometheus_client import Counter, Gauge, Histogram, multiprocess

from provenance import __version__
from provenance.errors import (
    ChainError,
    DependencyUnavailableError,
    IpfsError,
    ProvenanceError,
    QueueFullError,
    RateLimitedError,
    ServerBusyError,
    StorageUnavailableError,
    TimeStampError,
    dependency_error,
)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Certify and verify of a large image take seconds; the buckets reach a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Registration waits for blocks, batches and, when the chain is down, for the node to come back.
LAG_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0, 86400.0)
JOB_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 4 * 3600.0)

HTTP_REQUESTS = Counter(
    "provenance_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "provenance_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
CERTIFICATIONS = Counter(
    "provenance_certifications",
    "Images certified, by kind: upload, derivative (declared derived_from) or generation (a job's image).",
    ["kind"],
)
VERDICTS = Counter(
    "provenance_verifications",
    "Verifications by verdict (authentic, pending, modified, unknown, invalid, unavailable).",
    ["verdict"],
)
REGISTRATION_LAG = Histogram(
    "provenance_registration_lag_seconds",
    "Certified to registered on chain: single records from their certification; Merkle batches from the "
    "batch's formation (its records waited up to the batch window before).",
    ["anchoring"],
    buckets=LAG_BUCKETS,
)
JOB_DURATION = Histogram(
    "provenance_job_duration_seconds",
    "Generation jobs from start to finish, by outcome (succeeded, failed).",
    ["outcome"],
    buckets=JOB_BUCKETS,
)
DEPENDENCY_ERRORS = Counter(
    "provenance_dependency_errors",
    "Errors from a dependency (chain, ipfs, storage: database or data dir, time_stamp), by where they were seen "
    "(api: a request answered with the error; anchoring: a failed anchoring pass).",
    ["dependency", "source"],
)
API_ERRORS = Counter(
    "provenance_api_errors",
    "Error answers of the API by error code (the ErrorOut 'error' field).",
    ["code"],
)
REFUSALS = Counter(
    "provenance_refusals",
    "Requests refused for load: rate_limited, quota_exceeded (per key or address), busy (pixel budget), "
    "queue_full (generation queue).",
    ["reason"],
)
PIXELS_IN_USE = Gauge(
    "provenance_pixel_budget_in_use_pixels",
    "Pixels held in the pixel budget now (decoded and worked on by certify and verify), summed over live processes.",
    multiprocess_mode="livesum",
)
PIXEL_BUDGET = Gauge(
    "provenance_pixel_budget_capacity_pixels",
    "The pixel budget of the live processes, summed (PROVENANCE_PIXEL_BUDGET each).",
    multiprocess_mode="livesum",
)
BUILD_INFO = Gauge("provenance_build_info", "Always 1; the version is a label.", ["version"], multiprocess_mode="max")
BUILD_INFO.labels(version=__version__).set(1)

if os.environ.get(MULTIPROCESS_ENV):
    # A process that exits drops its live gauges (pixels in use) from the sum; one that is killed leaves its
    # files until the directory is emptied, which the operator does before the workers start (docs/operations.md).
    atexit.register(multiprocess.mark_process_dead, os.getpid())


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, or None when each process reports its own registry."""
    return os.environ.get(MULTIPROCESS_ENV) or None


def dependency_of(exc: BaseException) -> str | None:
    """Which dependency an exception stands for (chain, ipfs, storage, time_stamp), or None for anything else."""
    mapped = exc if isinstance(exc, ProvenanceError) else dependency_error(exc)
    if isinstance(mapped, ChainError):
        return "chain"
    if isinstance(mapped, IpfsError):
        return "ipfs"
    if isinstance(mapped, (StorageUnavailableError, DependencyUnavailableError)):
        return "storage"
    if isinstance(mapped, TimeStampError):
        return "time_stamp"
    return None


def count_error(exc: BaseException, *, source: str = "api") -> None:
    """Count an error the API answers (``source="api"``) or a failed background pass: its code, a refusal for
    load, a dependency's fault. Never raises."""
    if source == "api":
        code = exc.code if isinstance(exc, ProvenanceError) else "internal_error"
        mapped = dependency_error(exc) if not isinstance(exc, ProvenanceError) else None
        API_ERRORS.labels(code=mapped.code if mapped is not None else code).inc()
    if isinstance(exc, (RateLimitedError, ServerBusyError, QueueFullError)):
        REFUSALS.labels(reason=exc.code).inc()
    dependency = dependency_of(exc)
    if dependency is not None:
        DEPENDENCY_ERRORS.labels(dependency=dependency, source=source).inc()


def certification_kind(generation: bool, derived: bool) -> str:
    """The ``kind`` label of a certification."""
    return "generation" if generation else "derivative" if derived else "upload"


def _age_s(when: dt.datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:  # SQLite hands back naive datetimes; they are stored in UTC
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (dt.datetime.now(dt.UTC) - when).total_seconds())


def observe_registration(item: object) -> None:
    """A record (``anchoring="single"``) or a Merkle batch (``"batch"``, it has ``root``) just became registered."""
    age = _age_s(getattr(item, "created_at", None))
    if age is not None:
        REGISTRATION_LAG.labels(anchoring="batch" if hasattr(item, "root") else "single").observe(age)


def observe_job(started_at: dt.datetime | None, outcome: str) -> None:
    """A generation job that started at ``started_at`` finished with ``outcome`` (succeeded, failed)."""
    age = _age_s(started_at)
    if age is not None:
        JOB_DURATION.labels(outcome=outcome).observe(age)
