"""The mobile app's routes: quotes, refunds, evidence, messages, returns and appeals."""

from __future__ import annotations

import hashlib
import json

from chalice.app import Blueprint

from chalicelib.api.errors import IdempotencyKeyMissing, InvalidRequest, error_answer
from chalicelib.api.http import Call, Reply, Router, json_text
from chalicelib.api.models import (
    AppealIn,
    CreateRefundIn,
    EvidenceIn,
    EvidenceSlotOut,
    ListRefundsQuery,
    MessageIn,
    MessageOut,
    NoContent,
    NudgeOut,
    QuoteOut,
    QuoteQuery,
    RefundListOut,
    RefundOut,
    ReturnShipmentIn,
    SubmitIn,
)
from chalicelib.bootstrap import get_ports, get_verifier
from chalicelib.domain.exceptions import DomainError
from chalicelib.domain.model import Refund
from chalicelib.service import orders, promises, refunds
from chalicelib.service.exceptions import ServiceError
from chalicelib.service.idempotency import Answer, create_refund_once

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)

MAX_IDEMPOTENCY_KEY = 255


@api.route(
    "/orders/{order_id}/refund-quote",
    "GET",
    query=QuoteQuery,
    response=QuoteOut,
    summary="What a refund of the order would pay back, and why (F4)",
)
def refund_quote(call: Call, order_id: str) -> QuoteOut:
    reason_defaulted = "reason" not in call.query.model_fields_set
    quote = orders.quote_order(
        get_ports(),
        call.user_id,
        order_id,
        reason=call.query.reason,
        gifts_returned=call.query.gifts_returned,
        reason_defaulted=reason_defaulted,
    )
    return QuoteOut.of(quote, currency="CNY")


def _render_create(outcome: Refund | DomainError | ServiceError) -> Answer:
    if isinstance(outcome, Refund):
        return Answer(201, RefundOut.model_validate(outcome).model_dump_json(by_alias=True))
    answer = error_answer(outcome)
    if answer is None:
        raise outcome
    return Answer(answer.status, json_text(answer.body))


