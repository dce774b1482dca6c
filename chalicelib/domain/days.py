"""Days as the platform counts them: Asia/Shanghai (UTC+8, no daylight saving since 1991)."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

__all__ = ["SHANGHAI", "shanghai_day"]

SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
"""A fixed offset: Lambda's runtimes need not ship the tz database, and China keeps UTC+8."""


def shanghai_day(at: datetime) -> date:
    """The Asia/Shanghai calendar day of ``at`` (an aware time)."""
    return at.astimezone(SHANGHAI).date()
