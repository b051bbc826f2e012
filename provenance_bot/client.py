"""The service's public HTTP API, as the bot uses it (httpx; the key goes as ``Authorization: Bearer``)."""

from __future__ import annotations

from typing import Any

import httpx


class ServiceError(Exception):
    """The service answered with an error: its status, stable code and detail."""

    def __init__(self, status: int, code: str, detail: str, retry_after: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after

    def sentence(self) -> str:
        """What to tell a user, in one or two sentences."""
        if self.status == 401:
            return "The service did not accept your linked key (revoked?): /link a new one."
        if self.status == 403:
            return f"Your key may not do that: {self.detail}"
        if self.status == 429 and self.code == "queue_full":  # the service's queue, not the account's limit
            return f"The service is busy right now: {self.detail}"
        if self.status == 429:
            wait = f" Try again in {self.retry_after} s." if self.retry_after else ""
            return f"A limit of your account is reached: {self.detail}{wait}"
        if self.status == 503:
            return f"The service is busy right now: {self.detail} Try again in a while."
        if self.status >= 500:
            return "The service failed on this request; try again later."
        return str(self.detail)


def _detail(response: httpx.Response) -> ServiceError:
    try:
        body = response.json()
        code, detail = str(body.get("error", "error")), body.get("detail", "")
    except ValueError:
        code, detail = "error", response.text[:200]
    if not isinstance(detail, str):
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail) or code
    return ServiceError(response.status_code, code, detail, response.headers.get("Retry-After"))


class ServiceClient:
    """One HTTP client for the bot's whole life; every call raises ServiceError on a 4xx or 5xx."""

    def __init__(self, base_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=120.0, transport=transport)
        self._config: dict[str, Any] | None = None

    async def _call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await self._http.request(method, path, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise _detail(response)
        return response

    async def config(self) -> dict[str, Any]:
        """The public limits (``GET /v1/web/config``: max_upload_bytes, max_pixels...), read once."""
        if self._config is None:
            self._config = (await self._call("GET", "/v1/web/config")).json()
        return self._config

    async def account(self, key: str) -> dict[str, Any]:
        """Who ``key`` acts for (``GET /v1/account``)."""
        return (await self._call("GET", "/v1/account", key)).json()  # type: ignore[no-any-return]

    async def generate(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        """Queue a generation job (``POST /v1/generations``)."""
        return (await self._call("POST", "/v1/generations", key, json=body)).json()  # type: ignore[no-any-return]

    async def job(self, job_id: str) -> dict[str, Any]:
        """A job's state and progress."""
        return (await self._call("GET", f"/v1/generations/{job_id}")).json()  # type: ignore[no-any-return]

    async def cancel(self, key: str, job_id: str) -> dict[str, Any]:
        """Cancel a job of the key's account."""
        return (await self._call("DELETE", f"/v1/generations/{job_id}", key)).json()  # type: ignore[no-any-return]

    async def record_image(self, record_id: str) -> bytes:
        """A record's certified bytes, exactly as signed."""
        return (await self._call("GET", f"/v1/records/{record_id}/image")).content

    async def mine(self, key: str, limit: int = 5) -> list[dict[str, Any]]:
        """The key's account's latest records."""
        page = (await self._call("GET", "/v1/records", key, params={"mine": "true", "limit": limit})).json()
        return list(page["items"])

    async def verify(self, data: bytes, filename: str, mime: str, key: str | None = None) -> dict[str, Any]:
        """Every check and a verdict (``POST /v1/verify``)."""
        files = {"file": (filename, data, mime)}
        return (await self._call("POST", "/v1/verify", key, files=files)).json()  # type: ignore[no-any-return]

    async def difference(self, verification_id: str) -> bytes:
        """The difference image a modified verdict left."""
        return (await self._call("GET", f"/v1/verify/{verification_id}/diff.png")).content

    async def mint(self, key: str, record_id: str, to: str) -> dict[str, Any]:
        """Custodial mint of a record to an address (scope ``mint``)."""
        body = {"record_id": record_id, "to": to}
        return (await self._call("POST", "/v1/nft/mint", key, json=body)).json()  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._http.aclose()
