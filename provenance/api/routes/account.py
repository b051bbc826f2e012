"""``GET /v1/account``: the account and key behind the bearer key."""

from __future__ import annotations

from fastapi import APIRouter

from provenance.api.deps import CurrentAccount, SettingsDep
from provenance.api.routes.common import ERRORS
from provenance.api.schemas import AccountOut

router = APIRouter(responses=ERRORS)


@router.get("/v1/account", response_model=AccountOut, tags=["account"])
def account(caller: CurrentAccount, settings: SettingsDep) -> AccountOut:
    """The account and key behind the bearer key (check a key works)."""
    rate = settings.rate_limit_per_key_per_min if caller.rate_per_min is None else caller.rate_per_min
    return AccountOut(
        account_id=caller.account_id,
        account_name=caller.account_name,
        key_id=caller.key_id,
        scopes=sorted(caller.scopes),
        rate_per_min=rate,
    )
