"""The Telegram bot: a thin client of the provenance service's public HTTP API.

It imports nothing from ``provenance`` (tests/e2e/test_telegram_bot.py checks it), so it can run on another
machine than the service: everything it knows about records, jobs and verdicts comes over HTTP.
"""
