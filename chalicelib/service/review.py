"""Review: the automatic check (R1) and customer service's decisions (R3, R4, A1, PH1, X1, X3).

Every decision needs the refund's claim (R4: one agent at a time, who, when, why in the
history); an appealed refund, or one the check routed to a senior, is claimed and decided by
a ``cs-senior`` only. Checks run in API.md's order: existence (404), the role the refund
needs (403), state and claim (409), policy (422).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from chalicelib.domain.model import (
    Action,
    Message,
    Order,
    OrderStatus,
    Refund,
    RefundStatus,
)
from chalicelib.domain.promises import start_payout_promise
from chalicelib.domain.review import (
    SENIOR_ROLE,
    approval_amount,
    auto_review,
    needs_senior,
    return_outcome,
)
from chalicelib.domain.transitions import TERMINAL, allowed, record
from chalicelib.domain.workflow import Step, finish_step

from .changes import SYSTEM, attach_message, get_refund_or_404, new_message, on_fresh_state
from .exceptions import Conflict, InvalidInput, NotFound, RoleRequired
from .ports import Page, Ports
from .refunds import evidence_key, refresh_evidence
from .workflow import StepOutcome, attempt, begin_step, send_awaited_step

__all__ = [
    "Agent",
    "Approve",
    "CorrectOrderStatus",
    "RefundDetail",
    "Reject",
    "ReturnReceived",
    "approve",
    "claim",
    "correct_order_status",
    "decidable",
    "detail_of",
    "handle_auto_review",
    "list_queue",
    "refund_detail",
    "reject",
    "request_info",
    "return_received",
]

ABUSE_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class Agent:
    user_id: str
    senior: bool


@dataclass(frozen=True)
class Approve:
    refund_id: str
    amount: int | None
    note: str | None


@dataclass(frozen=True)
class Reject:
    refund_id: str
    rule: str
    message: str


@dataclass(frozen=True)
class ReturnReceived:
    refund_id: str
    intact: bool
    gifts_returned: bool


@dataclass(frozen=True)
class CorrectOrderStatus:
    order_id: str
    status: OrderStatus
    note: str


@dataclass(frozen=True)
class RefundDetail:
    refund: Refund
    downloads: dict[str, str | None]
    """evidence id -> a short-lived URL of the version that passed the check, if any."""


# --- the automatic check -------------------------------------------------------------------


def handle_auto_review(ports: Ports, refund_id: str, received: int) -> StepOutcome:
    """The ``auto-review`` step's message; after its last attempt a person reviews it."""

    def to_a_person(refund: Refund, error: str) -> None:
        if refund.status is RefundStatus.SUBMITTED:
            record(
                refund,
                Action.AUTO_REVIEW,
                actor=SYSTEM,
                at=ports.clock.now(),
                to=RefundStatus.PENDING_REVIEW,
                note=f"the automatic check failed ({error}); a person reviews it",
            )

    return attempt(
        ports,
        Step.AUTO_REVIEW,
        refund_id,
        received,
        lambda: _run_auto_review(ports, refund_id),
        catch=to_a_person,
    )


def _run_auto_review(ports: Ports, refund_id: str) -> None:
    def change() -> tuple[Refund, Message | None] | None:
        refund = ports.refunds.get(refund_id)
        if refund is None or refund.status is not RefundStatus.SUBMITTED:
            return None  # a duplicate or late message: the check ran already
        now = ports.clock.now()
        refresh_evidence(ports, refund)
        recent = ports.refunds.count_for_user_since(refund.user_id, now - ABUSE_WINDOW)
        outcome = auto_review(
            refund, recent_refunds=recent, abuse_threshold=ports.config.abuse_threshold
        )
        record(
            refund,
            Action.AUTO_REVIEW,
            actor=SYSTEM,
            at=now,
            to=outcome.to,
            note=outcome.note,
            rule=outcome.rule,
        )
        finish_step(refund, Step.AUTO_REVIEW, at=now)
        refund.senior_only = refund.senior_only or outcome.senior_only
        message = None
        if outcome.message:
            message = new_message(ports, SYSTEM, "system", outcome.message)
            attach_message(ports, refund, message)
        if outcome.to is RefundStatus.NEEDS_INFO:
            refund.review_due_at = None
        if outcome.to is RefundStatus.APPROVED:
            refund.approved_amount = outcome.approved_amount
            start_payout_promise(refund, ports.calendar, now)
            begin_step(ports, refund, Step.PAYOUT)
        ports.refunds.save(refund)
        return refund, message

    done = on_fresh_state(change)
    if done is not None:
        refund, message = done
        _after_save(ports, refund, message)


# --- the CS queue and detail ---------------------------------------------------------------


