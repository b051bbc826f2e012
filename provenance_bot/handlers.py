"""What the bot does with each message: aiogram handlers over the service client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiogram import BaseMiddleware, Bot, F, Router
from aiogram.enums import ChatType
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject, CommandStart
from aiogram.types import BufferedInputFile, Message, TelegramObject

from provenance_bot.client import ServiceClient, ServiceError
from provenance_bot.commands import HELP, parse_generate, progress_text, verdict_text
from provenance_bot.ratelimit import RateLimiter
from provenance_bot.store import LinkStore

log = logging.getLogger("provenance_bot")


@dataclass
class Context:
    """What every handler shares: the service client, the links, the users' running jobs."""

    client: ServiceClient
    store: LinkStore
    public_url: str
    job_poll_s: float = 0.5
    job_timeout_s: float = 1800.0
    running: dict[int, str] = field(default_factory=dict)

    def record_link(self, record_id: str) -> str:
        """Where a user opens a record."""
        return f"{self.public_url}/r/{record_id}"


class RateLimit(BaseMiddleware):
    """Per-Telegram-user limit, counted on messages a handler accepted (so group chatter is free)."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        """Pass the message on, or answer "slow down" once per window."""
        if isinstance(event, Message) and event.from_user is not None:
            wait = self.limiter.hit(event.from_user.id)
            if wait:
                if self.limiter.should_tell(event.from_user.id, wait):
                    await event.answer(
                        f"Slow down: at most {self.limiter.per_min} messages a minute. Try again in {wait:.0f} s."
                    )
                return None
        return await handler(event, data)


def _user(message: Message) -> int:
    return message.from_user.id if message.from_user else message.chat.id


def build_router(ctx: Context, limiter: RateLimiter) -> Router:
    """Every command and the picture handler, with the rate limit in front."""
    router = Router(name="provenance")
    router.message.middleware(RateLimit(limiter))

    @router.message(CommandStart())
    @router.message(Command("help"))
    async def start(message: Message) -> None:
        await message.answer(HELP)

    @router.message(Command("link"))
    async def link(message: Message, command: CommandObject) -> None:
        # The key leaves the chat first: deleted whether or not it turns out to be valid.
        with contextlib.suppress(TelegramAPIError):
            await message.delete()
        if message.chat.type != ChatType.PRIVATE:
            await message.answer(
                "I link keys only in a private chat with me: a key posted here is seen by everyone in this group. "
                "Revoke that key and send /link to me directly."
            )
            return
        key = (command.args or "").strip()
        if not key:
            await message.answer("Send /link followed by your API key (I delete the message at once).")
            return
        try:
            account = await ctx.client.account(key)
        except ServiceError as exc:
            text = "The service did not accept that key." if exc.status in (401, 403) else exc.sentence()
            await message.answer(text)
            return
        ctx.store.link(_user(message), key, account["account_name"])
        await message.answer(
            f"Linked to account {account['account_name']} (scopes: {', '.join(account['scopes'])}). "
            "Your message with the key is deleted; the key is stored encrypted. /unlink to forget it."
        )

    @router.message(Command("unlink"))
    async def unlink(message: Message) -> None:
        done = ctx.store.unlink(_user(message))
        await message.answer("Your key is forgotten." if done else "No key was linked.")

    async def linked_key(message: Message) -> str | None:
        key = ctx.store.key(_user(message))
        if key is None:
            await message.answer("Link your account first: /link API_KEY in a private chat with me.")
        return key

    @router.message(Command("generate"))
    async def generate(message: Message, command: CommandObject, bot: Bot) -> None:
        key = await linked_key(message)
        if key is None:
            return
        try:
            body = parse_generate(command.args)
        except ValueError as exc:
            await message.answer(str(exc))
            return
        user = _user(message)
        if user in ctx.running:
            await message.answer("You have a generation running: wait for it, or /cancel it.")
            return
        try:
            accepted = await ctx.client.generate(key, body)
        except ServiceError as exc:
            await message.answer(exc.sentence())
            return
        ctx.running[user] = accepted["job_id"]
        try:
            await _follow_job(ctx, bot, message, accepted["job_id"])
        finally:
            ctx.running.pop(user, None)

    @router.message(Command("cancel"))
    async def cancel(message: Message) -> None:
        key = await linked_key(message)
        if key is None:
            return
        job_id = ctx.running.get(_user(message))
        if job_id is None:
            await message.answer("You have no generation running.")
            return
        try:
            await ctx.client.cancel(key, job_id)
        except ServiceError as exc:
            await message.answer(exc.sentence())
            return
        await message.answer("Cancelling: the job stops at its next step.")

    @router.message(Command("mine"))
    async def mine(message: Message) -> None:
        key = await linked_key(message)
        if key is None:
            return
        try:
            records = await ctx.client.mine(key)
        except ServiceError as exc:
            await message.answer(exc.sentence())
            return
        if not records:
            await message.answer("Your account has no records yet: /generate one.")
            return
        lines = [
            f"{r['created_at'][:16].replace('T', ' ')} {r['status']}: {ctx.record_link(r['record_id'])}"
            for r in records
        ]
        await message.answer("Your latest records:\n" + "\n".join(lines))

    @router.message(Command("mint"))
    async def mint(message: Message, command: CommandObject) -> None:
        key = await linked_key(message)
        if key is None:
            return
        parts = (command.args or "").split()
        if len(parts) != 2:
            await message.answer("Send /mint RECORD_ID 0xADDRESS.")
            return
        try:
            minted = await ctx.client.mint(key, parts[0], parts[1])
        except ServiceError as exc:
            await message.answer(exc.sentence())
            return
        await message.answer(
            f"Minted token {minted['token_id']} to {minted['owner']} (transaction {minted['tx_hash']})."
        )

    @router.message(Command("verify"))
    async def verify_reply(message: Message, bot: Bot) -> None:
        target = message.reply_to_message
        if target is None or not _picture(target):
            await message.answer("Send /verify in reply to a picture, or send me the picture itself.")
            return
        await _verify(ctx, bot, message, target)

    @router.message(F.chat.type == ChatType.PRIVATE, F.photo | F.document)
    async def picture(message: Message, bot: Bot) -> None:
        if not _picture(message):
            await message.answer("I check images only (PNG, JPEG, WebP...): send a picture.")
            return
        await _verify(ctx, bot, message, message)

    return router


def _picture(message: Message) -> tuple[str, int | None, bool, str, str] | None:
    """(file_id, file_size, is_photo, filename, mime) of the picture a message holds, or None."""
    if message.photo:
        largest = max(message.photo, key=lambda p: p.width * p.height)
        return largest.file_id, largest.file_size, True, "telegram-photo.jpg", "image/jpeg"
    doc = message.document
    if doc is not None and (doc.mime_type or "").startswith("image/"):
        return doc.file_id, doc.file_size, False, doc.file_name or "image", doc.mime_type or "image/png"
    return None


async def _verify(ctx: Context, bot: Bot, reply_to: Message, source: Message) -> None:
    picture = _picture(source)
    assert picture is not None
    file_id, size, is_photo, filename, mime = picture
    try:
        limit = int((await ctx.client.config())["max_upload_bytes"])
    except ServiceError as exc:
        await reply_to.answer(exc.sentence())
        return
    # Telegram states the size: a file over the service's limit is refused without downloading it.
    if size is not None and size > limit:
        await reply_to.answer(f"That file is {size} bytes; the service checks files up to {limit} bytes.")
        return
    data = await bot.download(file_id)
    assert data is not None
    try:
        report = await ctx.client.verify(data.read(), filename, mime, key=ctx.store.key(_user(reply_to)))
    except ServiceError as exc:
        await reply_to.answer(exc.sentence())
        return
    record_id = report.get("record_id")
    text = verdict_text(report, ctx.record_link(record_id) if record_id else None, recompressed=is_photo)
    await reply_to.reply(text)
    if report["verdict"] == "modified" and report.get("verification_id") and report.get("diff_url"):
        try:
            diff = await ctx.client.difference(report["verification_id"])
        except ServiceError:
            return  # another instance served the check: the link in the report still works there
        await reply_to.answer_photo(
            BufferedInputFile(diff, filename="difference.png"),
            caption="Where it differs from the certified original (red: changed; grey: not covered).",
        )


async def _follow_job(ctx: Context, bot: Bot, message: Message, job_id: str) -> None:
    """Edit one progress message as steps advance, then send each image: the document and a preview."""
    shown = "Queued: waiting for a worker..."
    progress = await message.answer(shown)
    deadline = time.monotonic() + ctx.job_timeout_s
    while True:
        try:
            job = await ctx.client.job(job_id)
        except ServiceError as exc:
            await message.answer(exc.sentence())
            return
        text = progress_text(job)
        if text != shown:
            with contextlib.suppress(TelegramAPIError):
                await bot.edit_message_text(text=text, chat_id=progress.chat.id, message_id=progress.message_id)
            shown = text
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            await message.answer("The generation is taking too long; I stop following it. /mine shows it later.")
            return
        await asyncio.sleep(ctx.job_poll_s)
    for record in job["records"]:
        data = await ctx.client.record_image(record["record_id"])
        link = ctx.record_link(record["record_id"])
        await message.answer_document(
            BufferedInputFile(data, filename=f"{record['record_id']}.png"),
            caption=f"Certified image (the signed PNG, bytes untouched). Record: {link}",
        )
        await message.answer_photo(
            BufferedInputFile(data, filename=f"{record['record_id']}-preview.png"),
            caption="Preview: Telegram recompresses photos, so only the document above verifies as authentic.",
        )
