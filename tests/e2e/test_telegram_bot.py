"""Issue #19: the Telegram bot against a local Bot API double and the real service, both on 127.0.0.1.

The double implements the documented methods the bot calls (getMe, getUpdates, sendMessage, editMessageText,
deleteMessage, sendPhoto, sendDocument, getFile, setWebhook, deleteWebhook) and the file download path, with
Telegram's JSON shapes; it recompresses every photo the way Telegram does (JPEG, long side at most 1280 px).
The bot runs as ``provenance bot`` in its own process and talks to the service only over HTTP.
"""

from __future__ import annotations

import ast
import asyncio
import io
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provenance.api.app import create_app
from provenance.runtime.services import Services
from tests.conftest import _free_port, encode, photo, wait_for

TOKEN = "123456789:AAHfakeTokenForTheDouble_0123456789abcdef"
BOT_USERNAME = "provenance_test_bot"
ROOT = Path(__file__).resolve().parents[2]
ALICE, CAROL, DAVE = 1001, 1003, 1004
GROUP = -100777


def telegram_photo(data: bytes) -> bytes:
    """What Telegram does to a picture sent as a photo: JPEG, long side at most 1280 px."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((1280, 1280))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=87)
    return out.getvalue()


class BotApiDouble:
    """A Bot API server on 127.0.0.1: updates injected by the test, every call the bot makes recorded."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.lock = threading.Lock()
        self.updates: list[dict[str, Any]] = []
        self.calls: list[dict[str, Any]] = []
        self.files: dict[str, tuple[str, bytes]] = {}
        self.downloads: list[str] = []  # every file path the bot fetched
        self.polled = False
        self._ids = itertools.count(1)
        self.port = _free_port()
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self.method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self.download, methods=["GET"]),
            ]
        )
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what the test does -------------------------------------------------------------------------
    def _message(self, user: int, chat: int, **fields: Any) -> dict[str, Any]:
        chat_obj = (
            {"id": chat, "type": "private", "first_name": "U"}
            if chat > 0
            else {"id": chat, "type": "supergroup", "title": "G"}
        )
        message = {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": chat_obj,
            "from": {"id": user, "is_bot": False, "first_name": f"user{user}"},
            **fields,
        }
        with self.lock:
            self.updates.append({"update_id": len(self.updates) + 1, "message": message})
        return message

    def text(self, user: int, text: str, chat: int | None = None) -> dict[str, Any]:
        entities = (
            [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}] if text.startswith("/") else []
        )
        return self._message(user, chat or user, text=text, entities=entities)

    def _store(self, data: bytes, folder: str, ext: str) -> dict[str, Any]:
        file_id = f"f{next(self._ids)}"
        with self.lock:
            self.files[file_id] = (f"{folder}/file_{file_id}.{ext}", data)
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(data)}

    def _photo_sizes(self, data: bytes) -> list[dict[str, Any]]:
        sizes = []
        full = telegram_photo(data)
        image = Image.open(io.BytesIO(full))
        thumb = image.copy()
        thumb.thumbnail((90, 90))
        out = io.BytesIO()
        thumb.save(out, "JPEG", quality=80)
        for blob, img in ((out.getvalue(), thumb), (full, image)):
            sizes.append({**self._store(blob, "photos", "jpg"), "width": img.width, "height": img.height})
        return sizes

    def user_photo(self, user: int, data: bytes) -> dict[str, Any]:
        return self._message(user, user, photo=self._photo_sizes(data))

    def user_document(self, user: int, data: bytes, name: str, mime: str) -> dict[str, Any]:
        document = {**self._store(data, "documents", name.rsplit(".", 1)[-1]), "file_name": name, "mime_type": mime}
        return self._message(user, user, document=document)

    def sent(self, method: str, chat: int | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [c for c in self.calls if c["method"] == method and (chat is None or c.get("chat_id") == chat)]

    def texts(self, chat: int) -> list[str]:
        with self.lock:
            return [str(c.get("text") or c.get("caption") or "") for c in self.calls if c.get("chat_id") == chat]

    def wait_text(self, chat: int, needle: str, timeout: float = 60) -> str:
        return wait_for(lambda: next((t for t in self.texts(chat) if needle in t), None), timeout=timeout)

    # --- the Bot API ------------------------------------------------------------------------------------
    async def method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"}, status_code=401)
        name = request.path_params["method"]
        form = await request.form() if request.method == "POST" else request.query_params
        params: dict[str, Any] = {}
        for key, value in form.items():
            params[key] = await value.read() if hasattr(value, "read") else value
        for key, value in list(params.items()):  # multipart uploads: the field names its part, attach://<part>
            if isinstance(value, str) and value.startswith("attach://"):
                params[key] = params[value.removeprefix("attach://")]
        if name == "getUpdates":
            return JSONResponse({"ok": True, "result": await self._get_updates(params)})
        result = self._answer(name, params)
        if result is None:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"}, status_code=404)
        return JSONResponse({"ok": True, "result": result})

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + min(float(params.get("timeout") or 0), 1.0)
        while True:
            with self.lock:
                pending = [u for u in self.updates if u["update_id"] >= offset]
                self.polled = True
            if pending or time.monotonic() >= deadline:
                return pending
            await asyncio.sleep(0.02)

    def _bot_message(self, chat_id: Any, **fields: Any) -> dict[str, Any]:
        chat = int(chat_id)
        chat_obj = (
            {"id": chat, "type": "private", "first_name": "U"}
            if chat > 0
            else {"id": chat, "type": "supergroup", "title": "G"}
        )
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": chat_obj,
            "from": {"id": 123456789, "is_bot": True, "first_name": "Provenance", "username": BOT_USERNAME},
            **fields,
        }

    def _answer(self, name: str, params: dict[str, Any]) -> Any:
        record: dict[str, Any] = {"method": name, **{k: v for k, v in params.items() if not isinstance(v, bytes)}}
        if "chat_id" in record:
            record["chat_id"] = int(record["chat_id"])
        result: Any
        if name == "getMe":
            result = {"id": 123456789, "is_bot": True, "first_name": "Provenance", "username": BOT_USERNAME}
        elif name in ("deleteWebhook", "setWebhook", "deleteMessage"):
            result = True
        elif name == "sendMessage":
            result = self._bot_message(params["chat_id"], text=params["text"])
        elif name == "editMessageText":
            result = self._bot_message(params["chat_id"], text=params["text"])
            result["message_id"] = int(params["message_id"])
        elif name == "sendDocument":
            data = params["document"]
            record["bytes"] = data
            document = {**self._store(data, "documents", "png"), "file_name": "image.png", "mime_type": "image/png"}
            result = self._bot_message(params["chat_id"], document=document, caption=params.get("caption"))
        elif name == "sendPhoto":
            record["bytes"] = telegram_photo(params["photo"])
            result = self._bot_message(
                params["chat_id"], photo=self._photo_sizes(params["photo"]), caption=params.get("caption")
            )
        elif name == "getFile":
            path, data = self.files[params["file_id"]]
            result = {
                "file_id": params["file_id"],
                "file_unique_id": "u" + params["file_id"],
                "file_size": len(data),
                "file_path": path,
            }
        else:
            return None
        with self.lock:
            self.calls.append(record)
        return result

    async def download(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return Response(status_code=401)
        with self.lock:
            self.downloads.append(request.path_params["path"])
            found = [data for path, data in self.files.values() if path == request.path_params["path"]]
        return Response(found[0]) if found else Response(status_code=404)


@pytest.fixture(scope="module")
def service_url(services: Services) -> Iterator[str]:
    """The service (API) on 127.0.0.1 over HTTP, on the shared embedded stack."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(services=services), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def double() -> Iterator[BotApiDouble]:
    api = BotApiDouble(TOKEN)
    api.thread.start()
    wait_for(lambda: api.server.started, timeout=20)
    yield api
    api.server.should_exit = True
    api.thread.join(timeout=10)


def bot_env(double: BotApiDouble, service_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    return {
        **env,
        "PROVENANCE_TELEGRAM_TOKEN": TOKEN,
        "PROVENANCE_TELEGRAM_API_URL": double.url,
        "PROVENANCE_BOT_SERVICE_URL": service_url,
        "PROVENANCE_BOT_DATA_DIR": str(data_dir),
        "PROVENANCE_BOT_RATE_PER_MIN": "12",
        "PROVENANCE_BOT_JOB_POLL_S": "0.05",
        **extra,
    }


@pytest.fixture(scope="module")
def bot(double: BotApiDouble, service_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``provenance bot`` by long polling; yields its log file."""
    folder = tmp_path_factory.mktemp("bot")
    log = folder / "bot.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provenance.cli", "bot"],
            env=bot_env(double, service_url, folder / "data"), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: double.polled or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, log.read_text()
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def alice_key(services: Services) -> str:
    account = services.accounts.ensure_account("tg-alice")
    _, key = services.accounts.create_key(account.id, ["generate", "verify"], name="tg-alice")
    return key


