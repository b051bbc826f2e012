"""NFTs of records: a custodial mint, or an EIP-712 voucher the holder redeems from their own wallet."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from provenance.api.deps import LimitsDep, NftDep, RecordsDep, require_scope
from provenance.api.routes.common import ERRORS, WRITE_ERRORS
from provenance.api.schemas import ErrorOut, MintIn, MintOut, VoucherIn
from provenance.auth import MINTS_PER_DAY, Caller
from provenance.db.repository import RecordRepository
from provenance.errors import PermissionDeniedError

router = APIRouter(responses=ERRORS)


def _check_record_owner(records: RecordRepository, caller: Caller, record_id: str) -> None:
    """Only the account that certified a record may mint it (admin: any). An unknown record is left
    to the NFT service, which answers 404 (or 422 for a bad address first)."""
    record = records.get(record_id)
    if record is not None and not caller.may_act_for(record.account_id):
        raise PermissionDeniedError(f"Record {record_id} was certified by another account; only it may mint.")


@router.post(
    "/v1/nft/mint",
    status_code=201,
    response_model=MintOut,
    tags=["nft"],
    responses={503: {"model": ErrorOut}, **WRITE_ERRORS},
)
def nft_mint(
    body: MintIn,
    records: RecordsDep,
    nft: NftDep,
    limits: LimitsDep,
    caller: Annotated[Caller, Depends(require_scope("mint"))],
) -> MintOut:
    """Custodial mint of a registered record to ``to``: one token per content hash (scope ``mint``,
    own records only; counts against ``mints_per_day``)."""
    _check_record_owner(records, caller, body.record_id)
    with limits.quota(caller, MINTS_PER_DAY):
        result = nft.mint(body.record_id, body.to, account_id=caller.account_id)
    return MintOut(**result.__dict__)


@router.post("/v1/nft/vouchers", status_code=201, tags=["nft"], responses={503: {"model": ErrorOut}, **WRITE_ERRORS})
def nft_voucher(
    body: VoucherIn,
    records: RecordsDep,
    nft: NftDep,
    limits: LimitsDep,
    caller: Annotated[Caller, Depends(require_scope("mint"))],
) -> dict[str, object]:
    """An EIP-712 lazy-mint voucher: the holder redeems it from their own wallet and pays the gas
    (scope ``mint``, own records only; counts against ``mints_per_day``)."""
    _check_record_owner(records, caller, body.record_id)
    with limits.quota(caller, MINTS_PER_DAY):
        return nft.voucher(body.record_id, body.to, body.ttl_s, account_id=caller.account_id)
