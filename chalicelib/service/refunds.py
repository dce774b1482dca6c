"""The mobile app's refund use cases: create, evidence, submit, read, list, cancel, message."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

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
    ReturnShipment,
)
from chalicelib.domain.policy import is_fast_track, missing_evidence, quote
from chalicelib.domain.promises import start_review_promise
from chalicelib.domain.transitions import allowed, record
from chalicelib.domain.workflow import Step, finish_step

from .changes import attach_message, get_owned, on_fresh_state
from .exceptions import ConcurrentChange, Conflict, InvalidInput, NotFound, RefundIdFenced
from .orders import current_booking, get_owned_order
from .ports import Page, Ports, PresignedUpload
from .workflow import StepOutcome, attempt, begin_step, send_awaited_step

__all__ = [
    "AddEvidence",
    "Appeal",
    "CreateRefund",
    "EvidenceSlot",
    "PostMessage",
    "ReturnShipmentSent",
    "SubmitRefund",
    "add_evidence",
    "appeal_refund",
    "cancel_refund",
    "create_refund",
    "evidence_key",
    "get_refund",
    "handle_upload",
    "list_refunds",
    "parse_evidence_key",
    "post_message",
    "refresh_evidence",
    "remove_evidence",
    "send_return_shipment",
    "submit_refund",
    "verify_upload",
]

EVIDENCE_STATUSES = frozenset({RefundStatus.DRAFT, RefundStatus.NEEDS_INFO, RefundStatus.REJECTED})
"""Where evidence can be added: before submitting, when asked for more, for an appeal."""


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


@dataclass(frozen=True)
class ReturnShipmentSent:
    user_id: str
    refund_id: str
    carrier: str
    tracking_number: str


@dataclass(frozen=True)
class Appeal:
    user_id: str
    refund_id: str
    statement: str
    evidence_ids: tuple[str, ...]


EVIDENCE_PREFIX = "evidence/"


def evidence_key(refund_id: str, evidence_id: str) -> str:
    """The one S3 key an evidence slot's upload may use."""
    return f"{EVIDENCE_PREFIX}{refund_id}/{evidence_id}"


def parse_evidence_key(key: str) -> tuple[str, str] | None:
    """(refund id, evidence id) of a slot's key; None for any other key."""
    if not key.startswith(EVIDENCE_PREFIX):
        return None
    parts = key[len(EVIDENCE_PREFIX) :].split("/")
    if len(parts) != 2 or not all(parts):
        return None
    return parts[0], parts[1]


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


def refresh_evidence(ports: Ports, refund: Refund, evidence_id: str | None = None) -> bool:
    """Check slots not yet counted (or only ``evidence_id``) against their objects in S3;
    True if any slot changed.

    The object's own size and first bytes decide, never what the uploader declared.
    """
    changed = False
    for slot in refund.evidence:
        if slot.uploaded or evidence_id not in (None, slot.evidence_id):
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
    refund = get_owned(ports, user_id, refund_id)
    if refresh_evidence(ports, refund):
        try:
            ports.refunds.save(refund)
        except ConcurrentChange:
            # Someone changed the refund meanwhile; the next read checks again.
            refund = get_owned(ports, user_id, refund_id)
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
        refund = get_owned(ports, command.user_id, command.refund_id)
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

    slot = on_fresh_state(change)
    expires_at = ports.clock.wall_now() + timedelta(seconds=ports.config.upload_expires_seconds)
    upload = ports.evidence.presign_upload(
        evidence_key(command.refund_id, slot.evidence_id),
        slot.content_type,
        slot.size,
        expires_at,
    )
    return EvidenceSlot(slot, upload)


def submit_refund(ports: Ports, command: SubmitRefund) -> Refund:
    """Send the refund to review (R1) once every evidence kind F2 requires has been counted;
    the automatic check (the ``auto-review`` step) then moves it on."""
    refund = on_fresh_state(lambda: _submit(ports, command))
    send_awaited_step(ports, refund)
    return refund


def _submit(ports: Ports, command: SubmitRefund) -> Refund:
    refund = get_owned(ports, command.user_id, command.refund_id)
    if not allowed(Action.SUBMIT, refund.status):  # state (409) is judged before F2 (422)
        raise Conflict(f"a refund that is {refund.status} cannot be submitted")
    refresh_evidence(ports, refund)
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
    for slot in refund.evidence:
        slot.submitted = slot.submitted or slot.uploaded
    start_review_promise(refund, ports.calendar, refund.updated_at)
    begin_step(ports, refund, Step.AUTO_REVIEW)
    ports.refunds.save(refund)
    return refund


def cancel_refund(ports: Ports, user_id: str, refund_id: str) -> Refund:
    """The user withdraws the refund; the order is free for a new one (E4)."""

    def change() -> Refund:
        refund = get_owned(ports, user_id, refund_id)
        at = ports.clock.now()
        record(refund, Action.CANCEL, actor=user_id, at=at, to=RefundStatus.CANCELLED)
        refund.review_due_at = None
        if refund.awaiting_step is not None:
            finish_step(refund, refund.awaiting_step, at=at, error="cancelled", attempted=False)
        ports.refunds.save(refund)
        return refund

    refund = on_fresh_state(change)
    ports.orders.settle_refund(
        refund.order_id, refund.refund_id, 0, paid_limit=refund.order.paid_amount
    )
    return refund


