"""Review rules: the automatic check (R1, R3, F2, F3, O2) and the limits of a human decision
(A1, R4, X3, PH1, PR1), as pure functions over plain data."""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import NotRefundable
from .model import (
    QUALITY_REASONS,
    EvidenceKind,
    OrderBooking,
    OrderKind,
    OrderStatus,
    Reason,
    Refund,
    RefundStatus,
)
from .policy import description_problem, is_fast_track, missing_evidence, quote

__all__ = [
    "SENIOR_ROLE",
    "AutoReview",
    "approval_amount",
    "auto_review",
    "claim_problem",
    "needs_senior",
    "return_outcome",
]

SENIOR_ROLE = "cs-senior"

_EVIDENCE_NAMES = {
    EvidenceKind.ORDER_SCREENSHOT: "an order screenshot (order number, product name, order time)",
    EvidenceKind.PROBLEM_SCREENSHOT: "a screenshot of the problem",
    EvidenceKind.USAGE_RECORD: "a screenshot of the usage record (V2)",
    EvidenceKind.DEFECT_PHOTO: "a photo of the defect",
    EvidenceKind.CHAT_RECORD: "the chat record with the service provider",
    EvidenceKind.OTHER: "other evidence",
}


@dataclass(frozen=True)
class AutoReview:
    """What the automatic check decided, and what it tells the user and the reviewer."""

    to: RefundStatus
    rule: str | None = None
    note: str | None = None
    """For the history and the reviewer: what the check saw."""
    message: str | None = None
    """For the user (needs info, R3): exactly what to add."""
    approved_amount: int | None = None
    senior_only: bool = False


def claim_problem(refund: Refund) -> str | None:
    """R1: where the claim does not fit the order's recorded status or kind, for a reviewer."""
    order, reason = refund.order, refund.reason
    if reason is Reason.NOT_DELIVERED and order.status is OrderStatus.DELIVERED:
        return "the claim is 'not delivered', but the order is recorded as delivered"
    if reason is Reason.SERVICE_NOT_DELIVERED and order.kind is not OrderKind.SERVICE:
        return "the claim is 'service not delivered', but the order is not a service"
    if reason is Reason.INVALID_CODE and order.kind is not OrderKind.VIRTUAL:
        return "the claim is 'invalid code', but the order is not a virtual good"
    if reason in (Reason.DUPLICATE_CHARGE, Reason.WRONG_ITEM_ISSUED):
        return "the claim is a platform fault that the order system has not reported (O2)"
    return None


def auto_review(refund: Refund, *, recent_refunds: int, abuse_threshold: int) -> AutoReview:
    """R1's first stage on a submitted refund whose evidence was just checked.

    A platform fault the order system reported is approved in full at once (O2). What the
    user can fix (evidence F2 requires, a vague description F3) goes back as "needs info"
    with exactly what to add (R3). Everything else goes to a person, with what the check
    saw; many refunds by one user in 30 days route it to a senior.
    """
    if is_fast_track(refund.order, refund.reason):
        return AutoReview(
            RefundStatus.APPROVED,
            rule="O2",
            note="platform fault reported by the order system: approved in full, paid first",
            approved_amount=refund.amount,
        )
    missing = missing_evidence(refund.order, refund.reason, refund.uploaded_kinds())
    vague = description_problem(refund.description)
    if missing or vague:
        asks = []
        if missing:
            asks.append("Please upload " + "; ".join(_EVIDENCE_NAMES[k] for k in missing) + ".")
        if vague:
            asks.append(vague)
        return AutoReview(
            RefundStatus.NEEDS_INFO,
            rule="F2" if missing else "F3",
            note="the automatic check needs more from the user",
            message=" ".join(asks),
        )
    notes = []
    problem = claim_problem(refund)
    if problem:
        notes.append(problem)
    senior = recent_refunds >= abuse_threshold
    if senior:
        notes.append(f"{recent_refunds} refunds by this user in 30 days: a senior reviews it")
    return AutoReview(
        RefundStatus.PENDING_REVIEW,
        note="; ".join(notes) or "evidence and description checked",
        senior_only=senior,
    )


def needs_senior(refund: Refund) -> bool:
    """X3 and abuse signals: only a ``cs-senior`` claims and decides this refund."""
    return refund.senior_only or refund.status is RefundStatus.APPEALED


def approval_amount(refund: Refund, requested: int | None) -> int:
    """A1: the amount an agent approves: the computed one, or lower; never higher."""
    if requested is None:
        return refund.amount
    if requested > refund.amount:
        raise NotRefundable(
            "A1",
            f"An agent may approve at most the computed amount, {refund.amount} fen.",
        )
    return requested


def return_outcome(
    refund: Refund, booking: OrderBooking, *, intact: bool, gifts_returned: bool
) -> tuple[int | None, str | None, str]:
    """PH1, PR1 on receipt of returned goods: (amount to pay, refusing rule, why).

    Not intact is a refusal unless the reason is a quality problem (PH1). The amount is
    recomputed on the order as it was when the refund was created, with the gifts as they
    came back, but the refund deadline is not judged again; it never rises above what was
    approved.
    """
    if not intact and refund.reason not in QUALITY_REASONS:
        return None, "PH1", "The goods came back opened or damaged, without a quality problem."
    recomputed = quote(
        refund.order,
        booking,
        reason=refund.reason,
        gifts_returned=gifts_returned,
        now=refund.created_at,
        own_refund_id=refund.refund_id,
    )
    if recomputed.rule is not None:
        return None, recomputed.rule, recomputed.message
    approved = refund.approved_amount if refund.approved_amount is not None else refund.amount
    return min(approved, recomputed.amount), None, recomputed.message
