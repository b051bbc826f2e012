"""``GET /metrics`` and the middleware that counts every request and gives it an id.

The middleware (plain ASGI, so streamed answers pass untouched) takes the request id from ``X-Request-Id``
when it is sane or makes one, puts it in the logging context and echoes it in the response, and counts
the request by method, route template (``/v1/records/{record_id}``, never the raw path) and status.

``/metrics`` answers the Prometheus text format: the process's registry, or with ``PROMETHEUS_MULTIPROC_DIR``
the sum of every process's files, plus values read from the database at scrape time (anchoring backlog,
job queue), which are the same whichever process is asked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.datastructures import MutableHeaders
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from provenance.db.models import GenerationJob, JobStatus, RecordStatus
from provenance.observability import metrics
from provenance.observability.logs import request_id_from, request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"
UNMATCHED = "unmatched"  # every path no route serves (404s of scanners) shares one label value


def route_template(scope: Scope) -> str:
    """The template of the route that served the request (``/v1/records/{record_id}``), or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    return f"{path.rstrip('/')}/{{path}}" if isinstance(route, Mount) else path


class ObservabilityMiddleware:
    """Request id (contextvar and ``X-Request-Id`` answer header) and the request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(REQUEST_ID_HEADER.lower().encode())
        request_id = request_id_from(raw.decode("latin-1") if raw is not None else None)
        token = request_id_var.set(request_id)
        status = 500  # what an exception that escapes the app becomes
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route, method = route_template(scope), scope.get("method", "GET")
            metrics.HTTP_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            metrics.HTTP_LATENCY.labels(method=method, route=route).observe(time.perf_counter() - start)
        # Reset only on success: an exception goes on to the outer error handler, whose log line keeps the id.
        request_id_var.reset(token)


class _Forward(Collector):
    """The default registry's metrics inside a per-scrape registry (single-process mode)."""

    def collect(self) -> Iterable[Metric]:
        """Everything the default registry collects."""
        return REGISTRY.collect()


class StateCollector(Collector):
    """Values read from the database at scrape time: the anchoring backlog and the generation job queue."""

    def __init__(self, services: Any) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        """The backlog and queue gauges; a database that does not answer leaves them out (the scrape still works)."""
        try:
            counts = self.services.repository.counts()
            oldest = self.services.repository.in_status(RecordStatus.PENDING, limit=1)
            with self.services.sessions() as session:
                jobs = dict(
                    session.execute(
                        select(GenerationJob.status, func.count())
                        .where(GenerationJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
                        .group_by(GenerationJob.status)
                    ).all()
                )
        except Exception as exc:  # /metrics must answer while the database is down; /healthz says why
            log.debug("metrics: the database does not answer: %s", exc)
            return
        backlog = GaugeMetricFamily(
            "provenance_anchoring_backlog",
            "Records certified and not yet registered on chain: pending (not sent) and submitted (sent, not mined).",
            labels=["status"],
        )
        for status in (RecordStatus.PENDING, RecordStatus.SUBMITTED):
            backlog.add_metric([status], counts.get(status, 0))
        yield backlog
        yield GaugeMetricFamily(
            "provenance_anchoring_failed_records",
            "Records whose registration failed (reverted); see provenance records list.",
            value=counts.get(RecordStatus.FAILED, 0),
        )
        age = metrics._age_s(oldest[0].created_at) if oldest else 0.0
        yield GaugeMetricFamily(
            "provenance_anchoring_oldest_pending_seconds",
            "Age of the oldest record waiting to be sent (0 when none waits).",
            value=age or 0.0,
        )
        queue = GaugeMetricFamily(
            "provenance_job_queue_depth",
            "Generation jobs queued (waiting for a worker) and running, whatever the job backend.",
            labels=["status"],
        )
        for status in (JobStatus.QUEUED, JobStatus.RUNNING):
            queue.add_metric([status], int(jobs.get(status, 0)))
        yield queue


# What the state collector exports (the dashboard test checks every name a panel uses exists).
STATE_METRICS = (
    "provenance_anchoring_backlog",
    "provenance_anchoring_failed_records",
    "provenance_anchoring_oldest_pending_seconds",
    "provenance_job_queue_depth",
)


def process_registry() -> CollectorRegistry:
    """This process's metrics, or with multiprocess mode every process's, in a registry of their own."""
    registry = CollectorRegistry(auto_describe=False)
    directory = metrics.multiprocess_dir()
    if directory is not None:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Forward())
    return registry


def scrape(services: Any | None) -> bytes:
    """The text exposition of every metric: this process's (or all processes') and the scrape-time state."""
    registry = process_registry()
    if services is not None:
        registry.register(StateCollector(services))
    return generate_latest(registry)


def install_observability(app: FastAPI) -> None:
    """Add the request-id and metrics middleware and ``GET /metrics`` (left out of the OpenAPI document)."""

    async def metrics_endpoint(request: Request) -> Response:
        services = getattr(request.app.state, "services", None)
        return Response(scrape(services), media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.add_middleware(ObservabilityMiddleware)


def exported_names() -> set[str]:
    """Every sample name ``/metrics`` can hold for this service's own metrics (``provenance_*``)."""
    names: set[str] = set(STATE_METRICS)
    for collector in (value for value in vars(metrics).values() if hasattr(value, "_type") and hasattr(value, "_name")):
        name, kind = collector._name, collector._type
        if kind == "counter":
            names.update({f"{name}_total", f"{name}_created"})
        elif kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count", f"{name}_created"})
        else:
            names.add(name)
    return names
