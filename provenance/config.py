"""All configuration in one pydantic-settings class.

Environment variables use the ``PROVENANCE_`` prefix (``PROVENANCE_DATA_DIR``...), except for the
handful of names the wider ecosystem already uses unprefixed: ``DATABASE_URL``, ``IPFS_API_URL``,
``RPC_URL``, ``CHAIN_PRIVATE_KEY``, ``CHAIN_KEY_FILE``, ``CHAIN_OWNER_KEY_FILE`` and ``REGISTRY_ADDRESS``.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from provenance.errors import ConfigurationError

AnchorMode = Literal["auto", "single", "batch"]
JobBackend = Literal["local", "celery"]
FingerprintBackendName = Literal["memory", "milvus"]
LogFormat = Literal["text", "json"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, f"PROVENANCE_{name}")


def _one_of(variable: str, choices: tuple[str, ...], value: Any) -> Any:
    """``value`` if it is one of ``choices``; else the operator's error naming the variable (CLI: exit 2, one line).

    A ``ConfigurationError`` rather than a ``ValueError``: pydantic lets it through unchanged, so a bad mode
    reads the same wherever ``Settings`` is built, instead of a multi-line validation report.
    """
    if value not in choices:
        names = ", ".join(repr(choice) for choice in choices[:-1])
        raise ConfigurationError(f"{variable} must be {names} or {choices[-1]!r}, not {value!r}.")
    return value


class Settings(BaseSettings):
    """Runtime settings. Every field has a default that runs the embedded stack."""

    model_config = SettingsConfigDict(env_prefix="PROVENANCE_", extra="ignore")

    data_dir: Path = Field(default=Path("./data"), description="Where keys, database, blocks and chain live.")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = Field(
        default=None,
        ge=1,
        description="Worker processes of `provenance serve` (unset: the number of cores with the Celery job backend, "
        "1 with the local one, whose generation thread lives in the serving process). Each process takes its "
        "share of the pixel budget; without Redis they count rate limits in <data_dir>/ratelimit.db.",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL of absolute links (image_url, ipfs_url, status_url); unset: the API answers relative "
        "links. Never taken from the request's Host header.",
    )

    # API keys, rate limits and quotas (provenance/auth). Counters live in Redis when REDIS_URL is set.
    verify_requires_key: bool = Field(default=False, description="POST /v1/verify needs a key with scope 'verify'.")
    rate_limit_per_key_per_min: int = Field(
        default=600, ge=0, description="Requests per minute for a key created without --rate; 0: unlimited."
    )
    rate_limit_public_per_min: int = Field(
        default=300, ge=0, description="Requests per minute per client address without a key; 0: unlimited."
    )
    quota_images_per_day: int = Field(
        default=500, ge=0, description="Generated images per account per UTC day; 0: unlimited."
    )
    quota_mints_per_day: int = Field(
        default=50, ge=0, description="NFT mints and vouchers per account per UTC day; 0: unlimited."
    )
    quota_certify_per_day: int = Field(
        default=1000, ge=0, description="Images certified (POST /v1/certify) per account per UTC day; 0: unlimited."
    )
    # The cost of public verification: pixels decoded per minute, counted from the upload's header before decoding.
    verify_pixels_per_min: int = Field(
        default=100_000_000, ge=0, description="Pixels verified per minute per client address (no key); 0: unlimited."
    )
    verify_key_pixels_per_min: int = Field(
        default=1_000_000_000,
        ge=0,
        description="Pixels verified per minute per key with the 'verify' scope (admin keys: unlimited); 0: unlimited.",
    )
    # Chain gas: an account's records beyond this many single register transactions per minute wait for a
    # Merkle batch (auto mode; admin accounts exempt).
    anchor_single_per_account_per_min: int = Field(
        default=10,
        ge=0,
        description="auto mode: single registrations per account per minute; the rest are "
        "batched. 0: no per-account rule.",
    )

    # Input limits (stage 1).
    max_upload_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000
    # Memory (provenance/media/budget.py): pixels decoded and worked on at once by certify and verify, shared by
    # concurrent requests (about 17 bytes per pixel at the peak: 80 MP is about 1.4 GB over the idle server).
    # An image larger than the budget runs alone.
    pixel_budget: int = Field(default=80_000_000, ge=1, description="Pixels in flight at once across requests.")
    pixel_budget_wait_s: float = Field(
        default=60.0, ge=0, description="How long a request waits for room in the pixel budget before 503 busy."
    )
    pixel_budget_client_share: float = Field(
        default=0.5, gt=0, le=1, description="Share of the pixel budget one client may hold at once (alone: all)."
    )
    pixel_budget_small_reserve: float = Field(
        default=0.125,
        ge=0,
        lt=1,
        description="Share of the pixel budget kept for small images (at most that "
        "many pixels each), so a normal upload does not wait behind large ones.",
    )
    # Structure checked before decoding (provenance/media/__init__.py): refused with 4xx, never parsed.
    max_metadata_bytes: int = Field(
        default=8 * 1024 * 1024, ge=0, description="Text, EXIF, XMP and ICC bytes an upload may carry (C2PA apart)."
    )
    max_metadata_chunks: int = Field(
        default=1_000, ge=1, description="PNG chunks / JPEG segments / WebP chunks other than pixel data."
    )

    # Database (stage 6).
    database_url: str | None = Field(default=None, validation_alias=_env("DATABASE_URL"))

    # IPFS (stage 5). Unset: the embedded blockstore in the data dir.
    ipfs_api_url: str | None = Field(default=None, validation_alias=_env("IPFS_API_URL"))
    ipfs_timeout_s: float = 30.0

    # Chain (stage 7). Unset rpc_url: an embedded anvil node in the data dir.
    rpc_url: str | None = Field(default=None, validation_alias=_env("RPC_URL"))
    chain_private_key: str | None = Field(default=None, validation_alias=_env("CHAIN_PRIVATE_KEY"), repr=False)
    chain_key_file: Path | None = Field(default=None, validation_alias=_env("CHAIN_KEY_FILE"))
    # The registry owner's (admin) key: publishes writers, signing keys and trust anchors. Kept apart
    # from the hot key above; embedded default: <data_dir>/chain/owner.key (0600).
    chain_owner_key_file: Path | None = Field(default=None, validation_alias=_env("CHAIN_OWNER_KEY_FILE"))
    registry_address: str | None = Field(default=None, validation_alias=_env("REGISTRY_ADDRESS"))
    anvil_binary: Path | None = Field(
        default=None, description="Path to anvil; default: `anvil` on PATH, then the npm package of a checkout."
    )
    anvil_port: int = Field(default=0, description="0 picks a free port.")
    tx_timeout_s: float = 120.0
    anchor_mode: AnchorMode = Field(
        default="auto",
        description="auto: one transaction per image, a Merkle batch when the backlog grows; "
        "single: always one per image; batch: always Merkle roots.",
    )
    anchor_batch_backlog: int = Field(
        default=32, ge=2, description="auto mode: this many records waiting are anchored as one Merkle batch."
    )
    tx_replace_after_s: float = Field(
        default=60.0, gt=0, description="A transaction not mined after this long is sent again with a higher fee."
    )
    writer_retry_s: float = Field(
        default=1.0, gt=0, description="How often an instance that is not the chain writer tries to become it."
    )
    batch_max_items: int = Field(default=256, ge=1, le=65536)
    batch_max_seconds: float = Field(default=10.0, ge=0.0)
    confirmations: int = Field(default=1, ge=1, description="Blocks (including its own) before a tx counts.")
    nft_address: str | None = Field(default=None, validation_alias=_env("NFT_ADDRESS"))
    nft_royalty_bps: int = Field(default=500, ge=0, le=10000)
    royalty_certifier_address: str | None = Field(
        default=None,
        validation_alias=_env("ROYALTY_CERTIFIER_ADDRESS"),
        description="The certifier's payee in royalty splits (what the lineage's creators leave); "
        "default: the NFT contract's default royalty receiver.",
    )
    voucher_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    anchor_poll_interval_s: float = 0.2
    chain_health_check_s: float = Field(
        default=5.0, description="How often the worker checks the registry is still there."
    )

    # C2PA (stage 3). Unset: the service's own CA in the data dir.
    c2pa_cert_chain: Path | None = Field(default=None, description="PEM chain, leaf first, root excluded.")
    c2pa_private_key: Path | None = None
    c2pa_trust_anchors: Path | None = Field(default=None, description="Extra PEM roots trusted when verifying.")
    c2pa_thumbnail: bool = False
    tsa_url: str | None = Field(
        default=None,
        description="RFC 3161 time-stamp authority for C2PA signatures; unset: the service's own TSA "
        "(embedded CA only; an operator's chain without it signs without a time-stamp).",
    )

    # ECDSA signing (stage 4). Unset: keys in <data_dir>/keys, rotated with `provenance keys rotate`.
    signing_key_file: Path | None = None

    # Generation (generator/ and the job API).
    # NoDecode: read as text by ``_models_json`` below, so an empty PROVENANCE_MODELS (docker-compose's
    # `${PROVENANCE_MODELS:-}` when unset) is no models rather than a JSON error.
    models: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="Model names -> local folder, checkpoint or hub id."
    )
    single_file_configs: dict[str, str] = Field(
        default_factory=dict, description="Single-file checkpoint (name or path) -> local diffusers config folder."
    )
    default_model: str = "tiny-random"
    lora_dir: Path | None = Field(
        default=None, description="Folder of LoRA files API callers may name; default <data_dir>/loras."
    )
    allow_hub_downloads: bool = False
    require_registered_models: bool = Field(
        default=False,
        description="Generation refuses a base model or LoRA whose files match no registered, signed model "
        "(422 unregistered_model); the built-in tiny model too, until it is registered.",
    )
    generator_device: str | None = Field(default=None, description="cuda, cuda:1, cpu; default: cuda if available.")
    compile_unet: bool = False
    prompt_privacy: bool = Field(default=False, description="Record only the SHA-256 of prompts, never their text.")
    prompt_blocklist: list[str] = Field(default_factory=list, description="Terms refused in prompts (422).")
    max_image_side: int = 2048
    max_steps: int = 150
    job_backend: JobBackend = Field(default="local", description="local (in-process worker) or celery.")
    job_queue_size: int = 16
    job_max_attempts: int = 2
    redis_url: str | None = Field(default=None, validation_alias=_env("REDIS_URL"))
    celery_queue: str = "provenance"
    celery_visibility_timeout_s: float = 3600.0
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which `provenance worker` serves its own Prometheus /metrics (job durations, errors), "
        "for workers on other hosts than the API; unset: none (or share PROMETHEUS_MULTIPROC_DIR on one host).",
    )

    # Watermark (stage 2).
    watermark_enabled: bool = True
    mark_luma: bool = Field(
        default=True,
        description="New marks also carry the luminance component (read against a stored reference; survives black "
        "and white, hue, gamma, JPEG 30). False: the chroma component alone, as before.",
    )
    fingerprint_enabled: bool = Field(
        default=True, description="ISCC fingerprints: a soft binding in the manifest and lookup of marks that are gone."
    )
    fingerprint_backend: FingerprintBackendName = Field(
        default="memory",
        description="Where fingerprint codes are searched: memory (each instance holds all, the default) or milvus "
        "(one collection all instances share; needs the milvus extra).",
    )
    milvus_uri: str | None = Field(
        default=None,
        description="Milvus for the milvus fingerprint back end: http://host:19530, or a milvus-lite file path "
        "ending in .db (one process); default <data_dir>/fingerprints.milvus.db.",
    )
    watermark_key_file: Path | None = Field(
        default=None,
        description="Secret mark key (hex, 0600) all instances share; default <data_dir>/keys/watermark.key.",
    )

    # Logs (provenance/observability/logs.py): json writes one object per line with the request's id.
    log_format: LogFormat = Field(default="text", description="text or json (one JSON object per log line).")

    @field_validator("models", mode="before")
    @classmethod
    def _models_json(cls, value: Any) -> Any:
        """PROVENANCE_MODELS: a JSON object of name -> folder; empty or blank means none."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except ValueError:
            raise ConfigurationError(
                f"PROVENANCE_MODELS must be a JSON object of model name -> folder, not {value[:80]!r}."
            ) from None

    # Modes are checked as the settings are read, before anything starts; a bad one names its variable.
    @field_validator("anchor_mode", mode="before")
    @classmethod
    def _anchor_mode(cls, value: Any) -> Any:
        return _one_of("PROVENANCE_ANCHOR_MODE", get_args(AnchorMode), value)

    @field_validator("job_backend", mode="before")
    @classmethod
    def _job_backend(cls, value: Any) -> Any:
        return _one_of("PROVENANCE_JOB_BACKEND", get_args(JobBackend), value)

    @field_validator("fingerprint_backend", mode="before")
    @classmethod
    def _fingerprint_backend(cls, value: Any) -> Any:
        return _one_of("PROVENANCE_FINGERPRINT_BACKEND", get_args(FingerprintBackendName), value)

    @field_validator("log_format", mode="before")
    @classmethod
    def _log_format(cls, value: Any) -> Any:
        return _one_of("PROVENANCE_LOG_FORMAT", get_args(LogFormat), value)

    @cached_property
    def resolved_data_dir(self) -> Path:
        """The data dir as an absolute path (~ expanded)."""
        return self.data_dir.expanduser().resolve()

    @property
    def resolved_lora_dir(self) -> Path:
        """The folder of LoRA files API callers may name: PROVENANCE_LORA_DIR or <data_dir>/loras."""
        return (self.lora_dir or self.resolved_data_dir / "loras").expanduser().resolve()

    @property
    def effective_database_url(self) -> str:
        """DATABASE_URL, or the SQLite file in the data dir when unset."""
        return self.database_url or f"sqlite:///{self.resolved_data_dir / 'provenance.db'}"

    @property
    def effective_public_url(self) -> str:
        """The prefix of links the API returns: PROVENANCE_PUBLIC_URL, or "" (relative links) when unset."""
        return (self.public_url or "").rstrip("/")
