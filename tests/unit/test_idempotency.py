"""Idempotent creates (API.md, POST /refunds; IETF Idempotency-Key draft, Stripe's semantics).

``create_refund_once`` over in-memory fakes: replays, key reuse, in-flight keys, crashes
half-way through a create, stored refusals, per-user scope and expiry.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from chalicelib.domain.exceptions import DomainError, NotRefundable
from chalicelib.domain.model import (
    OrderBooking,
    OrderStatus,
    PayoutChannel,
    PlatformFault,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.service.exceptions import (
    Conflict,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    NotFound,
    ServiceError,
)
from chalicelib.service.idempotency import Answer, create_refund_once, scope_key
from chalicelib.service.ports import Ports
from chalicelib.service.refunds import (
    CreateRefund,
    PostMessage,
    SubmitRefund,
    cancel_refund,
    post_message,
    submit_refund,
)
from tests.fakes import FakeClock, make_ports, sample_order


class ProcessDied(BaseException):
    """The process vanished mid-request (a Lambda timeout): no handler runs, no release."""


def render(outcome: Refund | DomainError | ServiceError) -> Answer:
    """A stand-in for the API's rendering: enough of the answer to see what was replayed."""
    if isinstance(outcome, Refund):
        body = {
            "refund_id": outcome.refund_id,
            "status": outcome.status.value,
            "amount": outcome.amount,
            "description": outcome.description,
            "messages": len(outcome.messages),
        }
        return Answer(201, json.dumps(body, ensure_ascii=False))
    status = {NotFound: 404, NotRefundable: 422}.get(type(outcome), 409)
    return Answer(status, f"{type(outcome).__name__}:{getattr(outcome, 'rule', None)}")


@pytest.fixture
def ports() -> Ports:
    ports = make_ports()
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    return ports


@pytest.fixture
def clock(ports: Ports) -> FakeClock:
    assert isinstance(ports.clock, FakeClock)
    return ports.clock


def create(
    ports: Ports, key: str = "key-1", fingerprint: str = "body-1", **overrides: Any
) -> Answer:
    fields: dict[str, Any] = {
        "user_id": "u-1",
        "order_id": "o-1001",
        "reason": Reason.DUPLICATE_CHARGE,
        "description": "同一笔订单被重复扣款两次，请退回多扣的一笔",
        "payout_channel": PayoutChannel.ORIGINAL,
        "gifts_returned": True,
    }
    fields.update(overrides)
    return create_refund_once(
        ports, CreateRefund(**fields), key=key, fingerprint=fingerprint, render=render
    )


def refund_id_of(answer: Answer) -> str:
    assert answer.status_code == 201, answer
    return str(json.loads(answer.body)["refund_id"])


def booking(ports: Ports, order_id: str = "o-1001") -> OrderBooking:
    stored = ports.orders.get(order_id)
    assert stored is not None
    return stored.booking


def test_the_first_request_creates_the_refund(ports: Ports) -> None:
    answer = create(ports)
    refund_id = refund_id_of(answer)
    assert json.loads(answer.body)["status"] == "draft"
    assert [r.refund_id for r in ports.refunds.all()] == [refund_id]
    assert booking(ports) == OrderBooking(0, refund_id, 10000)


