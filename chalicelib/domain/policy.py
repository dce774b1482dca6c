"""The refund policy of POLICY.md as pure functions over plain data.

A quote answers, for one order and reason, whether a refund is possible, how much would come
back and why, what evidence is needed and where the money can go. Every refusal names the
first rule that applies, in the order API.md fixes: X1, E1, E2, E3, S1, PR1, E4.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

from .model import (
    QUALITY_REASONS,
    EvidenceKind,
    Order,
    OrderBooking,
    OrderKind,
    OrderStatus,
    PayoutChannel,
    Reason,
)
from .money import share_of, share_remaining

__all__ = [
    "BreakdownItem",
    "Quote",
    "description_problem",
    "is_fast_track",
    "missing_evidence",
    "quote",
    "required_evidence",
]

K = EvidenceKind


@dataclass(frozen=True)
class BreakdownItem:
    item: str
    amount: int


@dataclass(frozen=True)
class Quote:
    order_id: str
    refundable: bool
    rule: str | None
    message: str
    amount: int
    breakdown: tuple[BreakdownItem, ...]
    required_evidence: tuple[EvidenceKind, ...]
    needs_return: bool
    payout_channels: tuple[PayoutChannel, ...]


def is_fast_track(order: Order, reason: Reason) -> bool:
    """O2: the order system reported its own fault, and the refund claims exactly that."""
    return order.platform_fault is not None and order.platform_fault.value == reason.value


def _partly_used(order: Order) -> bool:
    return order.usage is not None and 0 < order.usage.used_units < order.usage.total_units


def required_evidence(order: Order, reason: Reason) -> tuple[EvidenceKind, ...]:
    """F2: every evidence kind the refund needs before it can be submitted."""
    if is_fast_track(order, reason):
        return ()
    if order.kind is OrderKind.SERVICE:
        return (K.ORDER_SCREENSHOT, K.CHAT_RECORD)
    if order.kind is OrderKind.PHYSICAL:
        if reason in QUALITY_REASONS:
            return (K.ORDER_SCREENSHOT, K.DEFECT_PHOTO)
        return (K.ORDER_SCREENSHOT,)
    if reason is Reason.CHANGED_MIND:
        return (K.ORDER_SCREENSHOT,)
    if _partly_used(order):
        return (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT, K.USAGE_RECORD)
    return (K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT)


def missing_evidence(
    order: Order, reason: Reason, uploaded: set[EvidenceKind]
) -> list[EvidenceKind]:
    """F2: the required kinds with no uploaded, checked evidence yet, in F2's order."""
    return [kind for kind in required_evidence(order, reason) if kind not in uploaded]


def _needs_return(order: Order, reason: Reason) -> bool:
    """PH1: physical goods that left the warehouse come back before the money does.

    Not on the fast track: a platform fault is paid first, with no human step (O2).
    """
    return (
        order.kind is OrderKind.PHYSICAL
        and order.status in (OrderStatus.SHIPPED, OrderStatus.DELIVERED)
        and not is_fast_track(order, reason)
    )


def _refusal(order: Order, reason: Reason, rule: str, message: str) -> Quote:
    return Quote(
        order_id=order.order_id,
        refundable=False,
        rule=rule,
        message=message,
        amount=0,
        breakdown=(),
        required_evidence=required_evidence(order, reason),
        needs_return=_needs_return(order, reason),
        payout_channels=(),
    )


def _eligibility_refusal(order: Order, reason: Reason, now: datetime) -> tuple[str, str] | None:
    """The first of X1, E1, E2, E3, S1 that refuses the order, as (rule, message)."""
    fast_track = is_fast_track(order, reason)
    if order.status is OrderStatus.COMPLETED:
        return "X1", (
            "The order is marked completed (for example its code was issued), so it cannot be "
            "applied for; customer service can correct its status first."
        )
    if order.status is OrderStatus.CANCELLED:
        return "E1", "The order was cancelled, so there is no payment to refund."
    if order.paid_amount == 0:
        return "E1", "Nothing was paid for this order, so there is nothing to refund."
    if not fast_track:
        usage = order.usage
        if order.kind is OrderKind.VIRTUAL and usage and usage.used_units >= usage.total_units:
            return "E2", "The virtual goods have been fully used, so they cannot be refunded."
        if now >= order.refund_deadline:
            return "E2", "The refund deadline of this order has passed."
    if (
        order.kind is OrderKind.PHYSICAL
        and order.customized
        and reason not in QUALITY_REASONS
        and not fast_track
    ):
        return "E3", "Customised goods can be refunded only for a quality problem."
    if (
        order.kind is OrderKind.SERVICE
        and order.service_completion >= Decimal(1)
        and not fast_track
    ):
        return "S1", "The service has been fully delivered, so nothing is left to refund."
    return None


