"""Opaque, time-ordered ids: a prefix and a ULID (48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["UlidGenerator"]

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class UlidGenerator:
    """ULIDs from the wall clock, strictly increasing within this process.

    A ULID is 26 characters of Crockford base32, ordered by creation time; within one
    millisecond the random part is incremented, so ids minted here never tie or go back.
    Hand-written in a few lines: the ULID packages on PyPI cost tens of milliseconds of
    import time, which every cold start would pay.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def new_id(self, prefix: str) -> str:
        with self._lock:
            millis = time.time_ns() // 1_000_000
            value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
            if value <= self._last:
                value = self._last + 1
            self._last = value
        return prefix + _encode(value, 26)
