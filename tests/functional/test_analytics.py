"""Refund analytics (O4) through Chalice's test client: the stream consumer counts each
stored change once, and GET /admin/stats reads the counters.

moto's in-process mode does not serve DynamoDB streams (the local stack's server does:
tests/e2e), so each test builds the stream records Lambda would deliver from the items as
stored, before and after each change, with increasing sequence numbers per item.
"""

from __future__ import annotations

from itertools import count
from typing import Any

import pytest

from tests.functional.conftest import Api, Shop
from tests.support import bearer

AGENT = bearer("agent-1", "cs-agent")
PERIOD = "from=2026-11-01&to=2026-11-30"


class Stream:
    """The records of the orders' and refunds' streams, as Lambda hands them over."""

    def __init__(self, aws: Any) -> None:
        import boto3

        self._ddb = boto3.client("dynamodb", region_name=aws.settings.region)
        self._tables = {"orders": aws.settings.orders_table, "refunds": aws.settings.refunds_table}
        self._last: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._sequence = count(1000)

    def image(self, table: str, key: str) -> dict[str, Any] | None:
        name = "order_id" if table == "orders" else "refund_id"
        item = self._ddb.get_item(
            TableName=self._tables[table], Key={name: {"S": key}}, ConsistentRead=True
        ).get("Item")
        return dict(item) if item else None

    def changed(self, table: str, key: str) -> dict[str, Any]:
        """The record of ``key``'s change since the last record of it."""
        name = "order_id" if table == "orders" else "refund_id"
        before, after = self._last.get((table, key)), self.image(table, key)
        self._last[(table, key)] = after
        record: dict[str, Any] = {
            "eventID": str(next(self._sequence)),
            "eventName": "INSERT" if before is None else "MODIFY",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": {name: {"S": key}},
                "SequenceNumber": str(next(self._sequence)).zfill(21),
                "StreamViewType": "NEW_AND_OLD_IMAGES",
            },
        }
        if before is not None:
            record["dynamodb"]["OldImage"] = before
        if after is not None:
            record["dynamodb"]["NewImage"] = after
        return record


@pytest.fixture
def stream(aws: Any) -> Stream:
    return Stream(aws)


def consume(client: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
    payload: dict[str, Any] = client.lambda_.invoke("stats_consumer", {"Records": records}).payload
    return payload


def stats(api: Api) -> dict[str, Any]:
    answer = api.get(f"/admin/stats?{PERIOD}", AGENT)
    assert answer.status == 200, answer.json
    return dict(answer.json)


def test_each_stored_change_is_counted_once_O4(
    api: Api, shop: Shop, client: Any, stream: Stream
) -> None:
    # GIVEN an order paid on 20 Nov and a refund of it, submitted (each change a record)
    shop.order(paid_at="2026-11-20T08:00:00Z")
    records = [stream.changed("orders", "o-1001")]
    refund_id = shop.refund()["refund_id"]
    records.append(stream.changed("refunds", refund_id))
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    assert shop.submit(refund_id).status == 200
    records.append(stream.changed("refunds", refund_id))
    # WHEN the consumer gets them
    assert consume(client, records) == {"batchItemFailures": []}
    # THEN the period's figures count the order and the submitted refund
    figures = stats(api)
    assert (figures["orders"], figures["refunds"]) == (1, 1)
    assert figures["by_reason"] == {"invalid_code": 1}
    assert figures["by_status"] == {"submitted": 1}
    assert figures["sla_breaches"] == {"review": 0, "payout": 0}
    # AND the same records delivered again count nothing twice
    assert consume(client, records) == {"batchItemFailures": []}
    assert stats(api) == figures


def test_a_change_moves_counts_and_an_older_record_after_it_is_ignored(
    api: Api, shop: Shop, client: Any, stream: Stream
) -> None:
    shop.order(paid_at="2026-11-20T08:00:00Z")
    refund_id = shop.refund()["refund_id"]
    stream.changed("refunds", refund_id)  # the draft: counts nowhere
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    shop.submit(refund_id)
    submitted = stream.changed("refunds", refund_id)
    assert shop.cancel(refund_id).status == 200
    cancelled = stream.changed("refunds", refund_id)
    consume(client, [submitted, cancelled])
    assert stats(api)["by_status"] == {"cancelled": 1}
    # A redelivery of the earlier change, after the later one, changes nothing.
    consume(client, [submitted])
    figures = stats(api)
    assert (figures["refunds"], figures["by_status"]) == (1, {"cancelled": 1})


def test_a_period_is_checked(api: Api, aws: Any) -> None:
    backwards = api.get("/admin/stats?from=2026-11-30&to=2026-11-01", AGENT)
    assert (backwards.status, backwards.fields()) == (400, ["to"])
    too_long = api.get("/admin/stats?from=2024-01-01&to=2026-01-01", AGENT)
    assert too_long.status == 400
    missing = api.get("/admin/stats?from=2026-11-01", AGENT)
    assert (missing.status, missing.fields()) == (400, ["to"])
    assert api.get(f"/admin/stats?{PERIOD}", bearer("u-1")).status == 403
    empty = stats(api)
    assert (empty["orders"], empty["median_review_hours"], empty["anomalies"]) == (0, None, [])


def test_the_days_figures_are_kept_by_daily_stats(api: Api, aws: Any) -> None:
    ran = api.post("/_local/schedules/daily-stats/run", None, {})
    assert ran.status == 200
    assert set(ran.json["result"]) == {"orders", "refunds"}


def test_the_events_are_described_by_an_asyncapi_document(public_api: Api) -> None:
    answer = public_api.get("/asyncapi.json")
    assert answer.status == 200
    document = answer.json
    assert document["asyncapi"].startswith("3.")
    channel = document["channels"]["refundEvents"]
    assert channel["address"] == "refunds-local"
    payload = document["components"]["schemas"]["RefundEventOut"]
    assert {"source", "detail-type", "time", "detail"} <= set(payload["required"])
    detail = document["components"]["schemas"]["RefundEventDetailOut"]
    assert "event_id" in detail["required"]


def test_the_local_event_record_needs_a_refund_id(api: Api) -> None:
    missing = api.get("/_local/events", None)
    assert (missing.status, missing.fields()) == (400, ["refund_id"])
