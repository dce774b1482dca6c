"""The mobile app's refund use cases: create, evidence, submit, read, list, cancel, message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from chalicelib.domain.evidence import MAX_SLOTS, inspect_upload
from chalicelib.domain.exceptions import EvidenceSlotsFull, MissingEvidence, NotRefundable
from chalicelib.domain.model import (
    Action,
    Evidence,
    EvidenceKind,
    HistoryEntry,
    Message,
    PaymentChannel,
    PayoutChannel,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.domain.policy import is_fast_track, missing_evidence, quote
from chalicelib.domain.transitions import allowed, record

from .exceptions import ConcurrentChange, Conflict, NotFound, RefundIdFenced
from .orders import current_booking, get_owned_order
from .ports import Page, Ports, PresignedUpload

__all__ = [
    "AddEvidence",
    "CreateRefund",
    "EvidenceSlot",
    "PostMessage",
    "SubmitRefund",
    "add_evidence",
    "cancel_refund",
    "create_refund",
    "evidence_key",
    "get_refund",
    "list_refunds",
    "post_message",
    "submit_refund",
]

EVIDENCE_STATUSES = frozenset({RefundStatus.DRAFT, RefundStatus.NEEDS_INFO, RefundStatus.REJECTED})
"""Where evidence can be added: before submitting, when asked for more, for an appeal."""

CHANGE_ATTEMPTS = 5
"""How often a user's change is tried again on top of a concurrent one before a 409."""

T = TypeVar("T")


def _on_fresh_state(change: Callable[[], T]) -> T:
    """Run ``change`` (read, check, write) again when another request wrote in between.

    Each try reads the refund anew and judges the change against it, so a retry is exactly
    the request as if it had come a moment later; only a lost optimistic lock is retried.
    """
    for _ in range(CHANGE_ATTEMPTS - 1):
        try:
            return change()
        except ConcurrentChange:
            continue
    return change()


@dataclass(frozen=True)
class CreateRefund:
    user_id: str
    order_id: str
    reason: Reason
    description: str
    payout_channel: PayoutChannel
    gifts_returned: bool


@dataclass(frozen=True)
class AddEvidence:
    user_id: str
    refund_id: str
    kind: EvidenceKind
    content_type: str
    size: int


@dataclass(frozen=True)
class EvidenceSlot:
    evidence: Evidence
    upload: PresignedUpload


@dataclass(frozen=True)
class SubmitRefund:
    user_id: str
    refund_id: str
    description: str | None = None


@dataclass(frozen=True)
class PostMessage:
    user_id: str
    refund_id: str
    body: str


def evidence_key(refund_id: str, evidence_id: str) -> str:
    """The one S3 key an evidence slot's upload may use."""
    return f"evidence/{refund_id}/{evidence_id}"


def create_refund(ports: Ports, command: CreateRefund, *, refund_id: str) -> Refund:
    """Open a refund of an order (F1) as ``refund_id``; repeating it completes, never repeats.

    A fixed sequence of idempotent conditional writes: book the order (E4), then store the
    refund. A retry with the same ``refund_id`` finds its own booking and goes on from there.
    Raises RefundIdFenced if ``refund_id`` was fenced off as a dead create's meanwhile.
    """
    stored = get_owned_order(ports, command.user_id, command.order_id)
    order = stored.order
    booking = current_booking(ports, stored, repair=True, own_refund_id=refund_id)
    if booking.open_refund_id not in (None, refund_id):
        raise Conflict("a refund for this order is already open", rule="E4")
    now = ports.clock.now()
    offer = quote(
        order,
        booking,
        reason=command.reason,
        gifts_returned=command.gifts_returned,
        now=now,
        own_refund_id=refund_id,
    )
    if booking.open_refund_id == refund_id:
        amount = booking.open_refund_amount
    elif offer.rule is not None:
        raise NotRefundable(offer.rule, offer.message)
    else:
        amount = offer.amount
        ports.orders.book_refund(order.order_id, refund_id, amount, booking, ports.clock.wall_now())
    refund = Refund(
        refund_id=refund_id,
        order=order,
        status=RefundStatus.DRAFT,
        reason=command.reason,
        description=command.description,
        amount=amount,
        payout_channel=command.payout_channel,
        channel=_payout_target(order.payment_channel, command.payout_channel),
        gifts_returned=command.gifts_returned,
        fast_track=is_fast_track(order, command.reason),
        needs_return=offer.needs_return,
        created_at=now,
        updated_at=now,
        history=[
            HistoryEntry(now, command.user_id, Action.CREATE, None, RefundStatus.DRAFT),
        ],
    )
    try:
        ports.refunds.add(refund)
    except RefundIdFenced:
        # The id was taken for a dead create's while this one ran: its booking (if it is
        # still this id's) goes, so that the order is free again, and the caller starts over.
        ports.orders.settle_refund(order.order_id, refund_id, 0, paid_limit=order.paid_amount)
        raise
    except Conflict:
        # A retry that overlapped the first attempt stored it already: answer with that one.
        stored_refund = ports.refunds.get_as_created(refund_id)
        if stored_refund is None:
            raise
        return stored_refund
    return refund


def _payout_target(paid_with: PaymentChannel, choice: PayoutChannel) -> PaymentChannel:
    """P1: the original payment path, or the platform balance if the user chose it."""
    return PaymentChannel.BALANCE if choice is PayoutChannel.BALANCE else paid_with


def _get_owned(ports: Ports, user_id: str, refund_id: str) -> Refund:
    refund = ports.refunds.get(refund_id)
    if refund is None or refund.user_id != user_id:
        raise NotFound("refund", refund_id)
    return refund


