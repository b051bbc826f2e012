"""The bot's settings: read from ``PROVENANCE_*`` variables, kept apart from the service's own settings."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

TELEGRAM_API_URL = "https://api.telegram.org"
_TOKEN = re.compile(r"^\d+:[A-Za-z0-9_-]{20,}$")


class BotConfigError(Exception):
    """A setting is missing or unsafe: the bot does not start (the CLI prints one line, exit code 2)."""


class BotSettings(BaseSettings):
    """Everything the bot reads from its environment (prefix ``PROVENANCE_``)."""

    model_config = SettingsConfigDict(env_prefix="PROVENANCE_", extra="ignore")

    telegram_token: SecretStr | None = None
    telegram_token_file: Path | None = None
    telegram_api_url: str = TELEGRAM_API_URL
    # Set: the bot serves POST /telegram/webhook and registers this URL with setWebhook; unset: long polling.
    telegram_webhook_url: str | None = None
    # The X-Telegram-Bot-Api-Secret-Token value; unset: a random one for each start (setWebhook sends it anew).
    telegram_webhook_secret: SecretStr | None = None
    telegram_webhook_host: str = "0.0.0.0"
    telegram_webhook_port: int = 8081
    bot_service_url: str = "http://127.0.0.1:8000"
    # Where users open records; the service's URL unless the bot reaches the service by an internal name.
    bot_public_url: str | None = None
    bot_data_dir: Path = Path.home() / ".provenance-bot"
    # Messages one Telegram user may send the bot in a minute (the service's quotas come on top).
    bot_rate_per_min: int = 20
    bot_job_poll_s: float = 0.5
    bot_job_timeout_s: float = 1800.0

    def token(self) -> str:
        """The bot token, from the setting or the 0600 file; refuses a world- or group-readable file."""
        if self.telegram_token is not None:
            value = self.telegram_token.get_secret_value().strip()
        elif self.telegram_token_file is not None:
            path = self.telegram_token_file
            try:
                mode = path.stat().st_mode
            except OSError as exc:
                raise BotConfigError(f"PROVENANCE_TELEGRAM_TOKEN_FILE {path}: {exc.strerror}.") from None
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise BotConfigError(
                    f"PROVENANCE_TELEGRAM_TOKEN_FILE {path} is readable by others (mode {stat.S_IMODE(mode):o}): "
                    f"chmod 600 {path}."
                )
            value = path.read_text().strip()
        else:
            raise BotConfigError("Set PROVENANCE_TELEGRAM_TOKEN or PROVENANCE_TELEGRAM_TOKEN_FILE (from BotFather).")
        if not _TOKEN.match(value):
            raise BotConfigError("The Telegram token is not of the form 123456:ABC... that BotFather gives.")
        return value

    @property
    def service_url(self) -> str:
        """The service's base URL without a trailing slash."""
        return self.bot_service_url.rstrip("/")

    @property
    def public_url(self) -> str:
        """The base of the links users get."""
        return (self.bot_public_url or self.bot_service_url).rstrip("/")

    def data_dir(self) -> Path:
        """The bot's own folder (links and their key), created private."""
        path = self.bot_data_dir.expanduser()
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return path
