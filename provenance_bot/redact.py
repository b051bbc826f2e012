"""The token never reaches a log: a filter that rewrites every record that would show it."""

from __future__ import annotations

import logging

MASK = "[token]"


class RedactFilter(logging.Filter):
    """Replace each secret in a record's message, arguments, traceback and stack with ``[token]``.

    Installed on the handlers (not the loggers), so records propagated from any library pass through it:
    httpx, aiohttp and aiogram may all put a request URL, which holds the token, into a message or an error.
    """

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        """``text`` with every secret masked."""
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


def install(*secrets: str, level: int = logging.INFO) -> RedactFilter:
    """Log to stderr at ``level`` with the secrets redacted on every root handler."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redactor = RedactFilter(*secrets)
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    return redactor
