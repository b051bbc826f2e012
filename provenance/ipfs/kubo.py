"""A Kubo HTTP RPC client (``/api/v0``), used when ``IPFS_API_URL`` is set.

Plain HTTP with httpx: ``ipfshttpclient`` refuses every Kubo from 0.8 on. Every RPC call is a
POST (Kubo answers 405 to GET). ``add`` asks for the same DAG our own importer builds
(CIDv1, raw leaves, 256 KiB chunks) and we check the CID Kubo returns against ours, so a node with
other defaults cannot silently record a different CID. Never expose a Kubo RPC port publicly.
"""

from __future__ import annotations

import httpx

from provenance.errors import IpfsError, NotFoundError
from provenance.ipfs import AddResult
from provenance.ipfs.unixfs import CHUNK_SIZE, compute_cid


class KuboClient:
    """``ContentStore`` backed by a Kubo node's RPC API."""

    def __init__(self, api_url: str, *, timeout_s: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.Client(base_url=f"{self.api_url}/api/v0", timeout=timeout_s, transport=transport)

    @property
    def description(self) -> str:
        """One line saying which store this is."""
        return f"Kubo RPC at {self.api_url}"

    def _post(self, path: str, **kwargs: object) -> httpx.Response:
        try:
            response = self._http.post(path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise IpfsError(f"Kubo RPC at {self.api_url} is unreachable: {exc}") from None
        return response

    @staticmethod
    def _message(response: httpx.Response) -> str:
        try:
            return str(response.json().get("Message", response.text))
        except ValueError:
            return response.text

    def add(self, data: bytes) -> AddResult:
        """Add and pin the bytes with Kubo, checking it gives the CID computed here."""
        expected = compute_cid(data)
        created = not self.has(expected)
        params = {
            "cid-version": "1",
            "raw-leaves": "true",
            "chunker": f"size-{CHUNK_SIZE}",
            "hash": "sha2-256",
            "pin": "true",
        }
        response = self._post("/add", params=params, files={"file": ("file", data, "application/octet-stream")})
        if response.status_code != 200:
            raise IpfsError(f"Kubo refused the upload: {self._message(response)}")
        # With several files Kubo streams one JSON object per line; we send one, so take the last.
        last = response.text.strip().splitlines()[-1]
        cid = httpx.Response(200, content=last).json()["Hash"]
        if cid != expected:
            raise IpfsError(f"Kubo returned CID {cid} but the bytes hash to {expected}; check the node's add settings.")
        return AddResult(cid=cid, size=len(data), created=created)

    def has(self, cid: str) -> bool:
        """Whether Kubo has the CID pinned (recursively)."""
        response = self._post("/pin/ls", params={"arg": cid, "type": "recursive"})
        if response.status_code == 200:
            return cid in response.json().get("Keys", {})
        message = self._message(response)
        if "not pinned" in message or "invalid" in message.lower():
            return False
        raise IpfsError(f"Kubo pin/ls failed: {message}")

    def cat(self, cid: str) -> bytes:
        """The bytes of a CID from Kubo (``NotFoundError`` when it cannot return them)."""
        response = self._post("/cat", params={"arg": cid})
        if response.status_code != 200:
            raise NotFoundError(f"Kubo cannot return {cid}: {self._message(response)}")
        return response.content

    def remove(self, cid: str) -> None:
        """Unpin a CID (a no-op when it is not pinned)."""
        response = self._post("/pin/rm", params={"arg": cid})
        if response.status_code != 200 and "not pinned" not in self._message(response):
            raise IpfsError(f"Kubo pin/rm failed: {self._message(response)}")
