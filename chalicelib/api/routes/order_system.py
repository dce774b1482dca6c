"""The platform's order system feeds orders in (its messages arrive on the order-events
queue too: chalicelib/api/routes/workers.py)."""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.errors import InvalidRequest
from chalicelib.api.http import Access, Call, Router
from chalicelib.api.models import OrderIn, OrderOut
from chalicelib.bootstrap import get_ports, get_verifier
from chalicelib.service import orders

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)


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