def list_queue(
    ports: Ports, status: RefundStatus, escalated_only: bool, limit: int, cursor: str | None
) -> Page:
    return ports.refunds.list_queue(status, escalated_only, limit, cursor)


def refund_detail(ports: Ports, refund_id: str) -> RefundDetail:
    """The refund as CS sees it: with the order as it was, and evidence readable for a few
    minutes, in the version that passed the check (never a later upload)."""
    return detail_of(ports, get_refund_or_404(ports, refund_id))


def detail_of(ports: Ports, refund: Refund) -> RefundDetail:
    """The CS detail of a refund already in hand (a decision's answer): no second read."""
    if refund.archived_messages:
        older = ports.messages.oldest(refund.refund_id, refund.archived_messages)
        refund.messages = [*older, *refund.messages]
    expires_at = ports.clock.wall_now() + timedelta(seconds=ports.config.download_url_seconds)
    downloads: dict[str, str | None] = {}
    for slot in refund.evidence:
        downloads[slot.evidence_id] = (
            ports.evidence.presign_download(
                evidence_key(refund.refund_id, slot.evidence_id), slot.checked_version, expires_at
            )
            if slot.uploaded
            else None
        )
    return RefundDetail(refund, downloads)


# --- decisions -----------------------------------------------------------------------------


def claim(ports: Ports, agent: Agent, refund_id: str) -> Refund:
    """R4: the agent takes the refund; only a senior takes it over from another agent."""

    def change() -> Refund:
        refund = _for_agent(ports, agent, refund_id)
        if not allowed(Action.CLAIM, refund.status):
            raise Conflict(f"a refund that is {refund.status} cannot be claimed")
        if refund.assignee == agent.user_id:
            return refund
        if refund.assignee is not None and not agent.senior:
            raise Conflict(f"claimed by another agent ({refund.assignee})")
        note = f"taken over from {refund.assignee}" if refund.assignee else None
        record(refund, Action.CLAIM, actor=agent.user_id, at=ports.clock.now(), note=note)
        refund.assignee = agent.user_id
        ports.refunds.save(refund)
        return refund

    return on_fresh_state(change)


def approve(ports: Ports, agent: Agent, command: Approve) -> Refund:
    """Approve the computed amount or a lower one with a written reason (A1); the payout
    follows, or the goods come back first (PH1)."""

    def change() -> Refund:
        refund = decidable(ports, agent, command.refund_id, Action.APPROVE)
        amount = approval_amount(refund, command.amount)
        if amount < refund.amount and not command.note:
            raise InvalidInput("note", "a lower amount than the computed one needs a reason (A1)")
        # E4 in the database: the booking shrinks to what was approved, within what was paid.
        ports.orders.reserve(
            refund.order_id, refund.refund_id, amount, paid_limit=refund.order.paid_amount
        )
        to = RefundStatus.AWAITING_RETURN if refund.needs_return else RefundStatus.APPROVED
        now = ports.clock.now()
        record(
            refund,
            Action.APPROVE,
            actor=agent.user_id,
            at=now,
            to=to,
            note=command.note,
            rule="A1" if amount < refund.amount else None,
        )
        refund.approved_amount = amount
        if to is RefundStatus.APPROVED:
            start_payout_promise(refund, ports.calendar, now)
            begin_step(ports, refund, Step.PAYOUT)
        else:
            # The goods come back first (PH1): no clock runs in awaiting_return.
            refund.review_due_at = None
            refund.escalation_level = 0
        ports.refunds.save(refund)
        return refund

    refund = on_fresh_state(change)
    send_awaited_step(ports, refund)
    return refund


def reject(ports: Ports, agent: Agent, command: Reject) -> Refund:
    """Reject, citing the rule (O3); the order is free again. A senior's rejection of an
    appeal is final (X3)."""

    def change() -> tuple[Refund, Message]:
        refund = decidable(ports, agent, command.refund_id, Action.REJECT)
        now = ports.clock.now()
        record(
            refund,
            Action.REJECT,
            actor=agent.user_id,
            at=now,
            to=RefundStatus.REJECTED,
            note=command.message,
            rule=command.rule,
        )
        refund.review_due_at = None
        message = new_message(ports, agent.user_id, "agent", f"[{command.rule}] {command.message}")
        attach_message(ports, refund, message)
        ports.refunds.save(refund)
        return refund, message

    refund, message = on_fresh_state(change)
    _after_save(ports, refund, message)
    return refund


def request_info(ports: Ports, agent: Agent, refund_id: str, text: str) -> Refund:
    """R3: ask the user for exactly what is missing; they resubmit, no rejection."""

    def change() -> tuple[Refund, Message]:
        refund = decidable(ports, agent, refund_id, Action.REQUEST_INFO)
        record(
            refund,
            Action.REQUEST_INFO,
            actor=agent.user_id,
            at=ports.clock.now(),
            to=RefundStatus.NEEDS_INFO,
            note=text,
        )
        refund.review_due_at = None
        message = new_message(ports, agent.user_id, "agent", text)
        attach_message(ports, refund, message)
        ports.refunds.save(refund)
        return refund, message

    refund, message = on_fresh_state(change)
    _after_save(ports, refund, message)
    return refund


