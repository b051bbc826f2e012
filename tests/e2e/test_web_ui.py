"""The web interface in a real browser: Playwright drives Debian's chromium against the app served by uvicorn.

One tab (its session storage holds the API key and the job ids) walks through the pages in order:
sign in, certify, verify (authentic, modified, unknown, not an image), generate, mint. Other tabs check
the verify page at phone width and with the keyboard only. Every page is saved to test-output/screenshots/
(ignored by git); `PROVENANCE_SCREENSHOTS=docs/screenshots make test` refreshes the ones the
documentation shows (docs/guide/web-interface.md).
"""

from __future__ import annotations

import base64
import io
import json
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
from provenance.runtime.services import Services
from provenance.verify.verifier import VerificationResult
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
REPO = Path(__file__).resolve().parents[2]
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
    page.get_by_label("What is this image?").select_option(label="Made by a generative AI model")
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
    # Its lineage, checked now: the tiny model was never registered, so that link does not hold.
    lineage = record.locator("section.lineage")
    expect(lineage.get_by_role("heading", name="What made this image")).to_be_visible()
    expect(lineage.locator("li.lineage-broken")).to_contain_text("matches no registered model")
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


# ---------- what the verifier now says: the kind of modification, regions, a copied mark, the origin ----------
# The rendering tests start from the real backend's report on a real modified copy (its checks, reasons and
# difference image are real) and set the new fields through VerificationResult, so the JSON the page gets has the
# real model's shape; POST /v1/verify is answered with it in the browser. The page shows what the report says.

MARKUP = '<img src="x" onerror="document.body.dataset.pwned=1"><b>bold</b>'


