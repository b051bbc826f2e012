"""Parsing what users type and wording what the bot answers: pure functions, no I/O."""

from __future__ import annotations

import re
import shlex
from typing import Any

HELP = """\
I make certified images and check pictures against the provenance service.

/link API_KEY: link your service account (private chat only; I delete the message at once)
/unlink: forget your key
/generate PROMPT [--seed N] [--steps N] [--size WxH] [--n N] [--model NAME] [--lora PATH[:WEIGHT]]: \
make images; each comes as the certified PNG (a document, bytes untouched) and a preview
/cancel: stop your running generation
/mine: your latest records
/mint RECORD ADDRESS: mint a record of yours as an NFT to ADDRESS
/verify: in reply to a picture, check it

Send me any photo or image file and I check it: authentic (the certified bytes), \
modified (a changed copy of a record), or unknown. \
Send files as documents to check their exact bytes: Telegram recompresses photos."""

_OPTIONS = {
    "--seed": "seed",
    "--steps": "steps",
    "--size": "size",
    "--n": "num_images",
    "--model": "model",
    "--lora": "lora",
}
_SIZE = re.compile(r"^(\d{2,5})(?:[xX](\d{2,5}))?$")

VERDICT_WORDS = {
    "authentic": "AUTHENTIC",
    "pending": "PENDING",
    "modified": "MODIFIED",
    "unknown": "UNKNOWN",
    "invalid": "INVALID",
    "unavailable": "UNAVAILABLE",
}

RECOMPRESSED = (
    "This picture arrived as a Telegram photo, which Telegram recompresses (JPEG, long side at most 1280 px): "
    "it is a recompressed copy of the record above, not its certified bytes. Send the file as a document to "
    "check the exact bytes."
)


def parse_generate(args: str | None) -> dict[str, Any]:
    """The request body of ``/generate PROMPT --seed ...``; ValueError with a sentence for the user."""
    try:
        words = shlex.split(args or "")
    except ValueError:
        words = (args or "").split()
    body: dict[str, Any] = {}
    prompt: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in _OPTIONS:
            if i + 1 >= len(words):
                raise ValueError(f"{word} needs a value.")
            _option(body, _OPTIONS[word], word, words[i + 1])
            i += 2
            continue
        if word.startswith("--"):
            raise ValueError(f"Unknown option {word}; the options are {', '.join(_OPTIONS)}.")
        prompt.append(word)
        i += 1
    if not prompt:
        raise ValueError("Say what to draw: /generate a lighthouse at dawn --steps 20")
    body["prompt"] = " ".join(prompt)
    return body


def _option(body: dict[str, Any], name: str, flag: str, value: str) -> None:
    if name in ("seed", "steps", "num_images"):
        if not value.isdigit():
            raise ValueError(f"{flag} takes a whole number, not {value!r}.")
        body[name] = int(value)
    elif name == "size":
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"--size takes WIDTHxHEIGHT (e.g. 512x768) or one side, not {value!r}.")
        body["width"] = int(match.group(1))
        body["height"] = int(match.group(2) or match.group(1))
    elif name == "lora":
        path, _, weight = value.rpartition(":") if re.search(r":-?[\d.]+$", value) else (value, "", "")
        lora: dict[str, Any] = {"path": path}
        if weight:
            lora["weight"] = float(weight)
        body.setdefault("loras", []).append(lora)
    else:
        body[name] = value


def progress_text(job: dict[str, Any]) -> str:
    """The one progress message, as a job advances."""
    status = job["status"]
    step, steps = job["progress"]["step"], job["progress"]["steps"]
    if status == "queued":
        return "Queued: waiting for a worker..."
    if status == "running":
        return f"Generating: step {step} of {steps}" if steps else "Generating: loading the model..."
    if status == "succeeded":
        count = len(job["records"])
        return f"Done: {count} certified image{'s' if count != 1 else ''}, step {steps} of {steps}."
    if status == "cancelled":
        return "Cancelled."
    return f"The generation failed: {job.get('error') or 'no reason given'}"


def verdict_text(report: dict[str, Any], record_link: str | None, *, recompressed: bool) -> str:
    """The verdict as a word and a sentence, the record, what changed, and the recompression note."""
    lines = [f"{VERDICT_WORDS.get(report['verdict'], report['verdict'].upper())}: {report['summary']}"]
    if record_link:
        lines.append(f"Record: {record_link}")
    if report.get("changes"):
        lines.append("What changed: " + "; ".join(report["changes"]) + ".")
    elif report.get("reasons") and report["verdict"] != "authentic":
        lines.append(report["reasons"][0])
    if recompressed and report.get("record_id"):
        lines.append(RECOMPRESSED)
    return "\n".join(lines)