def _fingerprint(raw_body: bytes) -> str:
    """The body in canonical form (sorted keys, no whitespace), hashed."""
    canonical = json.dumps(
        json.loads(raw_body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@api.route(
    "/refunds",
    "POST",
    body=CreateRefundIn,
    response=RefundOut,
    status=201,
    errors=(404, 409, 415, 422),
    headers=("Idempotency-Key",),
    summary="Open a refund of an order (F1)",
)
def create_refund(call: Call) -> Reply:
    key = call.headers.get("idempotency-key", "")
    if not key:
        raise IdempotencyKeyMissing("the Idempotency-Key header is required")
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(
            "Idempotency-Key is too long",
            [{"field": "Idempotency-Key", "problem": f"at most {MAX_IDEMPOTENCY_KEY} characters"}],
        )
    body: CreateRefundIn = call.body
    command = refunds.CreateRefund(
        user_id=call.user_id,
        order_id=body.order_id,
        reason=body.reason,
        description=body.description,
        payout_channel=body.payout_channel,
        gifts_returned=body.gifts_returned,
    )
    answer = create_refund_once(
        get_ports(),
        command,
        key=key,
        fingerprint=_fingerprint(call.raw_body),
        render=_render_create,
    )
    return Reply(answer.body, answer.status_code)


@api.route(
    "/refunds",
    "GET",
    query=ListRefundsQuery,
    response=RefundListOut,
    summary="The caller's refunds, newest first",
)
def list_refunds(call: Call) -> RefundListOut:
    q: ListRefundsQuery = call.query
    page = refunds.list_refunds(get_ports(), call.user_id, q.status, q.limit, q.cursor)
    return RefundListOut.model_validate(page)


@api.route("/refunds/{refund_id}", "GET", response=RefundOut, summary="One refund")
def get_refund(call: Call, refund_id: str) -> RefundOut:
    return RefundOut.model_validate(refunds.get_refund(get_ports(), call.user_id, refund_id))


@api.route(
    "/refunds/{refund_id}/evidence",
    "POST",
    body=EvidenceIn,
    response=EvidenceSlotOut,
    status=201,
    errors=(409, 415),
    summary="Open an evidence slot with a presigned S3 upload",
)
def add_evidence(call: Call, refund_id: str) -> EvidenceSlotOut:
    body: EvidenceIn = call.body
    slot = refunds.add_evidence(
        get_ports(),
        refunds.AddEvidence(call.user_id, refund_id, body.kind, body.content_type, body.size),
    )
    return EvidenceSlotOut.of(slot)


@api.route(
    "/refunds/{refund_id}/evidence/{evidence_id}",
    "DELETE",
    response=NoContent,
    status=204,
    errors=(409,),
    summary="Remove an evidence slot that has not counted toward a submission",
)
def remove_evidence(call: Call, refund_id: str, evidence_id: str) -> Reply:
    refunds.remove_evidence(get_ports(), call.user_id, refund_id, evidence_id)
    return Reply("", 204)


@api.route(
    "/refunds/{refund_id}/submit",
    "POST",
    body=SubmitIn,
    body_required=False,
    response=RefundOut,
    errors=(409, 415, 422),
    summary="Submit the refund for review (F2, R1)",
)
def submit_refund(call: Call, refund_id: str) -> RefundOut:
    description = call.body.description if call.body else None
    command = refunds.SubmitRefund(call.user_id, refund_id, description)
    return RefundOut.model_validate(refunds.submit_refund(get_ports(), command))


@api.route(
    "/refunds/{refund_id}/cancel",
    "POST",
    response=RefundOut,
    errors=(409,),
    summary="Withdraw the refund",
)
def cancel_refund(call: Call, refund_id: str) -> RefundOut:
    return RefundOut.model_validate(refunds.cancel_refund(get_ports(), call.user_id, refund_id))


@api.route(
    "/refunds/{refund_id}/messages",
    "POST",
    body=MessageIn,
    response=MessageOut,
    status=201,
    errors=(409, 415),
    summary="Post a message on the refund (O5)",
)
def post_message(call: Call, refund_id: str) -> MessageOut:
    command = refunds.PostMessage(call.user_id, refund_id, call.body.body)
    message = refunds.post_message(get_ports(), command)
    return MessageOut(at=message.at, author_role="user", body=message.body)


@api.route(
    "/refunds/{refund_id}/return-shipment",
    "POST",
    body=ReturnShipmentIn,
    response=RefundOut,
    errors=(409, 415),
    summary="Tell how the goods come back (PH1)",
)
def return_shipment(call: Call, refund_id: str) -> RefundOut:
    body: ReturnShipmentIn = call.body
    command = refunds.ReturnShipmentSent(
        call.user_id, refund_id, body.carrier, body.tracking_number
    )
    return RefundOut.model_validate(refunds.send_return_shipment(get_ports(), command))


@api.route(
    "/refunds/{refund_id}/appeal",
    "POST",
    body=AppealIn,
    response=RefundOut,
    errors=(409, 415),
    summary="Appeal a rejection once, to a senior reviewer (X3)",
)
def appeal(call: Call, refund_id: str) -> RefundOut:
    body: AppealIn = call.body
    command = refunds.Appeal(call.user_id, refund_id, body.statement, tuple(body.evidence_ids))
    return RefundOut.model_validate(refunds.appeal_refund(get_ports(), command))


@api.route(
    "/refunds/{refund_id}/nudge",
    "POST",
    response=NudgeOut,
    errors=(409, 429),
    summary="Ask where the refund is; escalates it once a promise has passed (X2, X4)",
)
def nudge(call: Call, refund_id: str) -> NudgeOut:
    return NudgeOut.model_validate(promises.nudge(get_ports(), call.user_id, refund_id))
