"""Properties of quotes over generated valid orders and bookings (E4, V2, S1, PR1, API.md quote).

Orders are valid as API.md's order feed accepts them: non-negative amounts, ``paid_amount`` at
most ``list_price + shipping_fee`` and including the shipping, ``used_units`` at most
``total_units``, a completion between 0 and 1 with at most 4 decimal places.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.domain.model import (
    Gift,
    Order,
    OrderBooking,
    OrderKind,
    OrderStatus,
    PaymentChannel,
    PlatformFault,
    Reason,
    Usage,
)
from chalicelib.domain.policy import Quote, quote

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
REFUSAL_RULES = {"X1", "E1", "E2", "E3", "S1", "PR1", "E4", "PH1"}
BREAKDOWN_ITEMS = {
    "paid_amount",
    "shipping_not_refunded",
    "used_units",
    "service_completed",
    "gift_not_returned",
    "already_refunded",
}

# Small amounts find rounding edges (0, 1, 2 fen); large ones find overflow-free exactness.
fen = st.one_of(st.integers(0, 10), st.integers(0, 2_000_000))


@st.composite
def orders(draw: st.DrawFn) -> Order:
    kind = draw(st.sampled_from(OrderKind))
    list_price = draw(fen)
    shipping_fee = draw(st.integers(0, 2_000)) if kind is OrderKind.PHYSICAL else 0
    paid_for_goods = draw(st.integers(0, list_price))  # promotions pay below list (PR1)
    usage = None
    if kind is OrderKind.VIRTUAL and draw(st.booleans()):
        total = draw(st.one_of(st.integers(1, 5), st.integers(1, 100_000)))
        usage = Usage(total_units=total, used_units=draw(st.integers(0, total)))
    completion = Decimal(0)
    if kind is OrderKind.SERVICE:
        completion = Decimal(draw(st.integers(0, 10_000))).scaleb(-4)
    gifts = draw(
        st.lists(
            st.builds(Gift, sku=st.just("gift"), title=st.just("赠品"), value=fen),
            max_size=3,
        )
    )
    return Order(
        order_id="o-1",
        user_id="u-1",
        kind=kind,
        sku="sku-1",
        category="cat-1",
        list_price=list_price,
        paid_amount=paid_for_goods + shipping_fee,
        shipping_fee=shipping_fee,
        payment_channel=draw(st.sampled_from(PaymentChannel)),
        paid_at=NOW - timedelta(days=10),
        refund_deadline=NOW + timedelta(seconds=draw(st.integers(-3 * 86400, 30 * 86400))),
        status=draw(st.sampled_from(OrderStatus)),
        usage=usage,
        service_completion=completion,
        customized=kind is OrderKind.PHYSICAL and draw(st.booleans()),
        gifts=tuple(gifts),
        platform_fault=draw(st.none() | st.sampled_from(PlatformFault)),
    )


@st.composite
def orders_and_bookings(draw: st.DrawFn) -> tuple[Order, OrderBooking, str | None]:
    """An order, its booking (E4: committed total plus at most one open refund, never more
    than paid), and the refund asking (none, the open one, or another)."""
    order = draw(orders())
    refunded = draw(st.integers(0, order.paid_amount))
    booking = OrderBooking(refunded_total=refunded)
    if draw(st.booleans()):
        booking = OrderBooking(
            refunded_total=refunded,
            open_refund_id="rf_open",
            open_refund_amount=draw(st.integers(0, order.paid_amount - refunded)),
        )
    own = draw(st.sampled_from([None, "rf_open", "rf_other"]))
    return order, booking, own


reasons = st.sampled_from(Reason)


def _quote(order: Order, booking: OrderBooking, reason: Reason, gifts: bool, own=None) -> Quote:
    return quote(order, booking, reason=reason, gifts_returned=gifts, now=NOW, own_refund_id=own)


@settings(max_examples=200, deadline=None)
@given(orders_and_bookings(), reasons, st.booleans())
def test_e4_amount_is_never_negative_nor_above_what_is_left(case, reason, gifts_returned):
    """E4 / PR1 (property 1): GIVEN any valid order and booking WHEN quoted THEN
    0 <= amount <= paid_amount, and never above what the booking leaves."""
    order, booking, own = case

    result = _quote(order, booking, reason, gifts_returned, own)

    assert 0 <= result.amount <= order.paid_amount
    assert result.amount <= max(0, booking.remaining(order.paid_amount, own_refund_id=own))


@settings(max_examples=200, deadline=None)
@given(orders_and_bookings(), reasons, st.booleans())
def test_quote_breakdown_adds_up_and_refundable_iff_positive(case, reason, gifts_returned):
    """API.md quote (property 2): GIVEN any valid order and booking WHEN quoted THEN the
    breakdown adds up to the amount, `refundable` is exactly amount > 0, a refusal names one
    of the quote rules, and only API.md's item names appear (paid_amount first)."""
    order, booking, own = case

    result = _quote(order, booking, reason, gifts_returned, own)

    assert sum(item.amount for item in result.breakdown) == result.amount
    assert result.refundable == (result.amount > 0)
    if result.refundable:
        assert result.rule is None
        assert result.breakdown[0].item == "paid_amount"
        assert result.breakdown[0].amount == order.paid_amount
        assert all(item.amount < 0 for item in result.breakdown[1:])
        assert {item.item for item in result.breakdown} <= BREAKDOWN_ITEMS
    else:
        assert result.rule in REFUSAL_RULES
        assert result.breakdown == ()
        assert result.payout_channels == ()


@settings(max_examples=200, deadline=None)
@given(orders(), st.lists(st.tuples(reasons, st.booleans()), min_size=1, max_size=6))
def test_e4_successive_refunds_never_sum_above_paid(order, attempts):
    """E4 (property 3): GIVEN an order WHEN refunds follow one another, each quoted against
    the booking the previous ones left (book the quoted amount as the open refund, re-quote
    it as its own, then settle it into the committed total) THEN their sum never exceeds
    paid_amount, and while one is open any other refund is refused with E4."""
    booking = OrderBooking()
    paid_out = 0
    for number, (reason, gifts_returned) in enumerate(attempts):
        refund_id = f"rf_{number}"
        offered = _quote(order, booking, reason, gifts_returned, refund_id)
        if not offered.refundable:
            continue
        booking = OrderBooking(booking.refunded_total, refund_id, offered.amount)

        assert _quote(order, booking, reason, gifts_returned, refund_id).amount == offered.amount
        assert _quote(order, booking, reason, gifts_returned, "rf_else").rule == "E4"

        booking = OrderBooking(refunded_total=booking.refunded_total + offered.amount)
        paid_out += offered.amount
        assert paid_out <= order.paid_amount
    assert booking.refunded_total == paid_out <= order.paid_amount


@settings(max_examples=200, deadline=None)
@given(orders_and_bookings(), reasons, st.booleans(), st.booleans())
def test_amounts_are_always_int_fen(case, reason, gifts_returned, reason_defaulted):
    """V2 / S1 (POLICY money, property 4): GIVEN any quote WHEN ratios are involved THEN the
    amount and every breakdown amount are plain ints (no float, Decimal or bool)."""
    order, booking, own = case

    result = quote(
        order,
        booking,
        reason=reason,
        gifts_returned=gifts_returned,
        now=NOW,
        own_refund_id=own,
        reason_defaulted=reason_defaulted,
    )

    assert type(result.amount) is int
    assert all(type(item.amount) is int for item in result.breakdown)
