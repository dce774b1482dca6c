"""Lost answers: a write applied whose answer never came back (DESIGN.md, "Lost answers").

botocore resends a write after a read timeout, a 5xx or throttling. When the first attempt
was applied, the retry fails its own condition; each write must then recognise its own
earlier attempt and carry on as if it had succeeded: never a 409, never a second effect.
The fakes model that exactly (``lose_answer_next``: the same request is applied, then sent
again); tests/integration/test_repositories.py does the same on moto through botocore.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain.model import EvidenceKind, OrderBooking, PlatformFault, Refund, RefundStatus
from chalicelib.service.exceptions import IdempotencyKeyInFlight, NotFound, RefundTotalExceeded
from chalicelib.service.idempotency import Answer, scope_key
from chalicelib.service.ports import Ports
from chalicelib.service.refunds import (
    AddEvidence,
    PostMessage,
    add_evidence,
    cancel_refund,
    post_message,
)
from tests.fakes import FakeClock, make_ports, sample_order
from tests.unit.test_idempotency import ProcessDied, booking, refund_id_of
from tests.unit.test_idempotency import create as create_with_key


@pytest.fixture
def ports() -> Ports:
    ports = make_ports()
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    return ports


@pytest.fixture
def clock(ports: Ports) -> FakeClock:
    assert isinstance(ports.clock, FakeClock)
    return ports.clock


def create(ports: Ports, key: str = "key-1", **overrides: Any) -> Answer:
    """A create whose body is its key's own: another key is another request."""
    return create_with_key(ports, key, f"body-of-{key}", **overrides)


def only_refund(ports: Ports) -> Refund:
    refunds = ports.refunds.all()  # type: ignore[attr-defined]
    assert len(refunds) == 1
    return refunds[0]  # type: ignore[no-any-return]


def record_of(ports: Ports, key: str = "key-1") -> Any:
    return ports.idempotency.get(scope_key("u-1", key))  # type: ignore[attr-defined]


# --- 1. the booking (E4) -------------------------------------------------------------------


def test_a_lost_answer_on_the_booking_is_the_requests_own_booking_not_E4(ports: Ports) -> None:
    # GIVEN the order's booking is applied but its answer is lost, and the SDK retries it
    ports.orders.lose_answer_next("book_refund")  # type: ignore[attr-defined]
    # WHEN the refund is created
    answer = create(ports)
    # THEN it is created (201), booked once, and the key replays the 201
    refund_id = refund_id_of(answer)
    assert booking(ports) == OrderBooking(0, refund_id, 10000)
    assert only_refund(ports).refund_id == refund_id
    assert create(ports) == answer
    # AND another key is refused E4 only because this refund is really open
    assert create(ports, key="key-2") == Answer(409, "Conflict:E4")


# --- 2. the key's claim and take-over ------------------------------------------------------


def test_a_lost_answer_on_the_keys_claim_is_the_requests_own_claim(ports: Ports) -> None:
    ports.idempotency.lose_answer_next("claim")  # type: ignore[attr-defined]
    answer = create(ports)
    assert refund_id_of(answer) == only_refund(ports).refund_id
    assert create(ports) == answer


