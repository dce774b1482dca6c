"""Money: integer fen, exact ratios, always rounded down to the fen (POLICY.md, V2, S1)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from chalicelib.domain.money import share_of, share_remaining


@pytest.mark.parametrize(
    ("amount", "numerator", "denominator", "expected"),
    [
        (1000, 1, 3, 333),  # 333.33... rounds down
        (1000, 2, 3, 666),  # 666.66... rounds down, never up to 667
        (10000, 100, 100, 10000),
        (10000, 0, 100, 0),
        (8800, 37, 100, 3256),
        (1, 1, 2, 0),  # half a fen is no fen
        (999_999_999_999, 1, 7, 142_857_142_857),  # big amounts stay exact (no float)
    ],
)
def test_v2_share_of_rounds_down_to_the_fen(amount, numerator, denominator, expected):
    """V2: GIVEN paid x remaining / total WHEN not a whole fen THEN it is rounded down."""
    result = share_of(amount, numerator, denominator)

    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize("denominator", [0, -1])
def test_v2_share_of_refuses_a_non_positive_denominator(denominator):
    """V2: GIVEN zero or negative total units WHEN a share is asked THEN it is an error."""
    with pytest.raises(ArithmeticError):
        share_of(1000, 1, denominator)


@pytest.mark.parametrize(
    ("amount", "done", "expected"),
    [
        (1000, "0.3333", 666),  # 1000 x 0.6667 = 666.7 -> 666
        (1000, "0.5", 500),
        (1000, "0", 1000),
        (1000, "1", 0),
        (999, "0.5", 499),  # 499.5 -> 499
        (1, "0.9999", 0),  # 0.0001 fen -> 0
        (10000, "0.0001", 9999),  # exact: 9999.0000, not 9998.99999...
        (8800, "0.1", 7920),  # 0.1 is exact as a decimal (a float would give 7919.99...)
    ],
)
def test_s1_share_remaining_uses_exact_decimals_and_rounds_down(amount, done, expected):
    """S1: GIVEN a completion with up to 4 decimals WHEN paid x (1 - completion) THEN it is
    exact decimal arithmetic rounded down to the fen."""
    result = share_remaining(amount, Decimal(done))

    assert result == expected
    assert type(result) is int
