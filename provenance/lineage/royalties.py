"""Royalties for the people whose work trained the model: the split an NFT's ERC-2981 royalty is paid to.

The creators come from the image's lineage (``record.generation["lineage"]``: its base model and LoRAs, and each
LoRA's training dataset): every distinct registered model and dataset named there counts once, with the
``creators`` it was registered with. The rule:

- A creator's ``bps`` is its share of the royalty (10,000 = all of it), not of the sale: the sale's royalty rate
  stays the NFT contract's default (``NFT_ROYALTY_BPS``).
- The same address named by several models or datasets is one payee with the sum of its shares.
- The certifier (the service's payout address: ``ROYALTY_CERTIFIER_ADDRESS``, by default the NFT's default royalty
  receiver, the contracts' owner) gets what the creators leave: ``10000 - sum``. If it is a creator too, it is merged.
- When the creators of several sources ask together for 100% or more, the certifier gets nothing and each creator
  is paid in proportion to its shares (the splitter divides by the sum of the shares, so nobody's share is rounded).
- An image without lineage, or whose lineage names no creator, keeps the contract's default receiver.

One ``RoyaltySplitter`` is deployed per distinct split (payees sorted by address, so the same creators always give
the same split) and reused for every later image with that split. The addresses are cached in a JSON file in the
data dir (``royalty_splitters.json``, by chain id and the split's key), no database column: a cached address is
used only after the chain confirms that a splitter with exactly these payees and shares lives there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils import keccak, to_checksum_address
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from provenance.chain.nft import Web3Nft
from provenance.chain.splitter import Web3Splitter, deploy_splitter
from provenance.db.models import Dataset, Record, RegisteredModel
from provenance.errors import ChainError, ConfigurationError
from provenance.fsutil import write_atomic
from provenance.lineage.common import MAX_BPS, Creator

log = logging.getLogger(__name__)

CACHE_FILE = "royalty_splitters.json"


@dataclass(frozen=True)
class Payee:
    """One payee of a split: its address, its shares, and the names it was registered under."""

    address: str
    shares: int
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoyaltySplit:
    """The payees of a royalty and their shares (sorted by address); a payee gets shares / total_shares."""

    payees: tuple[Payee, ...]

    @property
    def total_shares(self) -> int:
        """The sum of the shares (10,000 unless the creators asked for more)."""
        return sum(p.shares for p in self.payees)

    @property
    def shares(self) -> dict[str, int]:
        """Address -> shares."""
        return {p.address: p.shares for p in self.payees}

    @property
    def key(self) -> str:
        """The split's identity (hex keccak256 of its payees and shares in order): one splitter per key."""
        canonical = "\n".join(f"{p.address.lower()}:{p.shares}" for p in self.payees)
        return keccak(text="provenance.royalty-split.v1\n" + canonical).hex()


def lineage_sources(lineage: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """The distinct model ids and dataset ids an image's lineage names, in order of first mention."""
    models: list[str] = []
    datasets: list[str] = []
    if not isinstance(lineage, dict):
        return models, datasets
    entries = [lineage.get("base"), *(lineage.get("loras") or [])]
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if entry.get("model_id") and entry["model_id"] not in models:
            models.append(str(entry["model_id"]))
        if entry.get("dataset_id") and entry["dataset_id"] not in datasets:
            datasets.append(str(entry["dataset_id"]))
    return models, datasets


def _creators_of(rows: Iterable[Dataset | RegisteredModel]) -> list[Creator]:
    out: list[Creator] = []
    for row in rows:
        for raw in row.creators or []:
            try:
                out.append(Creator.model_validate(raw))
            except ValidationError:
                # Registration validates creators; a row edited by hand must not stop the mint, nor pay a stranger.
                log.warning("Ignoring a malformed creator of %s %s.", type(row).__name__, row.id)
    return out


def lineage_creators(sessions: sessionmaker[Session], lineage: dict[str, Any] | None) -> list[Creator]:
    """The creators of every distinct registered model and dataset an image's lineage names.

    A LoRA's training dataset counts whether the lineage names it or only the registered model does; a model or
    dataset named twice counts once. Ids that match no row are ignored (nothing to pay).
    """
    model_ids, dataset_ids = lineage_sources(lineage)
    if not model_ids and not dataset_ids:
        return []
    with sessions() as session:
        models = [m for m in (session.get(RegisteredModel, i) for i in model_ids) if m is not None]
        for model in models:
            if model.dataset_id and model.dataset_id not in dataset_ids:
                dataset_ids.append(model.dataset_id)
        datasets = [d for d in (session.get(Dataset, i) for i in dataset_ids) if d is not None]
        return _creators_of([*models, *datasets])


def split_royalty(creators: list[Creator], certifier: str) -> RoyaltySplit | None:
    """The split of a royalty between ``creators`` and the ``certifier`` (rule in the module docstring).

    None when there are no creators: the token keeps the contract's default receiver.
    """
    if not creators:
        return None
    shares: dict[str, int] = {}
    names: dict[str, list[str]] = {}
    for creator in creators:
        shares[creator.address] = shares.get(creator.address, 0) + creator.bps
        if creator.name and creator.name not in names.setdefault(creator.address, []):
            names[creator.address].append(creator.name)
    rest = MAX_BPS - sum(shares.values())
    if rest > 0:
        certifier = to_checksum_address(certifier)
        shares[certifier] = shares.get(certifier, 0) + rest
    payees = tuple(
        Payee(address, shares[address], tuple(names.get(address, ()))) for address in sorted(shares, key=str.lower)
    )
    return RoyaltySplit(payees)


class RoyaltySplits:
    """Finds (or deploys) the royalty receiver of a record's token: a splitter for its lineage's creators."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        cache_path: Path,
        *,
        certifier: str | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.sessions = sessions
        self.cache_path = cache_path
        try:
            self.certifier = to_checksum_address(certifier) if certifier else None
        except ValueError:
            raise ConfigurationError(
                f"ROYALTY_CERTIFIER_ADDRESS: {certifier!r} is not an Ethereum address (0x and 40 hex digits)."
            ) from None
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def split_for(self, record: Record, nft: Web3Nft) -> RoyaltySplit | None:
        """The split for ``record``'s token, or None when its lineage names no creator."""
        lineage = (record.generation or {}).get("lineage")
        creators = lineage_creators(self.sessions, lineage)
        if not creators:
            return None
        return split_royalty(creators, self.certifier or nft.default_royalty_receiver())

    def receiver_for(self, record: Record, nft: Web3Nft) -> str | None:
        """The splitter ``record``'s token pays its royalty to (deployed now if new), or None for the default."""
        split = self.split_for(record, nft)
        if split is None:
            return None
        return self.splitter(split, nft)

    def splitter(self, split: RoyaltySplit, nft: Web3Nft) -> str:
        """The address of the splitter for ``split``: the cached one if the chain confirms it, else a new one."""
        if nft.sender is None:
            raise ChainError("No chain key configured to deploy a royalty splitter with.")
        chain = f"chain:{int(nft.w3.eth.chain_id)}"
        with self._lock:
            cache = self._read()
            cached = cache.get(chain, {}).get(split.key)
            if cached and Web3Splitter(nft.w3, cached).pays(split.shares):
                return str(cached)
            address, _ = deploy_splitter(
                nft.sender,
                [p.address for p in split.payees],
                [p.shares for p in split.payees],
                timeout_s=self.timeout_s,
            )
            cache.setdefault(chain, {})[split.key] = address
            write_atomic(self.cache_path, json.dumps(cache, indent=1, sort_keys=True).encode())
            log.info("Deployed a royalty splitter at %s for %d payees.", address, len(split.payees))
            return address

    def _read(self) -> dict[str, dict[str, str]]:
        try:
            data = json.loads(self.cache_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("The royalty splitter cache %s is unreadable; starting it again.", self.cache_path)
            return {}
        return data if isinstance(data, dict) else {}