@pytest.fixture(scope="module")
def modified_report(certified: dict[str, Any], base_url: str) -> dict[str, Any]:
    """The real verifier's report on a resized JPEG copy of the certified image, as POST /v1/verify returns it."""
    response = httpx.post(
        f"{base_url}/v1/verify",
        files={"file": ("small.jpg", resized_jpeg(certified["bytes"]), "image/jpeg")},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["verdict"] == "modified" and report["record_id"] == certified["record_id"]
    return dict(report)


def report_with(base: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """``base`` with some fields changed, validated by the real model and dumped as the API dumps it."""
    return VerificationResult.model_validate({**base, **fields}).model_dump(mode="json")


@pytest.fixture()
def fresh(browser: Browser, base_url: str, requested: list[str]) -> Iterator[Page]:
    """A tab of its own (no key needed to verify), so a routed answer cannot leak into the other tests."""
    context = new_context(browser, base_url, requested, viewport=DESKTOP)
    tab = context.new_page()
    yield tab
    context.close()


def verify_with_report(page: Page, report: dict[str, Any], name: str, data: bytes, mime: str) -> None:
    """Upload ``data`` on the verify page; the browser gets ``report`` as the answer of POST /v1/verify."""

    def answer(route: Any) -> None:
        if route.request.method == "POST":
            route.fulfill(status=200, content_type="application/json", body=json.dumps(report))
        else:
            route.continue_()

    page.route("**/v1/verify", answer)
    open_page(page, "/")
    page.set_input_files("#verify-file", file_payload(name, data, mime))
    expect(page.locator("#verdict")).to_have_attribute("data-verdict", report["verdict"], timeout=30_000)


def shown_box(page: Page, image: str) -> tuple[float, float, float]:
    """Where the image's pixels are drawn (object-fit: contain): left, top and the scale from its own pixels."""
    left, top, width, height, natural_w, natural_h = page.locator(image).evaluate(
        "(img) => { const r = img.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height, img.naturalWidth, img.naturalHeight]; }"
    )
    scale = min(width / natural_w, height / natural_h)
    return left + (width - natural_w * scale) / 2, top + (height - natural_h * scale) / 2, scale


def assert_box_drawn(page: Page, tag: str, box: list[int], at: tuple[float, float, float]) -> None:
    left, top, scale = at
    line = page.locator(f'#upload-regions [data-region="{tag}"] .region-line')
    outer = line.bounding_box()
    assert outer is not None
    # The bounding box includes the stroke, drawn centred on the edge at a constant width in screen pixels.
    half = float(line.evaluate("(el) => parseFloat(getComputedStyle(el).strokeWidth)")) / 2
    drawn = {
        "x": outer["x"] + half,
        "y": outer["y"] + half,
        "width": outer["width"] - 2 * half,
        "height": outer["height"] - 2 * half,
    }
    expected = {
        "x": left + box[0] * scale,
        "y": top + box[1] * scale,
        "width": (box[2] - box[0]) * scale,
        "height": (box[3] - box[1]) * scale,
    }
    assert all(abs(drawn[k] - expected[k]) <= 1.0 for k in expected), (tag, drawn, expected)


def test_verify_names_the_kind_of_modification(
    fresh: Page, modified_report: dict[str, Any], certified: dict[str, Any]
) -> None:
    upload = resized_jpeg(certified["bytes"])
    kinds = {
        "container": "Same pixels, different file",
        "transformed": "Only transformed: the picture still shows what was certified",
    }
    for kind, headline in kinds.items():
        fresh.unroute("**/v1/verify")
        verify_with_report(fresh, report_with(modified_report, modification=kind), "small.jpg", upload, "image/jpeg")
        expect(fresh.locator("#verdict")).to_have_attribute("data-modification", kind)
        expect(fresh.locator("#verdict-kind")).to_have_text(headline)
        expect(fresh.locator("#verdict-word")).to_have_text("Modified")
        expect(fresh.locator("#verdict")).to_contain_text(f"Certified original: {certified['record_id']}")
        assert fresh.locator("#upload-regions").count() == 0  # nothing to outline
    assert contrast(fresh, "#verdict-kind") >= 4.5
    # Without a kind (an older service), the page says what it always said.
    fresh.unroute("**/v1/verify")
    verify_with_report(fresh, report_with(modified_report, modification=None), "small.jpg", upload, "image/jpeg")
    assert fresh.locator("#verdict-kind").count() == 0
    expect(fresh.locator("#verdict")).to_contain_text("it was changed afterwards")


def test_verify_outlines_edited_regions_on_the_upload(
    fresh: Page, modified_report: dict[str, Any], certified: dict[str, Any]
) -> None:
    """A portrait upload (256 x 384) is shown smaller than its pixels and letterboxed: the boxes follow."""
    upload = encode(decode(resized_jpeg(certified["bytes"]))[:, 64:320], "JPEG", quality=90)
    regions: list[dict[str, Any]] = [
        {"box": [40, 60, 200, 180], "share": 0.195},
        {"box": [10, 300, 60, 384], "share": 0.043},
    ]
    origin = {"record_id": certified["record_id"], "account": "admin", "derived": False}
    report = report_with(modified_report, modification="edited", edited_regions=regions, origin=origin)
    verify_with_report(fresh, report, "edited.jpg", upload, "image/jpeg")
    expect(fresh.locator("#verdict-kind")).to_have_text("Locally edited: 2 regions differ")
    expect(fresh.locator("#verdict-origin")).to_have_text(
        f"Originally certified by admin (record {certified['record_id']})."
    )
    assert fresh.locator("#verdict-origin-link").get_attribute("href") == f"/r/{certified['record_id']}"
    expect(fresh.locator("#upload-regions")).to_have_attribute("data-drawn", "true")
    at = shown_box(fresh, "#compare-upload")
    image_box = fresh.locator("#compare-upload").bounding_box()
    assert image_box is not None and at[2] < 1 and at[0] > image_box["x"] + 5  # scaled down, and letterboxed
    for tag, region in zip(("1", "2"), regions, strict=True):
        assert_box_drawn(fresh, tag, region["box"], at)
    items = fresh.locator("#region-list li")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_text("1Edited region 1: 160 × 120 pixels at (40, 60), 20% of the image")
    expect(items.nth(1)).to_have_text("2Edited region 2: 50 × 84 pixels at (10, 300), 4% of the image")
    assert fresh.get_by_role("list", name="Regions outlined on your image").count() == 1
    shot(fresh, "verify-edited")
    # At phone width the boxes are redrawn at the new scale.
    fresh.set_viewport_size(PHONE)
    at = shown_box(fresh, "#compare-upload")
    for tag, region in zip(("1", "2"), regions, strict=True):
        assert_box_drawn(fresh, tag, region["box"], at)
    assert no_horizontal_scroll(fresh)


def test_verify_names_the_record_a_composite_contains(
    fresh: Page, modified_report: dict[str, Any], certified: dict[str, Any]
) -> None:
    """Strings from the report (account, changes, reasons) are text, never markup."""
    upload = resized_jpeg(certified["bytes"])
    source = "0123456789abcdef0123456789abcdef"
    report = report_with(
        modified_report,
        modification="composite",
        contained_region={"box": [100, 50, 324, 274], "share": 0.34},
        origin={"record_id": source, "account": MARKUP, "derived": True},
        changes=[f"pasted next to {MARKUP}"],
        reasons=[f"a reason with {MARKUP}"],
    )
    verify_with_report(fresh, report, "collage.jpg", upload, "image/jpeg")
    rid = certified["record_id"]
    expect(fresh.locator("#verdict-kind")).to_have_text(
        f"Composite: contains a region of record {rid} (34% of the image)"
    )
    expect(fresh.locator("#verdict-origin")).to_have_text(f"Derived from record {source}, certified by {MARKUP}.")
    expect(fresh.locator(".compare .changes")).to_contain_text(MARKUP)
    expect(fresh.locator(".reasons")).to_contain_text(MARKUP)
    assert fresh.locator('img[src="x"], #verdict b, .compare b, .reasons b').count() == 0
    assert fresh.evaluate("document.body.dataset.pwned") is None
    expect(fresh.locator("#upload-regions")).to_have_attribute("data-drawn", "true")
    assert_box_drawn(fresh, "R", [100, 50, 324, 274], shown_box(fresh, "#compare-upload"))
    expect(fresh.locator("#region-list li")).to_have_text(
        f"RContent of record {rid}: 224 × 224 pixels at (100, 50), 34% of the image"
    )
    shot(fresh, "verify-composite")


def test_verify_warns_of_a_copied_mark(fresh: Page, modified_report: dict[str, Any], certified: dict[str, Any]) -> None:
    """A record's mark on someone else's picture: a warning, and the record is never offered as the origin."""
    rid = certified["record_id"]
    report = report_with(
        modified_report,
        verdict="unknown",
        record_id=None,
        summary="Nothing trustworthy links this image to a record of this service.",
        modification=None,
        changes=[],
        evidence=[],
        diff_url=None,
        verification_id=None,
        copied_mark={"claimed_by_mark": rid, "detail": f"the mark reads, but the picture is not the record's {MARKUP}"},
    )
    report["checks"]["watermark"].update(detected=True, record_id=rid)
    rocket = (SKIMAGE_DATA / "rocket.jpg").read_bytes()
    verify_with_report(fresh, report, "rocket.jpg", rocket, "image/jpeg")
    warning = fresh.locator("#copied-mark")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text(
        f"A mark of record {rid} was found on a different picture (a copied mark). "
        "This is not evidence of where this image comes from."
    )
    expect(warning).to_contain_text(MARKUP)  # the detail, as text
    assert fresh.locator('img[src="x"], #copied-mark b').count() == 0
    link = fresh.locator("#copied-mark-record-link")
    expect(link).to_have_text("Open the record whose mark was copied")
    assert link.get_attribute("href") == f"/r/{rid}"
    page_text = fresh.locator("#verify-result").inner_text()
    assert "comes from an image the service certified" not in page_text
    assert "Certified original" not in page_text and "See the record" not in page_text
    assert fresh.locator("#verdict-record-link, #verdict-origin, #compare-original").count() == 0
    # Links to the record only ever say whose mark it is.
    for i in range(fresh.locator(f'#verify-result a[href="/r/{rid}"]').count()):
        anchor = fresh.locator(f'#verify-result a[href="/r/{rid}"]').nth(i)
        assert anchor.get_attribute("id") == "copied-mark-record-link" or "mark was copied" in (
            anchor.evaluate("(a) => a.closest('dd') ? a.closest('dd').previousElementSibling.textContent : ''")
        )
    expect(fresh.locator("#check-watermark")).to_have_attribute("data-state", "warn")
    expect(fresh.locator("#check-watermark")).to_contain_text("Record whose mark was copied")
    # Not the green or yellow of provenance: a warning of its own.
    colours = warning.evaluate("(el) => [getComputedStyle(el).borderTopColor, getComputedStyle(el).backgroundColor]")
    assert colours[0] == "rgb(122, 22, 16)" and colours[1] == "rgb(255, 255, 255)", colours
    assert contrast(fresh, "#copied-mark .warning-sentence") >= 4.5
    shot(fresh, "verify-copied-mark")


def test_verify_reencoded_copy_is_transformed(fresh: Page, certified: dict[str, Any]) -> None:
    """End to end: the certified image re-encoded as JPEG is only a transformed copy of its record."""
    open_page(fresh, "/")
    jpeg = encode(decode(certified["bytes"]), "JPEG", quality=90)
    fresh.set_input_files("#verify-file", file_payload("astronaut.jpg", jpeg, "image/jpeg"))
    verdict = fresh.locator("#verdict")
    expect(verdict).to_have_attribute("data-verdict", "modified", timeout=30_000)
    expect(verdict).to_have_attribute("data-modification", "transformed")
    expect(fresh.locator("#verdict-kind")).to_have_text("Only transformed: the picture still shows what was certified")
    expect(verdict).to_contain_text(f"Certified original: {certified['record_id']}")
    assert fresh.locator("#upload-regions").count() == 0


# Chromium does not hand a multipart body with a file to the driver (post_data is None), so the fields the page
# gives fetch() are read in the page: a wrapper notes them and passes the call through unchanged.
NOTE_FORMS_JS = """
() => {
  if (window.sentForms) return;
  window.sentForms = [];
  const send = window.fetch;
  window.fetch = (url, options = {}) => {
    if (options.body instanceof FormData) {
      const fields = [...options.body.entries()].filter(([, value]) => typeof value === "string");
      window.sentForms.push({ url: String(url), fields: Object.fromEntries(fields) });
    }
    return send(url, options);
  };
}
"""


def sent_fields(page: Page) -> dict[str, str]:
    """The text fields of the last form the page sent (the file left out)."""
    return dict(page.evaluate("window.sentForms[window.sentForms.length - 1].fields"))


def certify_through_the_form(page: Page, name: str, data: bytes, choice: str, derived: str = "") -> dict[str, str]:
    """Fill in and send the Certify form; returns the text fields the page sent."""
    nav(page, "Certify").click()
    expect(page.get_by_role("heading", name="Certify an image")).to_be_visible()
    page.evaluate(NOTE_FORMS_JS)
    page.set_input_files("#certify-file", file_payload(name, data, "image/png"))
    page.get_by_label("What is this image?").select_option(label=choice)
    page.get_by_label("Derived from record").fill(derived)
    with page.expect_response(lambda r: r.url.endswith("/v1/certify") and r.request.method == "POST"):
        page.get_by_role("button", name="Certify", exact=True).click()
    return sent_fields(page)


def test_certify_asks_what_the_image_is(signed_in: Page, base_url: str) -> None:
    page = signed_in
    nav(page, "Certify").click()
    select = page.get_by_label("What is this image?")
    expect(select).to_have_value("")  # no answer is chosen for the user
    labels = select.locator("option").all_inner_texts()
    for label in (
        "Photo taken with a camera",
        "Made by a generative AI model",
        "Photo edited with generative AI",
        "Made by a non-AI algorithm",
        "Digital art made by a person",
        "Not stated",
    ):
        assert label in labels, labels
    cat = encode(photo("chelsea.png")[20:280, 30:420])
    page.set_input_files("#certify-file", file_payload("chelsea.png", cat, "image/png"))
    page.get_by_role("button", name="Certify", exact=True).click()
    expect(page.locator("#certify-error")).to_contain_text("What is this image?")
    expect(select).to_be_focused()
    # A camera photo: the type is sent, signed, and shown on the record page.
    assert certify_through_the_form(page, "chelsea.png", cat, "Photo taken with a camera") == {
        "source_type": "digitalCapture"
    }
    page.wait_for_url(re.compile(r"/r/[0-9a-f]{32}$"))
    record = httpx.get(f"{base_url}/v1/records/{page.url.rsplit('/', 1)[1]}").json()
    assert record["source_type"] == "digitalCapture"
    expect(page.locator("#record-body")).to_contain_text("Photo taken with a camera — digitalCapture")
    shot(page, "record-camera")


def test_certify_not_stated_sends_no_source_type(signed_in: Page, base_url: str) -> None:
    page = signed_in
    bike = encode(photo("motorcycle_left.png")[40:400, 60:600])
    assert certify_through_the_form(page, "motorcycle.png", bike, "Not stated") == {}
    page.wait_for_url(re.compile(r"/r/[0-9a-f]{32}$"))
    record = httpx.get(f"{base_url}/v1/records/{page.url.rsplit('/', 1)[1]}").json()
    # The page shows what the record holds: "Not stated" when the service recorded no claim.
    shown = "Not stated" if record["source_type"] is None else record["source_type"]
    expect(page.locator("#record-body")).to_contain_text(shown)


def test_certify_already_certified_reads_as_a_sentence(signed_in: Page, certified: dict[str, Any]) -> None:
    """The 409 another account's record causes, with the API's error body; and what "Derived from record" sends."""
    page = signed_in
    rid = certified["record_id"]
    body = {"error": "already_certified", "detail": f"This content is already certified as record {rid}."}

    def refuse(route: Any) -> None:
        route.fulfill(status=409, content_type="application/json", body=json.dumps(body))

    page.route("**/v1/certify", refuse)
    try:
        astronaut = encode(photo("astronaut.png"))
        fields = certify_through_the_form(page, "mine.png", astronaut, "Photo edited with generative AI")
        alert = page.locator("#certify-error")
        expect(alert).to_have_text(
            f"This image is already certified by another account (record {rid}). "
            "If your image is a derivative of it, fill in 'Derived from record'."
        )
        assert fields == {"source_type": "compositeWithTrainedAlgorithmicMedia"}
        expect(page.get_by_label("Derived from record")).to_be_focused()  # where the answer goes
        shot(page, "certify-already-certified")
        # Declared as a derivative (the record page's address pasted): the id is sent as derived_from.
        page.get_by_label("Derived from record").fill(f"http://127.0.0.1/r/{rid}")
        with page.expect_response(lambda r: r.url.endswith("/v1/certify")):
            page.get_by_role("button", name="Certify", exact=True).click()
        assert sent_fields(page) == {
            "source_type": "compositeWithTrainedAlgorithmicMedia",
            "derived_from": rid,
        }
        page.get_by_label("Derived from record").fill("not a record")
        page.get_by_role("button", name="Certify", exact=True).click()
        expect(alert).to_contain_text("“Derived from record” is not a record id")
    finally:
        page.unroute("**/v1/certify")


def test_nothing_was_loaded_from_outside(base_url: str, requested: list[str]) -> None:
    assert len(requested) > 20
    outside = [url for url in requested if not url.startswith((base_url + "/", "blob:", "data:"))]
    assert outside == []
