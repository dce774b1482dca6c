"""What the promised-times sweep and the analytics read cost, in items read and AWS calls.

One ``escalate-overdue`` run over 5,000 stored refunds of which 10 are overdue, and one over
20,000 with 10 overdue: a sweep must cost what is overdue, never the table, so both should
read the same few dozen items. And ``GET /admin/stats`` for a month: a bounded number of
items (days x counter shards), whatever the number of refunds.

On moto in this process (its own account, apart from the local stack): items read
(``ScannedCount``, which moto reports faithfully) and calls are the measure; moto's time
grows with the table for any Query, which AWS's does not, so milliseconds are printed only
beside them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

__all__ = ["SweepFigures", "measure_sweeps", "print_sweeps"]

STORES = (5000, 20000)
OVERDUE = 10
SUBMITTED = datetime.fromisoformat("2026-11-20T09:30:00+08:00")
MONTH = (date(2026, 11, 1), date(2026, 11, 30))


@dataclass(frozen=True)
class SweepFigures:
    label: str
    stored: int
    changed: int
    items_read: int
    calls: Counter[str]
    ms: float


class _Reads:
    """Items read and calls, from botocore's own after-call events."""

    def __init__(self) -> None:
        self.items = 0
        self.calls: Counter[str] = Counter()

    def __call__(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls[model.name] += 1
        if "ScannedCount" in parsed:
            self.items += int(parsed["ScannedCount"])
        elif "Item" in parsed:
            self.items += 1
        elif "Responses" in parsed:
            self.items += sum(len(items) for items in parsed["Responses"].values())

    def reset(self) -> None:
        self.items = 0
        self.calls.clear()


def measure_sweeps() -> list[SweepFigures]:
    import os

    from moto import mock_aws

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    # Each escalation is logged as a warning: here, they are the point, not news.
    logging.getLogger("refunds").setLevel(logging.ERROR)
    with mock_aws():
        return _measure()


def _measure() -> list[SweepFigures]:
    from chalicelib import bootstrap
    from chalicelib.adapters.dynamodb import MessageModel, OrderModel, RefundModel, create_tables
    from chalicelib.domain.model import RefundStatus
    from chalicelib.service import analytics, promises
    from chalicelib.settings import Settings

    settings = replace(
        Settings.from_environ(
            {
                "REFUNDS_STAGE": "local",
                "REFUNDS_TABLE_PREFIX": "bench",
                # No payout happens here: the channels are never called.
                "REFUNDS_CHANNEL_SIMULATOR_URL": "http://127.0.0.1:9",
            }
        ),
        aws_endpoint_url=None,
    )
    ports = bootstrap.build_ports(settings)
    create_tables()
    reads = _Reads()
    for model in (RefundModel, MessageModel, OrderModel):
        model._get_connection().connection.client.meta.events.register(
            "after-call.dynamodb.*", reads
        )
    ports.stats.client.meta.events.register("after-call.dynamodb.*", reads)  # type: ignore[attr-defined]
    now = SUBMITTED + timedelta(hours=1)
    figures: list[SweepFigures] = []
    stored = 0
    for target in STORES:
        _store(ports, target - stored, RefundStatus.PENDING_REVIEW)
        stored = target
        reads.reset()
        started = time.perf_counter()
        raised = promises.escalate_overdue(ports, now)
        ms = (time.perf_counter() - started) * 1000
        figures.append(
            SweepFigures("escalate-overdue", stored, raised, reads.items, Counter(reads.calls), ms)
        )
    _fill_month(ports)
    reads.reset()
    started = time.perf_counter()
    analytics.period_stats(ports, *MONTH)
    ms = (time.perf_counter() - started) * 1000
    figures.append(
        SweepFigures("GET /admin/stats, a month", stored, 0, reads.items, Counter(reads.calls), ms)
    )
    return figures


def _store(ports: Any, count: int, status: Any) -> None:
    """``count`` refunds in review, the first ``OVERDUE`` of them submitted four days before
    ``SUBMITTED``: due Thursday night, overdue by Friday (level 1, not yet 2)."""
    from chalicelib.adapters.dynamodb import RefundModel
    from chalicelib.adapters.ids import UlidGenerator
    from chalicelib.domain.model import (
        Order,
        OrderKind,
        OrderStatus,
        PaymentChannel,
        PayoutChannel,
        Reason,
        Refund,
    )

    ids = UlidGenerator()
    shards = ports.config.shards
    with RefundModel.batch_write() as batch:
        for n in range(count):
            at = SUBMITTED - timedelta(days=4) if n < OVERDUE else SUBMITTED
            order = Order(
                order_id=f"o-bench-{n}",
                user_id=f"u-bench-{n % 100}",
                kind=OrderKind.VIRTUAL,
                sku="steam-100",
                category="game-card",
                list_price=10000,
                paid_amount=8800,
                payment_channel=PaymentChannel.ALIPAY,
                paid_at=at - timedelta(days=1),
                refund_deadline=at + timedelta(days=30),
                status=OrderStatus.DELIVERED,
            )
            refund = Refund(
                refund_id=ids.new_id("rf_"),
                order=order,
                status=status,
                reason=Reason.INVALID_CODE,
                description="序列号无效，截图为证，要求全额退款",
                amount=8800,
                payout_channel=PayoutChannel.ORIGINAL,
                channel=PaymentChannel.ALIPAY,
                gifts_returned=True,
                fast_track=False,
                needs_return=False,
                created_at=at,
                updated_at=at,
                review_due_at=ports.calendar.review_due(at),
                version=1,
            )
            batch.save(RefundModel.from_refund(refund, shards, ports.calendar))


def _fill_month(ports: Any) -> None:
    """Every counter item of the month, as a busy platform would have them."""
    client = ports.stats.client
    table = ports.stats._table
    groups = [f"p#{n}" for n in range(ports.config.shards)] + [
        f"s#{k}" for k in range(ports.config.sku_shards)
    ]
    first, last = MONTH
    for n in range((last - first).days + 1):
        day = first + timedelta(days=n)
        for group in groups:
            item = {"key": {"S": f"{day.isoformat()}#{group}"}}
            item.update({f"sku_orders|sku-{k}": {"N": "40"} for k in range(50)})
            item.update({"orders": {"N": "1000"}, "refunds": {"N": "40"}})
            client.put_item(TableName=table, Item=item)


def print_sweeps(figures: list[SweepFigures]) -> None:
    print()
    print("what a sweep or a stats read costs (moto in this process; items read = ScannedCount)")
    print(f"{'run':<30}{'stored':>8}{'changed':>9}{'items read':>12}  calls")
    for f in figures:
        calls = ", ".join(f"{name} {n}" for name, n in sorted(f.calls.items()))
        print(
            f"{f.label:<30}{f.stored:>8}{f.changed:>9}{f.items_read:>12}  {calls}  ({f.ms:.0f} ms)"
        )
    sweeps = [f for f in figures if f.label == "escalate-overdue"]
    if len(sweeps) == 2:
        print(
            f"escalate-overdue items read with {sweeps[1].stored} stored / with "
            f"{sweeps[0].stored}: {sweeps[1].items_read} / {sweeps[0].items_read} "
            "(target: the same few dozen)"
        )
