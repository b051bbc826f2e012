"""The API's table from domain error to HTTP status: every error the service raises has one, and the
errors that say "retry later" (``transient``) are exactly those answered 503."""

from __future__ import annotations

import inspect

import pytest

from provenance import errors
from provenance.api import idempotency
from provenance.api.errors import STATUS_BY_ERROR, http_headers, http_status
from provenance.errors import (
    AlreadyCertifiedError,
    AuthenticationError,
    ChainError,
    ProvenanceError,
    QuotaExceededError,
    ServerBusyError,
)


def _error_classes() -> list[type[ProvenanceError]]:
    found = [
        cls
        for module in (errors, idempotency)
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if issubclass(cls, ProvenanceError)
    ]
    return sorted(set(found), key=lambda cls: cls.__name__)


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda cls: cls.__name__)
def test_every_error_class_is_in_the_table_and_transient_means_503(cls: type[ProvenanceError]) -> None:
    listed = next(base for base in cls.__mro__ if base in STATUS_BY_ERROR)
    assert listed is cls or listed is not ProvenanceError, "a new error class needs its status in the table"
    assert cls.transient == (STATUS_BY_ERROR[listed] == 503)


def test_a_subclass_takes_its_nearest_listed_base() -> None:
    class RefusedByContract(ChainError):
        code = "contract_refused"

    assert http_status(RefusedByContract("no")) == 502
    assert http_status(QuotaExceededError("spent", retry_after_s=3, limit=5)) == 429


def test_headers_come_from_what_the_error_says() -> None:
    assert http_headers(AuthenticationError("none")) == {"WWW-Authenticate": 'Bearer realm="provenance"'}
    wrong = http_headers(AuthenticationError("bad", invalid_token=True))
    assert wrong == {"WWW-Authenticate": 'Bearer realm="provenance", error="invalid_token"'}
    assert http_headers(ServerBusyError("full", retry_after_s=4)) == {"Retry-After": "4"}
    assert http_headers(AlreadyCertifiedError("taken", record_id="r1")) is None
