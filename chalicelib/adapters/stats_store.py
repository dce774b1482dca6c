"""Refund analytics' counters in DynamoDB (O4): one item per Asia/Shanghai day and group
(``2026-11-20#p#3``: platform counters of shard 3; ``#s#k``: per-SKU counters of shard k),
each counter a numeric attribute that changes only by ``ADD``.

Changes arrive from the tables' streams, at least once. Each is applied exactly once: one
transaction writes its counters and a marker of the order or refund it came from, holding
the last stream sequence number applied for that item, conditioned to be lower than this
record's. A redelivered record (or a retry whose answer was lost) fails the marker's
condition, and is recognised as applied. Markers expire after the stream's retention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from chalicelib.adapters.clients import OnFirstUseClient
from chalicelib.domain.stats import Contribution
from chalicelib.service.ports import CounterChange

__all__ = ["DynamoStatsStore", "sequence_key"]

log = logging.getLogger("refunds.stats")

SEQUENCE_DIGITS = 40
"""DynamoDB stream sequence numbers are decimal strings of up to 40 digits: padded, they
compare as text as they do as numbers."""
MARKER_DAYS = 2
"""Longer than a stream keeps its records (24 hours)."""
BATCH_GET = 100


def sequence_key(sequence_number: str) -> str:
    return sequence_number.zfill(SEQUENCE_DIGITS)


class DynamoStatsStore(OnFirstUseClient):
    def __init__(self, table: str, client_factory: Callable[[], Any]) -> None:
        self._table = table
        super().__init__(client_factory)

    def apply(self, change: CounterChange) -> bool:
        """Apply one stream record's counters once; False if it was applied before."""
        sequence = sequence_key(change.sequence_number)
        marker = {
            "Update": {
                "TableName": self._table,
                "Key": {"key": {"S": f"mark#{change.source}"}},
                "UpdateExpression": "SET #seq = :seq, #ttl = :ttl",
                "ConditionExpression": "attribute_not_exists(#seq) OR #seq < :seq",
                "ExpressionAttributeNames": {"#seq": "seq", "#ttl": "expires_at"},
                "ExpressionAttributeValues": {
                    ":seq": {"S": sequence},
                    ":ttl": {"N": str(int(time.time()) + MARKER_DAYS * 86400)},
                },
            }
        }
        try:
            self.client.transact_write_items(
                TransactItems=[marker, *self._counter_updates(change.delta)]
            )
        except self.client.exceptions.TransactionCanceledException as error:
            reasons = error.response.get("CancellationReasons", [])
            if not reasons or reasons[0].get("Code") != "ConditionalCheckFailed":
                raise
            return False  # this record, or a later one of the same item, was applied
        return True

    def _counter_updates(self, delta: Contribution) -> list[dict[str, Any]]:
        updates = []
        for (day, group), counters in sorted(delta.items()):
            names = {f"#c{i}": name for i, name in enumerate(counters)}
            values = {f":c{i}": {"N": str(n)} for i, n in enumerate(counters.values())}
            adds = ", ".join(f"#c{i} :c{i}" for i in range(len(counters)))
            updates.append(
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": {"key": {"S": f"{day.isoformat()}#{group}"}},
                        "UpdateExpression": f"ADD {adds}",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
            )
        return updates

    def days(self, first: date, last: date, groups: list[str]) -> list[dict[str, int]]:
        """The counters of every group of every day from ``first`` to ``last``: a bounded
        number of items (days x groups), whatever the number of refunds."""
        keys = [
            f"{(first + timedelta(days=n)).isoformat()}#{group}"
            for n in range((last - first).days + 1)
            for group in groups
        ]
        found: list[dict[str, int]] = []
        for start in range(0, len(keys), BATCH_GET):
            wanted: dict[str, Any] = {
                self._table: {
                    "Keys": [{"key": {"S": key}} for key in keys[start : start + BATCH_GET]],
                    "ConsistentRead": True,
                }
            }
            while wanted:
                answer = self.client.batch_get_item(RequestItems=wanted)
                found += [_counters(item) for item in answer["Responses"].get(self._table, [])]
                wanted = answer.get("UnprocessedKeys") or {}
        return found

    def record_day(self, day: date, figures: str) -> None:
        """Keep a day's figures as they were when the day was over (``daily-stats``)."""
        self.client.put_item(
            TableName=self._table,
            Item={"key": {"S": f"summary#{day.isoformat()}"}, "figures": {"S": figures}},
        )


def _counters(item: dict[str, Any]) -> dict[str, int]:
    return {name: int(value["N"]) for name, value in item.items() if "N" in value}
