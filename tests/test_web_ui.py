"""The web interface in a real browser: Playwright drives Debian's chromium against the app served by uvicorn.

One tab (its session storage holds the API key and the job ids) walks through the pages in order:
sign in, certify, verify (authentic, modified, unknown, not an image), generate, mint. Other tabs check
the verify page at phone width and with the keyboard only. Every page is saved to test-output/screenshots/
(ignored by git); `PROVENANCE_SCREENSHOTS=docs/screenshots make test` refreshes the ones the README shows.
"""

from __future__ import annotations

import base64
import io
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest
import uvicorn
from eth_account import Account
from PIL import Image
from playwright.sync_api import Browser, BrowserContext, Locator, Page, expect, sync_playwright

from provenance.api.app import create_app
from provenance.services import Services
from tests.conftest import SKIMAGE_DATA, _free_port, decode, encode, photo

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parent.parent
# A test run must not dirty the checkout: screenshots go to an ignored folder unless asked for elsewhere.
SCREENSHOTS = REPO / os.environ.get("PROVENANCE_SCREENSHOTS", "test-output/screenshots")
DESKTOP = {"width": 1100, "height": 900}
PHONE = {"width": 375, "height": 740}

# WCAG 2 contrast of an element's text against its background, computed in the page.
CONTRAST_JS = """
(el) => {
  const rgb = (s) => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  let bg = el;
  while (bg && getComputedStyle(bg).backgroundColor.match(/rgba\\(.*, 0\\)$|transparent/)) bg = bg.parentElement;
  const a = lum(rgb(getComputedStyle(el).color));
  const b = lum(rgb(bg ? getComputedStyle(bg).backgroundColor : "rgb(255,255,255)"));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
"""

# A file handed to the page as a drop or a paste, as a person's browser would.
DROP_JS = """
([selector, kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type }));
  const target = document.querySelector(selector);
  if (kind === "drop") {
    target.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
    target.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
  } else {
    target.dispatchEvent(new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true }));
  }
}
"""

PICK_BIG_FILE_JS = """
(size) => {
  const bytes = new Uint8Array(size);
  bytes.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const data = new DataTransfer();
  data.items.add(new File([bytes], "huge.png", { type: "image/png" }));
  const input = document.querySelector("#verify-file");
  input.files = data.files;
  input.dispatchEvent(new Event("change", { bubbles: true }));
}
"""


def shot(page: Page, name: str) -> None:
    """A full-page screenshot, reduced to a palette PNG so the committed files stay small."""
    png = page.screenshot(full_page=True, animations="disabled")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=64)
    image.save(SCREENSHOTS / f"{name}.png", optimize=True)


def file_payload(name: str, data: bytes, mime: str) -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": data}


def contrast(page: Page, selector: str) -> float:
    return float(page.locator(selector).first.evaluate(CONTRAST_JS))


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.fixture(scope="module")
def base_url(services: Services) -> Iterator[str]:
    """The app (API and web interface) served by uvicorn on 127.0.0.1, on the shared embedded stack."""
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


@pytest.fixture(scope="module")
def requested() -> list[str]:
    """Every URL any page of these tests asked for."""
    return []


def new_context(browser: Browser, base_url: str, requested: list[str], **options: Any) -> BrowserContext:
    context = browser.new_context(base_url=base_url, **options)
    context.on("request", lambda request: requested.append(request.url))
    context.set_default_timeout(20_000)
    return context


@pytest.fixture(scope="module")
def page(browser: Browser, base_url: str, requested: list[str]) -> Iterator[Page]:
    """The one tab the user works in: its session storage keeps the key and the job ids."""
    context = new_context(browser, base_url, requested, viewport=DESKTOP)
    tab = context.new_page()
    yield tab
    context.close()


