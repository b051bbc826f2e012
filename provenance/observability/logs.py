"""Log lines as text (the default) or one JSON object per line (``PROVENANCE_LOG_FORMAT=json``), each with the
id of the request it was written for.

The request id lives in a context variable that the HTTP middleware (``provenance.observability.http``) sets
for the request; route code run in the thread pool inherits it, so every line of a request carries it.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("provenance_request_id", default=None)

# An incoming X-Request-Id is kept when it looks like an id (a UUID, a trace id, a proxy's id); anything else
# (too long, spaces, quotes, control characters) is replaced, so a client cannot forge log lines with it.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=-]{0,127}")


def request_id_from(header: str | None) -> str:
    """The incoming id when it is sane (1 to 128 characters of letters, digits and ``._:/+=-``), else a new one."""
    if header is not None and _SANE_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (the current request's, or None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record; only adds the attribute."""
        record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id, pid (which of several
    worker processes wrote it), exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get(),
            "pid": record.process,
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(log_format: LogFormat = "text", level: int = logging.INFO) -> None:
    """Send the root logger's lines to stderr in ``log_format``; replaces the handlers installed before."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per chain lookup is noise


def uvicorn_log_config(log_format: LogFormat) -> dict[str, Any] | None:
    """What ``uvicorn.run(log_config=...)`` takes: its own text config, or None in JSON mode so that its error and
    access lines go to the root logger's JSON handler (with the request id) instead of its text handlers."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG
