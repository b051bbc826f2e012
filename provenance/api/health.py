"""The health check behind ``GET /healthz``: each dependency (chain node, database, content store) asked in turn."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine

from provenance import __version__
from provenance.api.schemas import HealthOut
from provenance.chain import Registry
from provenance.db.repository import RecordRepository
from provenance.ipfs import ContentStore

# The CID of an empty file: asking whether it is pinned exercises the store without writing to it.
PROBE_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass(frozen=True)
class HealthProbe:
    """Asks the chain node, the database and the content store whether they answer; never raises."""

    registry: Registry  # the interface: health asks it for the latest block, nothing else
    repository: RecordRepository
    store: ContentStore
    engine: Engine

    def report(self) -> HealthOut:
        """The state of every dependency; ``down`` names those that do not answer (status ``degraded``)."""
        down: list[str] = []
        chain_state = self._chain(down)
        database_state, records = self._database(down)
        ipfs_state = self._ipfs(down)
        return HealthOut(
            status="degraded" if down else "ok",
            down=down,
            version=__version__,
            database=self.engine.url.get_backend_name(),
            database_state=database_state,
            chain=chain_state,
            ipfs=self.store.description,
            ipfs_state=ipfs_state,
            records=records,
        )

    def _chain(self, down: list[str]) -> dict[str, Any]:
        try:
            block = self.registry.block_number()  # through the registry interface, never its web3 internals
            return {"ok": True, "chain_id": self.registry.chain_id, "block_number": block}
        except Exception as exc:
            down.append("chain")
            return {"ok": False, "error": f"the chain RPC does not answer: {exc}"}

    def _database(self, down: list[str]) -> tuple[dict[str, Any], dict[str, int]]:
        try:
            records = self.repository.counts()
        except Exception as exc:
            down.append("database")
            return {"ok": False, "error": f"the database does not answer: {type(exc).__name__}"}, {}
        try:
            self.repository.probe_write()  # answering reads is not enough: certify writes
        except Exception as exc:
            down.append("database")
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            return {"ok": False, "error": f"the database does not take writes: {reason}"}, records
        return {"ok": True}, records

    def _ipfs(self, down: list[str]) -> dict[str, Any]:
        try:
            self.store.has(PROBE_CID)
            check_writable = getattr(self.store, "check_writable", None)  # the embedded blockstore
            if check_writable is not None:
                check_writable()
            return {"ok": True}
        except Exception as exc:
            down.append("ipfs")
            return {"ok": False, "error": f"the content store does not answer: {exc}"}
