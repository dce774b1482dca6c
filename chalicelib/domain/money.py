"""Money is an integer number of fen; ratios are exact and round down to the fen (POLICY.md)."""

from __future__ import annotations

from decimal import ROUND_FLOOR, Decimal

__all__ = ["share_of", "share_remaining"]


def share_of(amount: int, numerator: int, denominator: int) -> int:
    """``amount * numerator / denominator`` rounded down to the fen, in integers (V2)."""
    if denominator <= 0:
        raise ArithmeticError("denominator must be positive")
    return amount * numerator // denominator


def share_remaining(amount: int, done: Decimal) -> int:
    """``amount * (1 - done)`` in exact decimals, rounded down to the fen (S1)."""
    exact = Decimal(amount) * (Decimal(1) - done)
    return int(exact.to_integral_value(rounding=ROUND_FLOOR))
