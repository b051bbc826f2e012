"""``/docs`` and ``/redoc`` work offline: their assets come from this origin, under a Content-Security-Policy.

The pages are read as HTML (every script, stylesheet and icon is a same-origin path that the app serves), and
then drawn by Debian's chromium through Playwright with every request outside 127.0.0.1 refused: Swagger UI
lists the operations and ReDoc renders the document, with no CSP violation reported by the browser.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import uvicorn
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from provenance.api.app import create_app
from provenance.api.docs import DOCS_CONTENT_SECURITY_POLICY
from provenance.runtime.services import Services
from tests.conftest import _free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


class _Refs(HTMLParser):
    """Every URL a page loads: script src, link href, img src; and whether it has an inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(str(values[key]))
        self._in_script_without_src = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script_without_src and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script_without_src = False


def _csp(header: str) -> dict[str, list[str]]:
    directives = (part.strip().split() for part in header.split(";") if part.strip())
    return {words[0]: words[1:] for words in directives}


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_pages_load_only_same_origin_assets_under_a_csp(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = _csp(response.headers["content-security-policy"])
    assert response.headers["content-security-policy"] == DOCS_CONTENT_SECURITY_POLICY
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval, no CDN
    assert policy["default-src"] == ["'none'"] and policy["connect-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "cdn" not in response.text.lower() and "googleapis" not in response.text
    refs = _Refs()
    refs.feed(response.text)
    assert refs.inline_scripts == 0
    scripts = [url for url in refs.urls if url.endswith(".js")]
    assert scripts, "the page loads no script"
    for url in refs.urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/"), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
        if url.endswith(".js"):
            assert asset.headers["content-type"].startswith(("text/javascript", "application/javascript")), url
        if url.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css"), url
    # The document each page draws is this app's.
    assert "/openapi.json" in response.text


def test_the_assets_are_the_packaged_ones(client: TestClient) -> None:
    from importlib import resources

    shipped = resources.files("fastapi_offline").joinpath("static")
    for name in ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js"):
        assert client.get(f"/docs/assets/{name}").content == shipped.joinpath(name).read_bytes(), name
    assert client.get("/docs/assets/..%2Fcore.py").status_code == 404  # the package folder only, not its code
    assert client.get("/docs/assets/missing.js").status_code == 404


def test_the_documents_are_not_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(path.startswith(("/docs", "/redoc")) for path in paths)


@pytest.fixture(scope="module")
def base_url(services: Services) -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run `make test`, which installs it"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _render(browser: Browser, base_url: str, path: str) -> tuple[list[str], list[str], list[str], Page]:
    """Open ``path`` with the network cut off outside this origin: (requests, refused, console errors, page)."""
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(20_000)
    requested: list[str] = []
    refused: list[str] = []
    errors: list[str] = []

    def offline(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if url.startswith(base_url + "/") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", offline)
    page = context.new_page()
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path)
    return requested, refused, errors, page


def test_swagger_ui_draws_the_operations_offline(browser: Browser, base_url: str) -> None:
    requested, refused, errors, page = _render(browser, base_url, "/docs")
    expect(page.locator(".opblock-summary-path").first).to_be_visible()
    expect(page.locator(".opblock-summary-path", has_text="/v1/verify").first).to_be_visible()
    assert f"{base_url}/openapi.json" in requested
    assert refused == [] and errors == []
    page.context.close()


def test_redoc_draws_the_document_offline(browser: Browser, base_url: str) -> None:
    requested, refused, errors, page = _render(browser, base_url, "/redoc")
    expect(page.get_by_role("heading", name="provenance", exact=False).first).to_be_visible()
    expect(page.locator("[data-section-id]").first).to_be_attached()
    assert f"{base_url}/openapi.json" in requested
    # ReDoc always draws its "API docs by Redocly" badge from its CDN (no option turns it off): the policy blocks
    # it before any request is made (nothing reached the network filter above) and ReDoc hides the broken image.
    badge = [e for e in errors if "https://cdn.redoc.ly/" in e and "Content Security Policy" in e]
    assert refused == [] and [e for e in errors if e not in badge] == []
    page.context.close()