def post_message(ports: Ports, command: PostMessage) -> Message:
    """A user's message on a refund, kept with it (O5); messages are not history."""
    message = Message(
        message_id=ports.ids.new_id("msg_"),
        at=ports.clock.now(),
        author_role="user",
        author=command.user_id,
        body=command.body,
    )

    def change() -> None:
        refund = get_owned(ports, command.user_id, command.refund_id)
        attach_message(ports, refund, message)
        ports.refunds.save(refund)

    on_fresh_state(change)
    ports.messages.append(command.refund_id, message)
    return message


def remove_evidence(ports: Ports, user_id: str, refund_id: str, evidence_id: str) -> None:
    """Free an evidence slot (a failed upload must never leave the user stuck at ten slots).

    Its object stays in the bucket's versions (O1); a slot that counted toward a
    submission stays, since a review relied on it.
    """

    def change() -> None:
        refund = get_owned(ports, user_id, refund_id)
        slot = refund.find_evidence(evidence_id)
        if slot is None:
            raise NotFound("evidence", evidence_id)
        if slot.submitted:
            raise Conflict("this evidence counted toward a submission and stays with the refund")
        refund.evidence.remove(slot)
        record(
            refund,
            Action.REMOVE_EVIDENCE,
            actor=user_id,
            at=ports.clock.now(),
            note=f"{slot.evidence_id} ({slot.kind.value})",
        )
        ports.refunds.save(refund)

    on_fresh_state(change)


def handle_upload(ports: Ports, refund_id: str, evidence_id: str, received: int) -> StepOutcome:
    """The ``verify-evidence`` step's message for one uploaded object."""
    return attempt(
        ports,
        Step.VERIFY_EVIDENCE,
        refund_id,
        received,
        lambda: verify_upload(ports, refund_id, evidence_id),
    )


def verify_upload(ports: Ports, refund_id: str, evidence_id: str) -> None:
    """The ``verify-evidence`` step: an object landed under a slot's key; check it now, so the
    slot shows counted (or its problem) without waiting for the next read or submit.

    An object under any other key never counts, and a slot already counted stays as it is.
    """

    def change() -> None:
        refund = ports.refunds.get(refund_id)
        if refund is None or refund.find_evidence(evidence_id) is None:
            return  # a removed slot, or a key no slot ever had
        if refresh_evidence(ports, refund, evidence_id):
            ports.refunds.save(refund)

    on_fresh_state(change)


def send_return_shipment(ports: Ports, command: ReturnShipmentSent) -> Refund:
    """PH1: the user sent the goods back; the carrier and tracking number go on the refund."""

    def change() -> Refund:
        refund = get_owned(ports, command.user_id, command.refund_id)
        at = ports.clock.now()
        record(
            refund,
            Action.RETURN_SHIPMENT,
            actor=command.user_id,
            at=at,
            note=f"{command.carrier} {command.tracking_number}",
        )
        refund.return_shipment = ReturnShipment(command.carrier, command.tracking_number, at)
        ports.refunds.save(refund)
        return refund

    return on_fresh_state(change)


def appeal_refund(ports: Ports, command: Appeal) -> Refund:
    """X3: a rejected refund is appealed once, in writing, with evidence, to a senior.

    A rejection freed the order; the appeal books it again, by the same conditional write
    as a create (E4): another refund opened meanwhile makes it a 409.
    """

    def change() -> Refund:
        refund = get_owned(ports, command.user_id, command.refund_id)
        if refund.appealed:
            raise Conflict("this refund was appealed already (X3: once)", rule="X3")
        if not allowed(Action.APPEAL, refund.status):
            raise Conflict(f"a refund that is {refund.status} cannot be appealed")
        unknown = [e for e in command.evidence_ids if refund.find_evidence(e) is None]
        if unknown:
            raise InvalidInput("evidence_ids", "not evidence of this refund: " + ", ".join(unknown))
        stored = get_owned_order(ports, command.user_id, refund.order_id)
        booking = current_booking(ports, stored, repair=True, own_refund_id=refund.refund_id)
        if booking.open_refund_id not in (None, refund.refund_id):
            raise Conflict("another refund for this order is open", rule="E4")
        if booking.open_refund_id is None:
            amount = refund.approved_amount or refund.amount
            ports.orders.book_refund(
                refund.order_id, refund.refund_id, amount, booking, ports.clock.wall_now()
            )
        at = ports.clock.now()
        note = command.statement
        if command.evidence_ids:
            note += " (evidence: " + ", ".join(command.evidence_ids) + ")"
        record(
            refund, Action.APPEAL, actor=command.user_id, at=at, to=RefundStatus.APPEALED, note=note
        )
        refund.appealed = True
        refund.senior_only = True
        refund.assignee = None
        start_review_promise(refund, ports.calendar, at)
        for slot in refund.evidence:
            slot.submitted = slot.submitted or slot.uploaded
        ports.refunds.save(refund)
        return refund

    return on_fresh_state(change)