def _policy_breakdown(order: Order, reason: Reason) -> list[BreakdownItem]:
    """V1, V2, PH1, S1 (and O2): the amount before gifts and earlier refunds."""
    paid = order.paid_amount
    items = [BreakdownItem("paid_amount", paid)]
    if is_fast_track(order, reason):
        return items
    if order.kind is OrderKind.VIRTUAL and order.usage and _partly_used(order):
        kept = share_of(paid, order.usage.remaining_units, order.usage.total_units)
        items.append(BreakdownItem("used_units", kept - paid))
    elif order.kind is OrderKind.PHYSICAL:
        if _needs_return(order, reason) and reason not in QUALITY_REASONS and order.shipping_fee:
            items.append(BreakdownItem("shipping_not_refunded", -order.shipping_fee))
    elif order.kind is OrderKind.SERVICE and order.service_completion > 0:
        kept = share_remaining(paid, order.service_completion)
        items.append(BreakdownItem("service_completed", kept - paid))
    return items


def _total(items: list[BreakdownItem]) -> int:
    return sum(item.amount for item in items)


_NOTHING_LEFT = {
    "used_units": (
        "E2",
        "What is left of the virtual goods is worth less than one fen, so they cannot be refunded.",
    ),
    "service_completed": (
        "S1",
        "What is left of the service is worth less than one fen, so nothing is left to refund.",
    ),
    "shipping_not_refunded": (
        "PH1",
        "Without a quality problem the shipping fee is not refunded, and it is everything "
        "paid for this order.",
    ),
}
"""The refusal when a policy deduction leaves nothing: the rule that made the deduction."""

_DEFAULT_REASON_NOTE = " Quoted for the reason changed_mind, the default; pass reason= for another."


def quote(
    order: Order,
    booking: OrderBooking,
    *,
    reason: Reason,
    gifts_returned: bool,
    now: datetime,
    own_refund_id: str | None = None,
    reason_defaulted: bool = False,
) -> Quote:
    """What a refund of ``order`` for ``reason`` would pay back, or which rule refuses it.

    ``own_refund_id`` names a refund whose booking on the order is its own (a create being
    completed), so that it does not count against itself (E4). ``reason_defaulted`` says the
    caller gave no reason: every message, a refusal's too, then says so (API.md quote).
    """
    result = _quote(order, booking, reason, gifts_returned, now, own_refund_id)
    if reason_defaulted:
        return replace(result, message=result.message + _DEFAULT_REASON_NOTE)
    return result


def _quote(
    order: Order,
    booking: OrderBooking,
    reason: Reason,
    gifts_returned: bool,
    now: datetime,
    own_refund_id: str | None,
) -> Quote:
    refusal = _eligibility_refusal(order, reason, now)
    if refusal:
        return _refusal(order, reason, *refusal)

    items = _policy_breakdown(order, reason)
    if len(items) > 1 and _total(items) <= 0:
        # API.md: refundable exactly when amount > 0. Rounding down to the fen (V2, S1), or
        # shipping that was all the user paid (PH1), can leave nothing: that is a refusal.
        return _refusal(order, reason, *_NOTHING_LEFT[items[-1].item])
    gift_value = sum(gift.value for gift in order.gifts)
    if gift_value and not gifts_returned and not is_fast_track(order, reason):
        items.append(BreakdownItem("gift_not_returned", -min(gift_value, _total(items))))
        if _total(items) <= 0:
            return _refusal(
                order,
                reason,
                "PR1",
                "The gifts kept from this order are worth the whole refund; return them to "
                "get money back.",
            )

    open_elsewhere = booking.open_refund_id not in (None, own_refund_id)
    left = booking.remaining(order.paid_amount, own_refund_id=own_refund_id)
    if open_elsewhere:
        return _refusal(order, reason, "E4", "A refund for this order is already open.")
    if left <= 0:
        return _refusal(order, reason, "E4", "Everything paid for this order was refunded.")
    if _total(items) > left:
        items.append(BreakdownItem("already_refunded", left - _total(items)))

    amount = _total(items)
    needs_return = _needs_return(order, reason)
    message = f"Refundable: {amount} fen back."
    if needs_return:
        message += " The goods must be sent back first (PH1)."
    return Quote(
        order_id=order.order_id,
        refundable=True,
        rule=None,
        message=message,
        amount=amount,
        breakdown=tuple(items),
        required_evidence=required_evidence(order, reason),
        needs_return=needs_return,
        payout_channels=(PayoutChannel.ORIGINAL, PayoutChannel.BALANCE),
    )


VAGUE_PHRASES = ("不好用", "没效果", "不能用", "有问题", "doesn't work", "no effect", "bad")
_NOT_COUNTED = re.compile(r"[\s\W_]+", re.UNICODE)
MIN_DESCRIPTION_CHARS = 10


def description_problem(description: str) -> str | None:
    """F3: why a description is not specific enough, in words the user can act on, or None."""
    text = description.strip().lower().replace("\u2019", "'")  # "doesn’t" as phones type it
    remainder = text
    for phrase in sorted(VAGUE_PHRASES, key=len, reverse=True):
        remainder = remainder.replace(phrase, " ")
    if not _NOT_COUNTED.sub("", remainder):
        return (
            "The description only says the product does not work. Add what happened (the fact), "
            "what your evidence shows, and what you ask for (F3)."
        )
    if len(_NOT_COUNTED.sub("", text)) < MIN_DESCRIPTION_CHARS:
        return (
            f"The description is too short: write at least {MIN_DESCRIPTION_CHARS} characters "
            "with what happened, what your evidence shows, and what you ask for (F3)."
        )
    return None
