"""Running the bot: long polling by default, or a webhook served by an aiohttp app when one is set."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from provenance_bot import redact
from provenance_bot.client import ServiceClient
from provenance_bot.handlers import Context, build_router
from provenance_bot.ratelimit import RateLimiter
from provenance_bot.settings import BotSettings
from provenance_bot.store import LinkStore

WEBHOOK_PATH = "/telegram/webhook"
log = logging.getLogger("provenance_bot")


def build(settings: BotSettings, token: str) -> tuple[Bot, Dispatcher, Context]:
    """The bot (calling ``{API_URL}/bot{TOKEN}/{method}``), its dispatcher and the shared context."""
    session = AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
    bot = Bot(token, session=session)
    ctx = Context(
        client=ServiceClient(settings.service_url),
        store=LinkStore(settings.data_dir()),
        public_url=settings.public_url,
        job_poll_s=settings.bot_job_poll_s,
        job_timeout_s=settings.bot_job_timeout_s,
    )
    dispatcher = Dispatcher()
    dispatcher.include_router(build_router(ctx, RateLimiter(settings.bot_rate_per_min)))
    return bot, dispatcher, ctx


async def _polling(bot: Bot, dispatcher: Dispatcher) -> None:
    await bot.delete_webhook(drop_pending_updates=False)  # getUpdates is refused while a webhook is set
    await dispatcher.start_polling(bot, polling_timeout=10, handle_signals=True)


async def _healthz(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _webhook(settings: BotSettings, bot: Bot, dispatcher: Dispatcher) -> None:
    from aiogram.webhook.aiohttp_server import SimpleRequestHandler, setup_application

    secret = (
        settings.telegram_webhook_secret.get_secret_value()
        if settings.telegram_webhook_secret
        else secrets.token_urlsafe(32)
    )
    app = web.Application()
    # Requests without Telegram's X-Telegram-Bot-Api-Secret-Token header equal to the secret get 401.
    SimpleRequestHandler(dispatcher=dispatcher, bot=bot, secret_token=secret).register(app, path=WEBHOOK_PATH)
    app.router.add_get("/healthz", _healthz)
    setup_application(app, dispatcher, bot=bot)
    assert settings.telegram_webhook_url is not None
    await bot.set_webhook(settings.telegram_webhook_url, secret_token=secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, settings.telegram_webhook_host, settings.telegram_webhook_port)
    await site.start()
    log.info("webhook served on %s:%s%s", settings.telegram_webhook_host, settings.telegram_webhook_port, WEBHOOK_PATH)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


async def run(settings: BotSettings) -> None:
    """Run until interrupted. The token is read here and masked in every log line from now on."""
    token = settings.token()
    redact.install(token)
    bot, dispatcher, ctx = build(settings, token)
    me = await bot.get_me()
    mode = "webhook" if settings.telegram_webhook_url else "long polling"
    log.info("bot @%s started (%s), service %s", me.username, mode, settings.service_url)
    try:
        if settings.telegram_webhook_url:
            await _webhook(settings, bot, dispatcher)
        else:
            await _polling(bot, dispatcher)
    finally:
        await ctx.client.close()
        ctx.store.close()
        await bot.session.close()


def main(settings: BotSettings | None = None) -> None:
    """Entry point of ``provenance bot``."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(settings or BotSettings()))
