"""The mobile app's refund use cases (chalicelib/service/refunds.py) over in-memory fakes.

Rule ids refer to POLICY.md and API.md: E1-E4 eligibility, F2 evidence, O2 fast track,
O5 messages, P1 payout channel, X1 completed orders.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain.evidence import MAX_SLOTS
from chalicelib.domain.exceptions import (
    EvidenceSlotsFull,
    InvalidTransition,
    MissingEvidence,
    NotRefundable,
)
from chalicelib.domain.model import (
    Action,
    EvidenceKind,
    Gift,
    HistoryEntry,
    OrderBooking,
    OrderStatus,
    PaymentChannel,
    PayoutChannel,
    PlatformFault,
    Reason,
    Refund,
    RefundStatus,
    Usage,
)
from chalicelib.domain.policy import quote
from chalicelib.service.exceptions import Conflict, NotFound, RefundIdFenced
from chalicelib.service.ports import Ports, ServiceConfig
from chalicelib.service.refunds import (
    AddEvidence,
    CreateRefund,
    EvidenceSlot,
    PostMessage,
    SubmitRefund,
    add_evidence,
    cancel_refund,
    create_refund,
    evidence_key,
    get_refund,
    list_refunds,
    post_message,
    submit_refund,
)
from tests.fakes import NOW, FakeClock, make_ports, sample_order

S = RefundStatus
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 200
PDF = b"%PDF-1.7\n" + b"\x00" * 200
DESCRIPTION = "订单 o-1001 的点卡到账后提示序列号无效，要求全额退款"


@pytest.fixture
def ports() -> Ports:
    ports = make_ports()
    ports.orders.upsert(sample_order())
    return ports


@pytest.fixture
def clock(ports: Ports) -> FakeClock:
    assert isinstance(ports.clock, FakeClock)
    return ports.clock


def command(**overrides: Any) -> CreateRefund:
    fields: dict[str, Any] = {
        "user_id": "u-1",
        "order_id": "o-1001",
        "reason": Reason.INVALID_CODE,
        "description": DESCRIPTION,
        "payout_channel": PayoutChannel.ORIGINAL,
        "gifts_returned": True,
    }
    fields.update(overrides)
    return CreateRefund(**fields)


def open_refund(ports: Ports, **overrides: Any) -> Refund:
    return create_refund(ports, command(**overrides), refund_id=ports.ids.new_id("rf_"))


def force(ports: Ports, refund_id: str, status: RefundStatus, **changes: Any) -> Refund:
    """Put a stored refund in ``status`` (as other use cases would have), saved normally."""
    refund = ports.refunds.get(refund_id)
    assert refund is not None
    refund.status = status
    for name, value in changes.items():
        setattr(refund, name, value)
    ports.refunds.save(refund)
    return refund


def booking(ports: Ports, order_id: str = "o-1001") -> OrderBooking:
    stored = ports.orders.get(order_id)
    assert stored is not None
    return stored.booking


def slot(
    ports: Ports,
    refund_id: str,
    kind: EvidenceKind,
    content_type: str = "image/png",
    size: int = 4096,
) -> EvidenceSlot:
    return add_evidence(ports, AddEvidence("u-1", refund_id, kind, content_type, size))


def upload(ports: Ports, refund_id: str, opened: EvidenceSlot, data: bytes) -> None:
    ports.evidence.put(evidence_key(refund_id, opened.evidence.evidence_id), data)


def stored(ports: Ports, refund_id: str) -> Refund:
    refund = ports.refunds.get(refund_id)
    assert refund is not None
    return refund


# --- create (F1, E4) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("order_changes", "gifts_returned"),
    [
        ({}, True),
        ({"usage": Usage(total_units=100, used_units=25)}, True),  # V2: 75% left
        ({"gifts": (Gift("g-1", "gift", 500),)}, False),  # PR1: kept gift deducted
    ],
    ids=["full", "partly-used-V2", "gift-kept-PR1"],
)
def test_create_opens_a_draft_for_the_quoted_amount(
    ports: Ports, clock: FakeClock, order_changes: dict[str, Any], gifts_returned: bool
) -> None:
    # GIVEN an order, and a business clock an hour ahead of the wall clock
    order = sample_order(**order_changes)
    ports.orders.upsert(order)
    clock.set(NOW + timedelta(hours=1))
    expected = quote(
        order,
        OrderBooking(),
        reason=Reason.INVALID_CODE,
        gifts_returned=gifts_returned,
        now=clock.now(),
    )
    # WHEN the owner opens a refund
    refund = create_refund(
        ports, command(gifts_returned=gifts_returned), refund_id=ports.ids.new_id("rf_")
    )
    # THEN it is a draft for exactly the quoted amount, stored as returned
    assert expected.rule is None
    assert refund.amount == expected.amount
    assert refund.status is S.DRAFT
    assert refund.created_at == refund.updated_at == clock.now()
    assert refund.history == [
        HistoryEntry(clock.now(), "u-1", Action.CREATE, None, S.DRAFT),
    ]
    assert stored(ports, refund.refund_id) == refund
    # AND the order is booked for it (E4)
    assert booking(ports) == OrderBooking(
        refunded_total=0, open_refund_id=refund.refund_id, open_refund_amount=expected.amount
    )


def test_create_ids_are_time_ordered_refund_ids(ports: Ports, clock: FakeClock) -> None:
    ports.orders.upsert(sample_order(order_id="o-2"))
    first = open_refund(ports)
    clock.advance(milliseconds=1)
    second = open_refund(ports, order_id="o-2")
    assert first.refund_id.startswith("rf_")
    assert len(first.refund_id) == len("rf_") + 26
    assert first.refund_id < second.refund_id


@pytest.mark.parametrize(
    ("user_id", "order_id"),
    [("u-1", "o-missing"), ("u-2", "o-1001")],
    ids=["unknown-order", "another-users-order"],
)
def test_create_answers_not_found_for_unknown_and_foreign_orders(
    ports: Ports, user_id: str, order_id: str
) -> None:
    # GIVEN o-1001 belongs to u-1
    # WHEN another user, or anyone for an unknown order, opens a refund
    with pytest.raises(NotFound) as raised:
        open_refund(ports, user_id=user_id, order_id=order_id)
    # THEN it is the same 404 either way, and nothing was booked or stored
    assert raised.value.resource == "order"
    assert ports.orders.calls["book_refund"] == 0
    assert ports.refunds.all() == []


def test_create_refuses_a_second_open_refund_of_the_order_E4(ports: Ports) -> None:
    # GIVEN an open refund of the order
    first = open_refund(ports)
    # WHEN the user opens another one
    with pytest.raises(Conflict) as raised:
        open_refund(ports, reason=Reason.CHANGED_MIND)
    # THEN 409 with rule E4, and the order is still booked for the first only
    assert raised.value.rule == "E4"
    assert booking(ports).open_refund_id == first.refund_id
    assert [r.refund_id for r in ports.refunds.all()] == [first.refund_id]


def test_create_loses_a_race_for_the_booking_with_E4(ports: Ports) -> None:
    # GIVEN another create books the order between our read and our booking
    ports.orders.before_next(
        "book_refund", lambda: create_refund(ports, command(), refund_id="rf_other")
    )
    # WHEN our create tries to book it
    with pytest.raises(Conflict) as raised:
        open_refund(ports)
    # THEN the conditional booking refuses (E4 held by the store, not by the read)
    assert raised.value.rule == "E4"
    assert booking(ports).open_refund_id == "rf_other"
    assert [r.refund_id for r in ports.refunds.all()] == ["rf_other"]


@pytest.mark.parametrize(
    ("order_changes", "clock_days", "rule"),
    [
        ({"status": OrderStatus.COMPLETED}, 0, "X1"),
        ({"status": OrderStatus.CANCELLED}, 0, "E1"),
        ({}, 8, "E2"),  # past the refund deadline
        ({"usage": Usage(total_units=10, used_units=10)}, 0, "E2"),  # fully used
    ],
    ids=["completed-X1", "cancelled-E1", "expired-E2", "used-up-E2"],
)
def test_create_turns_a_policy_refusal_into_not_refundable(
    ports: Ports,
    clock: FakeClock,
    order_changes: dict[str, Any],
    clock_days: int,
    rule: str,
) -> None:
    # GIVEN an order the policy refuses
    ports.orders.upsert(sample_order(**order_changes))
    clock.advance(days=clock_days)
    # WHEN the user opens a refund
    with pytest.raises(NotRefundable) as raised:
        open_refund(ports)
    # THEN 422 naming the rule, and nothing booked or stored
    assert raised.value.rule == rule
    assert ports.orders.calls["book_refund"] == 0
    assert booking(ports) == OrderBooking()
    assert ports.refunds.all() == []


@pytest.mark.parametrize(
    ("paid_with", "choice", "channel"),
    [
        (PaymentChannel.WECHAT, PayoutChannel.ORIGINAL, PaymentChannel.WECHAT),
        (PaymentChannel.ALIPAY, PayoutChannel.ORIGINAL, PaymentChannel.ALIPAY),
        (PaymentChannel.WECHAT, PayoutChannel.BALANCE, PaymentChannel.BALANCE),
        (PaymentChannel.BALANCE, PayoutChannel.ORIGINAL, PaymentChannel.BALANCE),
    ],
)
def test_create_pays_back_the_original_way_or_to_the_balance_P1(
    ports: Ports, paid_with: PaymentChannel, choice: PayoutChannel, channel: PaymentChannel
) -> None:
    ports.orders.upsert(sample_order(payment_channel=paid_with))
    refund = open_refund(ports, payout_channel=choice)
    assert refund.payout_channel is choice
    assert refund.channel is channel


def test_create_marks_the_platform_fault_fast_track_O2(ports: Ports) -> None:
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    assert open_refund(ports, reason=Reason.DUPLICATE_CHARGE).fast_track is True


def test_create_repairs_the_booking_of_a_cancelled_refund_E4(ports: Ports) -> None:
    # GIVEN a refund cancelled whose release of the order never happened
    first = open_refund(ports)
    ports.orders.fail_next("settle_refund")
    with pytest.raises(RuntimeError):
        cancel_refund(ports, "u-1", first.refund_id)
    assert stored(ports, first.refund_id).status is S.CANCELLED
    assert booking(ports).open_refund_id == first.refund_id
    # WHEN the user opens a new refund
    second = open_refund(ports)
    # THEN the stale booking is settled (nothing paid) and the order booked for the new one
    assert booking(ports) == OrderBooking(
        refunded_total=0, open_refund_id=second.refund_id, open_refund_amount=10000
    )
    assert second.amount == 10000


def test_create_repairs_the_booking_of_a_paid_refund_and_counts_what_it_paid_E4(
    ports: Ports,
) -> None:
    # GIVEN a refund paid 40.00 whose booking was not settled yet
    first = open_refund(ports)
    force(ports, first.refund_id, S.PAID, approved_amount=4000)
    # WHEN the user opens another refund of the order
    second = open_refund(ports, reason=Reason.OTHER)
    # THEN the paid amount is counted as refunded, and only the rest is offered
    assert second.amount == 6000
    assert booking(ports) == OrderBooking(
        refunded_total=4000, open_refund_id=second.refund_id, open_refund_amount=6000
    )
    # AND once that one is paid too, nothing is left (E4)
    force(ports, second.refund_id, S.PAID, approved_amount=6000)
    with pytest.raises(NotRefundable) as raised:
        open_refund(ports)
    assert raised.value.rule == "E4"
    assert booking(ports) == OrderBooking(refunded_total=10000)


def test_create_waits_out_a_booking_without_refund_for_one_lease_then_repairs_it(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN a create that booked the order and died before storing its refund
    ports.orders.book_refund("o-1001", "rf_ghost", 10000, OrderBooking(), clock.wall_now())
    lease = timedelta(seconds=ports.config.idempotency_lease_seconds)
    # WHEN another create comes while that create could still be running
    clock.advance(lease - timedelta(seconds=1))
    # THEN the booking holds (E4)
    with pytest.raises(Conflict) as raised:
        open_refund(ports)
    assert raised.value.rule == "E4"
    # WHEN one comes after the lease
    clock.advance(seconds=2)
    refund = open_refund(ports)
    # THEN the ghost booking is released and the new refund booked
    assert booking(ports) == OrderBooking(
        refunded_total=0, open_refund_id=refund.refund_id, open_refund_amount=10000
    )


def test_create_does_not_change_the_order(ports: Ports) -> None:
    before = ports.orders.get("o-1001")
    refund = open_refund(ports)
    after = ports.orders.get("o-1001")
    assert before is not None
    assert after is not None
    assert after.order == before.order == refund.order


# --- evidence slots (F2) -------------------------------------------------------------------


def test_add_evidence_opens_a_slot_with_an_upload_limited_to_its_key(
    ports: Ports, clock: FakeClock
) -> None:
    refund = open_refund(ports)
    # WHEN the user declares a 48 213-byte PNG order screenshot
    opened = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT, "image/png", 48213)
    # THEN a slot is stored, not yet uploaded
    evidence = opened.evidence
    assert evidence.evidence_id.startswith("ev_")
    assert (evidence.kind, evidence.content_type, evidence.size) == (
        EvidenceKind.ORDER_SCREENSHOT,
        "image/png",
        48213,
    )
    assert (evidence.uploaded, evidence.problem) == (False, None)
    assert stored(ports, refund.refund_id).evidence == [evidence]
    # AND the presigned upload allows that key, type and size, for the configured time
    key = f"evidence/{refund.refund_id}/{evidence.evidence_id}"
    expires_at = clock.wall_now() + timedelta(seconds=ports.config.upload_expires_seconds)
    [request] = ports.evidence.presigned
    assert (request.key, request.content_type, request.max_size, request.expires_at) == (
        key,
        "image/png",
        48213,
        expires_at,
    )
    assert opened.upload.fields["key"] == key
    assert opened.upload.expires_at == expires_at


@pytest.mark.parametrize("status", [S.DRAFT, S.NEEDS_INFO, S.REJECTED])
def test_add_evidence_is_open_in_draft_needs_info_and_rejected(
    ports: Ports, status: RefundStatus
) -> None:
    refund = open_refund(ports)
    force(ports, refund.refund_id, status)
    slot(ports, refund.refund_id, EvidenceKind.CHAT_RECORD)
    assert len(stored(ports, refund.refund_id).evidence) == 1


@pytest.mark.parametrize(
    "status", sorted(set(S) - {S.DRAFT, S.NEEDS_INFO, S.REJECTED}, key=lambda s: s.value)
)
def test_add_evidence_is_a_conflict_in_any_other_status(ports: Ports, status: RefundStatus) -> None:
    refund = open_refund(ports)
    force(ports, refund.refund_id, status)
    with pytest.raises(Conflict):
        slot(ports, refund.refund_id, EvidenceKind.CHAT_RECORD)
    assert stored(ports, refund.refund_id).evidence == []
    assert ports.evidence.presigned == []


def test_add_evidence_refuses_the_eleventh_slot(ports: Ports) -> None:
    refund = open_refund(ports)
    for _ in range(MAX_SLOTS):
        slot(ports, refund.refund_id, EvidenceKind.OTHER)
    with pytest.raises(EvidenceSlotsFull):
        slot(ports, refund.refund_id, EvidenceKind.OTHER)
    assert len(stored(ports, refund.refund_id).evidence) == MAX_SLOTS == 10
    assert len(ports.evidence.presigned) == MAX_SLOTS


def test_add_evidence_to_another_users_refund_is_not_found(ports: Ports) -> None:
    refund = open_refund(ports)
    with pytest.raises(NotFound):
        add_evidence(
            ports,
            AddEvidence("u-2", refund.refund_id, EvidenceKind.OTHER, "image/png", 10),
        )


# --- submit (F2, O2) -----------------------------------------------------------------------


def test_submit_without_the_evidence_F2_requires_lists_the_missing_kinds(
    ports: Ports,
) -> None:
    # GIVEN a virtual-goods refund for an invalid code, and slots opened but nothing uploaded
    refund = open_refund(ports)
    slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT)
    slot(ports, refund.refund_id, EvidenceKind.PROBLEM_SCREENSHOT)
    # WHEN it is submitted
    with pytest.raises(MissingEvidence) as raised:
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN 422 listing both kinds, in F2's order, and the refund stays a draft
    assert raised.value.missing == ["order_screenshot", "problem_screenshot"]
    assert stored(ports, refund.refund_id).status is S.DRAFT


def test_submit_counts_uploads_that_pass_the_server_side_check(
    ports: Ports, clock: FakeClock
) -> None:
    # GIVEN both required kinds uploaded under their slots' keys, with the declared types
    refund = open_refund(ports)
    order_shot = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT, "image/png")
    problem = slot(ports, refund.refund_id, EvidenceKind.PROBLEM_SCREENSHOT, "application/pdf")
    upload(ports, refund.refund_id, order_shot, PNG)
    upload(ports, refund.refund_id, problem, PDF)
    clock.advance(minutes=5)
    # WHEN it is submitted
    submitted = submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN it moves draft -> submitted with its history entry, and the evidence counts
    assert submitted.status is S.SUBMITTED
    assert submitted.history[-1] == HistoryEntry(
        clock.now(), "u-1", Action.SUBMIT, S.DRAFT, S.SUBMITTED
    )
    assert submitted.updated_at == clock.now()
    assert [(e.uploaded, e.problem) for e in submitted.evidence] == [(True, None)] * 2
    assert stored(ports, refund.refund_id) == submitted


def test_submit_counts_only_the_kinds_uploaded(ports: Ports) -> None:
    refund = open_refund(ports)
    order_shot = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT)
    slot(ports, refund.refund_id, EvidenceKind.PROBLEM_SCREENSHOT)
    upload(ports, refund.refund_id, order_shot, PNG)
    with pytest.raises(MissingEvidence) as raised:
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    assert raised.value.missing == ["problem_screenshot"]


def test_submit_never_counts_an_object_under_another_key(ports: Ports) -> None:
    # GIVEN the slots exist, but the files landed next to them (S3 emulators allow it)
    refund = open_refund(ports)
    order_shot = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT)
    problem = slot(ports, refund.refund_id, EvidenceKind.PROBLEM_SCREENSHOT)
    key = evidence_key(refund.refund_id, order_shot.evidence.evidence_id)
    ports.evidence.put(key + ".png", PNG)
    ports.evidence.put(f"evidence/{refund.refund_id}/ev_forged", PNG)
    ports.evidence.put(f"evidence/rf_other/{problem.evidence.evidence_id}", PNG)
    ports.evidence.put(problem.evidence.evidence_id, PNG)
    # WHEN it is submitted
    with pytest.raises(MissingEvidence) as raised:
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN nothing counted
    assert raised.value.missing == ["order_screenshot", "problem_screenshot"]
    assert [e.uploaded for e in get_refund(ports, "u-1", refund.refund_id).evidence] == [
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("declared_type", "declared_size", "data", "problem_says"),
    [
        ("image/png", 4096, PDF, "application/pdf"),  # real type from the magic bytes
        ("image/jpeg", 4096, b"GIF89a" + b"\x00" * 50, "not an allowed type"),
        ("image/png", 100, PNG, "more than the 100 declared"),  # real size
        ("image/png", 4096, b"", "empty"),
    ],
    ids=["pdf-as-png", "gif-as-jpeg", "bigger-than-declared", "empty"],
)
def test_an_upload_failing_the_check_gets_a_problem_and_does_not_count(
    ports: Ports, declared_type: str, declared_size: int, data: bytes, problem_says: str
) -> None:
    # GIVEN a changed-mind refund (F2: the order screenshot only), and a bad upload for it
    refund = open_refund(ports, reason=Reason.CHANGED_MIND)
    opened = slot(
        ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT, declared_type, declared_size
    )
    upload(ports, refund.refund_id, opened, data)
    # WHEN the refund is read
    [evidence] = get_refund(ports, "u-1", refund.refund_id).evidence
    # THEN the slot says what is wrong and is not uploaded
    assert evidence.uploaded is False
    assert evidence.problem is not None
    assert problem_says in evidence.problem
    # AND submit still misses it
    with pytest.raises(MissingEvidence) as raised:
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    assert raised.value.missing == ["order_screenshot"]


def test_a_corrected_upload_replaces_a_failed_one(ports: Ports) -> None:
    refund = open_refund(ports, reason=Reason.CHANGED_MIND)
    opened = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT, "image/jpeg")
    upload(ports, refund.refund_id, opened, PNG)
    assert get_refund(ports, "u-1", refund.refund_id).evidence[0].problem is not None
    # WHEN the right file is uploaded over it
    upload(ports, refund.refund_id, opened, JPEG)
    submitted = submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN it is checked again and counts
    assert submitted.status is S.SUBMITTED
    assert (submitted.evidence[0].uploaded, submitted.evidence[0].problem) == (True, None)


def test_submit_on_the_fast_track_needs_no_evidence_O2(ports: Ports) -> None:
    # GIVEN the order system reported a duplicate charge, and the refund claims exactly that
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    refund = open_refund(ports, reason=Reason.DUPLICATE_CHARGE)
    # WHEN it is submitted without any evidence
    submitted = submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN it goes through
    assert submitted.status is S.SUBMITTED
    assert submitted.fast_track is True


def test_submit_other_reason_than_the_platform_fault_needs_evidence(ports: Ports) -> None:
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    refund = open_refund(ports, reason=Reason.INVALID_CODE)
    with pytest.raises(MissingEvidence):
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))


def test_resubmit_from_needs_info_restarts_the_promise(ports: Ports) -> None:
    # GIVEN a refund CS asked more about, escalated under the previous promise
    refund = open_refund(ports, reason=Reason.CHANGED_MIND)
    upload(
        ports, refund.refund_id, slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT), PNG
    )
    force(ports, refund.refund_id, S.NEEDS_INFO, escalation_level=1)
    # WHEN the user submits it again
    submitted = submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    # THEN it is submitted from needs_info, at escalation level 0
    assert submitted.history[-1].from_status is S.NEEDS_INFO
    assert submitted.history[-1].to_status is S.SUBMITTED
    assert submitted.escalation_level == 0


@pytest.mark.parametrize("status", sorted(set(S) - {S.DRAFT, S.NEEDS_INFO}, key=lambda s: s.value))
def test_submit_from_any_other_status_is_a_conflict(ports: Ports, status: RefundStatus) -> None:
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    refund = open_refund(ports, reason=Reason.DUPLICATE_CHARGE)
    before = force(ports, refund.refund_id, status)
    with pytest.raises(Conflict):
        submit_refund(ports, SubmitRefund("u-1", refund.refund_id))
    assert stored(ports, refund.refund_id) == before


@pytest.mark.parametrize(
    ("new_description", "kept"),
    [("订单号 o-1001：序列号 ABCD 提示无效，截图见附件，要求退款", True), (None, False)],
    ids=["replaced", "kept"],
)
def test_submit_replaces_the_description_only_when_given(
    ports: Ports, new_description: str | None, kept: bool
) -> None:
    ports.orders.upsert(sample_order(platform_fault=PlatformFault.DUPLICATE_CHARGE))
    refund = open_refund(ports, reason=Reason.DUPLICATE_CHARGE)
    submitted = submit_refund(ports, SubmitRefund("u-1", refund.refund_id, new_description))
    expected = new_description if kept else DESCRIPTION
    assert submitted.description == expected
    assert stored(ports, refund.refund_id).description == expected


def test_submit_another_users_refund_is_not_found(ports: Ports) -> None:
    refund = open_refund(ports)
    with pytest.raises(NotFound):
        submit_refund(ports, SubmitRefund("u-2", refund.refund_id))


# --- read ----------------------------------------------------------------------------------


def test_get_refund_checks_new_uploads_and_keeps_the_result(ports: Ports) -> None:
    # GIVEN an upload landed since the refund was last read
    refund = open_refund(ports)
    opened = slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT)
    upload(ports, refund.refund_id, opened, PNG)
    version = stored(ports, refund.refund_id).version
    # WHEN the user reads the refund
    read = get_refund(ports, "u-1", refund.refund_id)
    # THEN the slot counts, and that is stored
    assert read.evidence[0].uploaded is True
    assert stored(ports, refund.refund_id).evidence[0].uploaded is True
    assert stored(ports, refund.refund_id).version == version + 1
    # AND a read with nothing new stores nothing
    saves = ports.refunds.calls["save"]
    assert get_refund(ports, "u-1", refund.refund_id) == read
    assert ports.refunds.calls["save"] == saves


def test_get_refund_losing_a_race_answers_the_winners_state(ports: Ports) -> None:
    refund = open_refund(ports)
    upload(ports, refund.refund_id, slot(ports, refund.refund_id, EvidenceKind.OTHER), PNG)
    ports.refunds.before_next(
        "save", lambda: post_message(ports, PostMessage("u-1", refund.refund_id, "还在吗？"))
    )
    read = get_refund(ports, "u-1", refund.refund_id)
    assert [m.body for m in read.messages] == ["还在吗？"]
    assert read == stored(ports, refund.refund_id)


@pytest.mark.parametrize(("user_id", "which"), [("u-2", "own"), ("u-1", "rf_missing")])
def test_get_refund_of_another_user_or_unknown_is_not_found(
    ports: Ports, user_id: str, which: str
) -> None:
    refund = open_refund(ports)
    refund_id = refund.refund_id if which == "own" else which
    with pytest.raises(NotFound):
        get_refund(ports, user_id, refund_id)


def test_list_refunds_is_the_users_newest_first(ports: Ports, clock: FakeClock) -> None:
    ids = []
    for n in range(3):
        ports.orders.upsert(sample_order(order_id=f"o-{n}"))
        ids.append(open_refund(ports, order_id=f"o-{n}").refund_id)
        clock.advance(milliseconds=1)
    ports.orders.upsert(sample_order(order_id="o-u2", user_id="u-2"))
    open_refund(ports, order_id="o-u2", user_id="u-2")
    page = list_refunds(ports, "u-1", None, 2, None)
    assert [r.refund_id for r in page.items] == ids[::-1][:2]
    rest = list_refunds(ports, "u-1", None, 2, page.next_cursor)
    assert [r.refund_id for r in rest.items] == ids[:1]
    assert rest.next_cursor is None


# --- cancel (E4) ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", [S.DRAFT, S.SUBMITTED, S.PENDING_REVIEW, S.NEEDS_INFO])
def test_cancel_frees_the_order_for_a_new_refund_E4(
    ports: Ports, clock: FakeClock, status: RefundStatus
) -> None:
    # GIVEN an open refund in one of the four cancellable statuses
    refund = open_refund(ports)
    force(ports, refund.refund_id, status, review_due_at=clock.now() + timedelta(days=3))
    clock.advance(hours=1)
    # WHEN the user cancels it
    cancelled = cancel_refund(ports, "u-1", refund.refund_id)
    # THEN it is cancelled, with its history entry, and the review promise is gone
    assert cancelled.status is S.CANCELLED
    assert cancelled.history[-1] == HistoryEntry(
        clock.now(), "u-1", Action.CANCEL, status, S.CANCELLED
    )
    assert cancelled.review_due_at is None
    assert stored(ports, refund.refund_id) == cancelled
    # AND the order's booking is released, nothing counted as refunded
    assert booking(ports) == OrderBooking()
    # AND a new refund of the order can be opened
    assert open_refund(ports).amount == 10000


@pytest.mark.parametrize(
    "status",
    sorted(set(S) - {S.DRAFT, S.SUBMITTED, S.PENDING_REVIEW, S.NEEDS_INFO}, key=lambda s: s.value),
)
def test_cancel_from_any_other_status_is_refused(ports: Ports, status: RefundStatus) -> None:
    refund = open_refund(ports)
    before = force(ports, refund.refund_id, status)
    with pytest.raises(InvalidTransition):
        cancel_refund(ports, "u-1", refund.refund_id)
    assert stored(ports, refund.refund_id) == before
    assert booking(ports).open_refund_id == refund.refund_id


def test_cancel_another_users_refund_is_not_found(ports: Ports) -> None:
    refund = open_refund(ports)
    with pytest.raises(NotFound):
        cancel_refund(ports, "u-2", refund.refund_id)
    assert stored(ports, refund.refund_id).status is S.DRAFT


# --- messages (O5) -------------------------------------------------------------------------


def test_post_message_keeps_it_in_the_log_and_on_the_refund(ports: Ports, clock: FakeClock) -> None:
    refund = open_refund(ports)
    clock.advance(minutes=3)
    message = post_message(ports, PostMessage("u-1", refund.refund_id, "请尽快处理，谢谢"))
    assert (message.author_role, message.author, message.body, message.at) == (
        "user",
        "u-1",
        "请尽快处理，谢谢",
        clock.now(),
    )
    assert message.message_id.startswith("msg_")
    assert ports.messages.for_refund(refund.refund_id) == [message]
    kept = stored(ports, refund.refund_id)
    assert kept.messages == [message]
    assert kept.updated_at == clock.now()
    # Messages are not history.
    assert [h.action for h in kept.history] == [Action.CREATE]


def test_post_message_keeps_only_the_latest_on_the_refund(clock: FakeClock) -> None:
    ports = make_ports(clock, ServiceConfig(recent_messages=3))
    ports.orders.upsert(sample_order())
    refund = open_refund(ports)
    for n in range(5):
        post_message(ports, PostMessage("u-1", refund.refund_id, f"message {n}"))
        clock.advance(seconds=1)
    assert [m.body for m in stored(ports, refund.refund_id).messages] == [
        "message 2",
        "message 3",
        "message 4",
    ]
    assert [m.body for m in ports.messages.for_refund(refund.refund_id)] == [
        f"message {n}" for n in range(5)
    ]


def test_post_message_with_no_recent_messages_configured_keeps_none_on_the_refund(
    clock: FakeClock,
) -> None:
    ports = make_ports(clock, ServiceConfig(recent_messages=0))
    ports.orders.upsert(sample_order())
    refund = open_refund(ports)
    post_message(ports, PostMessage("u-1", refund.refund_id, "只在日志里"))
    assert [m.body for m in ports.messages.for_refund(refund.refund_id)] == ["只在日志里"]
    assert stored(ports, refund.refund_id).messages == []


def test_post_message_retries_on_top_of_a_concurrent_change(ports: Ports) -> None:
    # GIVEN another change lands between the read and the save
    refund = open_refund(ports)

    def concurrent_change() -> None:
        other = stored(ports, refund.refund_id)
        other.description = "更新后的说明：序列号无效，附截图"
        ports.refunds.save(other)

    ports.refunds.before_next("save", concurrent_change)
    # WHEN the user posts a message
    message = post_message(ports, PostMessage("u-1", refund.refund_id, "补充一点"))
    # THEN both the change and the message are kept, the message once
    kept = stored(ports, refund.refund_id)
    assert kept.description == "更新后的说明：序列号无效，附截图"
    assert kept.messages == [message]
    assert ports.messages.for_refund(refund.refund_id) == [message]


def test_post_message_on_another_users_refund_is_not_found(ports: Ports) -> None:
    refund = open_refund(ports)
    with pytest.raises(NotFound):
        post_message(ports, PostMessage("u-2", refund.refund_id, "hello"))
    assert ports.messages.for_refund(refund.refund_id) == []


# --- review follow-ups: E4 fence, retries on a concurrent change, the message archive -------


def test_a_create_slower_than_its_lease_can_never_store_its_refund_late(
    ports: Ports, clock: FakeClock
) -> None:
    """E4: GIVEN create A booked the order and stalls past the idempotency lease WHEN create B
    (another key) finds A's booking with no refund and takes the order THEN A's late write is
    refused as fenced (its key then starts over), and the order holds exactly one open refund."""

    def meanwhile() -> None:
        clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
        create_refund(
            ports, command(description="第二次申请：序列号无效，截图为证"), refund_id="rf_B"
        )

    ports.refunds.before_next("add", meanwhile)
    with pytest.raises(RefundIdFenced):
        create_refund(ports, command(), refund_id="rf_A")
    assert [(r.refund_id, r.status) for r in ports.refunds.all()] == [("rf_B", S.DRAFT)]
    assert booking(ports) == OrderBooking(0, "rf_B", 10000)


def test_a_booking_whose_create_just_finished_is_not_taken(ports: Ports, clock: FakeClock) -> None:
    """E4: GIVEN a booking past the lease whose refund is stored just before the fence WHEN
    another create looks THEN the refund counts as open: 409 E4, nothing settled."""
    ports.orders.book_refund("o-1001", "rf_late", 10000, OrderBooking(), clock.wall_now())
    clock.advance(seconds=ports.config.idempotency_lease_seconds + 1)
    ports.refunds.before_next(
        "abandon", lambda: ports.refunds.add(sample_refund_for(ports, "rf_late"))
    )
    with pytest.raises(Conflict) as refused:
        open_refund(ports)
    assert refused.value.rule == "E4"
    assert booking(ports).open_refund_id == "rf_late"


def sample_refund_for(ports: Ports, refund_id: str) -> Refund:
    stored_order = ports.orders.get("o-1001")
    assert stored_order is not None
    return Refund(
        refund_id=refund_id,
        order=stored_order.order,
        status=S.DRAFT,
        reason=Reason.INVALID_CODE,
        description=DESCRIPTION,
        amount=10000,
        payout_channel=PayoutChannel.ORIGINAL,
        channel=PaymentChannel.ALIPAY,
        gifts_returned=True,
        fast_track=False,
        needs_return=False,
        created_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.parametrize("use_case", ["submit", "cancel", "evidence"])
def test_a_users_change_is_applied_on_top_of_a_concurrent_one(ports: Ports, use_case: str) -> None:
    """GIVEN another change (e.g. a read counting evidence) lands between this request's read
    and write WHEN the user submits, cancels or adds evidence THEN it is judged again on the
    fresh state and applied, not refused with a 409; the other change is kept too."""
    refund = open_refund(ports, reason=Reason.CHANGED_MIND)
    upload(
        ports, refund.refund_id, slot(ports, refund.refund_id, EvidenceKind.ORDER_SCREENSHOT), PNG
    )

    def concurrent_change() -> None:
        other = stored(ports, refund.refund_id)
        other.description = "更新后的说明：买错了面值，截图为证"
        ports.refunds.save(other)

    ports.refunds.before_next("save", concurrent_change)
    if use_case == "submit":
        assert submit_refund(ports, SubmitRefund("u-1", refund.refund_id)).status is S.SUBMITTED
    elif use_case == "cancel":
        assert cancel_refund(ports, "u-1", refund.refund_id).status is S.CANCELLED
    else:
        add_evidence(
            ports,
            AddEvidence("u-1", refund.refund_id, EvidenceKind.OTHER, "image/png", 100),
        )
    assert stored(ports, refund.refund_id).description == "更新后的说明：买错了面值，截图为证"


def test_reading_a_refund_shows_every_message_even_those_moved_to_the_log(
    clock: FakeClock,
) -> None:
    """O5: GIVEN more messages than the refund item carries WHEN the user reads the refund
    THEN all of them appear, oldest first, and the item keeps only the latest."""
    ports = make_ports(clock, ServiceConfig(recent_messages=3))
    ports.orders.upsert(sample_order())
    refund = open_refund(ports)
    for n in range(7):
        post_message(ports, PostMessage("u-1", refund.refund_id, f"message {n}"))
        clock.advance(seconds=1)
    assert [m.body for m in get_refund(ports, "u-1", refund.refund_id).messages] == [
        f"message {n}" for n in range(7)
    ]
    kept = stored(ports, refund.refund_id)
    assert [m.body for m in kept.messages] == ["message 4", "message 5", "message 6"]
    assert kept.archived_messages == 4


def test_the_refund_item_carries_messages_within_a_byte_budget(clock: FakeClock) -> None:
    """O5: GIVEN long messages WHEN posted THEN the item keeps only what fits the byte budget
    (so it never outgrows DynamoDB's item limit), and reading still shows them all."""
    ports = make_ports(clock, ServiceConfig(recent_message_bytes=10_000))
    ports.orders.upsert(sample_order())
    refund = open_refund(ports)
    long_text = "😀" * 2000  # 8,000 bytes of UTF-8
    for _ in range(5):
        post_message(ports, PostMessage("u-1", refund.refund_id, long_text))
    kept = stored(ports, refund.refund_id)
    assert len(kept.messages) == 1
    assert kept.archived_messages == 4
    assert len(get_refund(ports, "u-1", refund.refund_id).messages) == 5
