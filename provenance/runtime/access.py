"""Access builder: accounts (and the admin account the CLI acts as), rate limits and quotas, the pixel budget."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from provenance.auth import AccountRepository, Limits, bootstrap_admin, open_limiter
from provenance.config import Settings
from provenance.media.budget import PixelBudget


@dataclass(frozen=True)
class Access:
    """Who may call, how often, and how many pixels are decoded at once."""

    accounts: AccountRepository
    admin_account_id: str  # the account behind <data_dir>/admin.key; the CLI acts as it
    limits: Limits
    pixel_budget: PixelBudget  # pixels decoded at once (provenance/media/budget.py)


def open_access(settings: Settings, sessions: sessionmaker[Session], opened: contextlib.ExitStack) -> Access:
    """Bootstrap the admin account, open the limiter (Redis when REDIS_URL is set) and the pixel budget.

    One of several ``serve`` worker processes (``settings.workers`` > 1) takes its share of the pixel
    budget, so the processes together hold at most the configured budget, and without Redis counts
    rate limits and quotas in ``<data_dir>/ratelimit.db``, which all of them share (see
    docs/operations.md, "Several worker processes"). The limiter is closed through ``opened`` if a
    later step fails.
    """
    accounts = AccountRepository(sessions)
    admin_account_id = bootstrap_admin(accounts, settings.resolved_data_dir)
    processes = settings.workers or 1
    shared = settings.resolved_data_dir / "ratelimit.db" if processes > 1 else None
    limits = Limits(settings, open_limiter(settings.redis_url, shared))
    opened.callback(limits.limiter.close)
    pixel_budget = PixelBudget(
        max(1, settings.pixel_budget // processes),
        wait_s=settings.pixel_budget_wait_s,
        client_share=settings.pixel_budget_client_share,
        small_reserve=settings.pixel_budget_small_reserve,
    )
    return Access(accounts, admin_account_id, limits, pixel_budget)
