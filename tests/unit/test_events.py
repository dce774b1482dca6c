"""Refund events (API.md, "Events for the rest of the platform"): one per creation, status
change and escalation, derived from the stored change, its event_id the refund id and
version, whatever delivers it how often."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta

import pytest

from chalicelib.domain import model
from chalicelib.domain.events import refund_event
from chalicelib.domain.transitions import STATUS_CHANGES, record
from chalicelib.service.events import publish_changes
from chalicelib.service.ports import StoredChange
from tests.fakes import FakeEventBus, make_ports

S = model.RefundStatus
MOVES = sorted(
    (action, current, target)
    for action, moves in STATUS_CHANGES.items()
    for current, targets in moves.items()
    for target in targets
)


@pytest.mark.parametrize(("action", "current", "target"), MOVES)
def test_every_status_change_of_the_table_is_an_event_with_its_previous_status(
    make_refund: Callable[..., model.Refund],
    action: model.Action,
    current: model.RefundStatus,
    target: model.RefundStatus,
) -> None:
    before = make_refund(status=current, version=6)
    after = copy.deepcopy(before)
    record(after, action, actor="agent-1", at=before.updated_at + timedelta(minutes=1), to=target)
    after.version = 7
    event = refund_event(before, after)
    assert event is not None
    assert (event.detail_type, event.status, event.previous_status) == (
        f"refund.{target.value}",
        target.value,
        current.value,
    )
    assert (event.event_id, event.version, event.at) == (
        f"{before.refund_id}#7",
        7,
        after.updated_at,
    )


def test_a_creation_is_refund_draft_and_an_escalation_refund_escalated(
    make_refund: Callable[..., model.Refund],
) -> None:
    created = make_refund(version=1)
    first = refund_event(None, created)
    assert first is not None
    assert (first.detail_type, first.previous_status, first.event_id) == (
        "refund.draft",
        None,
        f"{created.refund_id}#1",
    )
    waiting = make_refund(status=S.PENDING_REVIEW, version=4)
    escalated = copy.deepcopy(waiting)
    escalated.escalation_level, escalated.version = 1, 5
    event = refund_event(waiting, escalated)
    assert event is not None
    assert (event.detail_type, event.escalation_level) == ("refund.escalated", 1)


def test_changes_that_are_neither_are_no_event(make_refund: Callable[..., model.Refund]) -> None:
    before = make_refund(version=2)
    after = copy.deepcopy(before)
    after.description, after.version = "补充：截图见附件", 3
    assert refund_event(before, after) is None
    assert refund_event(before, None) is None


def test_a_redelivered_change_publishes_the_same_event_id(
    make_refund: Callable[..., model.Refund],
) -> None:
    # GIVEN a stored change (a stream record), published, then delivered again (a crash of
    # the publisher after PutEvents, or the stream's own redelivery)
    ports = make_ports()
    before = make_refund(status=S.PAYING, version=8)
    after = copy.deepcopy(before)
    record(after, model.Action.PAID, actor="system", at=before.updated_at, to=S.PAID)
    after.version = 9
    change = StoredChange("refunds#" + before.refund_id, "100", before, after)
    publish_changes(ports, [change])
    publish_changes(ports, [change])
    # THEN both deliveries carry one event_id, which consumers drop duplicates by
    bus = ports.events
    assert isinstance(bus, FakeEventBus)
    assert [e.event_id for e in bus.published] == [f"{before.refund_id}#9"] * 2


def test_a_batch_publishes_its_events_in_order_and_nothing_for_orders(
    make_refund: Callable[..., model.Refund], make_order: Callable[..., model.Order]
) -> None:
    ports = make_ports()
    draft = make_refund(version=1)
    submitted = copy.deepcopy(draft)
    record(submitted, model.Action.SUBMIT, actor="u-1", at=draft.updated_at, to=S.SUBMITTED)
    submitted.version = 2
    changes = [
        StoredChange("orders#o-1001", "1", None, make_order()),
        StoredChange("refunds#rf_01", "2", None, draft),
        StoredChange("refunds#rf_01", "3", draft, submitted),
    ]
    assert publish_changes(ports, changes) == 2
    bus = ports.events
    assert isinstance(bus, FakeEventBus)
    assert [(e.detail_type, e.version) for e in bus.published] == [
        ("refund.draft", 1),
        ("refund.submitted", 2),
    ]


def test_a_publisher_that_dies_before_publishing_delays_the_event_never_drops_it(
    make_refund: Callable[..., model.Refund],
) -> None:
    # GIVEN a stored change whose publication fails (the bus refuses, or the process dies)
    ports = make_ports()
    bus = ports.events
    assert isinstance(bus, FakeEventBus)
    created = make_refund(version=1)
    change = StoredChange("refunds#" + created.refund_id, "7", None, created)
    bus.fail_next("publish")
    with pytest.raises(RuntimeError):
        publish_changes(ports, [change])
    assert bus.published == []
    # WHEN the stream hands the same record over again (it keeps it until it is handled)
    publish_changes(ports, [change])
    # THEN the event is published, with the change's own event_id
    assert [e.event_id for e in bus.published] == [f"{created.refund_id}#1"]
