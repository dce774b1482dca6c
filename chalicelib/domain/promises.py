"""The platform's promised times (R2, P1, X2, X4) and what happens when it overruns them.

A review is due 3 working days after each submission; a payout to Alipay or WeChat Pay 5
working days after its promise starts (approval, or receipt of returned goods). Past due, a
refund escalates to level 1; still past due at the end of the next working day, to level 2 (a
``cs-senior`` matter). A level is never raised twice: the next escalation's time is derived
from the refund itself, so two sweeps, or a sweep and a nudge, agree on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from .calendar import WorkingCalendar
from .model import Action, PaymentChannel, Refund, RefundStatus
from .transitions import record

__all__ = [
    "DRAFT_STALE_AFTER",
    "NEEDS_INFO_STALE_AFTER",
    "NUDGE_INTERVAL",
    "Escalation",
    "Phase",
    "escalate",
    "next_escalation",
    "stale_at",
    "start_payout_promise",
    "start_review_promise",
]

S = RefundStatus
REVIEW_CLOCK = frozenset({S.SUBMITTED, S.PENDING_REVIEW, S.APPEALED})
"""Where the review promise runs: not in needs_info (the user's turn), nor awaiting_return."""
PAYOUT_CLOCK = frozenset({S.APPROVED, S.PAYING, S.PAYOUT_FAILED})
CHANNELS_WITH_A_PROMISE = frozenset({PaymentChannel.ALIPAY, PaymentChannel.WECHAT})
"""The balance is credited at once: no payout promise to overrun."""
DRAFT_STALE_AFTER = timedelta(hours=24)
NEEDS_INFO_STALE_AFTER = timedelta(days=7)
NUDGE_INTERVAL = timedelta(hours=24)
PAST_DUE = timedelta(seconds=1)
MAX_LEVEL = 2


class Phase(StrEnum):
    REVIEW = "review"
    PAYOUT = "payout"


@dataclass(frozen=True)
class Escalation:
    phase: Phase
    level: int
    """The level the refund reaches at ``at``."""
    at: datetime
    due_at: datetime
    """The promise that was overrun."""


def start_review_promise(refund: Refund, calendar: WorkingCalendar, at: datetime) -> None:
    """R2: each submission (and an appeal) starts a new review promise, at level 0."""
    refund.review_due_at = calendar.review_due(at)
    refund.payout_due_at = None
    refund.escalation_level = 0


def start_payout_promise(refund: Refund, calendar: WorkingCalendar, at: datetime) -> None:
    """X2: approval (or the goods' receipt) starts the payout promise; the review's ends."""
    refund.review_due_at = None
    refund.escalation_level = 0
    refund.payout_due_at = (
        calendar.payout_due(at) if refund.channel in CHANNELS_WITH_A_PROMISE else None
    )


def _running(refund: Refund) -> tuple[Phase, datetime] | None:
    if refund.status in REVIEW_CLOCK and refund.review_due_at is not None:
        return Phase.REVIEW, refund.review_due_at
    if refund.status in PAYOUT_CLOCK and refund.payout_due_at is not None:
        return Phase.PAYOUT, refund.payout_due_at
    return None


def next_escalation(refund: Refund, calendar: WorkingCalendar) -> Escalation | None:
    """When the refund escalates next, and to which level; None if no promise runs or it is
    at the top level already."""
    running = _running(refund)
    if running is None or refund.escalation_level >= MAX_LEVEL:
        return None
    phase, due_at = running
    if refund.escalation_level == 0:
        # Past due: the first second after it (deadlines end at hh:59:59).
        return Escalation(phase, 1, due_at + PAST_DUE, due_at)
    return Escalation(phase, 2, calendar.second_level_at(due_at), due_at)


def escalate(
    refund: Refund, calendar: WorkingCalendar, now: datetime, actor: str
) -> Escalation | None:
    """Raise the level if its time has come (X2), with its history entry; else None."""
    due = next_escalation(refund, calendar)
    if due is None or due.at > now:
        return None
    refund.escalation_level = due.level
    if due.phase.value not in refund.sla_breaches:
        refund.sla_breaches.append(due.phase.value)
    note = f"{due.phase.value} overdue since {due.due_at.isoformat()}: level {due.level}"
    if due.level == MAX_LEVEL:
        note += " (a cs-senior matter)"
    record(refund, Action.ESCALATE, actor=actor, at=now, note=note, rule="X2")
    return due


def stale_at(refund: Refund) -> datetime | None:
    """When an untouched draft (24 h) or an unanswered needs_info (7 days) is closed."""
    if refund.status is S.DRAFT:
        return refund.updated_at + DRAFT_STALE_AFTER
    if refund.status is S.NEEDS_INFO:
        asked = next(
            (entry.at for entry in reversed(refund.history) if entry.to_status is S.NEEDS_INFO),
            refund.updated_at,
        )
        return asked + NEEDS_INFO_STALE_AFTER
    return None
