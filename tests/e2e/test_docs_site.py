"""The documentation site (``mkdocs.yml``, ``docs/``) builds strictly, links right and loads nothing from elsewhere.

``mkdocs build --strict`` runs as ``make docs`` does, into a temporary folder: mkdocs.yml turns every link check
(missing page, missing anchor, a docs file left out of the nav) into a warning, and strict makes a warning fail the
build. A second build of a copy with one broken anchor shows that the check bites. The built pages are read as HTML
(no script, stylesheet, image or frame from another host) and drawn by Debian's chromium through Playwright with
every request outside 127.0.0.1 refused and recorded. The README links to the pages by relative paths that must exist.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from playwright.sync_api import Request, Route, sync_playwright

from tests.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _nav_pages(nav: list[object]) -> list[str]:
    pages: list[str] = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        if isinstance(value, list):
            pages += _nav_pages(value)
        else:
            pages.append(str(value))
    return pages


@pytest.fixture(scope="module")
def config() -> dict[str, object]:
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = _build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return out


def test_strict_build_with_every_link_check_on(config: dict[str, object], site: Path) -> None:
    assert config["strict"] is True
    validation = config["validation"]
    assert isinstance(validation, dict)
    assert validation["links"] == {
        "not_found": "warn",
        "anchors": "warn",
        "absolute_links": "warn",
        "unrecognized_links": "warn",
    }
    assert validation["nav"]["omitted_files"] == "warn" and validation["nav"]["not_found"] == "warn"
    assert (site / "index.html").is_file() and (site / "search" / "search_index.json").is_file()


def test_every_nav_page_exists_and_every_page_is_in_the_nav(config: dict[str, object], site: Path) -> None:
    nav = config["nav"]
    assert isinstance(nav, list)
    pages = _nav_pages(nav)
    assert len(pages) == len(set(pages))
    for page in pages:
        assert (DOCS / page).is_file(), page
        assert (site / page.replace(".md", ".html")).is_file(), page
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == set(pages)
    for section in ("User guide", "API", "Trust model", "Models and datasets", "Operations", "Benchmarks"):
        assert any(isinstance(item, dict) and section in item for item in nav), section


def test_a_broken_anchor_or_page_link_fails_the_build(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "api.md"
    page.write_text(page.read_text() + "\nSee [the limits](guide/api-keys.md#no-such-section).\n")
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-section" in result.stderr

    page.write_text(page.read_text().replace("#no-such-section", "").replace("api-keys.md", "missing.md"))
    result = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr


class _Refs(HTMLParser):
    """The URLs a page loads by itself: script src, link href (stylesheets, icons, preloads), img/iframe/source src."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        key = {"script": "src", "link": "href", "img": "src", "iframe": "src", "source": "src"}.get(tag)
        if key and values.get(key):
            self.loads.append(str(values[key]))


def test_the_built_pages_load_no_asset_from_another_host(config: dict[str, object], site: Path) -> None:
    # Material's script fetches from other hosts only for a repository's stars (repo_url), Google Fonts (font),
    # and mermaid diagrams (from unpkg): none of the three is on.
    assert config["theme"]["font"] is False  # type: ignore[index]
    assert "repo_url" not in config
    for page in DOCS.rglob("*.md"):
        assert "```mermaid" not in page.read_text(), page
    pages = list(site.rglob("*.html"))
    assert len(pages) > 10
    for html in pages:
        refs = _Refs()
        refs.feed(html.read_text())
        assert refs.loads, html
        for url in refs.loads:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{html.relative_to(site)} loads {url}"
        assert "fonts.googleapis" not in html.read_text() and "fonts.gstatic" not in html.read_text()


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Serve quietly: the test reads the browser's requests, not the access log."""


def test_chromium_draws_every_page_without_a_request_elsewhere(site: Path, served: str) -> None:
    elsewhere: list[str] = []

    def refuse_others(route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", refuse_others)
            failed: list[str] = []
            page.on("requestfailed", lambda request: failed.append(request.url))
            for html in sorted(site.rglob("*.html")):
                path = html.relative_to(site).as_posix()
                if path == "404.html":
                    continue
                response = page.goto(f"{served}/{path}", wait_until="networkidle")
                assert response is not None and response.status == 200, path
                assert page.locator("h1").count() >= 1, path
                assert page.locator("nav.md-nav").count() >= 1, path  # Material's script and styles drew it
            # The search index loads from this host and finds a word of the trust model.
            page.goto(f"{served}/index.html", wait_until="networkidle")
            page.keyboard.press("/")  # Material's shortcut to the search box
            page.keyboard.type("registry")
            page.wait_for_selector(".md-search-result__item", timeout=15_000)
            assert "matching document" in page.locator(".md-search-result__meta").inner_text()
        finally:
            browser.close()
    assert elsewhere == []
    assert failed == []


def test_the_readme_links_every_page_by_a_relative_path(config: dict[str, object]) -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [link for link in links if not urlsplit(link).scheme]
    assert local
    for link in local:
        target, _, anchor = link.partition("#")
        assert (ROOT / target).is_file(), link
        if anchor:
            slugs = {
                re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in (ROOT / target).read_text().splitlines()
                if line.startswith("#")
            }
            assert anchor in slugs, link
    nav = config["nav"]
    assert isinstance(nav, list)
    linked = {link.partition("#")[0] for link in local}
    assert {f"docs/{page}" for page in _nav_pages(nav)} <= linked
    assert len(readme.splitlines()) < 100  # the rest lives in docs/
