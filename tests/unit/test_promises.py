"""Promised times over the fakes (R2, P1, X2, X4): when each promise starts and ends, the
escalation sweep and its levels, closing stale refunds, and every answer of the nudge."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.model import (
    Action,
    OrderBooking,
    PayoutChannel,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.service import promises, review
from chalicelib.service.exceptions import ChannelUnavailable, Conflict, NudgeTooSoon
from chalicelib.service.ports import PayoutState, Ports
from chalicelib.service.refunds import CreateRefund, create_refund
from tests.fakes import FakeClock, FakeGateway, StepDriver, make_ports
from tests.unit.test_review_and_payout import AGENT, DESCRIPTION, alipay, open_refund, stored

S = RefundStatus
# Friday 20 Nov 2026, 09:30 in Shanghai: the review is due Wed 25 Nov, 23:59:59 Shanghai.
FRIDAY = datetime(2026, 11, 20, 9, 30, tzinfo=SHANGHAI)
REVIEW_DUE = datetime(2026, 11, 25, 23, 59, 59, tzinfo=SHANGHAI)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FRIDAY)


@pytest.fixture
def ports(clock: FakeClock) -> Ports:
    return make_ports(clock)


@pytest.fixture
def steps(ports: Ports) -> StepDriver:
    return StepDriver(ports)


def at(clock: FakeClock, when: datetime) -> datetime:
    clock.set(when, wall=when)
    return when


def escalations(refund: Refund) -> list[str | None]:
    return [entry.note for entry in refund.history if entry.action is Action.ESCALATE]


# --- when promises start and end -----------------------------------------------------------


def test_submitting_starts_the_review_promise_in_working_days_R2(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    refund = stored(ports, refund_id)
    assert (refund.review_due_at, refund.payout_due_at) == (REVIEW_DUE, None)


def test_approval_starts_the_payout_promise_and_ends_the_reviews_X2(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    alipay(ports).answers = [ChannelUnavailable("down")] * 10
    refund_id = open_refund(ports)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.approve(ports, AGENT, review.Approve(refund_id, None, None))
    refund = stored(ports, refund_id)
    # Friday 20 Nov + 5 working days: Fri 27 Nov, 23:59:59 Shanghai
    assert refund.review_due_at is None
    assert refund.payout_due_at == datetime(2026, 11, 27, 23, 59, 59, tzinfo=SHANGHAI)


def test_the_balance_is_instant_and_makes_no_payout_promise(
    ports: Ports, steps: StepDriver
) -> None:
    refund_id = open_refund(ports, payout_channel=PayoutChannel.BALANCE)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.approve(ports, AGENT, review.Approve(refund_id, None, None))
    assert stored(ports, refund_id).payout_due_at is None


def test_no_clock_runs_while_the_user_is_asked_for_more(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.request_info(ports, AGENT, refund_id, "请补充卡密截图")
    at(clock, REVIEW_DUE + timedelta(days=10))
    assert stored(ports, refund_id).review_due_at is None
    assert promises.escalate_overdue(ports, clock.now()) == 0


# --- escalation (X2) -----------------------------------------------------------------------


def test_an_overdue_review_escalates_to_level_1_then_2_and_never_twice(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    # Not yet due: nothing
    assert promises.escalate_overdue(ports, at(clock, REVIEW_DUE)) == 0
    # Past due: level 1, with a history entry and a message the user sees
    assert promises.escalate_overdue(ports, at(clock, REVIEW_DUE + timedelta(seconds=1))) == 1
    refund = stored(ports, refund_id)
    assert refund.escalation_level == 1
    assert len(escalations(refund)) == 1
    assert refund.messages[-1].author_role == "system"
    assert "escalated" in refund.messages[-1].body
    # Run again: nothing is raised twice
    assert promises.escalate_overdue(ports, clock.now()) == 0
    # Still overdue at the end of the next working day (Thu 26 Nov): level 2
    level_two = datetime(2026, 11, 26, 23, 59, 59, tzinfo=SHANGHAI)
    assert promises.escalate_overdue(ports, at(clock, level_two)) == 1
    refund = stored(ports, refund_id)
    assert refund.escalation_level == 2
    assert "cs-senior" in (escalations(refund)[-1] or "")
    assert promises.escalate_overdue(ports, at(clock, level_two + timedelta(days=30))) == 0


def test_two_runs_at_once_escalate_once(ports: Ports, steps: StepDriver, clock: FakeClock) -> None:
    refund_id = open_refund(ports)
    steps.run()
    now = at(clock, REVIEW_DUE + timedelta(minutes=5))
    other: list[int] = []
    ports.refunds.before_next("save", lambda: other.append(promises.escalate_overdue(ports, now)))  # type: ignore[attr-defined]
    first = promises.escalate_overdue(ports, now)
    assert first + other[0] == 1
    refund = stored(ports, refund_id)
    assert (refund.escalation_level, len(escalations(refund))) == (1, 1)


def test_an_escalated_refund_comes_first_in_the_queue(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    later = open_refund(ports, order_id="o-late")
    steps.run()
    at(clock, FRIDAY + timedelta(days=3))
    sooner = open_refund(ports, order_id="o-soon")
    steps.run()
    promises.escalate_overdue(ports, at(clock, REVIEW_DUE + timedelta(hours=1)))
    queue = ports.refunds.list_queue(S.PENDING_REVIEW, False, 10, None).items
    assert [r.refund_id for r in queue] == [later, sooner]
    escalated = ports.refunds.list_queue(S.PENDING_REVIEW, True, 10, None).items
    assert [r.refund_id for r in escalated] == [later]


def test_a_resubmission_starts_a_new_promise_at_level_0(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    from chalicelib.service.refunds import SubmitRefund, submit_refund

    refund_id = open_refund(ports)
    steps.run()
    promises.escalate_overdue(ports, at(clock, REVIEW_DUE + timedelta(hours=1)))
    review.claim(ports, AGENT, refund_id)
    review.request_info(ports, AGENT, refund_id, "请补充卡密截图")
    submit_refund(ports, SubmitRefund("u-1", refund_id, "已补充卡密页面截图，序列号依旧无效"))
    refund = stored(ports, refund_id)
    assert refund.escalation_level == 0
    assert refund.review_due_at is not None
    assert refund.review_due_at > clock.now()
    assert len(escalations(refund)) == 1  # the history keeps the earlier one


# --- close-stale ---------------------------------------------------------------------------


def test_an_untouched_draft_closes_after_24_hours_and_frees_the_order_E4(
    ports: Ports, clock: FakeClock
) -> None:
    from tests.fakes import sample_order

    ports.orders.upsert(sample_order(FRIDAY))
    refund_id = ports.ids.new_id("rf_")
    create_refund(
        ports,
        CreateRefund(
            "u-1", "o-1001", Reason.INVALID_CODE, DESCRIPTION, PayoutChannel.ORIGINAL, True
        ),
        refund_id=refund_id,
    )
    assert promises.close_stale(ports, FRIDAY + timedelta(hours=23)) == 0
    assert promises.close_stale(ports, FRIDAY + timedelta(hours=24)) == 1
    refund = stored(ports, refund_id)
    assert refund.status is S.CLOSED
    assert "24 hours" in refund.messages[-1].body
    found = ports.orders.get("o-1001")
    assert found is not None
    assert found.booking == OrderBooking()


def test_needs_info_unanswered_for_7_days_closes(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    asked = at(clock, FRIDAY + timedelta(hours=2))
    review.request_info(ports, AGENT, refund_id, "请补充卡密截图")
    assert promises.close_stale(ports, asked + timedelta(days=6)) == 0
    assert promises.close_stale(ports, asked + timedelta(days=7)) == 1
    assert stored(ports, refund_id).status is S.CLOSED


# --- the nudge (X2, X4) --------------------------------------------------------------------


def test_a_nudge_before_the_promise_says_when_it_is_due(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    answer = promises.nudge(ports, "u-1", refund_id)
    assert (answer.escalated, answer.review_due_at) == (False, REVIEW_DUE)
    assert "due by 2026-11-25 23:59" in answer.message
    assert stored(ports, refund_id).history[-1].action is Action.NUDGE
    # A second nudge within 24 hours is refused; after them, it is accepted again.
    with pytest.raises(NudgeTooSoon):
        promises.nudge(ports, "u-1", refund_id)
    at(clock, FRIDAY + timedelta(hours=24, seconds=1))
    assert promises.nudge(ports, "u-1", refund_id).escalated is False


def test_a_nudge_after_the_promise_escalates_at_once(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    refund_id = open_refund(ports)
    steps.run()
    at(clock, REVIEW_DUE + timedelta(minutes=1))
    answer = promises.nudge(ports, "u-1", refund_id)
    assert answer.escalated is True
    assert "escalated" in answer.message
    # and the sweep that follows raises nothing more
    assert promises.escalate_overdue(ports, clock.now()) == 0
    assert stored(ports, refund_id).escalation_level == 1


def test_a_nudge_while_the_channel_holds_the_money_says_so_X4(
    ports: Ports, steps: StepDriver, clock: FakeClock
) -> None:
    gateway = alipay(ports)
    assert isinstance(gateway, FakeGateway)
    gateway.answers = [PayoutState.PROCESSING]
    refund_id = open_refund(ports)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.approve(ports, AGENT, review.Approve(refund_id, None, None))
    from chalicelib.domain.workflow import Step
    from tests.fakes import FakeStepQueue

    queue = ports.steps
    assert isinstance(queue, FakeStepQueue)
    for message in queue.take():
        if message.step is Step.PAYOUT:
            from chalicelib.service import payout

            payout.handle_payout(ports, message.refund_id, 1)
    assert stored(ports, refund_id).status is S.PAYING
    answer = promises.nudge(ports, "u-1", refund_id)
    assert answer.escalated is False
    assert "with alipay" in answer.message
    assert "X4" in answer.message


@pytest.mark.parametrize("status", [S.DRAFT, S.PAID, S.CANCELLED, S.CLOSED, S.REJECTED])
def test_a_draft_or_a_finished_refund_cannot_be_nudged(ports: Ports, status: RefundStatus) -> None:
    from tests.fakes import sample_refund

    refund_id = ports.ids.new_id("rf_")
    ports.refunds.add(sample_refund(refund_id, FRIDAY, status=status))
    with pytest.raises(Conflict):
        promises.nudge(ports, "u-1", refund_id)


def test_a_nudge_while_the_user_is_asked_for_more_says_so(ports: Ports, steps: StepDriver) -> None:
    refund_id = open_refund(ports)
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.request_info(ports, AGENT, refund_id, "请补充卡密截图")
    answer = promises.nudge(ports, "u-1", refund_id)
    assert (answer.escalated, answer.review_due_at, answer.payout_due_at) == (False, None, None)
    assert "waits for the information" in answer.message


def test_a_nudge_while_the_goods_come_back_says_so(ports: Ports, steps: StepDriver) -> None:
    from chalicelib.domain.model import EvidenceKind, OrderKind, OrderStatus

    refund_id = open_refund(
        ports,
        reason=Reason.CHANGED_MIND,
        kinds=(EvidenceKind.ORDER_SCREENSHOT,),
        kind=OrderKind.PHYSICAL,
        status=OrderStatus.SHIPPED,
    )
    steps.run()
    review.claim(ports, AGENT, refund_id)
    review.approve(ports, AGENT, review.Approve(refund_id, None, None))
    assert stored(ports, refund_id).status is S.AWAITING_RETURN
    answer = promises.nudge(ports, "u-1", refund_id)
    assert answer.escalated is False
    assert "returned goods" in answer.message
