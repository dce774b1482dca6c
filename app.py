"""The refund API on Chalice: only wiring. Each view parses, calls one use case, answers."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache

from chalice.app import Chalice

from chalicelib.api.errors import IdempotencyKeyMissing, InvalidRequest, error_answer
from chalicelib.api.http import Access, Call, Reply, Router, json_text, request_context
from chalicelib.api.models import (
    CreateRefundIn,
    EvidenceIn,
    EvidenceSlotOut,
    HealthOut,
    ListRefundsQuery,
    MessageIn,
    MessageOut,
    OpenApiOut,
    OrderIn,
    OrderOut,
    QuoteOut,
    QuoteQuery,
    RefundListOut,
    RefundOut,
    RefundPolicyOut,
    RefundPolicyQuery,
    SubmitIn,
)
from chalicelib.api.openapi import build_openapi
from chalicelib.bootstrap import get_ports, get_verifier
from chalicelib.domain.exceptions import DomainError
from chalicelib.domain.model import Refund
from chalicelib.domain.rules import rules_for
from chalicelib.service import orders, refunds
from chalicelib.service.exceptions import ServiceError
from chalicelib.service.idempotency import Answer, create_refund_once

# Powertools writes the logs (JSON, request id on every line); Chalice adds no plain copy.
app = Chalice(app_name="refunds", configure_logs=False)
app.register_middleware(request_context, "http")
api = Router(app, get_verifier)

MAX_IDEMPOTENCY_KEY = 255


@api.route("/health", "GET", access=Access.PUBLIC, response=HealthOut, summary="Liveness")
def health(call: Call) -> HealthOut:
    return HealthOut(status="ok")


@lru_cache(maxsize=1)
def _openapi_document() -> str:
    return json.dumps(build_openapi(api.specs, "Refunds API", "1.0.0"), ensure_ascii=False)


@api.route(
    "/openapi.json",
    "GET",
    access=Access.PUBLIC,
    response=OpenApiOut,
    summary="This API's OpenAPI 3 document",
)
def openapi(call: Call) -> Reply:
    return Reply(_openapi_document())


@api.route(
    "/refund-policy",
    "GET",
    access=Access.PUBLIC,
    query=RefundPolicyQuery,
    response=RefundPolicyOut,
    summary="The refund rules a product page shows (F4)",
)
def refund_policy(call: Call) -> RefundPolicyOut:
    return RefundPolicyOut.of(call.query.kind, rules_for(call.query.kind))


@api.route(
    "/internal/orders/{order_id}",
    "PUT",
    access=Access.ORDER_SERVICE,
    body=OrderIn,
    response=OrderOut,
    summary="Upsert an order from the order system",
)
def put_order(call: Call, order_id: str) -> OrderOut:
    if call.body.order_id != order_id:
        raise InvalidRequest(
            "order_id differs from the path", [{"field": "order_id", "problem": "not the path's"}]
        )
    return OrderOut.model_validate(orders.upsert_order(get_ports(), call.body.to_order()).order)


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
    errors=(404, 409, 422),
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
    errors=(409,),
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
    "/refunds/{refund_id}/submit",
    "POST",
    body=SubmitIn,
    body_required=False,
    response=RefundOut,
    errors=(409, 422),
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
    errors=(409,),
    summary="Post a message on the refund (O5)",
)
def post_message(call: Call, refund_id: str) -> MessageOut:
    command = refunds.PostMessage(call.user_id, refund_id, call.body.body)
    message = refunds.post_message(get_ports(), command)
    return MessageOut(at=message.at, author_role="user", body=message.body)


api.answer_other_methods()
