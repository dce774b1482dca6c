"""The contract of the storage ports, run against the in-memory fakes and the moto-backed adapters.

One suite, two implementations (DESIGN.md: "One contract suite can run against both the fake
and the moto-backed repository"): whatever the use-case tests learn from the fakes holds for
DynamoDB too. Every test that takes ``backend`` runs twice, ``[fake]`` and ``[moto]``; the
last one races real threads through the whole create on moto.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.exceptions import DomainError, NotRefundable
from chalicelib.domain.model import (
    Message,
    OrderBooking,
    PayoutChannel,
    PlatformFault,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.service.exceptions import (
    ConcurrentChange,
    Conflict,
    IdempotencyKeyInFlight,
    NotFound,
    RefundIdFenced,
    RefundTotalExceeded,
    ServiceError,
)
from chalicelib.service.idempotency import Answer, create_refund_once
from chalicelib.service.ports import (
    IdempotencyRecord,
    IdempotencyStore,
    MessageLog,
    OrderRepository,
    Ports,
    RefundRepository,
    StoredOrder,
)
from chalicelib.service.refunds import CreateRefund, SubmitRefund, submit_refund
from tests.aws_faults import lose_next_answer
from tests.fakes import FakeClock, SequentialIds, make_ports, sample_order, sample_refund

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
"""Whole seconds: the idempotency table keeps its expiry as a TTL, in epoch seconds."""

S = RefundStatus


@dataclass
class Backend:
    name: str
    orders: OrderRepository
    refunds: RefundRepository
    idempotency: IdempotencyStore
    messages: MessageLog
    read_messages: Callable[[str], list[Message]]
    ports: Ports

    def lose_answer_next(self, port: str, method: str) -> None:
        """The next ``port.method`` write is applied and its answer lost; the SDK resends it.

        On the fakes, the fake applies the same request twice; on moto, botocore itself
        discards the first answer of the DynamoDB operation behind the method and retries.
        """
        if self.name == "fake":
            getattr(self.ports, port).lose_answer_next(method)
            return
        from chalicelib.adapters import dynamodb

        model, operation = (
            {
                "orders": dynamodb.OrderModel,
                "refunds": dynamodb.RefundModel,
                "idempotency": dynamodb.IdempotencyModel,
            }[port],
            WRITE_OPERATIONS[method],
        )
        lose_next_answer(model._get_connection().connection.client, operation)


WRITE_OPERATIONS = {
    "upsert": "UpdateItem",
    "reserve": "UpdateItem",
    "book_refund": "UpdateItem",
    "settle_refund": "UpdateItem",
    "add": "PutItem",
    "save": "UpdateItem",
    "abandon": "PutItem",
    "claim": "PutItem",
    "take_over": "UpdateItem",
    "reassign": "UpdateItem",
    "finish": "UpdateItem",
    "release": "UpdateItem",
}
"""The DynamoDB operation behind each write of the storage ports."""


def _moto_messages(refund_id: str) -> list[Message]:
    from chalicelib.adapters.dynamodb import MessageModel

    return [
        Message(m.message_id, m.at, m.author_role, m.author, m.body)
        for m in MessageModel.query(refund_id, consistent_read=True)
    ]


@pytest.fixture(scope="module")
def moto_ports() -> Iterator[Ports]:
    """The moto-backed ports, built exactly as the ``aws`` fixture builds them, once per module.

    Building them costs about a second (each PynamoDB model and the S3 client load botocore's
    endpoint and service data into a session of their own), which the ~40 moto cases of this
    suite would pay each: ~50 s instead of ~2 s. So they share one moto account, and
    ``backend`` empties the tables before each case.
    """
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.adapters.dynamodb import create_tables
    from chalicelib.settings import Settings

    with mock_aws():
        ports = bootstrap.build_ports(Settings.from_environ())
        create_tables()
        yield ports


def _empty_tables() -> None:
    from chalicelib.adapters.dynamodb import MODELS

    for model in MODELS:
        with model.batch_write() as batch:
            for item in model.scan():
                batch.delete(item)


@pytest.fixture(params=["fake", "moto"])
def backend(request: pytest.FixtureRequest) -> Backend:
    clock = FakeClock(T0)
    if request.param == "fake":
        ports = make_ports(clock)
        return Backend(
            "fake",
            ports.orders,
            ports.refunds,
            ports.idempotency,
            ports.messages,
            ports.messages.for_refund,  # type: ignore[attr-defined]
            ports,
        )
    moto: Ports = request.getfixturevalue("moto_ports")
    _empty_tables()
    ports = replace(moto, clock=clock, ids=SequentialIds(clock))
    return Backend(
        "moto",
        ports.orders,
        ports.refunds,
        ports.idempotency,
        ports.messages,
        _moto_messages,
        ports,
    )


def rid(n: int) -> str:
    """Refund ids in creation order: ``rid(2) > rid(1)``, 26 characters after ``rf_``."""
    return f"rf_01KBZ{n:021d}"


def stored_order(backend: Backend, order_id: str = "o-1001") -> StoredOrder:
    stored = backend.orders.get(order_id)
    assert stored is not None
    return stored


# --- orders: upsert and version ordering ---------------------------------------------------


def test_an_unknown_order_is_none(backend: Backend) -> None:
    assert backend.orders.get("o-missing") is None


def test_upsert_stores_a_new_order_with_an_empty_booking(backend: Backend) -> None:
    order = sample_order(T0, version=1)
    assert backend.orders.upsert(order) == StoredOrder(order, OrderBooking(), None)
    assert stored_order(backend) == StoredOrder(order, OrderBooking(), None)


def test_upsert_ignores_a_lower_version_and_returns_the_stored_order(backend: Backend) -> None:
    newer = sample_order(T0, title="v3", version=3)
    backend.orders.upsert(newer)
    returned = backend.orders.upsert(sample_order(T0, title="v2", version=2))
    assert returned.order == newer
    assert stored_order(backend).order == newer


@pytest.mark.parametrize("version", [3, 4], ids=["equal", "higher"])
def test_upsert_applies_an_equal_or_higher_version(backend: Backend, version: int) -> None:
    backend.orders.upsert(sample_order(T0, title="v3", version=3))
    update = sample_order(T0, title="updated", paid_amount=9000, version=version)
    assert backend.orders.upsert(update).order == update
    assert stored_order(backend).order == update


@pytest.mark.parametrize(
    ("stored_version", "update_version", "applies"),
    [(None, None, True), (1, None, False), (None, 1, True)],
    ids=[
        "unversioned-over-unversioned",
        "unversioned-over-versioned",
        "versioned-over-unversioned",
    ],
)
def test_an_unversioned_update_applies_only_while_the_stored_order_has_no_version(
    backend: Backend, stored_version: int | None, update_version: int | None, applies: bool
) -> None:
    first = sample_order(T0, title="first", version=stored_version)
    update = sample_order(T0, title="update", version=update_version)
    backend.orders.upsert(first)
    expected = update if applies else first
    assert backend.orders.upsert(update).order == expected
    assert stored_order(backend).order == expected


def test_upsert_keeps_the_booking(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0, version=1))
    backend.orders.book_refund("o-1001", rid(1), 8800, OrderBooking(), T0)
    update = sample_order(T0, title="corrected", version=2)
    expected = StoredOrder(update, OrderBooking(0, rid(1), 8800), T0)
    assert backend.orders.upsert(update) == expected
    assert stored_order(backend) == expected


# --- orders: booking (E4) ------------------------------------------------------------------


def test_book_makes_the_refund_the_orders_open_refund(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    at = T0 + timedelta(seconds=1, microseconds=250)
    backend.orders.book_refund("o-1001", rid(1), 8800, OrderBooking(), at)
    stored = stored_order(backend)
    assert stored.booking == OrderBooking(0, rid(1), 8800)
    assert stored.booked_at == at


def test_of_two_concurrent_bookings_exactly_one_wins(backend: Backend) -> None:
    # GIVEN two creates read the same free order
    backend.orders.upsert(sample_order(T0))
    seen_by_a = stored_order(backend).booking
    seen_by_b = stored_order(backend).booking
    # WHEN both book it
    backend.orders.book_refund("o-1001", rid(1), 10000, seen_by_a, T0)
    with pytest.raises(Conflict) as raised:
        backend.orders.book_refund("o-1001", rid(2), 10000, seen_by_b, T0)
    # THEN the second is refused with E4 and the first holds the order
    assert raised.value.rule == "E4"
    assert stored_order(backend).booking == OrderBooking(0, rid(1), 10000)


def test_a_booking_on_a_changed_refunded_total_is_refused(backend: Backend) -> None:
    # GIVEN a paid refund settled after the booking was read
    backend.orders.upsert(sample_order(T0))
    seen = stored_order(backend).booking
    backend.orders.book_refund("o-1001", rid(1), 4000, seen, T0)
    backend.orders.settle_refund("o-1001", rid(1), 4000, paid_limit=10000)
    # WHEN a create books with what it saw before
    with pytest.raises(Conflict) as raised:
        backend.orders.book_refund("o-1001", rid(2), 10000, seen, T0)
    assert raised.value.rule == "E4"
    # THEN only a booking on the current total goes through
    backend.orders.book_refund("o-1001", rid(2), 6000, OrderBooking(refunded_total=4000), T0)
    assert stored_order(backend).booking == OrderBooking(4000, rid(2), 6000)


def test_booking_an_unknown_order_is_refused(backend: Backend) -> None:
    with pytest.raises(Conflict):
        backend.orders.book_refund("o-missing", rid(1), 100, OrderBooking(), T0)
    assert backend.orders.get("o-missing") is None


def test_settle_adds_what_was_paid_and_frees_the_order(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    backend.orders.book_refund("o-1001", rid(1), 10000, OrderBooking(), T0)
    backend.orders.settle_refund("o-1001", rid(1), 4000, paid_limit=10000)
    assert stored_order(backend) == StoredOrder(sample_order(T0), OrderBooking(4000), None)
    # Settling again (a retried step) changes nothing.
    backend.orders.settle_refund("o-1001", rid(1), 4000, paid_limit=10000)
    assert stored_order(backend).booking == OrderBooking(4000)


def test_settle_does_nothing_when_the_open_refund_is_another(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    backend.orders.book_refund("o-1001", rid(2), 10000, OrderBooking(), T0)
    backend.orders.settle_refund("o-1001", rid(1), 5000, paid_limit=10000)
    assert stored_order(backend).booking == OrderBooking(0, rid(2), 10000)
    assert stored_order(backend).booked_at == T0
    backend.orders.settle_refund("o-missing", rid(1), 5000, paid_limit=10000)
    assert backend.orders.get("o-missing") is None


# --- refunds: add, save, as created --------------------------------------------------------


def test_an_unknown_refund_is_none(backend: Backend) -> None:
    assert backend.refunds.get(rid(1)) is None
    assert backend.refunds.get_as_created(rid(1)) is None


def test_add_stores_the_refund_at_version_1(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    assert refund.version == 1
    assert backend.refunds.get(rid(1)) == refund


def test_add_of_an_existing_id_is_a_conflict(backend: Backend) -> None:
    first = sample_refund(rid(1), T0)
    backend.refunds.add(first)
    with pytest.raises(Conflict):
        backend.refunds.add(sample_refund(rid(1), T0, description="another create"))
    assert backend.refunds.get(rid(1)) == first


def test_save_stores_the_change_and_moves_the_version(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    refund.status = S.SUBMITTED
    refund.updated_at = T0 + timedelta(minutes=1)
    backend.refunds.save(refund)
    assert refund.version == 2
    assert backend.refunds.get(rid(1)) == refund


def test_a_save_on_a_stale_version_is_a_conflict(backend: Backend) -> None:
    # GIVEN two requests read the same refund
    backend.refunds.add(sample_refund(rid(1), T0))
    first = backend.refunds.get(rid(1))
    second = backend.refunds.get(rid(1))
    assert first is not None
    assert second is not None
    # WHEN both save a change
    first.description = "first writer"
    backend.refunds.save(first)
    second.description = "second writer"
    with pytest.raises(Conflict):
        backend.refunds.save(second)
    # THEN the first change stands, never silently overwritten
    assert backend.refunds.get(rid(1)) == first


def test_a_loaded_refund_is_a_copy(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    refund.description = "changed after add"
    loaded = backend.refunds.get(rid(1))
    assert loaded is not None
    loaded.history.clear()
    loaded.status = S.CLOSED
    again = backend.refunds.get(rid(1))
    assert again is not None
    assert (again.description, again.status) == (sample_refund(rid(1), T0).description, S.DRAFT)


def test_get_as_created_is_the_refund_as_added(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    as_added = copy.deepcopy(refund)
    refund.description = "changed in memory, never saved"
    assert backend.refunds.get_as_created(rid(1)) == as_added
    assert as_added.version == 1


def test_get_as_created_is_unchanged_by_later_saves(backend: Backend) -> None:
    # GIVEN a refund created, then submitted and changed again
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    as_added = copy.deepcopy(refund)
    refund.status = S.SUBMITTED
    backend.refunds.save(refund)
    refund.description = "changed later"
    backend.refunds.save(refund)
    # THEN the state as created is still the one an idempotent replay must answer
    assert backend.refunds.get_as_created(rid(1)) == as_added


# --- refunds: a user's list ----------------------------------------------------------------


def _add_refunds(backend: Backend, count: int, user_id: str = "u-1", first: int = 1) -> list[str]:
    ids = []
    for n in range(first, first + count):
        order = sample_order(T0, order_id=f"o-{user_id}-{n}", user_id=user_id)
        backend.refunds.add(sample_refund(rid(n), T0, order=order))
        ids.append(rid(n))
    return ids


def _pages(backend: Backend, user_id: str, status: RefundStatus | None, limit: int) -> list[Any]:
    pages, cursor = [], None
    while True:
        page = backend.refunds.list_for_user(user_id, status, limit, cursor)
        pages.append(([r.refund_id for r in page.items], page.next_cursor))
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 10


def test_list_for_user_pages_newest_first_until_next_cursor_is_null(backend: Backend) -> None:
    ids = _add_refunds(backend, 5)
    _add_refunds(backend, 2, user_id="u-2", first=6)
    assert _pages(backend, "u-1", None, 2) == [
        ([ids[4], ids[3]], ids[3]),
        ([ids[2], ids[1]], ids[1]),
        ([ids[0]], None),
    ]


@pytest.mark.parametrize("limit", [2, 4, 5])
def test_next_cursor_is_null_exactly_at_the_end(backend: Backend, limit: int) -> None:
    ids = _add_refunds(backend, 4)
    pages = _pages(backend, "u-1", None, limit)
    assert [i for page, _ in pages for i in page] == ids[::-1]
    assert all(page for page, _ in pages)  # never an empty last page
    assert [cursor is None for _, cursor in pages] == [False] * (len(pages) - 1) + [True]


def test_list_for_user_filters_by_status(backend: Backend) -> None:
    ids = _add_refunds(backend, 5)
    for refund_id in (ids[0], ids[2], ids[3]):
        refund = backend.refunds.get(refund_id)
        assert refund is not None
        refund.status = S.SUBMITTED
        backend.refunds.save(refund)
    assert _pages(backend, "u-1", S.SUBMITTED, 2) == [([ids[3], ids[2]], ids[2]), ([ids[0]], None)]
    assert _pages(backend, "u-1", S.DRAFT, 10) == [([ids[4], ids[1]], None)]
    assert _pages(backend, "u-1", S.PAID, 10) == [([], None)]


def test_list_for_a_user_without_refunds_is_empty(backend: Backend) -> None:
    _add_refunds(backend, 2)
    page = backend.refunds.list_for_user("u-nobody", None, 20, None)
    assert (page.items, page.next_cursor) == ([], None)


def test_listed_refunds_are_whole(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.refunds.add(refund)
    assert backend.refunds.list_for_user("u-1", None, 20, None).items == [refund]


# --- messages ------------------------------------------------------------------------------


def test_messages_are_kept_in_id_order(backend: Backend) -> None:
    second = Message("msg_02", T0 + timedelta(seconds=1), "agent", "cs-7", "我们已收到")
    first = Message("msg_01", T0, "user", "u-1", "点卡无效，请处理")
    backend.messages.append(rid(1), second)
    backend.messages.append(rid(1), first)
    backend.messages.append(rid(2), first)
    assert backend.read_messages(rid(1)) == [first, second]


def test_oldest_messages_and_appending_one_again_changes_nothing(backend: Backend) -> None:
    """O5: the log answers a refund's oldest messages first, and a repeated append (the
    archive making sure of a message) leaves one copy."""
    messages = [
        Message(f"msg_{n:02d}", T0 + timedelta(seconds=n), "user", "u-1", f"第{n}条")
        for n in range(4)
    ]
    for message in messages:
        backend.messages.append(rid(1), message)
    backend.messages.append(rid(1), messages[0])
    assert backend.messages.oldest(rid(1), 2) == messages[:2]
    assert backend.messages.oldest(rid(1), 0) == []
    assert backend.read_messages(rid(1)) == messages


# --- fencing an abandoned create (E4) ------------------------------------------------------


def test_an_abandoned_id_can_never_be_stored(backend: Backend) -> None:
    assert backend.refunds.abandon(rid(1), T0) is True
    assert backend.refunds.abandon(rid(1), T0) is True  # fenced already
    with pytest.raises(RefundIdFenced):
        backend.refunds.add(sample_refund(rid(1), T0))
    assert backend.refunds.get(rid(1)) is None
    assert backend.refunds.get_as_created(rid(1)) is None
    assert backend.refunds.list_for_user("u-1", None, 10, None).items == []


def test_an_existing_refund_cannot_be_abandoned(backend: Backend) -> None:
    backend.refunds.add(sample_refund(rid(1), T0))
    assert backend.refunds.abandon(rid(1), T0) is False
    assert backend.refunds.get(rid(1)) is not None


# --- review and payout: reservation, queue, overdue steps, per-user count ------------------


def test_reserve_sets_the_approved_amount_within_what_was_paid_E4(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    backend.orders.book_refund("o-1001", rid(1), 6000, OrderBooking(), T0)
    backend.orders.settle_refund("o-1001", rid(1), 6000, paid_limit=10000)
    backend.orders.book_refund("o-1001", rid(2), 4000, OrderBooking(6000), T0)
    with pytest.raises(RefundTotalExceeded):
        backend.orders.reserve("o-1001", rid(2), 4001, paid_limit=10000)
    with pytest.raises(RefundTotalExceeded):
        backend.orders.reserve("o-1001", rid(3), 100, paid_limit=10000)  # not the open refund
    backend.lose_answer_next("orders", "reserve")
    backend.orders.reserve("o-1001", rid(2), 3500, paid_limit=10000)
    assert stored_order(backend).booking == OrderBooking(6000, rid(2), 3500)


def _queued(backend: Backend, n: int, status: RefundStatus, **fields: Any) -> Refund:
    refund = sample_refund(rid(n), T0, status=status, **fields)
    backend.refunds.add(refund)
    return refund


def test_the_cs_queue_is_escalated_first_then_earliest_due_then_id(backend: Backend) -> None:
    # GIVEN pending refunds with and without escalation and due times, and one other status
    due = T0 + timedelta(days=3)
    _queued(backend, 1, S.PENDING_REVIEW, review_due_at=due)
    _queued(backend, 2, S.PENDING_REVIEW, review_due_at=due - timedelta(hours=1))
    _queued(backend, 3, S.PENDING_REVIEW)
    _queued(backend, 4, S.PENDING_REVIEW, review_due_at=due, escalation_level=1)
    _queued(backend, 5, S.PENDING_REVIEW, review_due_at=due + timedelta(days=1), escalation_level=2)
    _queued(backend, 6, S.APPROVED, review_due_at=due)
    # WHEN the queue is read two at a time
    seen: list[str] = []
    cursor = None
    while True:
        page = backend.refunds.list_queue(S.PENDING_REVIEW, False, 2, cursor)
        seen += [r.refund_id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    # THEN level 2, level 1, then earliest due, none last, ties by id; each once
    assert seen == [rid(5), rid(4), rid(2), rid(1), rid(3)]
    escalated = backend.refunds.list_queue(S.PENDING_REVIEW, True, 10, None)
    assert [r.refund_id for r in escalated.items] == [rid(5), rid(4)]
    assert escalated.next_cursor is None


def test_refunds_awaiting_a_step_are_found_once_overdue(backend: Backend) -> None:
    from chalicelib.domain.workflow import Step

    _queued(backend, 1, S.SUBMITTED, awaiting_step=Step.AUTO_REVIEW, step_due_at=T0)
    _queued(
        backend,
        2,
        S.APPROVED,
        awaiting_step=Step.PAYOUT,
        step_due_at=T0 + timedelta(minutes=5),
    )
    _queued(backend, 3, S.PENDING_REVIEW)
    assert [r.refund_id for r in backend.refunds.list_awaiting_steps(T0, 10)] == [rid(1)]
    later = backend.refunds.list_awaiting_steps(T0 + timedelta(minutes=5), 10)
    assert sorted(r.refund_id for r in later) == [rid(1), rid(2)]
    # A refund that no longer awaits its step leaves the index.
    refund = backend.refunds.get(rid(1))
    assert refund is not None
    refund.awaiting_step, refund.step_due_at = None, None
    backend.refunds.save(refund)
    assert [r.refund_id for r in backend.refunds.list_awaiting_steps(T0, 10)] == []


def test_a_users_submitted_refunds_are_counted_since_a_time(backend: Backend) -> None:
    ids = SequentialIds(FakeClock(T0 - timedelta(days=40)))
    old = ids.new_id("rf_")
    backend.refunds.add(sample_refund(old, T0 - timedelta(days=40), status=S.SUBMITTED))
    clock = FakeClock(T0)
    ids = SequentialIds(clock)
    for _ in range(3):
        backend.refunds.add(sample_refund(ids.new_id("rf_"), T0, status=S.PENDING_REVIEW))
    backend.refunds.add(sample_refund(ids.new_id("rf_"), T0))  # a draft never counts
    backend.refunds.add(sample_refund(ids.new_id("rf_"), T0, order=sample_order(T0, user_id="u-2")))
    assert backend.refunds.count_for_user_since("u-1", T0 - timedelta(days=30)) == 3
    assert backend.refunds.count_for_user_since("u-1", T0 - timedelta(days=50)) == 4


def test_the_balance_credits_once_per_refund_and_lists_the_day_on_moto(moto_ports: Ports) -> None:
    from chalicelib.domain.model import PaymentChannel
    from chalicelib.service.ports import PayoutRequest, PayoutState

    _empty_tables()
    ledger = moto_ports.gateways[PaymentChannel.BALANCE]
    request = PayoutRequest(rid(1), "o-1001", None, 8800, 10000, "invalid_code", user_id="u-1")
    first = ledger.pay(request)
    again = ledger.pay(replace(request, amount=1))  # the same refund number never pays twice
    assert (first.state, first.amount) == (PayoutState.SUCCESS, 8800)
    assert (again.state, again.amount) == (PayoutState.SUCCESS, 8800)
    assert ledger.query(rid(2)) is None
    from chalicelib.domain.days import shanghai_day

    day = shanghai_day(moto_ports.clock.now())
    entries = ledger.statement(day)
    assert [(e.refund_no, e.amount) for e in entries] == [(rid(1), 8800)]


# --- idempotency store ---------------------------------------------------------------------


def record(**overrides: Any) -> IdempotencyRecord:
    fields: dict[str, Any] = {
        "scope_key": "u-1#key-1",
        "fingerprint": "body-1",
        "refund_id": rid(1),
        "holder": "rq_first",
        "lease_until": T0 + timedelta(seconds=30),
        "expires_at": T0 + timedelta(hours=25),
    }
    fields.update(overrides)
    return IdempotencyRecord(**fields)


def test_a_first_claim_wins_and_later_ones_get_the_held_record(backend: Backend) -> None:
    first = record()
    assert backend.idempotency.claim(first, T0) is None
    later = record(
        fingerprint="body-2",
        refund_id=rid(2),
        holder="rq_later",
        lease_until=T0 + timedelta(minutes=1),
    )
    assert backend.idempotency.claim(later, T0 + timedelta(seconds=5)) == first
    assert backend.idempotency.claim(record(scope_key="u-2#key-1"), T0) is None


def test_a_key_past_its_keeping_time_can_be_claimed_again(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    backend.idempotency.finish(record(), 404, "not found")
    expires_at = T0 + timedelta(hours=25)
    # At its expiry it is still kept; after it, it is free.
    assert backend.idempotency.claim(
        record(refund_id=rid(2), holder="rq_second"), expires_at
    ) == replace(record(), status_code=404, body="not found")
    renewed = record(
        refund_id=rid(3),
        holder="rq_third",
        lease_until=expires_at + timedelta(seconds=31),
        expires_at=expires_at + timedelta(hours=25),
    )
    assert backend.idempotency.claim(renewed, expires_at + timedelta(seconds=1)) is None
    assert (
        backend.idempotency.claim(record(holder="rq_fourth"), expires_at + timedelta(seconds=2))
        == renewed
    )


def test_finish_keeps_the_first_answer(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    backend.idempotency.finish(record(), 422, '{"error": "not_refundable"}')
    held = backend.idempotency.claim(record(holder="rq_retry"), T0 + timedelta(seconds=1))
    assert held is not None
    assert (held.status_code, held.body) == (422, '{"error": "not_refundable"}')


def test_release_ends_the_lease_now(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    released_at = T0 + timedelta(seconds=3, microseconds=500)
    backend.idempotency.release(record(), released_at)
    held = backend.idempotency.claim(record(holder="rq_retry"), released_at)
    assert held == replace(record(), lease_until=released_at)


def test_take_over_renews_the_lease_it_saw(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    held = backend.idempotency.claim(record(holder="rq_retry"), T0 + timedelta(minutes=1))
    assert held is not None
    renewed = replace(held, holder="rq_retry", lease_until=T0 + timedelta(minutes=1, seconds=30))
    backend.idempotency.take_over(held, renewed)
    assert backend.idempotency.claim(record(holder="rq_3"), T0 + timedelta(minutes=1)) == renewed
    # A second request that saw the same expired lease lost the race.
    with pytest.raises(IdempotencyKeyInFlight):
        backend.idempotency.take_over(held, replace(renewed, holder="rq_other"))


def test_take_over_of_a_finished_key_is_refused(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    backend.idempotency.finish(record(), 404, "not found")
    held = backend.idempotency.claim(record(holder="rq_retry"), T0 + timedelta(minutes=1))
    assert held is not None
    with pytest.raises(IdempotencyKeyInFlight):
        backend.idempotency.take_over(
            held, replace(held, holder="rq_retry", lease_until=T0 + timedelta(minutes=2))
        )


def test_only_the_holder_finishes_releases_or_reassigns_a_key(backend: Backend) -> None:
    # GIVEN the first request's lease ran out and a retry took the key over
    first = record()
    backend.idempotency.claim(first, T0)
    retry = replace(first, holder="rq_retry", lease_until=T0 + timedelta(minutes=2))
    backend.idempotency.take_over(first, retry)
    # WHEN the first request, late, stores its answer, releases the lease or renames the key
    backend.idempotency.finish(first, 409, "late")
    backend.idempotency.release(first, T0 + timedelta(minutes=1))
    with pytest.raises(IdempotencyKeyInFlight):
        backend.idempotency.reassign(replace(first, refund_id=rid(9)))
    # THEN nothing of it is stored: the key is the retry's
    assert backend.idempotency.claim(record(holder="rq_3"), T0 + timedelta(minutes=1)) == retry
    # AND the retry itself may rename it and finish it
    backend.idempotency.reassign(replace(retry, refund_id=rid(2)))
    backend.idempotency.finish(retry, 201, "created")
    held = backend.idempotency.claim(record(holder="rq_3"), T0 + timedelta(minutes=1))
    assert held == replace(retry, refund_id=rid(2), status_code=201, body="created")


# --- lost answers: every write recognises its own earlier attempt (DESIGN.md) --------------


@pytest.mark.parametrize("version", [None, 2], ids=["unversioned", "versioned"])
def test_a_lost_upsert_answer_stores_the_order_as_sent(
    backend: Backend, version: int | None
) -> None:
    # The resent update meets the same condition (an equal version, or none stored), so it
    # applies again: the same values, nothing more.
    backend.orders.upsert(sample_order(T0, version=1 if version else None))
    update = sample_order(T0, title="updated", version=version)
    backend.lose_answer_next("orders", "upsert")
    assert backend.orders.upsert(update).order == update
    assert stored_order(backend).order == update


def test_a_lost_booking_answer_is_the_requests_own_booking(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    backend.lose_answer_next("orders", "book_refund")
    backend.orders.book_refund("o-1001", rid(1), 10000, OrderBooking(), T0)
    assert stored_order(backend).booking == OrderBooking(0, rid(1), 10000)
    # Another refund's booking on the same seen state is still refused (E4).
    with pytest.raises(Conflict):
        backend.orders.book_refund("o-1001", rid(2), 10000, OrderBooking(), T0)


def test_a_lost_settlement_answer_settles_once(backend: Backend) -> None:
    backend.orders.upsert(sample_order(T0))
    backend.orders.book_refund("o-1001", rid(1), 10000, OrderBooking(), T0)
    backend.lose_answer_next("orders", "settle_refund")
    backend.orders.settle_refund("o-1001", rid(1), 4000, paid_limit=10000)
    assert stored_order(backend).booking == OrderBooking(4000)


def test_settling_past_what_was_paid_is_refused_by_the_store_E4(backend: Backend) -> None:
    # GIVEN 60.00 of the 100.00 paid went back, and a refund of 50.00 is open
    backend.orders.upsert(sample_order(T0))
    backend.orders.book_refund("o-1001", rid(1), 6000, OrderBooking(), T0)
    backend.orders.settle_refund("o-1001", rid(1), 6000, paid_limit=10000)
    backend.orders.book_refund("o-1001", rid(2), 5000, OrderBooking(6000), T0)
    # WHEN it would settle 50.00 more, whatever the policy said
    with pytest.raises(RefundTotalExceeded) as refused:
        backend.orders.settle_refund("o-1001", rid(2), 5000, paid_limit=10000)
    # THEN the store refuses it and nothing changes; what fits goes through, to the fen
    assert refused.value.rule == "E4"
    assert stored_order(backend).booking == OrderBooking(6000, rid(2), 5000)
    backend.orders.settle_refund("o-1001", rid(2), 4000, paid_limit=10000)
    assert stored_order(backend).booking == OrderBooking(10000)


def test_a_lost_add_answer_is_the_requests_own_add(backend: Backend) -> None:
    refund = sample_refund(rid(1), T0)
    backend.lose_answer_next("refunds", "add")
    backend.refunds.add(refund)
    assert refund.version == 1
    stored = backend.refunds.get(rid(1))
    assert stored is not None
    assert stored.version == 1
    # Another add of the same id is still a conflict.
    with pytest.raises(Conflict):
        backend.refunds.add(sample_refund(rid(1), T0))


def test_a_lost_save_answer_is_the_requests_own_save(backend: Backend) -> None:
    backend.refunds.add(sample_refund(rid(1), T0))
    refund = backend.refunds.get(rid(1))
    assert refund is not None
    stale = copy.deepcopy(refund)
    refund.description = "补充：序列号截图已上传"
    backend.lose_answer_next("refunds", "save")
    backend.refunds.save(refund)
    assert refund.version == 2
    stored = backend.refunds.get(rid(1))
    assert stored is not None
    assert (stored.version, stored.description) == (2, "补充：序列号截图已上传")
    # A save on the version it replaced is still a concurrent change.
    with pytest.raises(ConcurrentChange):
        backend.refunds.save(stale)


def test_a_lost_fence_answer_is_the_fence(backend: Backend) -> None:
    backend.lose_answer_next("refunds", "abandon")
    assert backend.refunds.abandon(rid(1), T0) is True
    with pytest.raises(RefundIdFenced):
        backend.refunds.add(sample_refund(rid(1), T0))


def test_a_lost_claim_answer_is_the_requests_own_claim(backend: Backend) -> None:
    backend.lose_answer_next("idempotency", "claim")
    assert backend.idempotency.claim(record(), T0) is None
    assert backend.idempotency.claim(record(holder="rq_retry"), T0) == record()


def test_a_lost_take_over_answer_is_the_requests_own_take_over(backend: Backend) -> None:
    backend.idempotency.claim(record(), T0)
    taken = replace(record(), holder="rq_retry", lease_until=T0 + timedelta(minutes=2))
    backend.lose_answer_next("idempotency", "take_over")
    backend.idempotency.take_over(record(), taken)
    assert backend.idempotency.claim(record(holder="rq_3"), T0 + timedelta(minutes=1)) == taken


@pytest.mark.parametrize("write", ["finish", "release", "reassign"])
def test_a_lost_answer_on_the_holders_own_key_writes_changes_nothing_more(
    backend: Backend, write: str
) -> None:
    backend.idempotency.claim(record(), T0)
    backend.lose_answer_next("idempotency", write)
    expected = {
        "finish": lambda: backend.idempotency.finish(record(), 404, "not found"),
        "release": lambda: backend.idempotency.release(record(), T0),
        "reassign": lambda: backend.idempotency.reassign(record(refund_id=rid(2))),
    }
    expected[write]()
    held = backend.idempotency.claim(record(holder="rq_retry"), T0)
    assert (
        held
        == {
            "finish": replace(record(), status_code=404, body="not found"),
            "release": replace(record(), lease_until=T0),
            "reassign": record(refund_id=rid(2)),
        }[write]
    )


def test_a_create_whose_booking_answer_is_lost_creates_the_refund(backend: Backend) -> None:
    # GIVEN the order's booking is applied and its answer lost (on moto: botocore resends the
    # UpdateItem, which fails its own condition)
    ports = backend.ports
    ports.orders.upsert(sample_order(T0))
    backend.lose_answer_next("orders", "book_refund")
    # WHEN the refund is created
    answer = create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    # THEN it is created and booked once; the key replays the 201 and the order is held by it
    refund_id = answer.body.split()[0]
    assert answer == Answer(201, f"{refund_id} draft 10000")
    assert stored_order(backend).booking == OrderBooking(0, refund_id, 10000)
    replay = create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    assert replay == answer
    other = create_refund_once(ports, create_command(), key="k2", fingerprint="f", render=render)
    assert other == Answer(409, "Conflict:E4")


# --- the create sequence over each backend -------------------------------------------------


def render(outcome: Refund | DomainError | ServiceError) -> Answer:
    if isinstance(outcome, Refund):
        return Answer(201, f"{outcome.refund_id} {outcome.status.value} {outcome.amount}")
    status = {NotFound: 404, NotRefundable: 422}.get(type(outcome), 409)
    return Answer(status, f"{type(outcome).__name__}:{getattr(outcome, 'rule', None)}")


def create_command(**overrides: Any) -> CreateRefund:
    fields: dict[str, Any] = {
        "user_id": "u-1",
        "order_id": "o-1001",
        "reason": Reason.DUPLICATE_CHARGE,
        "description": "同一笔订单被重复扣款两次，请退回多扣的一笔",
        "payout_channel": PayoutChannel.ORIGINAL,
        "gifts_returned": True,
    }
    fields.update(overrides)
    return CreateRefund(**fields)


class CrashOnceOnAdd:
    """A refund repository that dies once before storing a refund (any backend)."""

    def __init__(self, inner: RefundRepository) -> None:
        self._inner = inner
        self._crashed = False

    def add(self, refund: Refund) -> None:
        if not self._crashed:
            self._crashed = True
            raise RuntimeError("the create died half-way")
        self._inner.add(refund)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_retry_completes_a_crashed_create_under_the_same_refund_id(backend: Backend) -> None:
    ports = replace(backend.ports, refunds=CrashOnceOnAdd(backend.refunds))
    ports.orders.upsert(sample_order(T0))
    with pytest.raises(RuntimeError):
        create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    booked = stored_order(backend).booking
    assert booked.open_refund_id is not None
    answer = create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    assert answer == Answer(201, f"{booked.open_refund_id} draft 10000")
    assert stored_order(backend).booking == booked
    assert [r.refund_id for r in backend.refunds.list_for_user("u-1", None, 10, None).items] == [
        booked.open_refund_id
    ]


def test_a_replay_after_the_refund_changed_answers_as_the_first_time(backend: Backend) -> None:
    # GIVEN a refund created with a key and submitted since (O2 fast track: no evidence)
    ports = backend.ports
    ports.orders.upsert(sample_order(T0, platform_fault=PlatformFault.DUPLICATE_CHARGE))
    first = create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    refund_id = first.body.split()[0]
    submit_refund(ports, SubmitRefund("u-1", refund_id))
    # WHEN the client retries the create with the same key and body
    replay = create_refund_once(ports, create_command(), key="k", fingerprint="f", render=render)
    # THEN it gets the first answer (moto before 94c3789: 409, stored for good)
    assert replay == first


# --- real concurrency on moto --------------------------------------------------------------


@pytest.fixture
def atomic_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto apply each request atomically, as DynamoDB does.

    In-process moto serves threads without any lock, so two conditional UpdateItems on one
    item can both pass their check (measured: 8 threads booking one order, 2-3 winners in
    some rounds). DynamoDB applies each request atomically; serialising moto's request
    handling gives exactly that and leaves the interleaving *between* requests, the race the
    create sequence must win, untouched.
    """
    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    process_request = BotocoreStubber.process_request

    def atomic(self: BotocoreStubber, request: Any) -> Any:
        with lock:
            return process_request(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", atomic)


THREADS = 8


def _race(ports: Ports, command: CreateRefund) -> list[Answer | BaseException | None]:
    """Run ``THREADS`` creates of ``command``, each with its own key, released at once."""
    answers: list[Answer | BaseException | None] = [None] * THREADS
    start = threading.Barrier(THREADS)

    def run(i: int) -> None:
        try:
            start.wait(timeout=10)
            answers[i] = create_refund_once(
                ports, command, key=f"{command.order_id}-{i}", fingerprint=f"{i}", render=render
            )
        except BaseException as error:
            answers[i] = error  # reported by the caller's assertions

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return answers


def test_concurrent_creates_on_moto_open_exactly_one_refund(aws: Any, atomic_moto: None) -> None:
    # GIVEN the real adapters, wall clock and id generator
    ports: Ports = aws.ports
    for round_ in range(3):
        # AND a free order
        order_id = f"o-race-{round_}"
        ports.orders.upsert(sample_order(datetime.now(UTC), order_id=order_id))
        # WHEN eight requests with different keys create a refund of it at once
        answers = _race(ports, create_command(order_id=order_id, reason=Reason.INVALID_CODE))
        # THEN exactly one refund is created, and every other request gets E4
        assert all(isinstance(a, Answer) for a in answers), answers
        created = [a for a in answers if isinstance(a, Answer) and a.status_code == 201]
        refused = [a for a in answers if isinstance(a, Answer) and a.status_code != 201]
        assert len(created) == 1, answers
        assert refused == [Answer(409, "Conflict:E4")] * (THREADS - 1)
        refund_id = created[0].body.split()[0]
        stored = ports.orders.get(order_id)
        assert stored is not None
        assert stored.booking == OrderBooking(0, refund_id, 10000)
        # (aws may run inside this module's moto account: look at this order's refunds only)
        mine = ports.refunds.list_for_user("u-1", None, 100, None).items
        assert [r.refund_id for r in mine if r.order_id == order_id] == [refund_id]
