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
    soft_binding,
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
    soft_binding.router,  # the C2PA Soft Binding Resolution API, under /c2pa/sbr/v1
)

__all__ = ["ROUTERS"]
