"""The web interface's routes: the single page at ``/`` (and its deep links), its static files, and the
two small read-only endpoints it needs besides the API (``/v1/web/config``, ``/v1/records/{id}/nft``).

The page is plain HTML, CSS and JavaScript shipped in ``provenance/web/static``; nothing is built or
downloaded at run time, and its Content-Security-Policy allows nothing but this origin.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from provenance import PRODUCT_NAME, __version__
from provenance.api.deps import ChainDep, NftDep, RecordsDep, SettingsDep
from provenance.api.routes.common import record_or_404
from provenance.api.schemas import ErrorOut

STATIC_PACKAGE = "provenance.web"
STATIC_DIR = "static"
# Everything from this origin only: no CDN, no remote fonts, no inline script; images may also be the
# browser's own previews of a file the user picked (blob:).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# The pages the single-page app draws; each deep link returns the same document.
PAGES = ("/", "/signin", "/generate", "/certify", "/mine")

router = APIRouter()


@cache
def _index_html() -> str:
    return resources.files(STATIC_PACKAGE).joinpath(STATIC_DIR, "index.html").read_text(encoding="utf-8")


def _page() -> HTMLResponse:
    return HTMLResponse(
        _index_html(),
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-cache",
        },
    )


for _path in PAGES:
    router.add_api_route(_path, _page, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)


@router.get("/r/{record_id}", include_in_schema=False, response_class=HTMLResponse)
def record_page(record_id: str) -> HTMLResponse:
    """A record's page: the same document, which loads ``/v1/records/{record_id}`` itself."""
    return _page()


class WebConfigOut(BaseModel):
    """What the web page needs to draw its forms: models, limits and whether minting is configured."""

    product: str
    version: str
    models: list[str] = Field(description="Models a generation request may name; the first is the default.")
    default_model: str
    minting: bool = Field(description="An NFT contract is configured: records can be minted.")
    verify_requires_key: bool
    max_upload_bytes: int
    max_pixels: int
    max_image_side: int
    max_steps: int
    source_types: list[str] = Field(description="IPTC digital source types an upload may state.")
    default_source_type: str | None = Field(description="None: an upload states no source type unless chosen.")
    chain_id: int
    registry_address: str
    nft_address: str | None


@router.get("/v1/web/config", response_model=WebConfigOut, tags=["web"])
def web_config(settings: SettingsDep, chain: ChainDep) -> WebConfigOut:
    """Settings the web interface draws its forms from (public: nothing secret)."""
    from generator.models import TINY_MODEL_ID  # light: no diffusers import
    from provenance.manifests.manifest import SOURCE_TYPES

    models = list(dict.fromkeys([settings.default_model, TINY_MODEL_ID, *sorted(settings.models)]))
    nft = chain.nft
    return WebConfigOut(
        product=PRODUCT_NAME,
        version=__version__,
        models=models,
        default_model=settings.default_model,
        minting=nft is not None,
        verify_requires_key=settings.verify_requires_key,
        max_upload_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_pixels,
        max_image_side=settings.max_image_side,
        max_steps=settings.max_steps,
        source_types=list(SOURCE_TYPES),
        default_source_type=None,
        chain_id=chain.registry.chain_id,
        registry_address=chain.registry.address,
        nft_address=nft.address if nft is not None else None,
    )


class RecordNftOut(BaseModel):
    """Whether a record was minted, and its token."""

    record_id: str
    minted: bool
    token_id: str | None = Field(default=None, description="The content hash, as uint256 hex.")
    owner: str | None = None
    tx_hash: str | None = None
    token_uri: str | None = None
    contract: str | None = None
    minted_via: str | None = Field(default=None, description="custodial or voucher")


@router.get(
    "/v1/records/{record_id}/nft", response_model=RecordNftOut, tags=["nft"], responses={404: {"model": ErrorOut}}
)
def record_nft(record_id: str, records: RecordsDep, nfts: NftDep, chain: ChainDep) -> RecordNftOut:
    """The token minted for a record, if any: as this service recorded its custodial mint, else as the
    contract says (a voucher redeemed from the holder's own wallet)."""
    record = record_or_404(records, record_id)
    token = nfts.tokens.token_for(record_id)
    nft = chain.nft
    if token is None:
        owner = nft.owner_of(int(record.sha256, 16)) if nft is not None else None
        if owner is None:
            return RecordNftOut(record_id=record_id, minted=False)
        return RecordNftOut(
            record_id=record_id,
            minted=True,
            token_id="0x" + record.sha256,
            owner=owner,
            token_uri=nft.token_uri(int(record.sha256, 16)) if nft is not None else None,
            contract=nft.address if nft is not None else None,
            minted_via="voucher",
        )
    return RecordNftOut(
        record_id=record_id,
        minted=True,
        token_id=token.token_id,
        owner=token.owner,
        tx_hash=token.tx_hash,
        token_uri=f"ipfs://{token.metadata_cid}",
        contract=nft.address if nft is not None else None,
        minted_via=token.minted_via,
    )


def install_web(app: FastAPI) -> None:
    """Add the web interface to the API app: its pages, its endpoints and ``/static``."""
    app.include_router(router)
    app.mount("/static", StaticFiles(packages=[(STATIC_PACKAGE, STATIC_DIR)]), name="static")
