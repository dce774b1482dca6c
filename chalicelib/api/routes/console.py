"""The customer-service console's routes (``cs-agent``, ``cs-senior``): the queue, a refund's
detail, and every decision (R3, R4, A1, PH1, P2, X1, X3)."""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.http import Access, Call, Router
from chalicelib.api.models import (
    AdminRefundOut,
    ApproveIn,
    OrderOut,
    OrderStatusIn,
    QueueOut,
    QueueQuery,
    ReconciliationOut,
    ReconciliationQuery,
    RejectIn,
    RequestInfoIn,
    RetryPayoutIn,
    ReturnReceivedIn,
    StatsOut,
    StatsQuery,
)
from chalicelib.bootstrap import get_ports, get_verifier
from chalicelib.domain.model import Refund
from chalicelib.domain.review import SENIOR_ROLE
from chalicelib.service import analytics, payout, reconciliation, review

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)


def _agent(call: Call) -> review.Agent:
    principal = call.principal
    if principal is None:
        raise RuntimeError("console routes are never public")
    return review.Agent(principal.user_id, principal.has_any(SENIOR_ROLE))


def _detail(refund: Refund) -> AdminRefundOut:
    """The answer of a decision: the refund it just wrote, as the detail shows it."""
    return AdminRefundOut.of(review.detail_of(get_ports(), refund))


@api.route(
    "/admin/refunds",
    "GET",
    access=Access.CS,
    query=QueueQuery,
    response=QueueOut,
    summary="The CS queue of one status: highest escalation, then earliest due",
)
def queue(call: Call) -> QueueOut:
    q: QueueQuery = call.query
    page = review.list_queue(get_ports(), q.status, q.escalated, q.limit, q.cursor)
    return QueueOut.model_validate(page)


@api.route(
    "/admin/refunds/{refund_id}",
    "GET",
    access=Access.CS,
    response=AdminRefundOut,
    summary="A refund with its order as it was, evidence to look at, and its steps",
)
def refund_detail(call: Call, refund_id: str) -> AdminRefundOut:
    return AdminRefundOut.of(review.refund_detail(get_ports(), refund_id))


@api.route(
    "/admin/refunds/{refund_id}/claim",
    "POST",
    access=Access.CS,
    response=AdminRefundOut,
    errors=(409,),
    summary="Claim the refund (R4); a senior may take it over",
)
def claim(call: Call, refund_id: str) -> AdminRefundOut:
    return _detail(review.claim(get_ports(), _agent(call), refund_id))


@api.route(
    "/admin/refunds/{refund_id}/approve",
    "POST",
    access=Access.CS,
    body=ApproveIn,
    body_required=False,
    response=AdminRefundOut,
    errors=(409, 415, 422),
    summary="Approve the computed amount or less (A1); the payout follows",
)
def approve(call: Call, refund_id: str) -> AdminRefundOut:
    body: ApproveIn | None = call.body
    command = review.Approve(refund_id, body.amount if body else None, body.note if body else None)
    return _detail(review.approve(get_ports(), _agent(call), command))


@api.route(
    "/admin/refunds/{refund_id}/reject",
    "POST",
    access=Access.CS,
    body=RejectIn,
    response=AdminRefundOut,
    errors=(409, 415),
    summary="Reject, citing the rule (O3)",
)
def reject(call: Call, refund_id: str) -> AdminRefundOut:
    body: RejectIn = call.body
    return _detail(
        review.reject(get_ports(), _agent(call), review.Reject(refund_id, body.rule, body.message))
    )


@api.route(
    "/admin/refunds/{refund_id}/request-info",
    "POST",
    access=Access.CS,
    body=RequestInfoIn,
    response=AdminRefundOut,
    errors=(409, 415),
    summary="Ask the user for exactly what is missing (R3)",
)
def request_info(call: Call, refund_id: str) -> AdminRefundOut:
    return _detail(review.request_info(get_ports(), _agent(call), refund_id, call.body.message))


@api.route(
    "/admin/refunds/{refund_id}/return-received",
    "POST",
    access=Access.CS,
    body=ReturnReceivedIn,
    response=AdminRefundOut,
    errors=(409, 415),
    summary="The goods are back (PH1, PR1): pay, or reject if not intact",
)
def return_received(call: Call, refund_id: str) -> AdminRefundOut:
    body: ReturnReceivedIn = call.body
    command = review.ReturnReceived(refund_id, body.intact, body.gifts_returned)
    return _detail(review.return_received(get_ports(), _agent(call), command))


@api.route(
    "/admin/refunds/{refund_id}/retry-payout",
    "POST",
    access=Access.CS,
    body=RetryPayoutIn,
    response=AdminRefundOut,
    errors=(409, 415),
    summary="Send a failed payout again, to the original channel or the balance (P2)",
)
def retry_payout(call: Call, refund_id: str) -> AdminRefundOut:
    command = payout.RetryPayout(refund_id, call.body.payout_channel)
    return _detail(payout.retry_payout(get_ports(), _agent(call), command))


@api.route(
    "/admin/orders/{order_id}/status",
    "PUT",
    access=Access.CS,
    body=OrderStatusIn,
    response=OrderOut,
    errors=(409, 415),
    summary="Correct an order's status, with a note (X1)",
)
def correct_order_status(call: Call, order_id: str) -> OrderOut:
    body: OrderStatusIn = call.body
    command = review.CorrectOrderStatus(order_id, body.status, body.note)
    return OrderOut.model_validate(review.correct_order_status(get_ports(), _agent(call), command))


@api.route(
    "/admin/stats",
    "GET",
    access=Access.CS,
    query=StatsQuery,
    response=StatsOut,
    summary="Refund analytics of a period of Asia/Shanghai days (O4)",
)
def stats(call: Call) -> StatsOut:
    q: StatsQuery = call.query
    figures = analytics.period_stats(get_ports(), q.from_, q.to)
    return StatsOut.model_validate({**figures.__dict__, "from_": q.from_, "to": q.to})


@api.route(
    "/admin/reconciliation",
    "GET",
    access=Access.SENIOR,
    query=ReconciliationQuery,
    response=ReconciliationOut,
    errors=(404,),
    summary="The reconciliation of one Asia/Shanghai day: channel statements against refunds",
)
def reconciliation_of_day(call: Call) -> ReconciliationOut:
    q: ReconciliationQuery = call.query
    return ReconciliationOut.model_validate(reconciliation.reconciliation_of(get_ports(), q.day))
