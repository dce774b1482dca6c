"""Clocks: the wall clock, and the business clock that the local stage can set."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["SettableClock", "SystemClock"]


class SystemClock:
    """Both clocks are the wall clock: deployed stages."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wall_now(self) -> datetime:
        return datetime.now(UTC)


class SettableClock(SystemClock):
    """The local stage's business clock: set or moved on, it keeps ticking from there; the
    wall clock (token expiry, leases, ids) stays real (API.md, two clocks)."""

    def __init__(self) -> None:
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + self._offset

    def set(self, now: datetime) -> datetime:
        with self._lock:
            self._offset = now - datetime.now(UTC)
        return self.now()

    def advance(self, by: timedelta) -> datetime:
        with self._lock:
            self._offset += by
        return self.now()

    def reset(self) -> datetime:
        with self._lock:
            self._offset = timedelta(0)
        return self.now()
