"""The API's routes, one module per resource; each parses the request, calls one part, shapes the answer.

``ROUTERS`` lists them in the order ``create_app`` includes them (the web interface's own routes are
in ``provenance/api/web.py``).
"""

from __future__ import annotations

from fastapi import APIRouter

from provenance.api.routes import (
    account,
    certify,
    chain,
    datasets,
    generations,
    health,
    ipfs,
    keys,
    models,
    nft,
    records,
    trainings,
    trust,
    verify,
)

ROUTERS: tuple[APIRouter, ...] = (
    certify.router,
    records.router,
    account.router,
    verify.router,
    keys.router,
    chain.router,
    ipfs.router,
    health.router,
    generations.router,
    nft.router,
    trust.router,
    models.router,
    datasets.router,
    trainings.router,
)

__all__ = ["ROUTERS"]
