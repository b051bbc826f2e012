/* provenance web interface: one page, plain JavaScript, no dependencies, talks only to this origin's API.
 *
 * Pages: / (verify), /r/{record_id}, /signin, /generate, /certify, /mine.
 * The API key lives in sessionStorage (this tab only); so do the ids of generation jobs, so their
 * progress survives a reload. Errors from the API ({"error": code, "detail": ...}) are shown as
 * sentences, never as JSON.
 */
"use strict";

(() => {
  const KEY_STORE = "provenance.apiKey";
  const ACCOUNT_STORE = "provenance.account";
  const JOBS_STORE = "provenance.jobs";
  const FLASH_STORE = "provenance.flash";
  const POLL_MS = 700;
  const MINE_PAGE = 10;
  const FINISHED = ["succeeded", "failed", "cancelled"];

  let config = null;
  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

  /* ---------- DOM helpers (no innerHTML with data: everything user-made is text) ---------- */

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "text") el.textContent = value;
      else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  const code = (text) => h("code", {}, text);
  /* Links to the page's own views are followed without reloading; API and gateway links are plain. */
  const isView = (href) => href.startsWith("/r/") || ["/", "/signin", "/generate", "/certify", "/mine"].includes(href);
  const link = (href, text, attrs = {}) => h("a", { href, "data-link": isView(href), ...attrs }, text);

  /* A definition list from [label, value] rows; rows with an empty value are left out. */
  function details(rows) {
    const dl = h("dl", { class: "details" });
    for (const [label, value] of rows) {
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) continue;
      dl.append(h("dt", {}, label), h("dd", {}, value));
    }
    return dl;
  }

  const list = (items, cls) => h("ul", { class: cls }, items.map((item) => h("li", {}, item)));

  const SVG_NS = "http://www.w3.org/2000/svg";

  /* An SVG element; children are elements or text, as with h(). */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "class") el.setAttribute("class", value);
      else if (value !== null && value !== undefined) el.setAttribute(name, String(value));
    }
    return append(el, children);
  }

  function notice(kind, message) {
    return h("div", { class: `notice notice-${kind}` }, message);
  }

  function showError(el, message) {
    clear(el);
    if (message) el.append(notice("error", message));
  }

  function setStatus(el, message, busy = false) {
    clear(el);
    if (message) append(el, [busy ? h("span", { class: "spinner", "aria-hidden": "true" }) : null, message]);
  }

  /* ---------- formatting ---------- */

  function megabytes(bytes) {
    const mb = bytes / (1024 * 1024);
    return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`;
  }

  function sizeText(bytes) {
    if (bytes < 1024) return `${bytes} bytes`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  function when(value) {
    if (value === null || value === undefined || value === "") return null;
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    if (Number.isNaN(date.getTime())) return String(value);
    return `${date.toISOString().replace("T", " ").slice(0, 19)} UTC`;
  }

  function probability(p) {
    if (p === null || p === undefined) return null;
    if (p === 0) return "0";
    return p < 0.001 ? p.toExponential(1) : p.toPrecision(2);
  }

  const SOURCE_TYPES = {
    trainedAlgorithmicMedia: "Made by a generative AI model",
    compositeWithTrainedAlgorithmicMedia: "Photo edited with generative AI",
    algorithmicallyEnhanced: "Enhanced by an algorithm",
    digitalCapture: "Photo taken with a camera",
    computationalCapture: "Captured by a camera with computational processing",
    compositeCapture: "A composite of camera captures",
    digitalArt: "Digital art made by a person",
    humanEdits: "Edited by a person",
    minorHumanEdits: "Lightly edited by a person",
    composite: "A composite of several elements",
    algorithmicMedia: "Made by a non-AI algorithm",
    virtualRecording: "A recording of a virtual scene",
    screenCapture: "A screen capture",
    negativeFilm: "A scan of a film negative",
    positiveFilm: "A scan of a film positive",
    print: "A scan of a print",
    dataDrivenMedia: "Produced from data",
  };

  function sourceType(value) {
    if (!value) return null;
    const name = String(value).split("/").pop();
    return SOURCE_TYPES[name] ? `${SOURCE_TYPES[name]} — ${name}` : name;
  }

  const ACTIONS = {
    "c2pa.created": "Created",
    "c2pa.opened": "Opened an existing file",
    "c2pa.edited": "Edited",
    "c2pa.resized": "Resized",
    "c2pa.converted": "Converted",
    "c2pa.placed": "Placed",
    "c2pa.watermarked": "Watermarked",
  };

  function action(a) {
    const word = ACTIONS[a.action] || a.action || "action";
    return [word, " ", code(a.action || ""), a.digitalSourceType ? ` — ${sourceType(a.digitalSourceType)}` : ""];
  }

  /* ---------- API ---------- */

  class ApiError extends Error {
    constructor(status, code, detail, extra) {
      super(typeof detail === "string" ? detail : code);
      this.status = status;
      this.code = code;
      this.detail = detail;
      this.extra = extra || {};
    }
  }

  const apiKey = () => sessionStorage.getItem(KEY_STORE);

  async function api(path, { method = "GET", json, form, key = apiKey() } = {}) {
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form;
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, credentials: "same-origin" });
    } catch (_) {
      throw new ApiError(0, "network_error", null);
    }
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("json")) {
      try {
        data = await response.json();
      } catch (_) {
        data = null;
      }
    }
    if (!response.ok) {
      const { error, detail, ...extra } = data && typeof data === "object" ? data : {};
      if (response.status === 429 && response.headers.get("Retry-After")) extra.retry_after_s ??= Number(response.headers.get("Retry-After"));
      throw new ApiError(response.status, error || `http_${response.status}`, detail, extra);
    }
    return data;
  }

  const FIELD_NAMES = {
    prompt: "Prompt", negative_prompt: "Negative prompt", seed: "Seed", steps: "Steps", width: "Width",
    height: "Height", num_images: "Number of images", model: "Model", to: "Recipient address", file: "File",
  };

  /* Every error as a sentence a person reads; never JSON, never a stack trace. */
  function humanError(err, context = "") {
    if (!(err instanceof ApiError)) return "Something went wrong in this page. Reload it and try again.";
    const detail = typeof err.detail === "string" ? err.detail : "";
    const limit = config ? megabytes(config.max_upload_bytes) : "25 MB";
    switch (err.code) {
      case "network_error":
        return "The service cannot be reached. Check your connection and try again.";
      case "unsupported_media_type":
        if (/animated/i.test(detail)) return "This image is animated: only still images can be used.";
        if (/empty/i.test(detail)) return "This file is empty: choose an image.";
        return "This file is not an image. Choose a PNG, JPEG or WebP picture.";
      case "payload_too_large":
        return `Too large: the limit is ${limit}.`;
      case "too_many_pixels": {
        const mp = config ? Math.round(config.max_pixels / 1e6) : 40;
        return `Too many pixels: the limit is ${mp} megapixels.`;
      }
      case "corrupt_image":
        return "This image is damaged: its data cannot be read.";
      case "invalid_source_type":
        return "Choose what this image is from the list.";
      case "already_certified": {
        // The detail names the record (also given as record_id by some versions): say it, and what to do.
        const named = err.extra.record_id || (detail.match(/\b[0-9a-f]{32}\b/) || [])[0];
        return `This image is already certified by another account${named ? ` (record ${named})` : ""}. If your image is a derivative of it, fill in 'Derived from record'.`;
      }
      case "unauthorized":
        if (!apiKey() && context !== "signin") return "This needs an API key: sign in first.";
        return context === "signin"
          ? "That API key was not accepted. Check that you copied all of it and that it has not been revoked."
          : "Your API key is not accepted any more. Sign in again.";
      case "forbidden":
        return `Your API key may not do this. ${detail}`.trim();
      case "rate_limited": {
        const wait = err.extra.retry_after_s;
        return `Too many requests: try again${wait ? ` in ${wait} seconds` : " shortly"}.`;
      }
      case "quota_exceeded": {
        const resets = err.extra.resets_at ? ` It resets at ${when(err.extra.resets_at)}.` : "";
        return `Your daily quota is used up.${resets}`;
      }
      case "queue_full":
        return "The generation queue is full. Try again in a minute.";
      case "prompt_rejected":
        return `This prompt cannot be used: ${detail.replace(/^The prompt contains/, "it contains")}`;
      case "unknown_model":
        return `That model is not available. ${detail}`.trim();
      case "invalid_generation_request":
        return `Check the settings: ${detail}.`;
      case "validation_error":
        if (Array.isArray(err.detail)) {
          const items = err.detail.map((e) => {
            const field = (e.loc || []).filter((p) => typeof p === "string" && p !== "body").pop();
            return `${FIELD_NAMES[field] || field || "a value"}: ${e.msg}`;
          });
          return `Check the form. ${items.join("; ")}.`;
        }
        return "Check the form: a value is missing or not allowed.";
      case "invalid_address":
        return "That is not an Ethereum address: it starts with 0x followed by 40 hexadecimal digits.";
      case "already_minted":
        return "This record is already minted.";
      case "not_registered":
        return "This record is not registered on chain yet. Try again in a few seconds.";
      case "nft_unavailable":
        return "Minting is not configured on this service.";
      case "not_found":
        if (context === "certify-derived") return "There is no record with the id given in 'Derived from record'. Check it, or leave the field empty.";
        return context === "record" ? "There is no record with this id." : `Not found. ${detail}`.trim();
      case "time_stamp_error":
        return "The time-stamp authority did not answer, so nothing was signed. Try again later.";
      case "chain_error":
      case "ipfs_error":
      case "dependency_unavailable":
        return "A service this one depends on did not answer. Try again later.";
      case "job_finished":
        return "This job has already finished.";
      default:
        if (err.status === 413) return `Too large: the limit is ${limit}.`;
        if (err.status === 415) return "This file is not an image. Choose a PNG, JPEG or WebP picture.";
        if (err.status >= 500) return "Something went wrong on the server. Try again; if it keeps happening, tell the operator.";
        return detail || "The request was refused.";
    }
  }

  /* ---------- session: API key, account, flash ---------- */

  function account() {
    try {
      return JSON.parse(sessionStorage.getItem(ACCOUNT_STORE) || "null");
    } catch (_) {
      return null;
    }
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    sessionStorage.removeItem(ACCOUNT_STORE);
    if (message) flash(message);
    updateNav();
  }

  function flash(message, kind = "ok") {
    sessionStorage.setItem(FLASH_STORE, JSON.stringify({ message, kind }));
  }

  function showFlash() {
    const area = clear($("#flash"));
    const raw = sessionStorage.getItem(FLASH_STORE);
    if (!raw) return;
    sessionStorage.removeItem(FLASH_STORE);
    try {
      const { message, kind } = JSON.parse(raw);
      area.append(notice(kind, message));
    } catch (_) {
      /* ignore a damaged flash */
    }
  }

  /* A 401 on any call with a stored key: the key was revoked; drop it and say so. */
  function handleAuthError(err) {
    if (err instanceof ApiError && err.code === "unauthorized" && apiKey()) {
      signOut("Your API key is not accepted any more. Sign in again.");
      navigate(`/signin?next=${encodeURIComponent(location.pathname)}`);
      return true;
    }
    return false;
  }

  /* ---------- routing ---------- */

  const PAGES = { "/": "verify", "/signin": "signin", "/generate": "generate", "/certify": "certify", "/mine": "mine" };
  const NEEDS_KEY = new Set(["generate", "certify", "mine"]);
  const TITLES = {
    verify: "Check an image", signin: "Sign in", generate: "Generate", certify: "Certify an image",
    mine: "My records", record: "Record", notfound: "Page not found",
  };

  function navigate(path, { replace = false, focus = true } = {}) {
    if (replace) history.replaceState({}, "", path);
    else history.pushState({}, "", path);
    route({ focus });
  }

  function updateNav(page) {
    const signedIn = Boolean(apiKey());
    $$("[data-auth]").forEach((el) => (el.hidden = !signedIn));
    $$("[data-anon]").forEach((el) => (el.hidden = signedIn));
    const who = account();
    $("#account-name").textContent = signedIn && who ? `Signed in as ${who.account_name}` : "";
    if (page !== undefined) {
      $$("[data-nav]").forEach((a) => {
        if (a.dataset.nav === page) a.setAttribute("aria-current", "page");
        else a.removeAttribute("aria-current");
      });
    }
  }

  function route({ focus = false } = {}) {
    const path = location.pathname.replace(/\/+$/, "") || "/";
    let page = PAGES[path];
    let recordId = null;
    if (!page && path.startsWith("/r/")) {
      page = "record";
      recordId = decodeURIComponent(path.slice(3));
    }
    page = page || "notfound";
    if (NEEDS_KEY.has(page) && !apiKey()) {
      history.replaceState({}, "", `/signin?next=${encodeURIComponent(path)}`);
      page = "signin";
    }
    $$("[data-page]").forEach((section) => (section.hidden = section.dataset.page !== page));
    updateNav(page);
    document.title = `${TITLES[page]} · provenance`;
    showFlash();
    const render = {
      verify: () => {},
      signin: renderSignin,
      generate: renderGenerate,
      certify: fillCertifyForm,
      mine: () => renderMine(null, []),
      record: () => renderRecord(recordId),
      notfound: () => {},
    }[page];
    render();
    if (focus) {
      const heading = $(`#page-${page} h1`);
      if (heading) heading.focus();
    }
  }

  document.addEventListener("click", (event) => {
    const a = event.target.closest("a[data-link]");
    if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", () => route({ focus: true }));

  /* ---------- file pickers: drop, paste, choose ---------- */

  function currentPage() {
    const section = $$("[data-page]").find((s) => !s.hidden);
    return section ? section.dataset.page : null;
  }

  const fileHandlers = {};

  function setupDrop(name, input, onFile) {
    fileHandlers[name] = onFile;
    const zone = $(`[data-drop="${name}"]`);
    input.addEventListener("change", () => {
      if (input.files && input.files[0]) onFile(input.files[0]);
    });
    zone.addEventListener("dragenter", (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragover", (e) => {
      e.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("dragging");
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) onFile(file);
    });
  }

  // A file dropped anywhere on the verify or certify page is taken; elsewhere the browser would open it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => {
    e.preventDefault();
    const handler = fileHandlers[currentPage()];
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (handler && file) handler(file);
  });
  // Paste an image (a copied file or picture) on the verify or certify page.
  document.addEventListener("paste", (e) => {
    const handler = fileHandlers[currentPage()];
    if (!handler || !e.clipboardData) return;
    if (e.target.closest && e.target.closest("input[type=text], input[type=password], textarea")) return;
    let file = e.clipboardData.files && e.clipboardData.files[0];
    if (!file) {
      const item = Array.from(e.clipboardData.items || []).find((i) => i.kind === "file");
      file = item ? item.getAsFile() : null;
    }
    if (file) {
      e.preventDefault();
      handler(file.name ? file : new File([file], "pasted-image", { type: file.type }));
    }
  });

  function tooLarge(file) {
    return config && file.size > config.max_upload_bytes;
  }

  /* ---------- verify ---------- */

  let verifySeq = 0;
  let uploadUrl = null;

  async function verifyFile(file) {
    const seq = ++verifySeq;
    const status = $("#verify-status");
    const error = $("#verify-error");
    const result = $("#verify-result");
    showError(error, null);
    clear(result);
    if (tooLarge(file)) {
      showError(error, `Too large: the limit is ${megabytes(config.max_upload_bytes)}.`);
      return;
    }
    setStatus(status, `Checking ${file.name || "the image"}…`, true);
    const form = new FormData();
    form.append("file", file, file.name || "upload");
    try {
      const report = await api("/v1/verify", { method: "POST", form });
      if (seq !== verifySeq) return;
      if (uploadUrl) URL.revokeObjectURL(uploadUrl);
      uploadUrl = URL.createObjectURL(file);
      setStatus(status, `Checked ${file.name || "the image"}.`);
      renderVerification(result, report, uploadUrl, file);
      const heading = $(".verdict-word", result);
      if (heading) heading.focus({ preventScroll: false });
    } catch (err) {
      if (seq !== verifySeq) return;
      setStatus(status, null);
      if (!handleAuthError(err)) showError(error, humanError(err, "verify"));
    }
  }

  const VERDICTS = {
    authentic: {
      word: "Authentic",
      icon: "✓",
      sentence: "This is exactly the image the service certified: the signature checks and it is registered on the blockchain.",
    },
    pending: {
      word: "Pending",
      icon: "…",
      sentence: "This is exactly the image the service certified and the signature checks; its registration on the blockchain is still under way.",
    },
    unavailable: {
      word: "Cannot check now",
      icon: "!",
      sentence: "These are the exact bytes the service certified and the signature checks, but the blockchain cannot be read right now to confirm the registration: try again later.",
    },
    modified: {
      word: "Modified",
      icon: "≠",
      sentence: "This image comes from an image the service certified, but it was changed afterwards (re-encoded, resized, cropped or edited).",
    },
    unknown: {
      word: "Unknown",
      icon: "?",
      sentence: "Nothing trustworthy links this image to one the service certified, so the service cannot say where it comes from.",
    },
    invalid: {
      word: "Invalid",
      icon: "✗",
      sentence: "This image carries provenance claims that do not hold up: do not trust what it says about itself.",
    },
  };

  const BADGES = {
    pass: ["✓", "Pass"],
    fail: ["✗", "Fail"],
    warn: ["!", "Warning"],
    none: ["–", "Not found"],
    skip: ["○", "Not needed"],
  };

  function badge(state) {
    const [icon, word] = BADGES[state];
    return h("span", { class: `badge badge-${state}` }, h("span", { "aria-hidden": "true" }, icon), word);
  }

  function check(id, title, state, summary, rows) {
    return h(
      "section",
      { class: `check state-${state}`, id: `check-${id}`, "data-state": state, "aria-labelledby": `check-${id}-title` },
      h("h3", { id: `check-${id}-title` }, badge(state), h("span", {}, title)),
      h("p", { class: "check-summary" }, summary),
      details(rows),
    );
  }

  const recordLink = (id) => (id ? link(`/r/${encodeURIComponent(id)}`, id, { class: "mono" }) : null);

  function c2paCheck(c) {
    const s = c.summary || {};
    let state, summary;
    if (!c.present) [state, summary] = ["none", "The file carries no C2PA manifest."];
    else if (c.valid && c.trusted) [state, summary] = ["pass", "A valid manifest, signed under this service's trust anchor."];
    else if (c.valid) [state, summary] = ["warn", "A valid manifest, but signed by someone this service does not trust."];
    else [state, summary] = ["fail", "The manifest fails validation: the file changed after it was signed, or the signature is broken."];
    const ts = c.time_stamp || {};
    const stamp = ts.present
      ? `${when(ts.time) || "present"}${ts.validated ? ", validated" : ", not validated"}${ts.trusted ? ", trusted authority" : ""}`
      : c.present ? "none" : null;
    const actions = (s.actions || []).map(action);
    const sourceTypes = [...new Set((s.actions || []).map((a) => a.digitalSourceType).filter(Boolean))].map(sourceType);
    const ingredients = (c.ingredients || []).map((i) => [
      h("strong", {}, i.title || "untitled"),
      i.relationship ? ` (${i.relationship})` : "",
      i.has_manifest ? `: signed by ${i.signer || "unknown"}, ${(i.validation_state || "").toLowerCase() || "unchecked"}` : ": no manifest",
    ]);
    return check("c2pa", "C2PA manifest", state, summary, [
      ["Validation", c.validation_state],
      ["Signer", s.signer],
      ["Issuer", s.issuer],
      ["Time-stamp", stamp],
      ["Made with", (s.claim_generator || []).join(", ")],
      ["Title", s.title],
      ["Actions", actions.length ? list(actions) : null],
      ["Digital source type", sourceTypes.length ? list(sourceTypes) : null],
      ["Ingredients", ingredients.length ? list(ingredients) : c.present ? "none" : null],
      ["Record", recordLink(c.record_id)],
      ["Claims record", c.claimed_record_id ? h("span", {}, code(c.claimed_record_id), " (not trusted: not followed)") : null],
      ["Problems", (c.failures || []).length ? list(c.failures.map(code)) : null],
      ["Note", c.note],
    ]);
  }

  function exactCheck(c) {
    let state, summary;
    if (!c.matched) [state, summary] = ["none", "No certified file has exactly these bytes."];
    else if (c.signature_valid) [state, summary] = ["pass", "These are the certified bytes, and the record's ECDSA signature checks."];
    else [state, summary] = ["fail", "These are certified bytes, but the record's signature does not check."];
    return check("exact", "SHA-256 and signature", state, summary, [
      ["SHA-256", code(c.sha256)],
      ["Record", recordLink(c.record_id)],
      ["Signature", c.matched ? (c.signature_valid ? "valid (ECDSA P-256)" : "does not check") : null],
      ["Key id", c.key_id ? code(c.key_id) : null],
      ["Signature value", c.signature ? code(c.signature) : null],
    ]);
  }

  /* The "Record" row of a check: a record whose mark was copied is labelled as such, never as the image's record. */
  function recordRow(id, claimed) {
    return id && id === claimed ? ["Record whose mark was copied", recordLink(id)] : ["Record", recordLink(id)];
  }

  function watermarkCheck(c, claimed) {
    let state, summary;
    if (c.record_id && c.record_id === claimed) [state, summary] = ["warn", "The service's watermark was read, but on a picture that is not its record's: a copied mark (see the warning above)."];
    else if (c.detected && c.record_id) [state, summary] = ["pass", "The service's invisible watermark was read and names a record."];
    else if (c.detected || c.watermark_id !== null && c.watermark_id !== undefined) [state, summary] = ["warn", "A payload was read, but it names no record of this service."];
    else if (c.method === null) [state, summary] = ["skip", c.reason || "Watermark reading is disabled."];
    else [state, summary] = ["none", "No watermark of this service was found."];
    return check("watermark", "Invisible watermark", state, summary, [
      ["Watermark id", c.watermark_id],
      recordRow(c.record_id, claimed),
      ["Bytes corrected", c.detected ? `${c.corrected_errors} (Reed-Solomon)` : null],
      ["Bit errors", c.detected ? `${c.bit_errors} of 80` : null],
      ["Read after rescaling", c.detected && c.rescale ? `× ${Number(c.rescale).toFixed(3).replace(/\.?0+$/, "")}` : null],
      ["False-positive chance", c.detected ? probability(c.false_positive_probability) : null],
      ["Method", c.method],
      ["Note", c.detected ? c.reason : null],
    ]);
  }

  function fingerprintCheck(c, claimed) {
    let state, summary;
    const weak = (c.weak_matches || []).length;
    if (c.record_id && c.record_id === claimed) [state, summary] = ["warn", "The mark of a similar certified image was read, but the picture is not that record's: a copied mark (see the warning above)."];
    else if (!c.searched) [state, summary] = ["skip", c.reason ? c.reason.charAt(0).toUpperCase() + c.reason.slice(1) + "." : "Not searched."];
    else if (c.record_id) [state, summary] = ["pass", "A similar certified image was found, and its watermark confirmed the match after alignment."];
    else if (weak) [state, summary] = ["warn", `Similar to ${weak} certified image${weak > 1 ? "s" : ""}, but no match was confirmed (a similar picture is not the same picture).`];
    else [state, summary] = ["none", "No similar certified image."];
    const confirmed = (c.candidates || []).find((k) => k.confirmed);
    return check("fingerprint", "Fingerprint match", state, summary, [
      ["Image code (ISCC)", c.iscc ? code(c.iscc) : null],
      recordRow(c.record_id, claimed),
      ["Distance", confirmed ? `${confirmed.distance} of 64 bits` : null],
      ["Mark agreement", confirmed && confirmed.bits_compared ? `${confirmed.agreeing_bits} of ${confirmed.bits_compared} bits` : null],
      ["False-match chance", confirmed ? probability(confirmed.p_value) : null],
      ["Unconfirmed look-alikes", c.searched ? String(weak) : null],
    ]);
  }

  function chainCheck(c, verdict) {
    let state, summary;
    if (c.status === "unavailable" || c.error) [state, summary] = ["warn", "The chain could not be read just now, so the registration is not confirmed."];
    else if (c.registered && c.key_valid === false) [state, summary] = ["fail", "Registered, but with a signing key that was not valid at that block."];
    else if (c.registered) [state, summary] = ["pass", `Registered on chain in block ${c.block_number}.`];
    else if (verdict === "pending") [state, summary] = ["warn", "Not registered yet: the registration is in flight."];
    else [state, summary] = ["none", "This hash is not registered on chain."];
    const original = c.queried_sha256 && c.registered !== undefined;
    return check("chain", "Blockchain registration", state, summary, [
      ["Block", c.block_number],
      ["Registered at", when(c.timestamp)],
      ["Transaction", c.tx_hash ? code(c.tx_hash) : null],
      ["Registrant", c.registrant ? code(c.registrant) : null],
      ["Signing key valid", c.key_valid === undefined || c.key_valid === null ? null : c.key_valid ? "yes, at that block" : "no"],
      [verdict === "modified" ? "Hash looked up (the original's)" : "Hash looked up", original ? code(c.queried_sha256) : null],
      ["Batch root", c.batch_root ? code(c.batch_root) : null],
      ["Merkle proof", c.mode === "batch" ? (c.proof_valid ? "valid" : "does not check") : null],
      ["Registry", c.registry_address ? code(c.registry_address) : null],
      ["Chain id", c.chain_id],
      ["Problem", c.error],
    ]);
  }

  function ipfsCheck(c) {
    const state = c.pinned ? "pass" : c.error ? "fail" : "none";
    const summary = c.pinned
      ? "The certified file is pinned on this service's IPFS node."
      : c.error ? "The IPFS node could not be asked." : "This file is not pinned on this service's IPFS node.";
    return check("ipfs", "IPFS", state, summary, [
      ["CID", code(c.cid)],
      ["Gateway", c.pinned ? link(`/ipfs/${c.cid}`, "Open through the gateway") : null],
      ["Store", c.store],
      ["Note", c.note],
      ["Problem", c.error],
    ]);
  }

  const EVIDENCE = {
    exact_hash: "Exact hash",
    c2pa_manifest: "C2PA manifest",
    watermark: "Watermark",
    fingerprint: "Fingerprint",
  };

  /* What kind of change a "modified" copy is: a headline under the verdict word, and a sentence. */
  function modificationText(report, recordId) {
    const regions = (report.edited_regions || []).length;
    switch (report.modification) {
      case "container":
        return {
          kind: "Same pixels, different file",
          sentence: "The pixels are exactly the certified ones; only the file around them changed (metadata, chunks, bytes appended or the manifest stripped).",
        };
      case "transformed":
        return {
          kind: "Only transformed: the picture still shows what was certified",
          sentence: "It was only re-encoded, resized, cropped, rotated, flipped or adjusted in colour or light; nothing in the picture was changed locally.",
        };
      case "edited":
        return {
          kind: regions ? `Locally edited: ${regions} region${regions === 1 ? "" : "s"} differ${regions === 1 ? "s" : ""}` : "Locally edited: parts of the picture differ",
          sentence: "This image comes from an image the service certified, but parts of the picture were changed afterwards: the outlined regions differ from the certified original.",
        };
      case "composite": {
        const share = report.contained_region ? ` (${percent(report.contained_region.share)} of the image)` : "";
        return {
          kind: ["Composite: contains a region of record ", code(recordId || "unknown"), share],
          sentence: "A region of an image the service certified was placed into another picture: only the outlined region comes from the certified record, the rest does not.",
        };
      }
      default:
        return null;
    }
  }

  function percent(share) {
    const p = Number(share) * 100;
    if (!Number.isFinite(p)) return "an unknown share";
    if (p > 0 && p < 1) return "less than 1%";
    if (p < 100 && p > 99) return "more than 99%";
    return `${Math.round(p)}%`;
  }

  /* The regions to outline on the upload, in its own pixels (box: x0, y0, x1, y1, end exclusive). */
  function regionsOf(report, recordId) {
    const regions = (report.edited_regions || []).map((r, i) => ({
      kind: "edited", tag: String(i + 1), box: r.box, share: r.share, label: `Edited region ${i + 1}`,
    }));
    const c = report.contained_region;
    if (c) regions.push({ kind: "contained", tag: "R", box: c.box, share: c.share, label: ["Content of record ", code(recordId || "unknown")] });
    return regions.filter((r) => Array.isArray(r.box) && r.box.length === 4 && r.box.every(Number.isFinite));
  }

  /* The upload's preview; any regions are drawn over it in an SVG whose viewBox is the image's pixel grid, so the
     boxes scale with the displayed size (both are letterboxed the same way), and listed beside it for everyone. */
  function uploadFigure(uploadSrc, file, regions, imgId) {
    const img = h("img", { src: uploadSrc, alt: "The image you checked", id: imgId });
    const caption = h("figcaption", {}, h("strong", {}, "Your image"), file && file.name ? ` — ${file.name}` : "");
    if (!regions.length) return h("figure", {}, img, caption);
    const overlay = svg("svg", { class: "region-overlay", id: "upload-regions", "aria-hidden": "true", focusable: "false", preserveAspectRatio: "xMidYMid meet" });
    const draw = () => {
      const [w, hgt] = [img.naturalWidth, img.naturalHeight];
      if (!w || !hgt || overlay.dataset.drawn) return;
      overlay.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
      const size = Math.max(w, hgt) / 20; // the tag's letters, about a twentieth of the image
      for (const r of regions) {
        const [x0, y0, x1, y1] = [Math.max(0, r.box[0]), Math.max(0, r.box[1]), Math.min(w, r.box[2]), Math.min(hgt, r.box[3])];
        if (x1 <= x0 || y1 <= y0) continue;
        const shape = { x: x0, y: y0, width: x1 - x0, height: y1 - y0, "vector-effect": "non-scaling-stroke" };
        overlay.append(
          svg(
            "g",
            { class: `region region-${r.kind}`, "data-region": r.tag },
            svg("rect", { ...shape, class: "region-halo" }),
            svg("rect", { ...shape, class: "region-line" }),
            svg("text", { x: x0 + size * 0.25, y: Math.min(hgt, y0 + size), "font-size": size, "stroke-width": size / 5, class: "region-tag" }, r.tag),
          ),
        );
      }
      overlay.dataset.drawn = "true";
    };
    if (img.complete && img.naturalWidth) draw();
    else img.addEventListener("load", draw, { once: true });
    const items = regions.map((r) => {
      const [x0, y0, x1, y1] = r.box;
      return h(
        "li",
        { class: `region-item region-item-${r.kind}`, "data-region": r.tag },
        h("span", { class: "region-swatch", "aria-hidden": "true" }, r.tag),
        h("span", {}, r.label, `: ${x1 - x0} × ${y1 - y0} pixels at (${x0}, ${y0}), ${percent(r.share)} of the image`),
      );
    });
    append(caption, [h("span", { class: "sr-only" }, ". Outlined on it:"), h("ul", { class: "region-list", id: "region-list", "aria-label": "Regions outlined on your image" }, items)]);
    return h("figure", {}, h("div", { class: "region-frame" }, img, overlay), caption);
  }

  function copiedMarkBlock(copied) {
    const id = copied.claimed_by_mark;
    return h(
      "section",
      { class: "warning-block", id: "copied-mark", "aria-labelledby": "copied-mark-title" },
      h("h2", { id: "copied-mark-title" }, h("span", { "aria-hidden": "true" }, "⚠ "), "Warning: a copied mark"),
      h("p", { class: "warning-sentence" }, "A mark of record ", code(id), " was found on a different picture (a copied mark). This is not evidence of where this image comes from."),
      copied.detail ? h("p", { class: "warning-detail" }, copied.detail) : null,
      h("p", {}, link(`/r/${encodeURIComponent(id)}`, "Open the record whose mark was copied", { id: "copied-mark-record-link" })),
    );
  }

  /* Who the content comes from first: the record itself, or the original a declared derivative names. */
  function originLine(origin) {
    const who = origin.account ? h("strong", { class: "origin-account" }, origin.account) : "an account that is not named";
    const record = link(`/r/${encodeURIComponent(origin.record_id)}`, origin.record_id, { class: "mono", id: "verdict-origin-link" });
    return h(
      "p",
      { class: "verdict-origin", id: "verdict-origin" },
      origin.derived ? ["Derived from record ", record, ", certified by ", who, "."] : ["Originally certified by ", who, " (record ", record, ")."],
    );
  }

  function renderVerification(root, report, uploadSrc, file) {
    const copied = report.copied_mark || null;
    const claimed = copied ? copied.claimed_by_mark : null;
    // A copied mark never lends its record as provenance (the service leaves record_id empty; this holds regardless).
    const id = report.record_id && report.record_id !== claimed ? report.record_id : null;
    const v = VERDICTS[report.verdict] || { word: report.verdict, icon: "?", sentence: report.summary };
    const kind = report.verdict === "modified" ? modificationText(report, id) : null;
    let sentence = kind ? kind.sentence : v.sentence;
    if (copied && !id) sentence = VERDICTS.unknown.sentence;
    const origin = report.origin && report.origin.record_id && report.origin.record_id !== claimed ? report.origin : null;
    const composite = report.modification === "composite";
    const links = id
      ? h(
          "p",
          { class: "verdict-links" },
          link(`/r/${encodeURIComponent(id)}`, report.verdict === "modified" ? "See the certified original's record" : "See the record", { id: "verdict-record-link" }),
          h("a", { href: `/v1/records/${encodeURIComponent(id)}/bundle`, download: `${id}.provenance.json` }, "Download the provenance bundle"),
        )
      : null;
    root.append(
      h(
        "article",
        { class: `verdict verdict-${report.verdict}`, id: "verdict", "data-verdict": report.verdict, "data-modification": kind ? report.modification : null, "aria-labelledby": "verdict-word" },
        h("div", { class: "verdict-icon", "aria-hidden": "true" }, v.icon),
        h(
          "div",
          {},
          h("p", { class: "verdict-kicker" }, "Verdict"),
          h("h2", { class: "verdict-word", id: "verdict-word", tabindex: "-1" }, v.word),
          kind ? h("p", { class: "verdict-kind", id: "verdict-kind" }, kind.kind) : null,
          h("p", { class: "verdict-sentence" }, sentence),
          id ? h("p", { class: "verdict-record" }, report.verdict !== "modified" ? "Record: " : composite ? "Certified record of the region: " : "Certified original: ", code(id)) : null,
          origin ? originLine(origin) : null,
          links,
        ),
      ),
    );
    if (copied) root.append(copiedMarkBlock(copied));

    const regions = regionsOf(report, id);
    if (report.verdict === "modified" && id) {
      const figures = h(
        "div",
        { class: "figures" },
        uploadFigure(uploadSrc, file, regions, "compare-upload"),
        h("figure", {}, h("img", { src: `/v1/records/${encodeURIComponent(id)}/image`, alt: "The certified original", id: "compare-original" }), h("figcaption", {}, h("strong", {}, "The certified original"), " — record ", code(id))),
        report.diff_url
          ? h("figure", {}, h("img", { src: report.diff_url, alt: "Where the two differ: changed areas in red, areas your image does not cover in grey", id: "compare-diff" }), h("figcaption", {}, h("strong", {}, "Where they differ"), " — red: changed; grey: not in your image."))
          : null,
      );
      root.append(
        h(
          "section",
          { class: "compare", "aria-labelledby": "compare-title" },
          h("h2", { id: "compare-title" }, "What changed"),
          report.changes && report.changes.length ? list(report.changes.map((c) => c.charAt(0).toUpperCase() + c.slice(1)), "changes") : h("p", {}, "The changes could not be described."),
          figures,
        ),
      );
    } else {
      root.append(h("div", { class: "figures" }, uploadFigure(uploadSrc, file, regions, "upload-preview")));
    }

    if (report.reasons && report.reasons.length) {
      root.append(h("h2", {}, "Why"), list(report.reasons.map((r) => r.charAt(0).toUpperCase() + r.slice(1) + "."), "reasons"));
    }
    if (report.evidence && report.evidence.length) {
      root.append(
        h("h2", {}, "Evidence"),
        h(
          "ul",
          { class: "evidence" },
          report.evidence.map((e) =>
            h(
              "li",
              {},
              h("strong", {}, EVIDENCE[e.kind] || e.kind),
              ` (${e.strength}): ${e.detail}`,
              e.record_id && e.record_id === claimed ? " This is a copied mark: not evidence of where the image comes from." : "",
              e.false_positive_probability !== null && e.false_positive_probability !== undefined
                ? ` Chance of a false reading: ${probability(e.false_positive_probability)}.`
                : "",
            ),
          ),
        ),
      );
    }
    const c = report.checks || {};
    root.append(
      h("h2", {}, "Every check"),
      h(
        "div",
        { class: "checks" },
        c.c2pa ? c2paCheck(c.c2pa) : null,
        c.exact ? exactCheck(c.exact) : null,
        c.watermark ? watermarkCheck(c.watermark, claimed) : null,
        c.fingerprint ? fingerprintCheck(c.fingerprint, claimed) : null,
        c.chain ? chainCheck(c.chain, report.verdict) : null,
        c.ipfs ? ipfsCheck(c.ipfs) : null,
      ),
    );
    if (report.lineage) root.append(lineageSection(report.lineage));
  }

  /* The lineage chain image -> model / LoRA -> dataset; every string is text (h() sets textContent). */
  function lineageSection(lineage) {
    const mark = (v) => (v === true ? "yes" : v === false ? "no" : "not checked");
    return h(
      "section",
      { class: "lineage" },
      h("h2", {}, "What made this image"),
      h("p", {}, `${lineage.status}: ${lineage.summary}`),
      h(
        "ul",
        {},
        (lineage.links || []).map((link) =>
          h(
            "li",
            { class: `lineage-${link.status}` },
            h("strong", {}, `${link.parent} → ${link.kind} ${link.name || ""}`),
            ` [${link.model_id || link.dataset_id || "unregistered"}]`,
            link.weight !== null && link.weight !== undefined ? ` weight ${link.weight}` : "",
            `: ${link.status}. Hash matches: ${mark(link.hash_matches)}; signature valid: ${mark(link.signature_valid)}; ` +
              `registered on chain: ${mark(link.registered_on_chain)}. ${link.reason}`,
          ),
        ),
      ),
    );
  }

  /* ---------- record page ---------- */

  let recordPoll = null;

  const STATUS_WORDS = {
    registered: "Registered on chain",
    submitted: "Sent to the chain, waiting for a block",
    pending: "Waiting to be sent to the chain",
    failed: "The chain refused it",
  };

  async function renderRecord(recordId) {
    clearTimeout(recordPoll);
    const body = clear($("#record-body"));
    const status = $("#record-status");
    const error = $("#record-error");
    showError(error, null);
    $("#record-title").textContent = "Record";
    setStatus(status, "Loading the record…", true);
    let record, nft;
    try {
      [record, nft] = await Promise.all([
        api(`/v1/records/${encodeURIComponent(recordId)}`),
        api(`/v1/records/${encodeURIComponent(recordId)}/nft`).catch(() => null),
      ]);
    } catch (err) {
      setStatus(status, null);
      if (!handleAuthError(err)) showError(error, humanError(err, "record"));
      return;
    }
    if (currentPage() !== "record" || location.pathname !== `/r/${encodeURIComponent(recordId)}` && location.pathname !== `/r/${recordId}`) return;
    setStatus(status, null);
    $("#record-title").textContent = record.generation ? "Generated image" : "Certified image";
    body.append(recordView(record, nft));
    await appendLineage(body, record);
    if (record.status === "pending" || record.status === "submitted") {
      // Registration follows certification: look again until the chain has it.
      recordPoll = setTimeout(() => {
        if (currentPage() === "record") refreshRecord(recordId);
      }, 1000);
    }
  }

  /* What made a generated record: base model, LoRAs, datasets, each link checked by the service now. */
  async function appendLineage(body, record) {
    if (!record.generation) return;
    const lineage = await api(`/v1/records/${encodeURIComponent(record.record_id)}/lineage`).catch(() => null);
    if (lineage && currentPage() === "record") body.append(lineageSection(lineage));
  }

  async function refreshRecord(recordId) {
    try {
      const [record, nft] = await Promise.all([
        api(`/v1/records/${encodeURIComponent(recordId)}`),
        api(`/v1/records/${encodeURIComponent(recordId)}/nft`).catch(() => null),
      ]);
      if (currentPage() !== "record") return;
      const body = clear($("#record-body"));
      body.append(recordView(record, nft));
      await appendLineage(body, record);
      if (record.status === "pending" || record.status === "submitted") {
        recordPoll = setTimeout(() => refreshRecord(recordId), 1000);
      }
    } catch (_) {
      recordPoll = setTimeout(() => refreshRecord(recordId), 3000);
    }
  }

  function generationRows(g) {
    const model = g.model || {};
    const weights = Object.entries(model.weights_sha256 || {}).map(([file, digest]) => [code(file), ": ", code(digest)]);
    const loras = (g.loras || []).map((l) => [code(l.path || l.name || "LoRA"), ` weight ${l.weight}`]);
    const versions = Object.entries(g.versions || {}).map(([name, version]) => `${name} ${version}`);
    return [
      ["Model", model.label || model.id],
      ["Model id", model.id && model.id !== model.label ? code(model.id) : null],
      ["Prompt", g.prompt],
      ["Prompt SHA-256", g.prompt_sha256 ? code(g.prompt_sha256) : null],
      ["Negative prompt", g.negative_prompt],
      ["Seed", g.seed],
      ["Steps", g.steps],
      ["Guidance", g.guidance_scale],
      ["Size", g.width && g.height ? `${g.width} × ${g.height}` : null],
      ["Scheduler", g.scheduler],
      ["Image in batch", g.batch_size ? `${(g.index || 0) + 1} of ${g.batch_size}` : null],
      ["Pipeline", g.pipeline_class],
      ["Device", g.device ? `${g.device}${g.dtype ? `, ${g.dtype}` : ""}` : null],
      ["Weights (SHA-256)", weights.length ? list(weights) : null],
      ["LoRA adapters", loras.length ? list(loras) : null],
      ["Software", versions.join(", ")],
    ];
  }

  function recordView(r, nft) {
    const id = encodeURIComponent(r.record_id);
    const ext = (r.media_type || "image/png").split("/").pop().replace("jpeg", "jpg");
    const stem = (r.original_filename || r.record_id).replace(/\.[^.]+$/, "");
    const image = h(
      "div",
      { class: "record-image" },
      h("img", { src: `/v1/records/${id}/image`, alt: r.generation && r.generation.prompt ? `Generated image: ${r.generation.prompt}` : "The certified image", width: r.width, height: r.height }),
      h(
        "div",
        { class: "downloads" },
        h("a", { class: "button primary", href: `/v1/records/${id}/image`, download: `${stem}.certified.${ext}`, id: "download-image" }, "Download the certified image"),
        h("a", { class: "button", href: `/v1/records/${id}/bundle`, download: `${r.record_id}.provenance.json`, id: "download-bundle" }, "Download the provenance bundle"),
      ),
    );
    const panels = h("div", {});
    panels.append(
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Record"),
        details([
          ["Record id", code(r.record_id)],
          ["Chain status", h("span", { class: `pill pill-${r.status}`, id: "record-chain-status", "data-status": r.status }, STATUS_WORDS[r.status] || r.status)],
          ["Certified at", when(r.created_at)],
          ["What it is", sourceType(r.source_type) || "Not stated"],
          ["Derived from", r.derived_from ? [link(`/r/${encodeURIComponent(r.derived_from)}`, r.derived_from, { class: "mono", id: "record-derived-from" })] : null],
          ["File", `${r.media_type}, ${r.width} × ${r.height} pixels, ${sizeText(r.size_bytes)}`],
          ["Original file name", r.original_filename],
          ["Watermark", r.watermarked ? `embedded, id ${r.watermark_id}` : "none"],
          ["Watermark note", r.watermark_note],
        ]),
      ),
    );
    if (r.generation) {
      panels.append(h("section", { class: "panel" }, h("h2", {}, "Generation"), details(generationRows(r.generation))));
    }
    panels.append(
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Hash and signature"),
        details([
          ["SHA-256", code(r.sha256)],
          ["Signature (ECDSA P-256, base64 DER)", code(r.signature)],
          ["Key id", code(r.key_id)],
        ]),
      ),
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Blockchain"),
        details([
          ["Status", STATUS_WORDS[r.status] || r.status],
          ["Transaction", r.tx_hash ? code(r.tx_hash) : null],
          ["Block", r.block_number],
          ["Registered at", when(r.registered_at)],
          ["Chain id", r.chain_id],
          ["Registry", r.registry_address ? code(r.registry_address) : null],
          ["Problem", r.chain_error],
        ]),
      ),
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "IPFS"),
        details([
          ["CID", code(r.cid)],
          ["Gateway", link(`/ipfs/${r.cid}`, "Open through the gateway")],
        ]),
      ),
    );
    if (nft && nft.minted) {
      panels.append(
        h(
          "section",
          { class: "panel", id: "record-nft" },
          h("h2", {}, "NFT"),
          details([
            ["Token id", code(nft.token_id)],
            ["Owner", code(nft.owner)],
            ["Transaction", nft.tx_hash ? code(nft.tx_hash) : null],
            ["Contract", nft.contract ? code(nft.contract) : null],
            ["Token URI", nft.token_uri ? code(nft.token_uri) : null],
          ]),
        ),
      );
    } else if (nft && config && config.minting) {
      panels.append(h("section", { class: "panel", id: "record-nft" }, h("h2", {}, "NFT"), h("p", {}, "Not minted.")));
    }
    return h("div", { class: "record-grid" }, image, panels);
  }

  /* ---------- sign in ---------- */

  function renderSignin() {
    showError($("#signin-error"), null);
    $("#signin-key").value = "";
  }

  $("#signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#signin-error");
    const key = $("#signin-key").value.trim();
    if (!key) {
      showError(error, "Enter your API key.");
      $("#signin-key").focus();
      return;
    }
    showError(error, null);
    try {
      const who = await api("/v1/account", { key });
      sessionStorage.setItem(KEY_STORE, key);
      sessionStorage.setItem(ACCOUNT_STORE, JSON.stringify(who));
      flash(`Signed in as ${who.account_name}.`);
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/mine", { replace: true });
    } catch (err) {
      showError(error, humanError(err, "signin"));
      $("#signin-key").focus();
    }
  });

  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(JOBS_STORE);
    signOut("Signed out.");
    navigate("/");
  });

  /* ---------- generate ---------- */

  const jobs = new Map(); // job id -> last JobOut seen
  let pollTimer = null;

  function storedJobs() {
    try {
      return JSON.parse(sessionStorage.getItem(JOBS_STORE) || "[]");
    } catch (_) {
      return [];
    }
  }

  function storeJob(entry) {
    sessionStorage.setItem(JOBS_STORE, JSON.stringify([entry, ...storedJobs().filter((j) => j.id !== entry.id)]));
  }

  function fillGenerateForm() {
    const model = $("#gen-model");
    if (config && !model.options.length) {
      for (const name of config.models) model.append(h("option", { value: name }, name === "tiny-random" ? "tiny-random (testing only)" : name));
      model.value = config.default_model;
      const size = $("#gen-size");
      for (const [w, hgt, label] of [[256, 256, "small square"], [512, 512, "square"], [768, 768, "large square"], [1024, 1024, "extra large square"], [512, 768, "portrait"], [768, 512, "landscape"]]) {
        if (w <= config.max_image_side && hgt <= config.max_image_side) size.append(h("option", { value: `${w}x${hgt}` }, `${w} × ${hgt} (${label})`));
      }
      size.value = "512x512";
      $("#gen-steps").max = String(config.max_steps);
    }
  }

  function renderGenerate() {
    fillGenerateForm();
    showError($("#generate-error"), null);
    renderJobs();
    pollJobs();
  }

  $("#generate-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#generate-error");
    showError(error, null);
    const prompt = $("#gen-prompt").value.trim();
    if (!prompt) {
      showError(error, "Write a prompt: what the picture should show.");
      $("#gen-prompt").focus();
      return;
    }
    const [width, height] = $("#gen-size").value.split("x").map(Number);
    const steps = Number($("#gen-steps").value);
    const count = Number($("#gen-count").value);
    const seedText = $("#gen-seed").value.trim();
    const problems = [];
    const maxSteps = config ? config.max_steps : 150;
    if (!Number.isInteger(steps) || steps < 1 || steps > maxSteps) problems.push(`steps must be a whole number from 1 to ${maxSteps}`);
    if (!Number.isInteger(count) || count < 1 || count > 8) problems.push("the number of images must be from 1 to 8");
    if (seedText && !/^\d+$/.test(seedText)) problems.push("the seed must be a whole number (or empty)");
    if (problems.length) {
      showError(error, `Check the settings: ${problems.join("; ")}.`);
      return;
    }
    const body = { prompt, steps, width, height, num_images: count, model: $("#gen-model").value || null };
    const negative = $("#gen-negative").value.trim();
    if (negative) body.negative_prompt = negative;
    if (seedText) body.seed = Number(seedText);
    const button = $("#generate-form button[type=submit]");
    button.disabled = true;
    try {
      const accepted = await api("/v1/generations", { method: "POST", json: body });
      storeJob({ id: accepted.job_id, prompt, created: Date.now(), steps, count });
      jobs.set(accepted.job_id, { job_id: accepted.job_id, status: accepted.status, progress: { step: 0, steps }, records: [], error: null });
      renderJobs();
      pollJobs();
    } catch (err) {
      if (!handleAuthError(err)) showError(error, humanError(err, "generate"));
    } finally {
      button.disabled = false;
    }
  });

  let polling = false;

  async function pollJobs() {
    if (polling) return; // one loop at a time; it picks up jobs added meanwhile
    clearTimeout(pollTimer);
    const open = storedJobs().filter((j) => !FINISHED.includes((jobs.get(j.id) || {}).status));
    if (!open.length) return;
    polling = true;
    const before = new Map(open.map((j) => [j.id, (jobs.get(j.id) || {}).status]));
    await Promise.all(
      open.map(async (entry) => {
        try {
          jobs.set(entry.id, await api(`/v1/generations/${encodeURIComponent(entry.id)}`, { key: null }));
        } catch (err) {
          if (err instanceof ApiError && err.code === "not_found") {
            jobs.set(entry.id, { job_id: entry.id, status: "failed", progress: { step: 0, steps: entry.steps || 1 }, records: [], error: "this job is not known to the service any more" });
          }
        }
      }),
    );
    polling = false;
    for (const entry of open) {
      const job = jobs.get(entry.id);
      if (job && FINISHED.includes(job.status) && !FINISHED.includes(before.get(entry.id))) {
        $("#jobs-live").textContent = `“${entry.prompt}”: ${jobStateText(job, entry)}`;
      }
    }
    if (currentPage() === "generate") renderJobs();
    if (storedJobs().some((j) => !FINISHED.includes((jobs.get(j.id) || {}).status))) {
      pollTimer = setTimeout(pollJobs, POLL_MS);
    }
  }

  function jobStateText(job, entry) {
    const p = job.progress || { step: 0, steps: entry.steps || 0 };
    switch (job.status) {
      case "queued":
        return "Waiting in the queue…";
      case "running":
        return p.steps && p.step >= p.steps ? "Certifying the images…" : `Generating: step ${p.step} of ${p.steps || entry.steps}`;
      case "succeeded":
        return `Done: ${job.records.length} certified image${job.records.length === 1 ? "" : "s"}.`;
      case "cancelled":
        return "Cancelled.";
      case "failed":
        return `The generation failed: ${job.error || "no reason was given"}`;
      default:
        return "Checking…";
    }
  }

  function renderJobs() {
    const listEl = $("#jobs");
    const entries = storedJobs();
    const seen = new Set();
    entries.forEach((entry, index) => {
      seen.add(entry.id);
      const job = jobs.get(entry.id) || { status: "unknown", progress: { step: 0, steps: entry.steps || 1 }, records: [] };
      let card = listEl.querySelector(`[data-job="${CSS.escape(entry.id)}"]`);
      if (!card) {
        const labelId = `job-${entry.id}-label`;
        card = h(
          "li",
          { class: "job", "data-job": entry.id },
          h("div", { class: "job-head" }, h("p", { class: "job-prompt", id: labelId }, entry.prompt), h("span", { class: "hint" }, `${entry.count || 1} image${(entry.count || 1) > 1 ? "s" : ""}, ${entry.steps} steps`)),
          h("progress", { "aria-labelledby": labelId, max: "1", value: "0" }),
          h("p", { class: "job-state" }),
          h("div", { class: "job-actions" }),
        );
        listEl.append(card);
      }
      if (listEl.children[index] !== card) listEl.insertBefore(card, listEl.children[index]);
      const p = job.progress || {};
      const steps = p.steps || entry.steps || 1;
      const bar = card.querySelector("progress");
      bar.max = steps;
      bar.value = job.status === "succeeded" ? steps : Math.min(p.step || 0, steps);
      bar.setAttribute("aria-valuetext", jobStateText(job, entry));
      card.dataset.status = job.status;
      const state = card.querySelector(".job-state");
      const text = jobStateText(job, entry);
      if (state.textContent !== text) {
        clear(state);
        if (job.status === "failed") state.append(notice("error", text));
        else state.textContent = text;
      }
      const actions = card.querySelector(".job-actions");
      const cancellable = job.status === "queued" || job.status === "running";
      if (cancellable && !actions.querySelector("button")) {
        actions.append(h("button", { type: "button", class: "button small", onclick: () => cancelJob(entry.id) }, "Cancel"));
      } else if (!cancellable) {
        clear(actions);
      }
    });
    $$("[data-job]", listEl).forEach((card) => {
      if (!seen.has(card.dataset.job)) card.remove();
    });
    if (!entries.length && !listEl.children.length) listEl.append(h("li", { class: "hint", "data-empty": true }, "No jobs yet."));
    else $$("[data-empty]", listEl).forEach((el) => el.remove());
    renderGallery(entries);
  }

  function renderGallery(entries) {
    const gallery = $("#gallery");
    const records = entries.flatMap((entry) => {
      const job = jobs.get(entry.id);
      return job && job.status === "succeeded" ? job.records.map((r) => ({ ...r, prompt: entry.prompt })) : [];
    });
    const ids = records.map((r) => r.record_id).join(",");
    if (gallery.dataset.ids === ids) return;
    gallery.dataset.ids = ids;
    clear(gallery);
    if (!records.length) {
      gallery.append(h("li", { class: "hint" }, "Finished images appear here, each linked to its record."));
      return;
    }
    for (const r of records) {
      gallery.append(
        h(
          "li",
          {},
          h(
            "a",
            { href: `/r/${encodeURIComponent(r.record_id)}`, "data-link": true },
            h("img", { src: `/v1/records/${encodeURIComponent(r.record_id)}/image`, alt: `Generated: ${r.prompt}`, loading: "lazy" }),
            h("span", {}, `Record ${r.record_id.slice(0, 8)}…`),
          ),
        ),
      );
    }
  }

  async function cancelJob(jobId) {
    try {
      jobs.set(jobId, await api(`/v1/generations/${encodeURIComponent(jobId)}`, { method: "DELETE" }));
      renderJobs();
    } catch (err) {
      if (!handleAuthError(err)) showError($("#generate-error"), humanError(err, "cancel"));
    }
  }

  /* ---------- certify ---------- */

  let certifyFile = null;

  const NOT_STATED = "not-stated"; // the form's value for "Not stated": no source_type is sent

  /* The common answers are in the page; the rarer C2PA source types the service accepts follow in a group. */
  function fillCertifyForm() {
    const select = $("#certify-source");
    if (!config || select.querySelector("optgroup")) return;
    const listed = new Set(Array.from(select.options, (o) => o.value));
    const more = config.source_types.filter((name) => !listed.has(name));
    if (more.length) select.append(h("optgroup", { label: "More precise types" }, more.map((name) => h("option", { value: name }, SOURCE_TYPES[name] || name))));
  }

  /* A record id from what was typed: the id itself, or a record page's address (…/r/ID). */
  function recordIdFrom(text) {
    const value = text.trim().replace(/[?#].*$/, "").replace(/\/+$/, "");
    const id = value.includes("/") ? decodeURIComponent(value.split("/").pop()) : value;
    return /^[0-9a-fA-F]{32}$/.test(id) ? id.toLowerCase() : null;
  }

  function chooseCertifyFile(file) {
    certifyFile = file;
    showError($("#certify-error"), null);
    $("#certify-chosen").textContent = `Chosen: ${file.name || "pasted image"} (${sizeText(file.size)})`;
    if (tooLarge(file)) showError($("#certify-error"), `Too large: the limit is ${megabytes(config.max_upload_bytes)}.`);
  }

  $("#certify-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#certify-error");
    const status = $("#certify-status");
    showError(error, null);
    if (!certifyFile) {
      showError(error, "Choose an image to certify first.");
      $("#certify-file").focus();
      return;
    }
    if (tooLarge(certifyFile)) {
      showError(error, `Too large: the limit is ${megabytes(config.max_upload_bytes)}.`);
      return;
    }
    const source = $("#certify-source").value;
    if (!source) {
      showError(error, "Say what this image is: choose an answer in “What is this image?” (or “Not stated”).");
      $("#certify-source").focus();
      return;
    }
    const derivedText = $("#certify-derived").value.trim();
    const derived = derivedText ? recordIdFrom(derivedText) : null;
    if (derivedText && !derived) {
      showError(error, "“Derived from record” is not a record id: it is 32 hexadecimal digits, as at the end of a record page's address (/r/…).");
      $("#certify-derived").focus();
      return;
    }
    const form = new FormData();
    form.append("file", certifyFile, certifyFile.name || "upload");
    if (source !== NOT_STATED) form.append("source_type", source);
    if (derived) form.append("derived_from", derived);
    const button = $("#certify-form button[type=submit]");
    button.disabled = true;
    setStatus(status, "Certifying: watermark, signatures, IPFS…", true);
    try {
      const certified = await api("/v1/certify", { method: "POST", form });
      setStatus(status, null);
      certifyFile = null;
      $("#certify-file").value = "";
      $("#certify-derived").value = "";
      $("#certify-source").value = "";
      $("#certify-chosen").textContent = "Drop an image here, paste it, or choose a file";
      flash("Certified. The chain registration follows in a few seconds.");
      navigate(`/r/${encodeURIComponent(certified.record_id)}`);
    } catch (err) {
      setStatus(status, null);
      if (!handleAuthError(err)) showError(error, humanError(err, derived ? "certify-derived" : "certify"));
      // Another account holds this content: the way on is to declare the image a derivative of it.
      if (err instanceof ApiError && err.code === "already_certified") $("#certify-derived").focus();
    } finally {
      button.disabled = false;
    }
  });

  /* ---------- my records ---------- */

  let minePage = { cursor: null, previous: [] };

  async function renderMine(cursor, previous) {
    minePage = { cursor, previous };
    const listEl = $("#mine-list");
    const status = $("#mine-status");
    const error = $("#mine-error");
    showError(error, null);
    setStatus(status, "Loading your records…", true);
    let page;
    try {
      const query = new URLSearchParams({ mine: "true", limit: String(MINE_PAGE) });
      if (cursor) query.set("cursor", cursor);
      page = await api(`/v1/records?${query}`);
    } catch (err) {
      setStatus(status, null);
      if (!handleAuthError(err)) showError(error, humanError(err, "records"));
      return;
    }
    if (currentPage() !== "mine" || minePage.cursor !== cursor) return;
    clear(listEl);
    setStatus(status, page.items.length ? null : "");
    if (!page.items.length) {
      listEl.append(h("li", { class: "hint" }, "Nothing yet: ", link("/certify", "certify an image"), " or ", link("/generate", "generate one"), "."));
    }
    const nfts = config && config.minting
      ? await Promise.all(page.items.map((r) => api(`/v1/records/${encodeURIComponent(r.record_id)}/nft`).catch(() => null)))
      : page.items.map(() => null);
    if (currentPage() !== "mine" || minePage.cursor !== cursor) return;
    page.items.forEach((r, i) => listEl.append(recordItem(r, nfts[i])));
    const newer = $("#mine-newer");
    const older = $("#mine-older");
    newer.hidden = !previous.length;
    older.hidden = !page.next_cursor;
    older.onclick = () => renderMine(page.next_cursor, [...previous, cursor]);
    newer.onclick = () => renderMine(previous[previous.length - 1], previous.slice(0, -1));
  }

  function recordItem(r, nft) {
    const id = encodeURIComponent(r.record_id);
    const title = r.generation && r.generation.prompt ? r.generation.prompt : r.original_filename || "Certified image";
    const item = h(
      "li",
      { class: "record-item", "data-record": r.record_id },
      h("img", { src: `/v1/records/${id}/image`, alt: "", loading: "lazy" }),
      h(
        "div",
        {},
        h("h2", {}, link(`/r/${id}`, title)),
        h("p", { class: "record-meta" }, `Record `, code(r.record_id), ` · ${when(r.created_at)} · `, h("span", { class: `pill pill-${r.status}` }, STATUS_WORDS[r.status] || r.status)),
        config && config.minting ? mintArea(r, nft) : null,
      ),
    );
    return item;
  }

  function mintedText(nft) {
    return h("p", { class: "notice notice-ok minted" }, h("strong", {}, "Minted"), "Token ", code(nft.token_id), nft.tx_hash ? [" in transaction ", code(nft.tx_hash)] : "", nft.owner ? [", owned by ", code(nft.owner)] : "", ".");
  }

  function mintArea(r, nft) {
    const area = h("div", { class: "mint" });
    if (nft && nft.minted) {
      area.append(mintedText(nft));
      return area;
    }
    if (r.status !== "registered") {
      area.append(h("p", { class: "hint" }, "It can be minted once it is registered on chain."));
      return area;
    }
    const inputId = `mint-to-${r.record_id}`;
    const errorArea = h("div", { class: "error-area", role: "alert" });
    const input = h("input", { id: inputId, type: "text", name: "to", autocomplete: "off", spellcheck: "false", placeholder: "0x…", required: true, pattern: "0x[0-9a-fA-F]{40}" });
    const submit = h("button", { type: "submit", class: "button primary small" }, "Mint");
    const form = h(
      "form",
      { class: "mint-form", hidden: true, novalidate: true },
      h("div", { class: "field" }, h("label", { for: inputId }, "Recipient address"), input),
      submit,
    );
    const open = h("button", { type: "button", class: "button small", "aria-expanded": "false" }, "Mint an NFT…");
    open.addEventListener("click", () => {
      form.hidden = !form.hidden;
      open.setAttribute("aria-expanded", String(!form.hidden));
      if (!form.hidden) input.focus();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      showError(errorArea, null);
      const to = input.value.trim();
      if (!/^0x[0-9a-fA-F]{40}$/.test(to)) {
        showError(errorArea, "That is not an Ethereum address: it starts with 0x followed by 40 hexadecimal digits.");
        input.focus();
        return;
      }
      submit.disabled = true;
      const waiting = h("p", { class: "status", role: "status" }, h("span", { class: "spinner", "aria-hidden": "true" }), "Minting: sending the transaction…");
      area.append(waiting);
      try {
        const minted = await api("/v1/nft/mint", { method: "POST", json: { record_id: r.record_id, to } });
        clear(area).append(mintedText(minted));
      } catch (err) {
        waiting.remove();
        submit.disabled = false;
        if (!handleAuthError(err)) showError(errorArea, humanError(err, "mint"));
      }
    });
    area.append(open, form, errorArea);
    return area;
  }

  /* ---------- start ---------- */

  async function loadConfig() {
    try {
      config = await api("/v1/web/config", { key: null });
    } catch (_) {
      config = null;
    }
    if (config) {
      $$("[data-limit]").forEach((el) => (el.textContent = megabytes(config.max_upload_bytes)));
      $("#footer-version").textContent = `${config.product} ${config.version}`;
    }
  }

  async function start() {
    setupDrop("verify", $("#verify-file"), verifyFile);
    setupDrop("certify", $("#certify-file"), chooseCertifyFile);
    await loadConfig(); // models, limits, minting: the forms need them
    fillCertifyForm();
    route();
    pollJobs(); // jobs started before a reload go on being followed
    document.body.dataset.ready = "true";
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
