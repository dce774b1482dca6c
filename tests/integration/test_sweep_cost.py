"""The sweeps cost what is due, never the table (DESIGN.md, "Queries, not scans"): with 5,000
refunds stored and 10 overdue, one escalate-overdue run reads a few dozen items at most.
Counted in items read (the Query answers' ScannedCount, which moto reports faithfully),
through botocore's own after-call event on the refunds table's client."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.model import RefundStatus
from chalicelib.service import promises
from chalicelib.service.ports import Ports
from tests.fakes import FakeClock, SequentialIds, sample_refund

STORED = 5000
OVERDUE = 10
SUBMITTED = datetime(2026, 11, 20, 9, 30, tzinfo=SHANGHAI)


@pytest.fixture
def store(aws: Any) -> Iterator[tuple[Ports, dict[str, int]]]:
    from chalicelib.adapters.dynamodb import RefundModel
    from chalicelib.domain.calendar import WorkingCalendar

    ports: Ports = aws.ports
    calendar: WorkingCalendar = ports.calendar
    ids = SequentialIds(FakeClock(SUBMITTED))
    with RefundModel.batch_write() as batch:
        for n in range(STORED):
            # The first ten were submitted on Monday: due Thursday night, overdue by Friday.
            at = SUBMITTED - timedelta(days=4) if n < OVERDUE else SUBMITTED
            refund = sample_refund(
                ids.new_id("rf_"),
                at,
                status=RefundStatus.PENDING_REVIEW,
                review_due_at=calendar.review_due(at),
                order=replace(sample_refund("rf_x").order, order_id=f"o-{n}"),
            )
            refund.version = 1
            batch.save(RefundModel.from_refund(refund, aws.settings.shards, calendar))
    read = {"items": 0, "calls": 0}

    def count(parsed: dict[str, Any], **_: Any) -> None:
        read["calls"] += 1
        read["items"] += int(parsed.get("ScannedCount", parsed.get("Count", 0)) or 0)

    client = RefundModel._get_connection().connection.client
    client.meta.events.register("after-call.dynamodb.Query", count)
    client.meta.events.register("after-call.dynamodb.GetItem", count)
    yield ports, read
    client.meta.events.unregister("after-call.dynamodb.Query", count)
    client.meta.events.unregister("after-call.dynamodb.GetItem", count)


def test_one_escalation_run_reads_what_is_overdue_not_the_table(
    store: tuple[Ports, dict[str, int]],
) -> None:
    ports, read = store
    now = SUBMITTED + timedelta(hours=1)
    assert promises.escalate_overdue(ports, now) == OVERDUE
    # 10 overdue items from the index (one Query per shard), then each read again to be
    # judged on its stored state: a few dozen items, whatever is stored.
    assert read["items"] <= 4 * OVERDUE
    # And a second run at once finds nothing left to raise, reading nothing more than that.
    read["items"] = 0
    assert promises.escalate_overdue(ports, now) == 0
    assert read["items"] <= 2 * OVERDUE
