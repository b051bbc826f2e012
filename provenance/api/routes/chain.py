"""``GET /v1/chain``: where records are registered (chain, contracts and their ABIs, anchoring mode)."""

from __future__ import annotations

from fastapi import APIRouter

from provenance.api.deps import ChainDep, SettingsDep
from provenance.api.routes.common import ERRORS
from provenance.api.schemas import ChainOut

router = APIRouter(responses=ERRORS)


@router.get("/v1/chain", response_model=ChainOut, tags=["chain"])
def chain(connection: ChainDep, settings: SettingsDep) -> ChainOut:
    """The chain id, RPC, registry and NFT contracts (addresses and ABIs), anchoring mode and confirmations."""
    registry, nft = connection.registry, connection.nft
    return ChainOut(
        chain_id=registry.chain_id,
        rpc_url=registry.rpc_url,
        registry_address=registry.address,
        registry_abi=registry.abi,
        nft_address=nft.address if nft else None,
        nft_abi=nft.abi if nft else None,
        anchor_mode=settings.anchor_mode,
        confirmations=settings.confirmations,
    )
