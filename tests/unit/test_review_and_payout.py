"""Review and payout over the fakes: the automatic check (R1, R3, F3, O2), CS decisions (R4,
A1, PH1, PR1, X1, X3) and payouts that happen exactly once whatever fails (P1, P2).

``StepDriver`` plays SQS: each step message is handed to its handler, again after its
backoff while the handler asks for it, and kept as a dead letter after the last attempt.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain.exceptions import NotRefundable
from chalicelib.domain.model import (
    Action,
    EvidenceKind,
    Gift,
    OrderBooking,
    OrderKind,
    OrderStatus,
    PaymentChannel,
    PayoutChannel,
    PlatformFault,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.domain.workflow import WORKFLOW, Step, StepStatus
from chalicelib.service import payout, review
from chalicelib.service.exceptions import (
    ChannelOutcomeUnknown,
    ChannelUnavailable,
    Conflict,
    InvalidInput,
    RoleRequired,
)
from chalicelib.service.ports import PayoutState, Ports, ServiceConfig
from chalicelib.service.refunds import (
    AddEvidence,
    Appeal,
    CreateRefund,
    ReturnShipmentSent,
    SubmitRefund,
    add_evidence,
    appeal_refund,
    cancel_refund,
    create_refund,
    evidence_key,
    send_return_shipment,
    submit_refund,
)
from chalicelib.service.workflow import resume_waiting_steps
from tests.fakes import FakeClock, FakeGateway, FakeStepQueue, StepDriver, make_ports, sample_order

S = RefundStatus
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
AGENT = review.Agent("agent-1", senior=False)
OTHER_AGENT = review.Agent("agent-2", senior=False)
SENIOR = review.Agent("senior-1", senior=True)
DESCRIPTION = "订单的点卡到账后提示序列号无效，截图为证，要求全额退款"


@pytest.fixture
def ports() -> Ports:
    return make_ports()


@pytest.fixture
def steps(ports: Ports) -> StepDriver:
    return StepDriver(ports)


def alipay(ports: Ports) -> FakeGateway:
    gateway = ports.gateways[PaymentChannel.ALIPAY]
    assert isinstance(gateway, FakeGateway)
    return gateway


def balance(ports: Ports) -> FakeGateway:
    gateway = ports.gateways[PaymentChannel.BALANCE]
    assert isinstance(gateway, FakeGateway)
    return gateway


def stored(ports: Ports, refund_id: str) -> Refund:
    refund = ports.refunds.get(refund_id)
    assert refund is not None
    return refund


def booking(ports: Ports, order_id: str = "o-1001") -> OrderBooking:
    found = ports.orders.get(order_id)
    assert found is not None
    return found.booking


def open_refund(
    ports: Ports,
    *,
    reason: Reason = Reason.INVALID_CODE,
    kinds: tuple[EvidenceKind, ...] = (
        EvidenceKind.ORDER_SCREENSHOT,
        EvidenceKind.PROBLEM_SCREENSHOT,
    ),
    description: str = DESCRIPTION,
    payout_channel: PayoutChannel = PayoutChannel.ORIGINAL,
    gifts_returned: bool = True,
    user: str = "u-1",
    order_id: str = "o-1001",
    **order: Any,
) -> str:
    """An order, a refund of it with the given evidence uploaded, submitted."""
    ports.orders.upsert(sample_order(order_id=order_id, user_id=user, **order))
    refund_id = ports.ids.new_id("rf_")
    create_refund(
        ports,
        CreateRefund(user, order_id, reason, description, payout_channel, gifts_returned),
        refund_id=refund_id,
    )
    for kind in kinds:
        slot = add_evidence(ports, AddEvidence(user, refund_id, kind, "image/png", len(PNG)))
        ports.evidence.put(evidence_key(refund_id, slot.evidence.evidence_id), PNG)  # type: ignore[attr-defined]
    submit_refund(ports, SubmitRefund(user, refund_id))
    return refund_id


def reviewed(ports: Ports, steps: StepDriver, **kwargs: Any) -> str:
    refund_id = open_refund(ports, **kwargs)
    steps.run()
    return refund_id


def approved(ports: Ports, steps: StepDriver, amount: int | None = None, **kwargs: Any) -> str:
    refund_id = reviewed(ports, steps, **kwargs)
    review.claim(ports, AGENT, refund_id)
    note = "partial: used part of the goods" if amount is not None else None
    review.approve(ports, AGENT, review.Approve(refund_id, amount, note))
    return refund_id


def actions(refund: Refund) -> list[str]:
    return [entry.action.value for entry in refund.history]


# --- the automatic check (R1) --------------------------------------------------------------


def test_a_submitted_refund_with_its_evidence_goes_to_a_person_R1(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN a refund submitted with the evidence F2 asks and a specific description
    refund_id = open_refund(ports)
    assert stored(ports, refund_id).status is S.SUBMITTED
    # WHEN the auto-review step runs
    steps.run()
    # THEN it waits for a person, the check's execution recorded like a state machine's
    refund = stored(ports, refund_id)
    assert refund.status is S.PENDING_REVIEW
    assert refund.history[-1].actor == "system"
    assert [(run.step, run.status, run.attempts) for run in refund.steps] == [
        (Step.AUTO_REVIEW, StepStatus.SUCCEEDED, 1)
    ]
    assert refund.awaiting_step is None


def test_a_vague_description_goes_back_as_needs_info_with_what_to_add_F3_R3(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps, description="不好用，没效果")
    refund = stored(ports, refund_id)
    assert refund.status is S.NEEDS_INFO
    assert refund.history[-1].rule == "F3"
    assert refund.messages[-1].author_role == "system"
    assert "fact" in refund.messages[-1].body


def test_the_platform_fault_fast_track_is_approved_and_paid_with_no_person_O2(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN the order system reported charging twice, and the refund claims exactly that
    refund_id = reviewed(
        ports,
        steps,
        reason=Reason.DUPLICATE_CHARGE,
        kinds=(),
        platform_fault=PlatformFault.DUPLICATE_CHARGE,
    )
    # THEN it was approved in full by the system and paid, once
    refund = stored(ports, refund_id)
    assert refund.status is S.PAID
    assert actions(refund) == ["create", "submit", "auto_review", "payout", "paid"]
    assert refund.history[2].actor == "system"
    assert refund.approved_amount == refund.amount == 10000
    assert [p.refund_id for p in alipay(ports).payouts] == [refund_id]
    assert booking(ports) == OrderBooking(refunded_total=10000)


def test_many_refunds_in_30_days_route_to_a_senior(ports: Ports, steps: StepDriver) -> None:
    # GIVEN a user with four submitted refunds this month (and a threshold of five)
    small = replace(ServiceConfig(), abuse_threshold=5)
    ports = make_ports(config=small)
    steps = StepDriver(ports)
    for n in range(4):
        refund_id = open_refund(ports, order_id=f"o-{n}")
    steps.run()
    assert stored(ports, refund_id).senior_only is False
    # WHEN the fifth is checked
    fifth = reviewed(ports, steps, order_id="o-5")
    # THEN only a senior may claim it
    assert stored(ports, fifth).senior_only is True
    with pytest.raises(RoleRequired):
        review.claim(ports, AGENT, fifth)
    review.claim(ports, SENIOR, fifth)


def test_a_duplicated_check_message_changes_nothing(ports: Ports, steps: StepDriver) -> None:
    refund_id = reviewed(ports, steps)
    before = stored(ports, refund_id)
    ports.steps.send(Step.AUTO_REVIEW, refund_id)
    steps.run()
    assert stored(ports, refund_id).history == before.history


def test_a_check_that_keeps_failing_hands_the_refund_to_a_person(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN the store fails every time the check reads the user's recent refunds
    refund_id = open_refund(ports)

    def broken(user_id: str, since: Any) -> int:
        raise RuntimeError("DynamoDB is down")

    object.__setattr__(ports.refunds, "count_for_user_since", broken)
    # WHEN the step has used all its attempts
    steps.run()
    # THEN a person reviews it, the step shows the failure, and the message is dead-lettered
    refund = stored(ports, refund_id)
    assert refund.status is S.PENDING_REVIEW
    assert "automatic check failed" in (refund.history[-1].note or "")
    run = refund.steps[-1]
    assert (run.status, run.attempts) == (
        StepStatus.FAILED,
        WORKFLOW[Step.AUTO_REVIEW].retry.max_attempts,
    )
    assert run.last_error == "internal error (RuntimeError)"
    assert [m.step for m in steps.dead_letters] == [Step.AUTO_REVIEW]


# --- claims and decisions (R4, A1, R3) -----------------------------------------------------


def test_one_agent_at_a_time_and_a_senior_may_take_over_R4(ports: Ports, steps: StepDriver) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    with pytest.raises(Conflict):
        review.claim(ports, OTHER_AGENT, refund_id)
    with pytest.raises(Conflict):
        review.approve(ports, OTHER_AGENT, review.Approve(refund_id, None, None))
    review.claim(ports, SENIOR, refund_id)
    refund = stored(ports, refund_id)
    assert refund.assignee == "senior-1"
    assert refund.history[-1].note == "taken over from agent-1"


def test_deciding_needs_the_claim(ports: Ports, steps: StepDriver) -> None:
    refund_id = reviewed(ports, steps)
    with pytest.raises(Conflict, match="claim"):
        review.reject(ports, AGENT, review.Reject(refund_id, "E2", "past its deadline"))


def test_an_agent_approves_at_most_the_computed_amount_A1(ports: Ports, steps: StepDriver) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    with pytest.raises(NotRefundable) as above:
        review.approve(ports, AGENT, review.Approve(refund_id, 10001, "more"))
    assert above.value.rule == "A1"
    with pytest.raises(InvalidInput) as unexplained:
        review.approve(ports, AGENT, review.Approve(refund_id, 6000, None))
    assert unexplained.value.field == "note"
    # A lower amount with a reason is paid, and the order's booking shrinks to it (E4)
    review.approve(ports, AGENT, review.Approve(refund_id, 6000, "60% of the codes worked"))
    assert booking(ports).open_refund_amount == 6000
    steps.run()
    refund = stored(ports, refund_id)
    assert (refund.status, refund.approved_amount) == (S.PAID, 6000)
    assert [p.amount for p in alipay(ports).payouts] == [6000]
    assert booking(ports) == OrderBooking(refunded_total=6000)


def test_a_rejection_cites_its_rule_and_frees_the_order_O3_E4(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    review.reject(ports, AGENT, review.Reject(refund_id, "E2", "过了退款期限"))
    refund = stored(ports, refund_id)
    assert (refund.status, refund.history[-1].rule) == (S.REJECTED, "E2")
    assert refund.messages[-1].body == "[E2] 过了退款期限"
    assert booking(ports) == OrderBooking()


def test_request_info_goes_back_to_the_user_who_resubmits_R3(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    review.request_info(ports, AGENT, refund_id, "请上传卡密页面的完整截图")
    refund = stored(ports, refund_id)
    assert refund.status is S.NEEDS_INFO
    assert (refund.messages[-1].author_role, refund.messages[-1].author) == ("agent", "agent-1")
    submit_refund(
        ports, SubmitRefund("u-1", refund_id, "已补充卡密页面的完整截图，序列号仍提示无效")
    )
    steps.run()
    assert stored(ports, refund_id).status is S.PENDING_REVIEW


def test_an_appeal_goes_to_a_senior_once_X3(ports: Ports, steps: StepDriver) -> None:
    # GIVEN a rejected refund
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    review.reject(ports, AGENT, review.Reject(refund_id, "E2", "过期"))
    # WHEN the user appeals with a statement
    appeal_refund(ports, Appeal("u-1", refund_id, "订单页显示仍在退款期内，见截图", ()))
    # THEN it is appealed, the order booked again, and only a senior may handle it
    refund = stored(ports, refund_id)
    assert refund.status is S.APPEALED
    assert booking(ports).open_refund_id == refund_id
    with pytest.raises(RoleRequired):
        review.claim(ports, AGENT, refund_id)
    review.claim(ports, SENIOR, refund_id)
    review.reject(ports, SENIOR, review.Reject(refund_id, "E2", "复核后仍已过期"))
    # AND a second appeal is refused
    with pytest.raises(Conflict):
        appeal_refund(ports, Appeal("u-1", refund_id, "再次申诉", ()))


def test_an_appeal_is_refused_while_another_refund_of_the_order_is_open_E4(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    review.reject(ports, AGENT, review.Reject(refund_id, "F2", "截图不清楚"))
    newer = ports.ids.new_id("rf_")
    create_refund(
        ports,
        CreateRefund(
            "u-1", "o-1001", Reason.INVALID_CODE, DESCRIPTION, PayoutChannel.ORIGINAL, True
        ),
        refund_id=newer,
    )
    with pytest.raises(Conflict) as refused:
        appeal_refund(ports, Appeal("u-1", refund_id, "申诉", ()))
    assert refused.value.rule == "E4"
    assert booking(ports).open_refund_id == newer


def test_an_appeal_names_only_its_own_evidence(ports: Ports, steps: StepDriver) -> None:
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    review.reject(ports, AGENT, review.Reject(refund_id, "F2", "截图不清楚"))
    with pytest.raises(InvalidInput):
        appeal_refund(ports, Appeal("u-1", refund_id, "申诉", ("ev_not_mine",)))


# --- returns (PH1, PR1) --------------------------------------------------------------------

PHYSICAL = {
    "kind": OrderKind.PHYSICAL,
    "status": OrderStatus.SHIPPED,
    "list_price": 10000,
    "paid_amount": 10500,
    "shipping_fee": 500,
    "gifts": (Gift("mug", "Mug", 1500),),
}


def test_returned_goods_with_a_gift_kept_pay_the_recomputed_amount_PH1_PR1(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN shipped goods refunded for a change of mind: shipping is not refunded (PH1)
    refund_id = approved(
        ports, steps, reason=Reason.CHANGED_MIND, kinds=(EvidenceKind.ORDER_SCREENSHOT,), **PHYSICAL
    )
    refund = stored(ports, refund_id)
    assert (refund.status, refund.approved_amount) == (S.AWAITING_RETURN, 10000)
    send_return_shipment(ports, ReturnShipmentSent("u-1", refund_id, "SF", "SF1234567890"))
    # WHEN the goods come back intact but the gift was kept
    review.return_received(ports, AGENT, review.ReturnReceived(refund_id, True, False))
    steps.run()
    # THEN the gift's value is deducted (PR1), and that is paid, once
    refund = stored(ports, refund_id)
    assert (refund.status, refund.approved_amount) == (S.PAID, 8500)
    assert "return_shipment" in actions(refund)
    assert [p.amount for p in alipay(ports).payouts] == [8500]


def test_goods_back_opened_without_a_quality_problem_are_refused_PH1(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = approved(
        ports, steps, reason=Reason.CHANGED_MIND, kinds=(EvidenceKind.ORDER_SCREENSHOT,), **PHYSICAL
    )
    review.return_received(ports, AGENT, review.ReturnReceived(refund_id, False, True))
    refund = stored(ports, refund_id)
    assert (refund.status, refund.history[-1].rule) == (S.REJECTED, "PH1")
    assert booking(ports) == OrderBooking()
    assert alipay(ports).payouts == []


def test_a_status_correction_outranks_the_order_system_and_notes_the_open_refund_X1(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps, version=3)
    order = review.correct_order_status(
        ports,
        AGENT,
        review.CorrectOrderStatus("o-1001", OrderStatus.DELIVERED, "code never issued"),
    )
    assert (order.status, order.version) == (OrderStatus.DELIVERED, 4)
    ports.orders.upsert(sample_order(status=OrderStatus.COMPLETED, version=3))
    found = ports.orders.get("o-1001")
    assert found is not None
    assert found.order.status is OrderStatus.DELIVERED
    entry = stored(ports, refund_id).history[-1]
    assert (entry.action, entry.rule) == (Action.ORDER_CORRECTED, "X1")


# --- payouts (P1, P2) ----------------------------------------------------------------------


def test_a_payout_to_the_balance_is_instant_and_once_P1(ports: Ports, steps: StepDriver) -> None:
    refund_id = approved(ports, steps, payout_channel=PayoutChannel.BALANCE)
    ports.steps.send(Step.PAYOUT, refund_id)  # a duplicated message
    steps.run()
    assert stored(ports, refund_id).status is S.PAID
    assert [p.refund_id for p in balance(ports).payouts] == [refund_id]
    assert alipay(ports).payouts == []


def test_a_channel_that_fails_twice_then_succeeds_pays_once_after_backoff_P2(
    ports: Ports, steps: StepDriver
) -> None:
    refused = ChannelUnavailable("SYSTEM_BUSY")
    alipay(ports).answers = [refused, refused]
    clock = ports.clock
    assert isinstance(clock, FakeClock)
    refund_id = approved(ports, steps)
    started = clock.now()
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.PAID
    assert len(alipay(ports).payouts) == 1
    payout_run = refund.steps[-1]
    assert (payout_run.step, payout_run.attempts) == (Step.PAYOUT, 3)
    policy = WORKFLOW[Step.PAYOUT].retry
    assert clock.now() - started == policy.interval(1) + policy.interval(2)


def test_a_lost_answer_from_the_channel_is_resolved_by_a_query_not_a_second_payout_P2(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN the channel pays but its answer never arrives
    alipay(ports).answers = [ChannelOutcomeUnknown("read timeout")]
    refund_id = approved(ports, steps)
    steps.run()
    # THEN the query found the payout: paid, and paid once
    assert stored(ports, refund_id).status is S.PAID
    assert len(alipay(ports).payouts) == 1
    assert alipay(ports).calls["pay"] == 1


def test_a_channel_that_always_fails_ends_in_payout_failed_then_the_balance_pays_once_P2(
    ports: Ports, steps: StepDriver
) -> None:
    alipay(ports).answers = [ChannelUnavailable("down")] * 10
    refund_id = approved(ports, steps)
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.PAYOUT_FAILED
    assert (refund.steps[-1].status, refund.steps[-1].attempts) == (
        StepStatus.FAILED,
        WORKFLOW[Step.PAYOUT].retry.max_attempts,
    )
    assert [m.step for m in steps.dead_letters] == [Step.PAYOUT]
    # WHEN customer service retries to the balance
    payout.retry_payout(ports, AGENT, payout.RetryPayout(refund_id, PayoutChannel.BALANCE))
    steps.run()
    # THEN the balance pays it once, and the channel that failed never paid
    refund = stored(ports, refund_id)
    assert (refund.status, refund.channel) == (S.PAID, PaymentChannel.BALANCE)
    assert [p.refund_id for p in balance(ports).payouts] == [refund_id]
    assert alipay(ports).payouts == []
    # (a channel that refused every request never paid: it was not asked)
    assert alipay(ports).calls["query"] == 0


def test_switching_channels_first_asks_the_old_one_when_it_may_have_paid_P2(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN the channel paid but the answer was lost, and it cannot be asked for a while
    gateway = alipay(ports)
    gateway.answers = [ChannelOutcomeUnknown("read timeout")]
    reachable = {"now": False}
    ask = gateway.query

    def query(refund_id: str) -> Any:
        if not reachable["now"]:
            raise ChannelUnavailable("busy")
        return ask(refund_id)

    object.__setattr__(gateway, "query", query)
    refund_id = approved(ports, steps)
    steps.run()
    assert stored(ports, refund_id).status is S.PAYOUT_FAILED
    assert len(gateway.payouts) == 1
    # WHEN customer service switches it to the balance while the channel cannot be asked
    to_balance = payout.RetryPayout(refund_id, PayoutChannel.BALANCE)
    with pytest.raises(Conflict, match="cannot be asked"):
        payout.retry_payout(ports, AGENT, to_balance)
    # AND once it can: it is marked paid from the channel's payout, the balance pays nothing
    reachable["now"] = True
    payout.retry_payout(ports, AGENT, to_balance)
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.PAID
    assert actions(refund)[-2:] == ["retry_payout", "paid"]
    assert balance(ports).payouts == []
    assert len(gateway.payouts) == 1


def test_an_accepted_payout_is_confirmed_by_query_or_notification_once(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN a channel that accepts payouts and makes them later (WeChat's PROCESSING)
    alipay(ports).answers = [PayoutState.PROCESSING]
    refund_id = approved(ports, steps)
    queue = ports.steps
    assert isinstance(queue, FakeStepQueue)
    # WHEN the payout step runs, it is paying and awaits the confirmation
    for message in queue.take():
        payout.handle_payout(ports, message.refund_id, 1)
    refund = stored(ports, refund_id)
    assert (refund.status, refund.awaiting_step) == (S.PAYING, Step.CONFIRM_PAYOUT)
    # AND the notification arrives first: paid; the confirmation and a duplicate change nothing
    done = alipay(ports).complete(refund_id)
    payout.accept_notification(ports, done)
    payout.accept_notification(ports, done)
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.PAID
    assert actions(refund).count("paid") == 1
    assert len(alipay(ports).payouts) == 1


def test_a_payout_message_for_a_refund_not_approved_does_nothing(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = reviewed(ports, steps)
    ports.steps.send(Step.PAYOUT, refund_id)
    steps.run()
    assert stored(ports, refund_id).status is S.PENDING_REVIEW
    assert alipay(ports).calls["pay"] == 0


def test_a_crash_between_the_change_and_its_message_loses_nothing(
    ports: Ports, steps: StepDriver
) -> None:
    # GIVEN the approval is stored but its payout message is never sent
    refund_id = reviewed(ports, steps)
    review.claim(ports, AGENT, refund_id)
    ports.steps.fail_next("send")  # type: ignore[attr-defined]
    review.approve(ports, AGENT, review.Approve(refund_id, None, None))
    steps.run()
    assert stored(ports, refund_id).status is S.APPROVED
    # WHEN the sweep runs once the step is overdue
    assert resume_waiting_steps(ports) == 0
    clock = ports.clock
    assert isinstance(clock, FakeClock)
    clock.advance(seconds=ports.config.step_grace_seconds + 1)
    assert resume_waiting_steps(ports) == 1
    steps.run()
    # THEN the payout happens, once
    assert stored(ports, refund_id).status is S.PAID
    assert len(alipay(ports).payouts) == 1


def test_a_crash_between_submit_and_its_message_loses_nothing(
    ports: Ports, steps: StepDriver
) -> None:
    ports.steps.fail_next("send")  # type: ignore[attr-defined]
    refund_id = open_refund(ports)
    clock = ports.clock
    assert isinstance(clock, FakeClock)
    clock.advance(seconds=ports.config.step_grace_seconds + 1)
    resume_waiting_steps(ports)
    steps.run()
    assert stored(ports, refund_id).status is S.PENDING_REVIEW


def test_a_lost_answer_on_the_paid_write_pays_once(ports: Ports, steps: StepDriver) -> None:
    refund_id = approved(ports, steps)
    ports.refunds.lose_answer_next("save")  # type: ignore[attr-defined]
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.PAID
    assert len(alipay(ports).payouts) == 1


def test_cancelling_a_submitted_refund_stops_its_check(ports: Ports, steps: StepDriver) -> None:
    refund_id = open_refund(ports)
    cancel_refund(ports, "u-1", refund_id)
    steps.run()
    refund = stored(ports, refund_id)
    assert refund.status is S.CANCELLED
    assert refund.awaiting_step is None
    clock = ports.clock
    assert isinstance(clock, FakeClock)
    clock.advance(timedelta(hours=1))
    assert resume_waiting_steps(ports) == 0
