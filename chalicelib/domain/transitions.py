"""Refund statuses and the allowed transitions, as one table (API.md, Refunds).

Every change of a refund goes through :func:`record`, which checks the table and appends the
history entry, so a transition and its audit entry can never be stored apart.
"""

from __future__ import annotations

from datetime import datetime

from .exceptions import InvalidTransition
from .model import Action, HistoryEntry, Refund, RefundStatus

__all__ = ["OPEN_STATUSES", "STATUS_CHANGES", "STAY_ACTIONS", "TERMINAL", "allowed", "record"]

S = RefundStatus

TERMINAL = frozenset({S.PAID, S.CANCELLED, S.CLOSED, S.REJECTED})
"""Terminal statuses; an appeal can reopen a rejected refund once (X3)."""

OPEN_STATUSES = frozenset(S) - TERMINAL

STATUS_CHANGES: dict[Action, dict[RefundStatus, frozenset[RefundStatus]]] = {
    Action.SUBMIT: {S.DRAFT: frozenset({S.SUBMITTED}), S.NEEDS_INFO: frozenset({S.SUBMITTED})},
    Action.AUTO_REVIEW: {
        S.SUBMITTED: frozenset({S.PENDING_REVIEW, S.NEEDS_INFO, S.APPROVED}),
    },
    Action.APPROVE: {
        S.PENDING_REVIEW: frozenset({S.APPROVED, S.AWAITING_RETURN}),
        S.APPEALED: frozenset({S.APPROVED, S.AWAITING_RETURN}),
    },
    Action.REJECT: {
        S.PENDING_REVIEW: frozenset({S.REJECTED}),
        S.APPEALED: frozenset({S.REJECTED}),
    },
    Action.REQUEST_INFO: {
        S.PENDING_REVIEW: frozenset({S.NEEDS_INFO}),
        S.APPEALED: frozenset({S.NEEDS_INFO}),
    },
    Action.RETURN_RECEIVED: {S.AWAITING_RETURN: frozenset({S.APPROVED, S.REJECTED})},
    Action.PAYOUT: {S.APPROVED: frozenset({S.PAYING})},
    Action.PAID: {S.PAYING: frozenset({S.PAID})},
    Action.PAYOUT_FAILED: {S.PAYING: frozenset({S.PAYOUT_FAILED})},
    Action.RETRY_PAYOUT: {S.PAYOUT_FAILED: frozenset({S.PAYING})},
    Action.APPEAL: {S.REJECTED: frozenset({S.APPEALED})},
    Action.CANCEL: {
        status: frozenset({S.CANCELLED})
        for status in (S.DRAFT, S.SUBMITTED, S.PENDING_REVIEW, S.NEEDS_INFO)
    },
    Action.CLOSE: {S.DRAFT: frozenset({S.CLOSED}), S.NEEDS_INFO: frozenset({S.CLOSED})},
}
"""action -> current status -> the statuses it may lead to."""

STAY_ACTIONS: dict[Action, frozenset[RefundStatus]] = {
    Action.CLAIM: OPEN_STATUSES - {S.DRAFT},
    Action.RETURN_SHIPMENT: frozenset({S.AWAITING_RETURN}),
    Action.ESCALATE: OPEN_STATUSES - {S.DRAFT},
    Action.NUDGE: OPEN_STATUSES - {S.DRAFT},
    Action.ORDER_CORRECTED: OPEN_STATUSES,
    Action.REMOVE_EVIDENCE: frozenset({S.DRAFT, S.NEEDS_INFO, S.REJECTED}),
}
"""Actions that leave the status as it is, and the statuses they are allowed in."""


def allowed(action: Action, status: RefundStatus) -> bool:
    """Whether the table allows ``action`` from ``status`` (to check state before policy)."""
    if action in STAY_ACTIONS:
        return status in STAY_ACTIONS[action]
    return bool(STATUS_CHANGES.get(action, {}).get(status))


def record(
    refund: Refund,
    action: Action,
    *,
    actor: str,
    at: datetime,
    to: RefundStatus | None = None,
    note: str | None = None,
    rule: str | None = None,
) -> HistoryEntry:
    """Apply ``action`` to ``refund`` if the table allows it, and append its history entry."""
    current = refund.status
    if action in STAY_ACTIONS:
        if to is not None or current not in STAY_ACTIONS[action]:
            raise InvalidTransition(action, current)
        entry = HistoryEntry(at, actor, action, None, None, note, rule)
    else:
        targets = STATUS_CHANGES.get(action, {}).get(current, frozenset())
        if to is None or to not in targets:
            raise InvalidTransition(action, current)
        refund.status = to
        entry = HistoryEntry(at, actor, action, current, to, note, rule)
    refund.history.append(entry)
    refund.updated_at = at
    return entry
