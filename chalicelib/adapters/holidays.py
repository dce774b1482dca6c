"""The mainland-China holiday table, from the maintained ``chinesecalendar`` package."""

from __future__ import annotations

from datetime import date

__all__ = ["china_working_day"]


def china_working_day(day: date) -> bool | None:
    """Whether ``day`` is a working day by the State Council's notices; None for years the
    package does not know yet (it raises for them; the calendar then falls back)."""
    import chinese_calendar

    try:
        return bool(chinese_calendar.is_workday(day))
    except NotImplementedError:
        return None