def test_link_in_a_group_is_refused_and_deleted(double: BotApiDouble, bot: Path, alice_key: str) -> None:
    message = double.text(DAVE, f"/link {alice_key}", chat=GROUP)
    assert "private chat" in double.wait_text(GROUP, "private chat")
    assert any(int(c["message_id"]) == message["message_id"] for c in double.sent("deleteMessage", GROUP))
    assert all(alice_key not in t for t in double.texts(GROUP))
    # A command addressed to another bot is not answered.
    double.text(DAVE, "/help@another_bot", chat=GROUP)
    double.text(DAVE, f"/help@{BOT_USERNAME}", chat=GROUP)
    wait_for(lambda: len([t for t in double.texts(GROUP) if "I make certified images" in t]) == 1)
    time.sleep(0.5)
    assert len([t for t in double.texts(GROUP) if "I make certified images" in t]) == 1


def test_link_generate_verify_and_a_telegram_photo(
    double: BotApiDouble, bot: Path, alice_key: str, service_url: str
) -> None:
    link = double.text(ALICE, f"/link {alice_key}")
    assert "Linked to account tg-alice" in double.wait_text(ALICE, "Linked to account")
    assert any(int(c["message_id"]) == link["message_id"] for c in double.sent("deleteMessage", ALICE))
    assert all(alice_key not in t for t in double.texts(ALICE))

    double.text(ALICE, "/generate a lighthouse at dawn --steps 3 --size 256 --seed 5")
    wait_for(lambda: double.sent("sendDocument", ALICE), timeout=300)
    edits = [c["text"] for c in double.sent("editMessageText", ALICE)]
    assert any("of 3" in e for e in edits), edits
    document = double.sent("sendDocument", ALICE)[0]
    record_id = document["caption"].rsplit("/r/", 1)[1]
    assert f"{service_url}/r/{record_id}" in document["caption"]
    wait_for(lambda: double.sent("sendPhoto", ALICE), timeout=30)  # the preview
    report = httpx.post(f"{service_url}/v1/verify", files={"file": ("a.png", document["bytes"], "image/png")}).json()
    assert report["verdict"] in ("authentic", "pending") and report["record_id"] == record_id, report
    wait_for(lambda: httpx.get(f"{service_url}/v1/records/{record_id}").json()["status"] == "registered", timeout=60)

    # The same picture sent back as a Telegram photo: recompressed by the double, found as a modified copy.
    double.user_photo(ALICE, document["bytes"])
    verdict = double.wait_text(ALICE, "MODIFIED", timeout=120)
    assert f"/r/{record_id}" in verdict and "recompressed copy" in verdict, verdict
    double.wait_text(ALICE, "differs from the certified original")

    # As a document, the exact bytes: authentic.
    double.user_document(ALICE, document["bytes"], "lighthouse.png", "image/png")
    assert f"/r/{record_id}" in double.wait_text(ALICE, "AUTHENTIC", timeout=120)

    double.text(ALICE, "/mine")
    assert record_id in double.wait_text(ALICE, "Your latest records")


