"""Promised times kept, or owned up to (R2, X2, X4): the escalation sweep, the closing of
stale refunds, and the user's nudge.

The sweeps read sparse indexes keyed by when each refund is due (``escalate-overdue`` every
15 minutes, ``close-stale`` every hour), so a run costs what is due, never the table. Each
change is judged again on the refund as stored, under its optimistic lock, so two runs at
once, or a run and a nudge, never escalate or close anything twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.model import Action, Message, PaymentChannel, Refund, RefundStatus
from chalicelib.domain.promises import (
    NUDGE_INTERVAL,
    Escalation,
    escalate,
    next_escalation,
    stale_at,
)
from chalicelib.domain.transitions import allowed, record
from chalicelib.domain.workflow import finish_step

from .changes import SYSTEM, attach_message, get_owned, new_message, on_fresh_state
from .exceptions import Conflict, NudgeTooSoon
from .ports import Ports

__all__ = ["NudgeAnswer", "close_stale", "escalate_overdue", "nudge"]

log = logging.getLogger("refunds.promises")

PAGE = 100
MAX_PAGES = 20
"""A run handles at most this many pages; the next run (15 minutes on) takes the rest."""


@dataclass(frozen=True)
class NudgeAnswer:
    escalated: bool
    review_due_at: datetime | None
    payout_due_at: datetime | None
    message: str


def escalate_overdue(ports: Ports, now: datetime) -> int:
    """X2: raise every refund whose promise ran out at ``now``; how many were raised."""
    return _each_due(ports.refunds.list_escalations_due, lambda r: _escalate(ports, r, now), now)


def _each_due(
    list_due: Callable[[datetime, int], list[Refund]],
    handle: Callable[[str], int],
    now: datetime,
) -> int:
    """Handle every refund a due index lists at ``now``, a page at a time; how many changed.
    A handled refund leaves the index (or moves past ``now``), so each page is a fresh one."""
    changed = 0
    for _ in range(MAX_PAGES):
        due = list_due(now, PAGE)
        for refund in due:
            changed += handle(refund.refund_id)
        if len(due) < PAGE:
            break
    return changed


def _escalate(ports: Ports, refund_id: str, now: datetime) -> int:
    def change() -> tuple[Refund, Message] | None:
        refund = ports.refunds.get(refund_id)
        if refund is None:
            return None
        raised = escalate(refund, ports.calendar, now, SYSTEM)
        if raised is None:
            return None  # another run, or a nudge, raised it already
        message = new_message(ports, SYSTEM, "system", _escalation_text(raised), now)
        attach_message(ports, refund, message)
        ports.refunds.save(refund)
        return refund, message

    done = on_fresh_state(change)
    if done is None:
        return 0
    refund, message = done
    ports.messages.append(refund.refund_id, message)
    log.warning(
        "refund escalated",
        extra={"refund_id": refund.refund_id, "level": refund.escalation_level},
    )
    return 1


def close_stale(ports: Ports, now: datetime) -> int:
    """Close drafts untouched for 24 hours and needs_info refunds unanswered for 7 days; the
    order is free for a new refund (E4). How many were closed."""
    return _each_due(ports.refunds.list_stale, lambda r: _close(ports, r, now), now)


def _close(ports: Ports, refund_id: str, now: datetime) -> int:
    def change() -> tuple[Refund, Message] | None:
        refund = ports.refunds.get(refund_id)
        if refund is None:
            return None
        closes_at = stale_at(refund)
        if closes_at is None or closes_at > now:
            return None  # touched, answered or closed meanwhile
        waited = (
            "untouched for 24 hours"
            if refund.status is RefundStatus.DRAFT
            else ("unanswered for 7 days")
        )
        record(refund, Action.CLOSE, actor=SYSTEM, at=now, to=RefundStatus.CLOSED, note=waited)
        if refund.awaiting_step is not None:
            finish_step(refund, refund.awaiting_step, at=now, error="closed", attempted=False)
        message = new_message(
            ports,
            SYSTEM,
            "system",
            f"This refund was closed: it was {waited}. You can apply again for the order.",
            now,
        )
        attach_message(ports, refund, message)
        ports.refunds.save(refund)
        return refund, message

    done = on_fresh_state(change)
    if done is None:
        return 0
    refund, message = done
    ports.messages.append(refund.refund_id, message)
    ports.orders.settle_refund(
        refund.order_id, refund.refund_id, 0, paid_limit=refund.order.paid_amount
    )
    return 1


def nudge(ports: Ports, user_id: str, refund_id: str) -> NudgeAnswer:
    """X2, X4: the user asks where the refund is. It escalates only once a promise has
    passed; otherwise the answer says when it is due, and that money already with a channel
    is the channel's to deliver. A second nudge within 24 hours is refused (429)."""

    def change() -> tuple[Refund, NudgeAnswer, Message | None]:
        refund = get_owned(ports, user_id, refund_id)
        if not allowed(Action.NUDGE, refund.status):
            raise Conflict(f"a refund that is {refund.status} cannot be nudged")
        now = ports.clock.now()
        last = refund.last_nudged_at
        if last is not None and now - last < NUDGE_INTERVAL:
            raise NudgeTooSoon(_shanghai(last + NUDGE_INTERVAL))
        record(refund, Action.NUDGE, actor=user_id, at=now)
        refund.last_nudged_at = now
        raised = escalate(refund, ports.calendar, now, SYSTEM)
        message = None
        if raised is not None:
            message = new_message(ports, SYSTEM, "system", _escalation_text(raised), now)
            attach_message(ports, refund, message)
        ports.refunds.save(refund)
        answer = NudgeAnswer(
            escalated=refund.escalation_level >= 1,
            review_due_at=refund.review_due_at,
            payout_due_at=refund.payout_due_at,
            message=_nudge_text(ports, refund, raised),
        )
        return refund, answer, message

    refund, answer, message = on_fresh_state(change)
    if message is not None:
        ports.messages.append(refund.refund_id, message)
    return answer


def _nudge_text(ports: Ports, refund: Refund, raised: Escalation | None) -> str:
    if raised is not None:
        return _escalation_text(raised)
    if refund.escalation_level >= 1:
        return (
            f"This refund is escalated (level {refund.escalation_level}); an agent will explain "
            "the delay."
        )
    if refund.status is RefundStatus.NEEDS_INFO:
        return "The refund waits for the information customer service asked you for."
    if refund.status is RefundStatus.AWAITING_RETURN:
        return "The refund waits for the returned goods; the payout follows their receipt."
    if refund.status is RefundStatus.PAYING and refund.channel is not PaymentChannel.BALANCE:
        due = f" by {_shanghai(refund.payout_due_at)}" if refund.payout_due_at else ""
        return (
            f"The money is with {refund.channel.value}, which delivers it{due}; delays there "
            "are the channel's, not the platform's (X4)."
        )
    upcoming = next_escalation(refund, ports.calendar)
    if upcoming is not None:
        return f"The {upcoming.phase.value} is due by {_shanghai(upcoming.due_at)}."
    return "The refund is on its way; nothing is overdue."


def _escalation_text(raised: Escalation) -> str:
    text = (
        f"We are late: the {raised.phase.value} was due by {_shanghai(raised.due_at)}. "
        "It has been escalated, and an agent will explain the delay."
    )
    if raised.level >= 2:
        text += " A senior reviewer now handles it."
    return text


def _shanghai(at: datetime) -> str:
    return at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M (Beijing time)")