def test_a_retry_with_the_same_body_replays_the_first_answer_after_later_changes(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN a created refund that has since been submitted and commented on
    first = create(ports)
    refund_id = refund_id_of(first)
    clock.advance(minutes=10)
    submit_refund(ports, SubmitRefund("u-1", refund_id, "补充说明：两笔扣款流水号见截图"))
    post_message(ports, PostMessage("u-1", refund_id, "请尽快处理"))
    # WHEN the client retries the create with the same key and body
    replay = create(ports)
    # THEN it gets the first answer, status and body, and nothing is created or booked again
    assert replay == first
    assert json.loads(replay.body)["status"] == "draft"
    assert [r.refund_id for r in ports.refunds.all()] == [refund_id]
    assert ports.orders.calls["book_refund"] == 1
    assert ports.refunds.get(refund_id).status is RefundStatus.SUBMITTED  # type: ignore[union-attr]


def test_the_same_key_with_another_body_is_refused(ports: Ports) -> None:
    first = create(ports)
    with pytest.raises(IdempotencyKeyReused):
        create(ports, fingerprint="body-2", description="another body")
    assert [r.refund_id for r in ports.refunds.all()] == [refund_id_of(first)]


def test_the_same_key_with_another_body_is_refused_after_a_stored_refusal(ports: Ports) -> None:
    assert create(ports, order_id="o-missing").status_code == 404
    with pytest.raises(IdempotencyKeyReused):
        create(ports, fingerprint="body-2")
    assert ports.refunds.all() == []


def test_a_retry_while_the_first_request_runs_is_in_flight(ports: Ports) -> None:
    # GIVEN the first request has booked the order and is about to store the refund
    retried: list[Answer | Exception] = []

    def retry_now() -> None:
        try:
            retried.append(create(ports))
        except IdempotencyKeyInFlight as error:
            retried.append(error)

    ports.refunds.before_next("add", retry_now)
    # WHEN a retry with the same key arrives right then
    first = create(ports)
    # THEN the retry is told to come back later (409), and the first completes alone
    assert len(retried) == 1
    assert isinstance(retried[0], IdempotencyKeyInFlight)
    assert isinstance(retried[0], Conflict)
    assert [r.refund_id for r in ports.refunds.all()] == [refund_id_of(first)]
    # AND once it is done, the retry replays it
    assert create(ports) == first


def test_a_crash_before_the_refund_is_stored_is_completed_by_the_retry(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN the create dies after booking the order and before storing the refund
    ports.refunds.fail_next("add")
    with pytest.raises(RuntimeError):
        create(ports)
    record = ports.idempotency.get(scope_key("u-1", "key-1"))
    assert record is not None
    # THEN the order is booked for the refund id the key holds, the lease was released
    assert booking(ports) == OrderBooking(0, record.refund_id, 10000)
    assert record.lease_until == clock.wall_now()
    assert record.status_code is None
    assert ports.refunds.all() == []
    # WHEN the client retries at once with the same key and body
    answer = create(ports)
    # THEN the create completes under the same refund id, booked once, for the amount once
    assert refund_id_of(answer) == record.refund_id
    assert [r.refund_id for r in ports.refunds.all()] == [record.refund_id]
    assert ports.orders.calls["book_refund"] == 1
    assert booking(ports) == OrderBooking(0, record.refund_id, 10000)
    assert json.loads(answer.body)["amount"] == 10000
    # AND further retries replay it
    assert create(ports) == answer


def test_a_retry_long_after_a_crash_completes_the_same_refund(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN a create crashed after booking, and the retry comes an hour later
    ports.refunds.fail_next("add")
    with pytest.raises(RuntimeError):
        create(ports)
    record = ports.idempotency.get(scope_key("u-1", "key-1"))
    assert record is not None
    clock.advance(hours=1)
    # WHEN the client retries
    answer = create(ports)
    # THEN it is the same refund, and the order holds it once for the amount once (E4)
    assert refund_id_of(answer) == record.refund_id
    assert [r.refund_id for r in ports.refunds.all()] == [record.refund_id]
    assert booking(ports) == OrderBooking(0, record.refund_id, 10000)


def test_a_process_that_died_holds_the_key_until_its_lease_ends(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN the process died after booking: no error handler ran, the lease is still held
    ports.refunds.fail_next("add", ProcessDied())
    with pytest.raises(ProcessDied):
        create(ports)
    record = ports.idempotency.get(scope_key("u-1", "key-1"))
    assert record is not None
    assert record.lease_until > clock.wall_now()
    # WHEN the client retries within the lease
    with pytest.raises(IdempotencyKeyInFlight):
        create(ports)
    # AND again after it
    clock.advance(seconds=ports.config.idempotency_lease_seconds)
    answer = create(ports)
    # THEN the retry took over and completed the same refund, booked once
    assert refund_id_of(answer) == record.refund_id
    assert [r.refund_id for r in ports.refunds.all()] == [record.refund_id]
    assert booking(ports) == OrderBooking(0, record.refund_id, 10000)


def test_a_not_found_answer_is_replayed_after_the_order_arrives(ports: Ports) -> None:
    # GIVEN the first create found no such order
    first = create(ports, order_id="o-late")
    assert first == Answer(404, "NotFound:None")
    # WHEN the order arrives and the client retries with the same key and body
    ports.orders.upsert(sample_order(order_id="o-late"))
    # THEN the first answer is replayed, and no refund is created
    assert create(ports, order_id="o-late") == first
    assert ports.refunds.all() == []
    assert booking(ports, "o-late") == OrderBooking()


def test_an_E4_conflict_is_replayed_after_the_open_refund_is_cancelled(ports: Ports) -> None:
    # GIVEN a refund open on the order, and a second create refused with E4
    open_id = refund_id_of(create(ports, key="key-a", fingerprint="body-a"))
    refused = create(ports, key="key-b", fingerprint="body-b")
    assert refused == Answer(409, "Conflict:E4")
    # WHEN the open refund is cancelled and the refused request retried
    cancel_refund(ports, "u-1", open_id)
    # THEN the refusal is replayed; a new key is needed for a new create
    assert create(ports, key="key-b", fingerprint="body-b") == refused
    assert refund_id_of(create(ports, key="key-c", fingerprint="body-b")) != open_id


def test_a_policy_refusal_is_replayed_after_the_order_is_corrected(ports: Ports) -> None:
    # GIVEN an order marked completed (X1), refused
    ports.orders.upsert(sample_order(status=OrderStatus.COMPLETED, version=1))
    refused = create(ports)
    assert refused == Answer(422, "NotRefundable:X1")
    # WHEN CS corrects it, and the client retries with the same key and body
    ports.orders.upsert(sample_order(status=OrderStatus.DELIVERED, version=2))
    # THEN the refusal is replayed
    assert create(ports) == refused
    assert ports.refunds.all() == []


def test_keys_are_scoped_to_their_user(ports: Ports) -> None:
    # GIVEN two users with an order each, and the same key and body from both
    ports.orders.upsert(sample_order(order_id="o-2002", user_id="u-2"))
    first = create(ports, key="same", fingerprint="same")
    second = create(ports, key="same", fingerprint="same", user_id="u-2", order_id="o-2002")
    # THEN each gets their own refund on their own order
    ids = {refund_id_of(first), refund_id_of(second)}
    assert len(ids) == 2
    assert {(r.user_id, r.order_id) for r in ports.refunds.all()} == {
        ("u-1", "o-1001"),
        ("u-2", "o-2002"),
    }


def test_keys_are_scoped_to_their_user_whatever_the_ids_contain(ports: Ports) -> None:
    # GIVEN user "u" created a refund with the key "1#k"
    ports.orders.upsert(sample_order(user_id="u"))
    first = create(ports, key="1#k", user_id="u")
    assert first.status_code == 201
    # WHEN user "u#1" sends the same body with the key "k"
    other = create(ports, key="k", user_id="u#1")
    # THEN it is their own request: the order is not theirs (404), never u's refund
    assert other == Answer(404, "NotFound:None")


def test_a_key_is_kept_for_at_least_24_hours(ports: Ports, clock: FakeClock) -> None:
    first = create(ports, order_id="o-late")
    ports.orders.upsert(sample_order(order_id="o-late"))
    clock.advance(hours=24)
    assert create(ports, order_id="o-late") == first
    with pytest.raises(IdempotencyKeyReused):
        create(ports, fingerprint="body-2")


@pytest.mark.parametrize("fingerprint", ["body-1", "body-2"], ids=["same-body", "other-body"])
def test_a_key_past_its_keeping_time_counts_as_unused(
    ports: Ports, clock: FakeClock, fingerprint: str
) -> None:
    # GIVEN a key used for a create refused as not found
    assert create(ports, order_id="o-late").status_code == 404
    # WHEN its keeping time has passed and the order has arrived
    clock.advance(hours=ports.config.idempotency_keep_hours, seconds=1)
    ports.orders.upsert(sample_order(order_id="o-late"))
    # THEN the key is as new: the create runs again, with any body
    answer = create(ports, fingerprint=fingerprint, order_id="o-late")
    assert [r.refund_id for r in ports.refunds.all()] == [refund_id_of(answer)]


def test_a_refusal_stores_the_answer_and_releases_nothing_to_retry(
    ports: Ports, clock: FakeClock
) -> None:
    ports.orders.upsert(sample_order(order_id="o-old", refund_deadline=clock.now()))
    refused = create(ports, order_id="o-old", reason=Reason.CHANGED_MIND)
    assert refused == Answer(422, "NotRefundable:E2")
    record = ports.idempotency.get(scope_key("u-1", "key-1"))
    assert record is not None
    assert (record.status_code, record.body) == (refused.status_code, refused.body)
    assert booking(ports, "o-old") == OrderBooking()
