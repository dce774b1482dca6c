"""Working days on the mainland-China calendar, and the promises counted in them (R2, P1, X2).

Public holidays and adjusted working weekends come from a table the adapters supply (a
maintained library); for years it does not know, Monday to Friday; configured overrides win
over both. Deadlines end at 23:59:59 Asia/Shanghai, as API.md's "Schedules" defines them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from .days import SHANGHAI, shanghai_day

__all__ = [
    "PAYOUT_WORKING_DAYS",
    "REVIEW_WORKING_DAYS",
    "WorkingCalendar",
    "end_of_day",
]

REVIEW_WORKING_DAYS = 3
"""R2: a review completes within 3 working days of submission."""
PAYOUT_WORKING_DAYS = 5
"""X2: a payout to Alipay or WeChat Pay arrives within 5 working days."""

KnownDay = Callable[[date], bool | None]
"""True for a working day, False for a day off, None where the table knows nothing."""


def _no_table(day: date) -> bool | None:
    return None


def end_of_day(day: date) -> datetime:
    """23:59:59 Asia/Shanghai of ``day``."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=SHANGHAI)


@dataclass(frozen=True)
class WorkingCalendar:
    known: KnownDay = _no_table
    holidays: frozenset[date] = field(default_factory=frozenset)
    """Configured days off, whatever the table says."""
    working_days: frozenset[date] = field(default_factory=frozenset)
    """Configured working days, whatever the table says."""

    def is_working_day(self, day: date) -> bool:
        if day in self.holidays:
            return False
        if day in self.working_days:
            return True
        known = self.known(day)
        return known if known is not None else day.weekday() < 5

    def working_days_after(self, day: date, count: int) -> date:
        """The ``count``-th working day after ``day`` (``day`` itself does not count)."""
        found = 0
        while found < count:
            day += timedelta(days=1)
            if self.is_working_day(day):
                found += 1
        return day

    def review_due(self, submitted_at: datetime) -> datetime:
        """R2: 23:59:59 Shanghai on the 3rd working day after the day of submission."""
        day = self.working_days_after(shanghai_day(submitted_at), REVIEW_WORKING_DAYS)
        return end_of_day(day)

    def payout_due(self, promised_at: datetime) -> datetime:
        """X2: the end of the 5th working day after the payout promise started."""
        day = self.working_days_after(shanghai_day(promised_at), PAYOUT_WORKING_DAYS)
        return end_of_day(day)

    def second_level_at(self, due_at: datetime) -> datetime:
        """X2: still overdue at 23:59:59 of the first working day after the due day: level 2."""
        return end_of_day(self.working_days_after(shanghai_day(due_at), 1))