def nav(page: Page, name: str) -> Locator:
    """A link of the main navigation."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def open_page(page: Page, path: str) -> None:
    page.goto(path)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")


@pytest.fixture(scope="module")
def signed_in(page: Page, admin_key: str) -> Page:
    open_page(page, "/signin")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#account-name")).to_have_text("Signed in as admin")
    return page


@pytest.fixture(scope="module")
def certified(signed_in: Page, base_url: str) -> dict[str, Any]:
    """An image certified through the Certify page; the browser lands on its record page."""
    page = signed_in
    nav(page, "Certify").click()
    expect(page.get_by_role("heading", name="Certify an image")).to_be_visible()
    page.set_input_files("#certify-file", file_payload("astronaut.png", encode(photo("astronaut.png")), "image/png"))
    expect(page.locator("#certify-chosen")).to_contain_text("astronaut.png")
    page.get_by_role("button", name="Certify", exact=True).click()
    page.wait_for_url(re.compile(r"/r/[0-9a-f]+$"))
    record_id = page.url.rsplit("/", 1)[1]
    record = httpx.get(f"{base_url}/v1/records/{record_id}").json()
    image = httpx.get(f"{base_url}/v1/records/{record_id}/image").content
    return {"record_id": record_id, "sha256": record["sha256"], "cid": record["cid"], "bytes": image}


def test_pages_are_served_offline(base_url: str) -> None:
    """The page and its deep links are one document, with a policy that forbids anything from elsewhere."""
    for path in ("/", "/r/anything", "/generate", "/mine"):
        response = httpx.get(base_url + path)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert '<script src="/static/app.js"' in response.text
    for asset, kind in (("app.js", "javascript"), ("app.css", "text/css"), ("favicon.svg", "image/svg")):
        response = httpx.get(f"{base_url}/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in response.text
    config = httpx.get(f"{base_url}/v1/web/config").json()
    assert config["models"][0] == config["default_model"] == "tiny-random" and config["minting"] is True
    assert httpx.get(f"{base_url}/static/missing.js").status_code == 404
    missing = httpx.get(f"{base_url}/v1/records/{'0' * 32}/nft")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


def test_sign_in(page: Page, admin_key: str) -> None:
    open_page(page, "/generate")  # needs a key: the page asks for one first
    expect(page).to_have_url(re.compile(r"/signin\?next=%2Fgenerate$"))
    page.get_by_label("API key").fill("pvk_000000000000_wrong")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("That API key was not accepted")
    shot(page, "signin")
    page.get_by_label("API key").fill(admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/generate$"))
    expect(page.locator("#account-name")).to_have_text("Signed in as admin")
    assert page.evaluate("sessionStorage.getItem('provenance.apiKey')") == admin_key
    assert page.evaluate("localStorage.length") == 0  # the key stays in this tab only
    for name in ("Generate", "Certify", "My records"):
        expect(nav(page, name)).to_be_visible()


def test_certify_shows_the_record_page(certified: dict[str, Any], signed_in: Page) -> None:
    page = signed_in
    expect(page.locator("#flash")).to_contain_text("Certified")
    expect(page.get_by_role("heading", name="Certified image")).to_be_visible()
    expect(page.locator("#record-body")).to_contain_text(certified["sha256"])
    # The page follows the chain registration until the block is in.
    expect(page.locator("#record-chain-status")).to_have_attribute("data-status", "registered", timeout=30_000)
    expect(page.locator("#record-body")).to_contain_text("astronaut.png")
    body = page.locator("#record-body").inner_text()
    assert re.search(r"Transaction\s+0x[0-9a-f]{64}", body) and "Key id" in body and certified["cid"] in body
    assert page.locator("#download-bundle").get_attribute("href") == f"/v1/records/{certified['record_id']}/bundle"
    image = page.locator(".record-image img")
    expect(image).to_have_attribute("src", f"/v1/records/{certified['record_id']}/image")
    assert image.evaluate("(img) => img.complete && img.naturalWidth") == 512
    shot(page, "record")


def verify_upload(page: Page, name: str, data: bytes, mime: str) -> None:
    nav(page, "Verify").click()
    expect(page.get_by_role("heading", name="Check an image")).to_be_visible()
    page.set_input_files("#verify-file", file_payload(name, data, mime))


def test_verify_certified_file_is_authentic(certified: dict[str, Any], signed_in: Page) -> None:
    page = signed_in
    verify_upload(page, "astronaut.certified.png", certified["bytes"], "image/png")
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-verdict", "authentic", timeout=30_000)
    expect(page.locator("#verdict-word")).to_have_text("Authentic")
    expect(verdict).to_contain_text("exactly the image the service certified")
    expect(verdict).to_contain_text(certified["record_id"])
    for check in ("c2pa", "exact", "watermark", "chain", "ipfs"):
        expect(page.locator(f"#check-{check}")).to_have_attribute("data-state", "pass")
        expect(page.locator(f"#check-{check} .badge")).to_contain_text("Pass")  # a word, not only a colour
    c2pa = page.locator("#check-c2pa").inner_text()
    assert "Signer" in c2pa and "Issuer" in c2pa and "Time-stamp" in c2pa and "validated" in c2pa
    assert "Made by a generative AI model" in c2pa and "c2pa.created" in c2pa
    expect(page.locator("#check-exact")).to_contain_text(certified["sha256"])
    expect(page.locator("#check-exact")).to_contain_text("Key id")
    chain = page.locator("#check-chain").inner_text()
    assert re.search(r"Block\s+\d+", chain) and re.search(r"Transaction\s+0x[0-9a-f]{64}", chain)
    assert re.search(r"Registrant\s+0x[0-9a-fA-F]{40}", chain)
    gateway = page.locator("#check-ipfs a")
    assert gateway.get_attribute("href") == f"/ipfs/{certified['cid']}"
    assert page.locator("#verdict a", has_text="Download the provenance bundle").get_attribute("href") == (
        f"/v1/records/{certified['record_id']}/bundle"
    )
    # Contrast (WCAG AA) of the verdict and of the badges.
    assert contrast(page, "#verdict-word") >= 4.5 and contrast(page, "#verdict .verdict-sentence") >= 4.5
    assert contrast(page, "#check-c2pa .badge") >= 4.5
    shot(page, "verify-authentic")
    page.locator("#verdict-record-link").click()
    expect(page).to_have_url(re.compile(f"/r/{certified['record_id']}$"))
    expect(page.locator("#record-body")).to_contain_text(certified["sha256"])


def resized_jpeg(data: bytes) -> bytes:
    """A re-encoded, resized copy, as a site that recompresses uploads makes one (JPEG, 0.75x)."""
    rgb = decode(data)
    small = cv2.resize(rgb, (rgb.shape[1] * 3 // 4, rgb.shape[0] * 3 // 4), interpolation=cv2.INTER_AREA)
    return encode(small, "JPEG", quality=85)


def test_verify_resized_copy_is_modified(certified: dict[str, Any], signed_in: Page) -> None:
    page = signed_in
    verify_upload(page, "astronaut-small.jpg", resized_jpeg(certified["bytes"]), "image/jpeg")
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-verdict", "modified", timeout=30_000)
    expect(page.locator("#verdict-word")).to_have_text("Modified")
    expect(verdict).to_contain_text(f"Certified original: {certified['record_id']}")
    expect(page.locator("#verdict-record-link")).to_have_attribute("href", f"/r/{certified['record_id']}")
    changes = page.locator(".compare .changes")
    expect(changes).to_contain_text("JPEG")
    assert "0.75" in changes.inner_text() or "75%" in changes.inner_text()
    for image in ("#compare-upload", "#compare-original", "#compare-diff"):
        expect(page.locator(image)).to_be_visible()
        page.locator(image).evaluate("(img) => img.decode()")
        assert page.locator(image).evaluate("(img) => img.naturalWidth") > 0
    assert page.locator("#compare-original").get_attribute("src") == f"/v1/records/{certified['record_id']}/image"
    assert re.fullmatch(r"/v1/verify/[0-9a-f]{32}/diff\.png", page.locator("#compare-diff").get_attribute("src") or "")
    # The mark is read blind, or confirmed after the fingerprint proposed the original: either check passes.
    states = {c: page.locator(f"#check-{c}").get_attribute("data-state") for c in ("watermark", "fingerprint")}
    assert "pass" in states.values(), states
    expect(page.locator("#check-exact")).to_have_attribute("data-state", "none")
    expect(page.locator("#check-exact .badge")).to_contain_text("Not found")
    assert contrast(page, "#verdict-word") >= 4.5
    shot(page, "verify-modified")


def test_verify_unrelated_image_is_unknown(signed_in: Page) -> None:
    """Dropped on the page rather than picked."""
    page = signed_in
    nav(page, "Verify").click()
    rocket = (SKIMAGE_DATA / "rocket.jpg").read_bytes()
    page.evaluate(
        DROP_JS, ['[data-drop="verify"]', "drop", "rocket.jpg", "image/jpeg", base64.b64encode(rocket).decode()]
    )
    verdict = page.locator("#verdict")
    expect(verdict).to_have_attribute("data-verdict", "unknown", timeout=30_000)
    expect(page.locator("#verdict-word")).to_have_text("Unknown")
    expect(verdict).to_contain_text("cannot say where it comes from")
    assert page.locator("#verdict-record-link").count() == 0  # nothing to link to
    expect(page.locator("#check-chain")).to_have_attribute("data-state", "none")
    shot(page, "verify-unknown")
    # Pasted: another photo that was never certified.
    coffee = encode(photo("coffee.png"))
    page.evaluate(DROP_JS, ["body", "paste", "image.png", "image/png", base64.b64encode(coffee).decode()])
    expect(page.locator("#verify-status")).to_contain_text("Checked image.png", timeout=30_000)
    expect(verdict).to_have_attribute("data-verdict", "unknown")


def test_verify_a_non_image_says_so_in_words(signed_in: Page) -> None:
    page = signed_in
    verify_upload(page, "notes.txt", b"these are my notes, not a picture\n", "text/plain")
    alert = page.locator("#verify-error")
    expect(alert).to_have_text("This file is not an image. Choose a PNG, JPEG or WebP picture.")
    assert page.locator("#verdict").count() == 0
    shot(page, "verify-error")
    # A file over the limit, made in the page (25 MB through the driver would be slow), set on the picker.
    page.evaluate(PICK_BIG_FILE_JS, 25 * 1024 * 1024 + 1)
    expect(alert).to_have_text("Too large: the limit is 25 MB.")
    text = alert.inner_text()
    assert "{" not in text and "error" not in text.lower() and "Traceback" not in text


def test_generation_progress_reaches_the_gallery(signed_in: Page) -> None:
    page = signed_in
    nav(page, "Generate").click()
    expect(page.get_by_label("Model")).to_have_value("tiny-random")
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dawn")
    page.get_by_label("Negative prompt").fill("fog")
    page.get_by_label("Size (pixels)").select_option("256x256")
    page.get_by_label("Steps").fill("3")
    page.get_by_label("Number of images").fill("2")
    page.get_by_label("Seed").fill("7")
    page.get_by_role("button", name="Generate", exact=True).click()
    job = page.locator("[data-job]").first
    # The first request builds the tiny model before it answers.
    expect(job.get_by_role("progressbar")).to_be_visible(timeout=90_000)
    job_id = job.get_attribute("data-job")
    assert job_id and page.evaluate("JSON.parse(sessionStorage.getItem('provenance.jobs'))[0].id") == job_id
    assert job.get_attribute("data-status") in ("queued", "running")
    shot(page, "generate-running")
    page.reload()  # the job is still followed after a reload
    job = page.locator(f'[data-job="{job_id}"]')
    expect(job.get_by_role("progressbar")).to_be_visible()
    seen: list[tuple[str, float]] = []
    deadline = time.monotonic() + 120
    while job.get_attribute("data-status") not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, f"the job did not finish: {seen[-3:]}"
        seen.append(
            (job.get_attribute("data-status") or "", float(job.get_by_role("progressbar").evaluate("p => p.value")))
        )
        time.sleep(0.1)
    expect(job).to_have_attribute("data-status", "succeeded")
    values = [value for _, value in seen]
    assert values == sorted(values), f"the progress went backwards: {seen}"
    bar = job.get_by_role("progressbar")
    assert bar.evaluate("p => [p.value, p.max]") == [3, 3]
    expect(job).to_contain_text("Done: 2 certified images")
    expect(page.locator("#jobs-live")).to_contain_text("Done: 2 certified images")  # told to screen readers
    links = page.locator("#gallery a")
    expect(links).to_have_count(2)
    for i in range(2):
        links.nth(i).locator("img").evaluate("(img) => img.decode()")
    shot(page, "generate")
    links.first.click()
    expect(page.get_by_role("heading", name="Generated image")).to_be_visible()
    record = page.locator("#record-body")
    expect(record).to_contain_text("a lighthouse at dawn")
    expect(record).to_contain_text("tiny-random (testing only)")
    assert re.search(r"Seed\s+[78]\b", record.inner_text()) and re.search(r"Steps\s+3\b", record.inner_text())
    shot(page, "record-generated")


def test_mint_from_my_records(certified: dict[str, Any], signed_in: Page, services: Services) -> None:
    page = signed_in
    nav(page, "My records").click()
    expect(page.get_by_role("heading", name="My records")).to_be_visible()
    items = page.locator("[data-record]")
    expect(items.first).to_be_visible()
    ids = [items.nth(i).get_attribute("data-record") for i in range(items.count())]
    assert certified["record_id"] in ids and len(ids) <= 10
    row = page.locator(f'[data-record="{certified["record_id"]}"]')
    row.get_by_role("button", name="Mint an NFT…").click()
    address = row.get_by_label("Recipient address")
    address.fill("0x1234")
    row.get_by_role("button", name="Mint", exact=True).click()
    expect(row.get_by_role("alert")).to_contain_text("That is not an Ethereum address")
    owner = Account.create().address
    address.fill(owner)
    row.get_by_role("button", name="Mint", exact=True).click()
    minted = row.locator(".minted")
    expect(minted).to_contain_text("0x" + certified["sha256"], timeout=30_000)
    assert re.search(r"transaction 0x[0-9a-f]{64}", minted.inner_text())
    assert services.chain.nft is not None and services.chain.nft.owner_of(int(certified["sha256"], 16)) == owner
    shot(page, "my-records")
    page.reload()  # the list shows the token, not the button, from now on
    expect(row.locator(".minted")).to_contain_text(owner)
    assert row.get_by_role("button", name="Mint an NFT…").count() == 0
    row.get_by_role("link").first.click()
    expect(page.locator("#record-nft")).to_contain_text("0x" + certified["sha256"])


def test_verify_page_at_phone_width(browser: Browser, base_url: str, requested: list[str], certified: dict) -> None:
    context = new_context(browser, base_url, requested, viewport=PHONE, device_scale_factor=1)
    try:
        phone = context.new_page()
        open_page(phone, "/")
        assert no_horizontal_scroll(phone)
        expect(phone.locator('[data-drop="verify"] .drop-label')).to_be_visible()
        phone.set_input_files("#verify-file", file_payload("small.jpg", resized_jpeg(certified["bytes"]), "image/jpeg"))
        expect(phone.locator("#verdict")).to_have_attribute("data-verdict", "modified", timeout=30_000)
        phone.locator("#compare-diff").evaluate("(img) => img.decode()")
        assert no_horizontal_scroll(phone), phone.evaluate("document.documentElement.scrollWidth")
        box = phone.locator("#verdict").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        shot(phone, "verify-phone")
        open_page(phone, f"/r/{certified['record_id']}")
        expect(phone.locator("#record-body")).to_contain_text(certified["sha256"])
        assert no_horizontal_scroll(phone)
    finally:
        context.close()


def test_verify_page_with_the_keyboard_only(browser: Browser, base_url: str, requested: list[str]) -> None:
    context = new_context(browser, base_url, requested, viewport=DESKTOP)
    try:
        page = context.new_page()
        open_page(page, "/")
        page.keyboard.press("Tab")
        skip = page.locator(".skip-link")
        expect(skip).to_be_focused()
        assert skip.evaluate("(el) => el.getBoundingClientRect().top") >= 0  # shown when focused
        reached: list[str] = []
        for _ in range(12):
            page.keyboard.press("Tab")
            reached.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
            if reached[-1] == "verify-file":
                break
        assert reached[-1] == "verify-file", reached
        picker = page.locator("#verify-file")
        assert picker.evaluate("(el) => el.matches(':focus-visible')")
        outline = page.locator('[data-drop="verify"] .drop-label').evaluate(
            "(el) => { const s = getComputedStyle(el); return [s.outlineStyle, parseFloat(s.outlineWidth)]; }"
        )
        assert outline[0] != "none" and outline[1] >= 2, outline
        assert page.locator('[data-drop="verify"] .drop-label').evaluate(CONTRAST_JS) >= 4.5
        shot(page, "verify")  # the front page, focus on the file picker
        with page.expect_file_chooser() as chooser:
            page.keyboard.press("Enter")
        chooser.value.set_files(file_payload("rocket.jpg", (SKIMAGE_DATA / "rocket.jpg").read_bytes(), "image/jpeg"))
        expect(page.locator("#verdict")).to_have_attribute("data-verdict", "unknown", timeout=30_000)
        expect(page.locator("#verdict-word")).to_be_focused()  # the answer is where the keyboard is
    finally:
        context.close()


def test_nothing_was_loaded_from_outside(base_url: str, requested: list[str]) -> None:
    assert len(requested) > 20
    outside = [url for url in requested if not url.startswith((base_url + "/", "blob:", "data:"))]
    assert outside == []
