"""Clocks: the wall clock, and the business clock that the local stage can set."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["SystemClock"]


class SystemClock:
    """Both clocks are the wall clock: deployed stages."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wall_now(self) -> datetime:
        return datetime.now(UTC)