def test_a_strangers_photo_is_unknown(double: BotApiDouble, bot: Path) -> None:
    double.user_photo(CAROL, encode(photo("coffee.png")))
    text = double.wait_text(CAROL, "UNKNOWN", timeout=120)
    assert "Record:" not in text and "recompressed copy" not in text


def test_a_user_hits_the_rate_limit(double: BotApiDouble, bot: Path) -> None:
    user = 1005
    for _ in range(14):
        double.text(user, "/help")
    double.wait_text(user, "Slow down")
    wait_for(lambda: len([t for t in double.texts(user) if "I make certified images" in t]) == 12)
    time.sleep(0.5)
    assert len([t for t in double.texts(user) if "Slow down" in t]) == 1  # told once, not per message


def test_the_token_never_appears_in_the_logs(double: BotApiDouble, bot: Path) -> None:
    text = bot.read_text()
    assert "started (long polling)" in text  # the log is there
    assert TOKEN not in text and TOKEN.split(":")[1] not in text


def test_webhook_checks_the_secret_token(double: BotApiDouble, service_url: str, tmp_path: Path) -> None:
    port, secret = _free_port(), "s3cret-for-the-webhook"
    env = bot_env(double, service_url, tmp_path / "data", PROVENANCE_TELEGRAM_WEBHOOK_URL="https://bot.example.org/telegram/webhook",
                  PROVENANCE_TELEGRAM_WEBHOOK_SECRET=secret, PROVENANCE_TELEGRAM_WEBHOOK_HOST="127.0.0.1",
                  PROVENANCE_TELEGRAM_WEBHOOK_PORT=str(port))  # fmt: skip
    log = tmp_path / "webhook.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provenance.cli", "bot"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        hook = f"http://127.0.0.1:{port}/telegram/webhook"
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz") or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, log.read_text()
        assert any(c.get("secret_token") == secret for c in double.sent("setWebhook"))
        user = 1006
        message = {
            "message_id": 1, "date": int(time.time()), "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": False, "first_name": "W"}, "text": "/help",
            "entities": [{"type": "bot_command", "offset": 0, "length": 5}],
        }  # fmt: skip
        update = {"update_id": 9001, "message": message}
        assert httpx.post(hook, json=update).status_code == 401
        assert httpx.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}).status_code == 401
        assert httpx.post(hook, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": secret}).status_code == 200
        double.wait_text(user, "I make certified images")
        assert len(double.texts(user)) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert TOKEN not in log.read_text() and secret not in log.read_text()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVENANCE_")}
    env |= {"PROVENANCE_TELEGRAM_TOKEN_FILE": str(token_file), "PROVENANCE_BOT_DATA_DIR": str(tmp_path / "d")}
    done = subprocess.run(
        [sys.executable, "-m", "provenance.cli", "bot"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "chmod 600" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert TOKEN not in done.stderr + done.stdout


def test_the_bot_package_imports_nothing_of_the_service() -> None:
    for path in (ROOT / "provenance_bot").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top != "provenance" and top != "generator", f"{path.name} imports {name}"


def test_the_compose_bot_service_sets_only_bot_settings() -> None:
    import yaml

    from provenance_bot.settings import BotSettings

    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["bot"]
    known = {f"PROVENANCE_{name}".upper() for name in BotSettings.model_fields}
    assert service["command"] == ["provenance", "bot"] and set(service["environment"]) <= known
    assert service["environment"]["PROVENANCE_TELEGRAM_TOKEN_FILE"] == "/run/secrets/telegram_token"


def new_key(services: Services, user: int, *scopes: str) -> str:
    """A key for the account ``tg-<user>`` (created on first use) with ``scopes``."""
    account = services.accounts.ensure_account(f"tg-{user}")
    _, key = services.accounts.create_key(account.id, list(scopes), name=f"tg-{user}")
    return key


def link(double: BotApiDouble, user: int, key: str) -> None:
    """The user links ``key`` in a private chat and the bot confirms."""
    double.text(user, f"/link {key}")
    double.wait_text(user, "Linked to account")


def test_unlink_forgets_the_key(double: BotApiDouble, bot: Path, services: Services) -> None:
    user = 1010
    link(double, user, new_key(services, user, "generate"))
    double.text(user, "/unlink")
    double.wait_text(user, "Your key is forgotten.")
    double.text(user, "/mine")  # needs a linked key: there is none any more
    double.wait_text(user, "Link your account first")
    double.text(user, "/unlink")
    double.wait_text(user, "No key was linked.")


def test_cancel_stops_the_users_running_job(double: BotApiDouble, bot: Path, services: Services) -> None:
    user = 1011
    link(double, user, new_key(services, user, "generate"))
    double.text(user, "/cancel")
    double.wait_text(user, "You have no generation running.")
    double.text(user, "/generate a slow kite --steps 150 --size 512 --seed 2")
    wait_for(lambda: any("of 150" in c["text"] for c in double.sent("editMessageText", user)), timeout=300)
    double.text(user, "/cancel")
    double.wait_text(user, "Cancelling")
    wait_for(lambda: any(c["text"] == "Cancelled." for c in double.sent("editMessageText", user)), timeout=120)
    steps = [c["text"] for c in double.sent("editMessageText", user) if "of 150" in c["text"]]
    assert "step 150 of 150" not in " ".join(steps), steps
    assert not double.sent("sendDocument", user) and not double.sent("sendPhoto", user)
    double.text(user, "/cancel")  # the bot forgot the finished job
    wait_for(lambda: len([t for t in double.texts(user) if "You have no generation running." in t]) == 2)


def test_mint_needs_the_mint_scope(double: BotApiDouble, bot: Path, services: Services, service_url: str) -> None:
    owner, holder = 1012, "0x" + "22" * 20
    minter = new_key(services, owner, "certify", "mint")
    small = encode(np.random.default_rng(1012).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    certified = httpx.post(
        f"{service_url}/v1/certify", files={"file": ("s.png", small, "image/png")},
        headers={"Authorization": f"Bearer {minter}"}, timeout=120,
    )  # fmt: skip
    assert certified.status_code == 201, certified.text
    record_id = certified.json()["record_id"]
    wait_for(lambda: httpx.get(f"{service_url}/v1/records/{record_id}").json()["status"] == "registered", timeout=60)

    # The same account, through a key without the mint scope: refused in a sentence.
    colleague = 1013
    link(double, colleague, new_key(services, owner, "certify"))
    double.text(colleague, f"/mint {record_id} {holder}")
    refused = double.wait_text(colleague, "Your key may not do that")
    assert "'mint' scope" in refused and "Minted" not in " ".join(double.texts(colleague)), refused

    link(double, owner, minter)
    double.text(owner, f"/mint {record_id}")
    double.wait_text(owner, "Send /mint RECORD_ID 0xADDRESS.")
    double.text(owner, f"/mint {record_id} {holder}")
    minted = double.wait_text(owner, "Minted token", timeout=120)
    assert holder.lower() in minted.lower() and "transaction 0x" in minted, minted


def test_queue_full_and_quota_come_back_as_sentences(
    double: BotApiDouble, bot: Path, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = 1014
    link(double, user, new_key(services, user, "generate"))
    with monkeypatch.context() as patch:
        patch.setattr(services.jobs.queue, "max_queued", 0)
        double.text(user, "/generate a kite --steps 3 --size 256")
        busy = double.wait_text(user, "queue is full")
    assert busy.startswith("The service is busy") and "account" not in busy, busy

    monkeypatch.setattr(services.settings, "quota_images_per_day", 1)
    double.text(user, "/generate two kites --n 2 --steps 3 --size 256")
    over = double.wait_text(user, "A limit of your account is reached")
    assert "images_per_day" in over and "Try again in" in over, over
    assert not double.sent("sendDocument", user) and not double.sent("editMessageText", user)


def test_a_file_over_the_upload_limit_is_refused_before_download(
    double: BotApiDouble, bot: Path, service_url: str
) -> None:
    user = 1015
    limit = int(httpx.get(f"{service_url}/v1/web/config").json()["max_upload_bytes"])
    big = encode(photo("coffee.png"))
    big += b"\0" * (limit + 1 - len(big))  # a PNG with trailing bytes: its size is what counts
    message = double.user_document(user, big, "huge.png", "image/png")
    refused = double.wait_text(user, f"up to {limit} bytes")
    assert f"That file is {limit + 1} bytes" in refused, refused
    file_id = message["document"]["file_id"]
    assert not [c for c in double.sent("getFile") if c.get("file_id") == file_id]
    with double.lock:
        assert double.files[file_id][0] not in double.downloads
    assert not [t for t in double.texts(user) if any(w in t for w in ("AUTHENTIC", "MODIFIED", "UNKNOWN"))]