def _refresh_evidence(ports: Ports, refund: Refund) -> bool:
    """Check every slot not yet counted against its object in S3; True if any slot changed.

    The object's own size and first bytes decide, never what the uploader declared.
    """
    changed = False
    for slot in refund.evidence:
        if slot.uploaded:
            continue
        found = ports.evidence.inspect(evidence_key(refund.refund_id, slot.evidence_id))
        if found is None or found.etag == slot.checked_etag:
            continue
        slot.problem = inspect_upload(slot, found.size, found.head)
        slot.uploaded = slot.problem is None
        slot.checked_etag = found.etag
        slot.checked_version = found.version_id
        changed = True
    return changed


def get_refund(ports: Ports, user_id: str, refund_id: str) -> Refund:
    """The user's refund, with all its messages and with evidence uploaded since the last look
    checked and counted."""
    refund = _get_owned(ports, user_id, refund_id)
    if _refresh_evidence(ports, refund):
        try:
            ports.refunds.save(refund)
        except ConcurrentChange:
            # Someone changed the refund meanwhile; the next read checks again.
            refund = _get_owned(ports, user_id, refund_id)
    if refund.archived_messages:
        older = ports.messages.oldest(refund.refund_id, refund.archived_messages)
        refund.messages = [*older, *refund.messages]
    return refund


def list_refunds(
    ports: Ports, user_id: str, status: RefundStatus | None, limit: int, cursor: str | None
) -> Page:
    return ports.refunds.list_for_user(user_id, status, limit, cursor)


def add_evidence(ports: Ports, command: AddEvidence) -> EvidenceSlot:
    """Open an evidence slot and a presigned upload limited to its type, size and key."""

    def change() -> Evidence:
        refund = _get_owned(ports, command.user_id, command.refund_id)
        if refund.status not in EVIDENCE_STATUSES:
            raise Conflict(f"evidence cannot be added to a refund that is {refund.status}")
        if len(refund.evidence) >= MAX_SLOTS:
            raise EvidenceSlotsFull(MAX_SLOTS)
        now = ports.clock.now()
        slot = Evidence(
            evidence_id=ports.ids.new_id("ev_"),
            kind=command.kind,
            content_type=command.content_type,
            size=command.size,
            created_at=now,
        )
        refund.evidence.append(slot)
        refund.updated_at = now
        ports.refunds.save(refund)
        return slot

    slot = _on_fresh_state(change)
    expires_at = ports.clock.wall_now() + timedelta(seconds=ports.config.upload_expires_seconds)
    upload = ports.evidence.presign_upload(
        evidence_key(command.refund_id, slot.evidence_id),
        slot.content_type,
        slot.size,
        expires_at,
    )
    return EvidenceSlot(slot, upload)


def submit_refund(ports: Ports, command: SubmitRefund) -> Refund:
    """Send the refund to review (R1) once every evidence kind F2 requires has been counted."""
    return _on_fresh_state(lambda: _submit(ports, command))


def _submit(ports: Ports, command: SubmitRefund) -> Refund:
    refund = _get_owned(ports, command.user_id, command.refund_id)
    if not allowed(Action.SUBMIT, refund.status):  # state (409) is judged before F2 (422)
        raise Conflict(f"a refund that is {refund.status} cannot be submitted")
    _refresh_evidence(ports, refund)
    missing = missing_evidence(refund.order, refund.reason, refund.uploaded_kinds())
    if missing:
        raise MissingEvidence([kind.value for kind in missing])
    if command.description is not None:
        refund.description = command.description
    record(
        refund,
        Action.SUBMIT,
        actor=command.user_id,
        at=ports.clock.now(),
        to=RefundStatus.SUBMITTED,
    )
    refund.escalation_level = 0
    ports.refunds.save(refund)
    return refund


def cancel_refund(ports: Ports, user_id: str, refund_id: str) -> Refund:
    """The user withdraws the refund; the order is free for a new one (E4)."""

    def change() -> Refund:
        refund = _get_owned(ports, user_id, refund_id)
        at = ports.clock.now()
        record(refund, Action.CANCEL, actor=user_id, at=at, to=RefundStatus.CANCELLED)
        refund.review_due_at = None
        ports.refunds.save(refund)
        return refund

    refund = _on_fresh_state(change)
    ports.orders.settle_refund(
        refund.order_id, refund.refund_id, 0, paid_limit=refund.order.paid_amount
    )
    return refund


def post_message(ports: Ports, command: PostMessage) -> Message:
    """A user's message on a refund, kept with it (O5); messages are not history.

    The refund item carries the latest messages within a byte budget, so that reading a
    refund stays one GetItem; older ones move to the message log, which holds every message.
    """
    message = Message(
        message_id=ports.ids.new_id("msg_"),
        at=ports.clock.now(),
        author_role="user",
        author=command.user_id,
        body=command.body,
    )

    def change() -> None:
        refund = _get_owned(ports, command.user_id, command.refund_id)
        kept = [*refund.messages, message]
        archived: list[Message] = []
        while kept and _too_many(
            kept, ports.config.recent_messages, ports.config.recent_message_bytes
        ):
            archived.append(kept.pop(0))
        for old in archived:
            # Every message reached the log when it was posted, unless that write failed:
            # make sure before the refund stops carrying it (an idempotent put).
            ports.messages.append(refund.refund_id, old)
        refund.messages = kept
        refund.archived_messages += len(archived)
        refund.updated_at = message.at
        ports.refunds.save(refund)

    _on_fresh_state(change)
    ports.messages.append(command.refund_id, message)
    return message


def _too_many(messages: list[Message], count: int, size: int) -> bool:
    return len(messages) > count or sum(len(m.body.encode()) for m in messages) > size