def return_received(ports: Ports, agent: Agent, command: ReturnReceived) -> Refund:
    """PH1, PR1: the goods are back. Intact (or a quality reason): pay the amount recomputed
    with the gifts as they came back, never more than approved; else reject (PH1)."""

    def change() -> Refund:
        refund = decidable(ports, agent, command.refund_id, Action.RETURN_RECEIVED)
        stored = ports.orders.get(refund.order_id)
        if stored is None:
            raise NotFound("order", refund.order_id)
        amount, rule, why = return_outcome(
            refund, stored.booking, intact=command.intact, gifts_returned=command.gifts_returned
        )
        now = ports.clock.now()
        received = f"intact={command.intact}, gifts_returned={command.gifts_returned}"
        if amount is None:
            record(
                refund,
                Action.RETURN_RECEIVED,
                actor=agent.user_id,
                at=now,
                to=RefundStatus.REJECTED,
                note=f"{received}: {why}",
                rule=rule,
            )
        else:
            ports.orders.reserve(
                refund.order_id, refund.refund_id, amount, paid_limit=refund.order.paid_amount
            )
            record(
                refund,
                Action.RETURN_RECEIVED,
                actor=agent.user_id,
                at=now,
                to=RefundStatus.APPROVED,
                note=received,
                rule="PR1" if amount < (refund.approved_amount or refund.amount) else None,
            )
            refund.approved_amount = amount
            refund.gifts_returned = command.gifts_returned
            start_payout_promise(refund, ports.calendar, now)
            begin_step(ports, refund, Step.PAYOUT)
        ports.refunds.save(refund)
        return refund

    refund = on_fresh_state(change)
    _after_save(ports, refund, None)
    return refund


def correct_order_status(ports: Ports, agent: Agent, command: CorrectOrderStatus) -> Order:
    """X1: customer service corrects an order's status, with a note; it outranks the order
    system's update of the same version, and the order's open refund records it."""
    stored = ports.orders.get(command.order_id)
    if stored is None:
        raise NotFound("order", command.order_id)
    corrected = replace(
        stored.order, status=command.status, version=(stored.order.version or 0) + 1
    )
    result = ports.orders.upsert(corrected)
    if result.order != corrected:
        raise Conflict("the order system changed the order meanwhile; look again and retry")
    open_id = result.booking.open_refund_id
    if open_id is not None:
        _note_correction(ports, agent, open_id, command)
    return result.order


def _note_correction(
    ports: Ports, agent: Agent, refund_id: str, command: CorrectOrderStatus
) -> None:
    def change() -> None:
        refund = ports.refunds.get(refund_id)
        if refund is None or not allowed(Action.ORDER_CORRECTED, refund.status):
            return
        record(
            refund,
            Action.ORDER_CORRECTED,
            actor=agent.user_id,
            at=ports.clock.now(),
            note=f"order status set to {command.status.value}: {command.note}",
            rule="X1",
        )
        ports.refunds.save(refund)

    on_fresh_state(change)


# --- shared checks -------------------------------------------------------------------------


def _for_agent(ports: Ports, agent: Agent, refund_id: str) -> Refund:
    """The refund, if this agent's role may handle it (404, then 403)."""
    refund = get_refund_or_404(ports, refund_id)
    if needs_senior(refund) and not agent.senior:
        why = "it is appealed (X3)" if refund.appealed else "the check routed it to a senior"
        raise RoleRequired(SENIOR_ROLE, why)
    return refund


def decidable(ports: Ports, agent: Agent, refund_id: str, action: Action) -> Refund:
    """The refund, if ``action`` is allowed from its status and this agent holds its claim."""
    refund = _for_agent(ports, agent, refund_id)
    if not allowed(action, refund.status):
        raise Conflict(f"a refund that is {refund.status} cannot take {action.value}")
    if refund.assignee != agent.user_id:
        holder = f"claimed by {refund.assignee}" if refund.assignee else "not claimed"
        raise Conflict(f"claim the refund before deciding ({holder})")
    return refund


def _after_save(ports: Ports, refund: Refund, message: Message | None) -> None:
    """What follows a saved decision: its message kept for good, the order freed when the
    refund ended (E4), the next step's message sent."""
    if message is not None:
        ports.messages.append(refund.refund_id, message)
    if refund.status in TERMINAL:
        ports.orders.settle_refund(
            refund.order_id, refund.refund_id, 0, paid_limit=refund.order.paid_amount
        )
    send_awaited_step(ports, refund)
