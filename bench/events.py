"""How soon a refund's change reaches a consumer of the event bus, on the local stack.

For platform-fault refunds (created, then submitted and paid with no person): from the
moment the request that wrote the change returned, to the moment its event shows at the
local consumer (``GET /_local/events``, polled every few milliseconds), beside one
``GET /refunds/{id}`` of the same run. The change's write happens inside that request, so
this reads a little long, never short. The cost the stream and the bus add per refund is
counted from the clients' own events: EventBridge PutEvents, and the stream reads.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

__all__ = ["EventFigures", "measure_events", "print_events"]

REFUNDS = 40
POLL_SECONDS = 0.003
DEADLINE_SECONDS = 10.0


@dataclass
class EventFigures:
    to_event_ms: list[float] = field(default_factory=list)
    get_ms: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    refunds: int = 0


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def measure_events(api: str, tokens: dict[str, str]) -> EventFigures:
    """``tokens``: ``user`` and ``orders`` bearer tokens, and the user's id."""
    figures = EventFigures()
    session = requests.Session()
    user = {"Authorization": f"Bearer {tokens['user']}"}
    orders = {"Authorization": f"Bearer {tokens['orders']}"}
    now = datetime.now(UTC)
    order_ids = []
    for n in range(REFUNDS):
        order_id = f"o-events-{n}-{uuid.uuid4().hex[:6]}"
        order: dict[str, Any] = {
            "order_id": order_id,
            "user_id": tokens["user_id"],
            "kind": "virtual",
            "sku": "steam-100",
            "category": "game-card",
            "list_price": 10000,
            "paid_amount": 8800,
            "payment_channel": "balance",
            "paid_at": (now - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "refund_deadline": (now + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "status": "delivered",
            "platform_fault": "duplicate_charge",
        }
        session.put(
            f"{api}/internal/orders/{order_id}", json=order, headers=orders
        ).raise_for_status()
        order_ids.append(order_id)
    for order_id in order_ids:
        created = session.post(
            f"{api}/refunds",
            json={
                "order_id": order_id,
                "reason": "duplicate_charge",
                "description": "同一笔订单被重复扣款两次，请退回多扣的一笔",
            },
            headers={**user, "Idempotency-Key": uuid.uuid4().hex},
        )
        created.raise_for_status()
        written = time.perf_counter()
        refund_id = created.json()["refund_id"]
        figures.to_event_ms.append(_until_event(session, api, refund_id, "refund.draft", written))
        submitted = session.post(f"{api}/refunds/{refund_id}/submit", headers=user)
        submitted.raise_for_status()
        written = time.perf_counter()
        figures.to_event_ms.append(
            _until_event(session, api, refund_id, "refund.submitted", written)
        )
        _until_event(session, api, refund_id, "refund.paid", time.perf_counter())
        started = time.perf_counter()
        session.get(f"{api}/refunds/{refund_id}", headers=user).raise_for_status()
        figures.get_ms.append((time.perf_counter() - started) * 1000)
        figures.refunds += 1
    return figures


def _until_event(
    session: requests.Session, api: str, refund_id: str, kind: str, since: float
) -> float:
    while time.perf_counter() - since < DEADLINE_SECONDS:
        items = session.get(f"{api}/_local/events", params={"refund_id": refund_id}).json()["items"]
        if any(item["detail-type"] == kind for item in items):
            return (time.perf_counter() - since) * 1000
        time.sleep(POLL_SECONDS)
    raise RuntimeError(f"no {kind} event for {refund_id} in {DEADLINE_SECONDS} s")


def print_events(figures: EventFigures) -> None:
    print()
    print(
        f"refund events, {figures.refunds} platform-fault refunds (create, submit, paid by itself)"
    )
    print(
        f"write to event at the consumer: p50 {_p(figures.to_event_ms, 50):.1f} ms, "
        f"p95 {_p(figures.to_event_ms, 95):.1f} ms; GET /refunds/{{id}} of the same run: "
        f"p50 {_p(figures.get_ms, 50):.1f} ms, p95 {_p(figures.get_ms, 95):.1f} ms"
    )
    per = {name: n / max(figures.refunds, 1) for name, n in sorted(figures.calls.items())}
    added = ", ".join(f"{name} {n:.1f}" for name, n in per.items())
    print(f"what the stream and the bus add per refund (5 events each): {added}")
