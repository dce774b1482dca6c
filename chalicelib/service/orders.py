"""Orders fed in by the order system, and the quote of what an order would refund (F4)."""

from __future__ import annotations

from datetime import timedelta

from chalicelib.domain.model import Order, OrderBooking, Reason, RefundStatus
from chalicelib.domain.policy import Quote, quote
from chalicelib.domain.transitions import TERMINAL
from chalicelib.domain.workflow import Step

from .exceptions import NotFound
from .ports import Ports, StoredOrder
from .workflow import StepOutcome, attempt

__all__ = [
    "current_booking",
    "get_owned_order",
    "handle_order_event",
    "quote_order",
    "upsert_order",
]


def upsert_order(ports: Ports, order: Order) -> StoredOrder:
    """Store the order system's view of an order; a lower version than stored is ignored."""
    return ports.orders.upsert(order)


def handle_order_event(ports: Ports, order: Order, received: int) -> StepOutcome:
    """An order the order system sent as a message (the ``order-events`` step)."""
    return attempt(ports, Step.ORDER_EVENTS, None, received, lambda: upsert_order(ports, order))


def get_owned_order(ports: Ports, user_id: str, order_id: str) -> StoredOrder:
    stored = ports.orders.get(order_id)
    if stored is None or stored.order.user_id != user_id:
        raise NotFound("order", order_id)
    return stored


def current_booking(
    ports: Ports, stored: StoredOrder, *, repair: bool, own_refund_id: str | None = None
) -> OrderBooking:
    """The order's booking, with a stale open refund treated as settled (E4).

    The order's open refund is released after the refund itself turned terminal, in a
    second write; a create can also die between booking the order and storing the refund.
    Either leaves a booking that no live refund holds. It is recognised here, from the
    refund item (the source of truth), and settled when ``repair`` is set.
    """
    booking = stored.booking
    open_id = booking.open_refund_id
    if open_id is None or open_id == own_refund_id:
        return booking  # nothing open, or the caller's own create, which it will complete
    refund = ports.refunds.get(open_id)
    if refund is None:
        lease = timedelta(seconds=ports.config.idempotency_lease_seconds)
        booked_at = stored.booked_at
        now = ports.clock.wall_now()
        if booked_at is not None and now - booked_at < lease:
            return booking
        # Fence the id first: a create that is only slow, not dead, can then never store its
        # refund after the booking is released (E4).
        if repair and not ports.refunds.abandon(open_id, now):
            return booking
        paid = 0
    elif refund.status in TERMINAL:
        paid = (refund.approved_amount or 0) if refund.status is RefundStatus.PAID else 0
    else:
        return booking
    if repair:
        order = stored.order
        ports.orders.settle_refund(order.order_id, open_id, paid, paid_limit=order.paid_amount)
    return OrderBooking(refunded_total=booking.refunded_total + paid)


def quote_order(
    ports: Ports,
    user_id: str,
    order_id: str,
    *,
    reason: Reason,
    gifts_returned: bool,
    reason_defaulted: bool,
) -> Quote:
    stored = get_owned_order(ports, user_id, order_id)
    return quote(
        stored.order,
        current_booking(ports, stored, repair=False),
        reason=reason,
        gifts_returned=gifts_returned,
        now=ports.clock.now(),
        reason_defaulted=reason_defaulted,
    )
