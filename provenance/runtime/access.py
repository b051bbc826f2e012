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

    The limiter is closed through ``opened`` if a later step fails.
    """
    accounts = AccountRepository(sessions)
    admin_account_id = bootstrap_admin(accounts, settings.resolved_data_dir)
    limits = Limits(settings, open_limiter(settings.redis_url))
    opened.callback(limits.limiter.close)
    pixel_budget = PixelBudget(
        settings.pixel_budget,
        wait_s=settings.pixel_budget_wait_s,
        client_share=settings.pixel_budget_client_share,
        small_reserve=settings.pixel_budget_small_reserve,
    )
    return Access(accounts, admin_account_id, limits, pixel_budget)
