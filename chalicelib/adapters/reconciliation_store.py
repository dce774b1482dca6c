"""The runs of ``reconcile`` in DynamoDB: one item per day (``reconciliation#2026-11-30``) in
the analytics table, beside the days' kept figures, the run as one JSON document.

A run over a day replaces the one before it (a rerun after a late statement, or the
schedule's retry). An item holds at most 400 KB: a run keeps at most MAX_KEPT_MISMATCHES
mismatches per channel in the item (about 150 bytes each); every mismatch is logged whatever
the item keeps, and a day with more than that has a fault to fix before anything else.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from chalicelib.adapters.clients import OnFirstUseClient
from chalicelib.domain.reconciliation import (
    ChannelReconciliation,
    Mismatch,
    MismatchKind,
    Reconciliation,
)

__all__ = ["MAX_KEPT_MISMATCHES", "DynamoReconciliationStore", "dump_run", "load_run"]

MAX_KEPT_MISMATCHES = 700


def _key(day: date) -> dict[str, str]:
    return {"S": f"reconciliation#{day.isoformat()}"}


class DynamoReconciliationStore(OnFirstUseClient):
    def __init__(self, table: str, client_factory: Callable[[], Any]) -> None:
        self._table = table
        super().__init__(client_factory)

    def record(self, run: Reconciliation) -> None:
        self.client.put_item(
            TableName=self._table, Item={"key": _key(run.day), "run": {"S": dump_run(run)}}
        )

    def get(self, day: date) -> Reconciliation | None:
        item = self.client.get_item(TableName=self._table, Key={"key": _key(day)}).get("Item")
        return load_run(item["run"]["S"]) if item else None


def dump_run(run: Reconciliation) -> str:
    return json.dumps(
        {
            "day": run.day.isoformat(),
            "ran_at": run.ran_at.isoformat(),
            "channels": {
                name: {
                    "entries": channel.entries,
                    "amount": channel.amount,
                    "matched": channel.matched,
                    "mismatches": [
                        {
                            "kind": mismatch.kind.value,
                            "refund_id": mismatch.refund_id,
                            "channel_amount": mismatch.channel_amount,
                            "platform_amount": mismatch.platform_amount,
                            "platform_status": mismatch.platform_status,
                        }
                        for mismatch in channel.mismatches[:MAX_KEPT_MISMATCHES]
                    ],
                }
                for name, channel in run.channels.items()
            },
        },
        separators=(",", ":"),
    )


def load_run(text: str) -> Reconciliation:
    data = json.loads(text)
    return Reconciliation(
        day=date.fromisoformat(data["day"]),
        ran_at=datetime.fromisoformat(data["ran_at"]),
        channels={
            name: ChannelReconciliation(
                channel=name,
                entries=channel["entries"],
                amount=channel["amount"],
                matched=channel["matched"],
                mismatches=tuple(
                    Mismatch(
                        kind=MismatchKind(mismatch["kind"]),
                        refund_id=mismatch["refund_id"],
                        channel_amount=mismatch["channel_amount"],
                        platform_amount=mismatch["platform_amount"],
                        platform_status=mismatch["platform_status"],
                    )
                    for mismatch in channel["mismatches"]
                ),
            )
            for name, channel in data["channels"].items()
        },
    )
