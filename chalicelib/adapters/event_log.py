"""The local stage's consumer of the event bus: what it received, per refund (API.md,
``GET /_local/events``). Written by the local stack's consumer (infra/local/event_consumer.py)
as events arrive on its queue; read back here, oldest first, duplicates included."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from chalicelib.adapters.clients import OnFirstUseClient

__all__ = ["EVENT_LOG_KEY", "LocalEventLog"]

EVENT_LOG_KEY = ("refund_id", "received")
"""The table's hash and range keys: the refund, and when the consumer received the event."""


class LocalEventLog(OnFirstUseClient):
    def __init__(self, table: str, client_factory: Callable[[], Any]) -> None:
        self._table = table
        super().__init__(client_factory)

    def for_refund(self, refund_id: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "refund_id = :refund",
            "ExpressionAttributeValues": {":refund": {"S": refund_id}},
            "ConsistentRead": True,
        }
        while True:
            answer = self.client.query(**query)
            items += [json.loads(item["event"]["S"]) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return items
            query["ExclusiveStartKey"] = answer["LastEvaluatedKey"]
