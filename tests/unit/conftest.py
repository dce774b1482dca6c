"""Builders for the domain unit tests: orders, bookings, refunds and quotes with sane defaults.

The builders are served as fixtures (not imported from this module) so that the unit suite
does not depend on how ``conftest`` modules of other test folders are named or imported.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain import model
from chalicelib.domain.policy import Quote, quote

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
"""The business clock of every unit test: a fixed, timezone-aware UTC instant."""


def build_order(**overrides: Any) -> model.Order:
    """A paid, delivered, unused virtual order of 100.00 CNY, refundable for a week."""
    fields: dict[str, Any] = {
        "order_id": "o-1001",
        "user_id": "u-1",
        "kind": model.OrderKind.VIRTUAL,
        "sku": "steam-100",
        "category": "game-card",
        "list_price": 10000,
        "paid_amount": 10000,
        "payment_channel": model.PaymentChannel.ALIPAY,
        "paid_at": NOW - timedelta(days=2),
        "refund_deadline": NOW + timedelta(days=7),
        "status": model.OrderStatus.DELIVERED,
    }
    fields.update(overrides)
    return model.Order(**fields)


def build_refund(**overrides: Any) -> model.Refund:
    """A refund in ``draft`` of the default order, with no history yet."""
    order = overrides.pop("order", None) or build_order()
    fields: dict[str, Any] = {
        "refund_id": "rf_01",
        "order": order,
        "status": model.RefundStatus.DRAFT,
        "reason": model.Reason.INVALID_CODE,
        "description": "订单 o-1001 的点卡到账后提示序列号无效，要求全额退款",
        "amount": order.paid_amount,
        "payout_channel": model.PayoutChannel.ORIGINAL,
        "channel": order.payment_channel,
        "gifts_returned": True,
        "fast_track": False,
        "needs_return": False,
        "created_at": NOW - timedelta(hours=1),
        "updated_at": NOW - timedelta(hours=1),
    }
    fields.update(overrides)
    return model.Refund(**fields)


def quote_of(
    order: model.Order,
    reason: model.Reason = model.Reason.CHANGED_MIND,
    *,
    booking: model.OrderBooking | None = None,
    gifts_returned: bool = True,
    now: datetime = NOW,
    **kwargs: Any,
) -> Quote:
    """``policy.quote`` with the defaults of the quote route: no earlier refunds, gifts back."""
    return quote(
        order,
        booking or model.OrderBooking(),
        reason=reason,
        gifts_returned=gifts_returned,
        now=now,
        **kwargs,
    )


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def make_order() -> Callable[..., model.Order]:
    return build_order


@pytest.fixture
def make_refund() -> Callable[..., model.Refund]:
    return build_refund


@pytest.fixture
def quote_for() -> Callable[..., Quote]:
    return quote_of