def test_a_lost_answer_on_the_keys_take_over_is_the_requests_own_take_over(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN a first request died after booking, and its lease has run out
    ports.refunds.fail_next("add", ProcessDied())  # type: ignore[attr-defined]
    with pytest.raises(ProcessDied):
        create(ports)
    clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
    # WHEN the retry's take-over is applied but its answer lost
    ports.idempotency.lose_answer_next("take_over")  # type: ignore[attr-defined]
    answer = create(ports)
    # THEN the retry completes the same refund instead of answering "in flight"
    assert refund_id_of(answer) == record_of(ports).refund_id == only_refund(ports).refund_id


# --- 3. a retry whose refund id was fenced -------------------------------------------------


def test_a_retry_whose_refund_id_was_fenced_creates_under_a_new_id(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN K1 died after booking the order
    ports.refunds.fail_next("add", ProcessDied())  # type: ignore[attr-defined]
    with pytest.raises(ProcessDied):
        create(ports, key="k1")
    fenced_id = record_of(ports, "k1").refund_id
    # AND, a lease later, a create with K2 fenced K1's refund id and freed the order, then died
    clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
    ports.orders.fail_next("book_refund", ProcessDied())  # type: ignore[attr-defined]
    with pytest.raises(ProcessDied):
        create(ports, key="k2")
    assert booking(ports) == OrderBooking()
    # WHEN K1 is retried
    answer = create(ports, key="k1")
    # THEN it creates its refund under a new id, which the order holds (E4), and replays it
    refund_id = refund_id_of(answer)
    assert refund_id != fenced_id
    assert only_refund(ports).refund_id == refund_id
    assert booking(ports) == OrderBooking(0, refund_id, 10000)
    assert record_of(ports, "k1").refund_id == refund_id
    assert create(ports, key="k1") == answer


def test_a_retry_fenced_while_it_runs_answers_E4_for_the_refund_that_won(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN K1 died after booking, and its lease has run out
    ports.refunds.fail_next("add", ProcessDied())  # type: ignore[attr-defined]
    with pytest.raises(ProcessDied):
        create(ports, key="k1")
    clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
    # WHEN K1's retry finds its own booking, and just before it stores the refund a create
    # with K2 fences K1's id, frees the order and books it for itself
    k2: list[Answer] = []
    ports.refunds.before_next("add", lambda: k2.append(create(ports, key="k2")))  # type: ignore[attr-defined]
    answer = create(ports, key="k1")
    # THEN K2 won the order, and K1 answers E4 with its rule, not a bare 409
    winner = refund_id_of(k2[0])
    assert answer == Answer(409, "Conflict:E4")
    assert only_refund(ports).refund_id == winner
    assert booking(ports) == OrderBooking(0, winner, 10000)


# --- 4. versioned saves --------------------------------------------------------------------


def test_a_lost_answer_on_a_cancel_is_the_cancel_and_frees_the_order(ports: Ports) -> None:
    refund_id = refund_id_of(create(ports))
    ports.refunds.lose_answer_next("save")  # type: ignore[attr-defined]
    cancelled = cancel_refund(ports, "u-1", refund_id)
    assert cancelled.status is RefundStatus.CANCELLED
    assert only_refund(ports).status is RefundStatus.CANCELLED
    assert [e.action.value for e in only_refund(ports).history] == ["create", "cancel"]
    assert booking(ports) == OrderBooking()


def test_a_lost_answer_on_adding_evidence_opens_one_slot(ports: Ports) -> None:
    refund_id = refund_id_of(create(ports))
    ports.refunds.lose_answer_next("save")  # type: ignore[attr-defined]
    slot = add_evidence(
        ports, AddEvidence("u-1", refund_id, EvidenceKind.ORDER_SCREENSHOT, "image/png", 100)
    )
    assert [e.evidence_id for e in only_refund(ports).evidence] == [slot.evidence.evidence_id]


def test_a_lost_answer_on_a_message_stores_it_once(ports: Ports) -> None:
    refund_id = refund_id_of(create(ports))
    ports.refunds.lose_answer_next("save")  # type: ignore[attr-defined]
    post_message(ports, PostMessage("u-1", refund_id, "请尽快处理"))
    assert [m.body for m in only_refund(ports).messages] == ["请尽快处理"]


# --- 5. a stale first answer over a completed retry ----------------------------------------


def test_a_first_request_that_lost_its_lease_stores_no_refusal_over_the_retry(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN the first request stalls past its lease; its retry completes the create; then
    # the first request is refused (the order read failed it with a 404)
    retried: list[Answer] = []

    def stall_then_refuse() -> None:
        clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
        retried.append(create(ports))
        ports.orders.fail_next("get", NotFound("order", "o-1001"))  # type: ignore[attr-defined]

    ports.orders.before_next("get", stall_then_refuse)  # type: ignore[attr-defined]
    stale = create(ports)
    # THEN the first caller hears its own 404, but the key keeps the retry's 201
    assert stale == Answer(404, "NotFound:None")
    assert create(ports) == retried[0]
    assert refund_id_of(retried[0]) == only_refund(ports).refund_id


def test_a_first_request_that_lost_its_lease_does_not_release_the_retrys_lease(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN the first request stalls past its lease, a retry takes the key over and is
    # still running, and then the first request crashes with an error its handler sees
    def stall_then_crash() -> None:
        clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
        held = record_of(ports)
        lease = clock.wall_now() + timedelta(seconds=ports.config.idempotency_lease_seconds)
        ports.idempotency.take_over(held, replace(held, holder="rq_retry", lease_until=lease))
        ports.refunds.fail_next("add")  # type: ignore[attr-defined]

    ports.orders.before_next("get", stall_then_crash)  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError):
        create(ports)
    # THEN the retry keeps its lease: a third request is told it is in flight
    assert record_of(ports).holder == "rq_retry"
    with pytest.raises(IdempotencyKeyInFlight):
        create(ports)


# --- 6. the cap is in the database ---------------------------------------------------------


def test_settling_more_than_was_paid_is_refused_by_the_store(ports: Ports) -> None:
    # GIVEN 60.00 of the 100.00 paid already went back, and a refund of 50.00 is open
    ports.orders.book_refund("o-1001", "rf_A", 6000, OrderBooking(), clock_now(ports))
    ports.orders.settle_refund("o-1001", "rf_A", 6000, paid_limit=10000)
    ports.orders.book_refund("o-1001", "rf_B", 5000, OrderBooking(6000), clock_now(ports))
    # WHEN it would settle 50.00 more, past what the user paid
    with pytest.raises(RefundTotalExceeded) as refused:
        ports.orders.settle_refund("o-1001", "rf_B", 5000, paid_limit=10000)
    # THEN the store refuses it (E4), and nothing changed
    assert refused.value.rule == "E4"
    assert booking(ports) == OrderBooking(6000, "rf_B", 5000)
    # AND settling what fits goes through, once even if its answer is lost
    ports.orders.lose_answer_next("settle_refund")  # type: ignore[attr-defined]
    ports.orders.settle_refund("o-1001", "rf_B", 4000, paid_limit=10000)
    assert booking(ports) == OrderBooking(10000)


def clock_now(ports: Ports) -> Any:
    return ports.clock.wall_now()
