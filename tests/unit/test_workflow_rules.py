"""The workflow table and the review rules as pure functions (chalicelib/domain/workflow.py,
chalicelib/domain/review.py): R1, R3, F2, F3, O2, A1, PH1, PR1, X3."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain import model
from chalicelib.domain.exceptions import NotRefundable
from chalicelib.domain.review import (
    approval_amount,
    auto_review,
    claim_problem,
    needs_senior,
    return_outcome,
)
from chalicelib.domain.workflow import (
    MAX_STEP_RUNS,
    WORKFLOW,
    RetryPolicy,
    Step,
    StepStatus,
    attempt_failed,
    finish_step,
    open_run,
    start_step,
)

S = model.RefundStatus
K = model.EvidenceKind
R = model.Reason


def _uploaded(*kinds: model.EvidenceKind) -> list[model.Evidence]:
    return [
        model.Evidence(f"ev_{n}", kind, "image/png", 100, datetime(2026, 11, 20), uploaded=True)
        for n, kind in enumerate(kinds)
    ]


# --- the table -----------------------------------------------------------------------------


def test_every_step_has_a_retry_policy_and_a_catch() -> None:
    assert set(WORKFLOW) == set(Step)
    for step, definition in WORKFLOW.items():
        assert definition.step is step
        assert definition.retry.max_attempts >= 2
        assert definition.catch


@given(
    first=st.floats(min_value=0.1, max_value=60),
    rate=st.floats(min_value=1, max_value=4),
    failures=st.integers(min_value=1, max_value=20),
)
def test_backoff_grows_by_its_rate_and_never_passes_its_cap(
    first: float, rate: float, failures: int
) -> None:
    policy = RetryPolicy(max_attempts=30, first_interval_seconds=first, backoff_rate=rate)
    this, following = policy.interval(failures), policy.interval(failures + 1)
    assert timedelta(0) < this <= following <= timedelta(seconds=policy.max_interval_seconds)
    assert policy.interval(1) == timedelta(seconds=first)
    assert abs(policy.interval(failures, scale=0.5) - this * 0.5) <= timedelta(microseconds=1)


def test_a_refund_records_each_execution_of_a_step_like_a_state_machine(
    make_refund: Callable[..., model.Refund], now: datetime
) -> None:
    refund = make_refund()
    start_step(refund, Step.PAYOUT, at=now, due_at=now + timedelta(minutes=2))
    assert refund.awaiting_step is Step.PAYOUT
    attempt_failed(
        refund,
        Step.PAYOUT,
        "SYSTEM_BUSY",
        at=now,
        next_attempt_at=now + timedelta(seconds=5),
        due_at=now + timedelta(minutes=3),
    )
    run = open_run(refund, Step.PAYOUT)
    assert run is not None
    assert (run.status, run.attempts, run.last_error) == (StepStatus.RETRYING, 1, "SYSTEM_BUSY")
    assert refund.step_due_at == now + timedelta(minutes=3)
    finish_step(refund, Step.PAYOUT, at=now + timedelta(seconds=6))
    assert (run.status, run.attempts, run.next_attempt_at) == (StepStatus.SUCCEEDED, 2, None)
    assert (refund.awaiting_step, refund.step_due_at) == (None, None)
    assert open_run(refund, Step.PAYOUT) is None


def test_a_refund_keeps_its_latest_step_executions_only(
    make_refund: Callable[..., model.Refund], now: datetime
) -> None:
    refund = make_refund()
    for n in range(MAX_STEP_RUNS + 5):
        start_step(refund, Step.VERIFY_EVIDENCE, at=now + timedelta(seconds=n), due_at=now)
        finish_step(refund, Step.VERIFY_EVIDENCE, at=now + timedelta(seconds=n))
    assert len(refund.steps) == MAX_STEP_RUNS
    assert refund.steps[-1].started_at == now + timedelta(seconds=MAX_STEP_RUNS + 4)


# --- the automatic check (R1) --------------------------------------------------------------


def test_evidence_and_a_specific_description_go_to_a_person(
    make_refund: Callable[..., model.Refund],
) -> None:
    refund = make_refund(evidence=_uploaded(K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT))
    outcome = auto_review(refund, recent_refunds=1, abuse_threshold=5)
    assert (outcome.to, outcome.senior_only, outcome.message) == (S.PENDING_REVIEW, False, None)


def test_missing_evidence_and_a_vague_text_ask_for_exactly_what_is_missing_R3(
    make_refund: Callable[..., model.Refund],
) -> None:
    refund = make_refund(evidence=_uploaded(K.ORDER_SCREENSHOT), description="没效果")
    outcome = auto_review(refund, recent_refunds=1, abuse_threshold=5)
    assert (outcome.to, outcome.rule) == (S.NEEDS_INFO, "F2")
    assert outcome.message is not None
    assert "screenshot of the problem" in outcome.message
    assert "F3" in outcome.message


def test_a_platform_fault_is_approved_in_full_by_the_check_O2(
    make_order: Callable[..., model.Order], make_refund: Callable[..., model.Refund]
) -> None:
    order = make_order(platform_fault=model.PlatformFault.WRONG_ITEM_ISSUED)
    refund = make_refund(order=order, reason=R.WRONG_ITEM_ISSUED, amount=7700)
    outcome = auto_review(refund, recent_refunds=9, abuse_threshold=5)
    assert (outcome.to, outcome.rule, outcome.approved_amount) == (S.APPROVED, "O2", 7700)


def test_many_refunds_route_to_a_senior(make_refund: Callable[..., model.Refund]) -> None:
    refund = make_refund(evidence=_uploaded(K.ORDER_SCREENSHOT, K.PROBLEM_SCREENSHOT))
    outcome = auto_review(refund, recent_refunds=5, abuse_threshold=5)
    assert (outcome.to, outcome.senior_only) == (S.PENDING_REVIEW, True)
    assert "5 refunds" in (outcome.note or "")


@pytest.mark.parametrize(
    ("order", "reason", "problem"),
    [
        ({"status": model.OrderStatus.DELIVERED}, R.NOT_DELIVERED, "recorded as delivered"),
        ({"kind": model.OrderKind.VIRTUAL}, R.SERVICE_NOT_DELIVERED, "not a service"),
        ({"kind": model.OrderKind.SERVICE}, R.INVALID_CODE, "not a virtual good"),
        ({}, R.DUPLICATE_CHARGE, "has not reported"),
        ({"status": model.OrderStatus.PAID}, R.NOT_DELIVERED, None),
        ({}, R.DEFECTIVE, None),
    ],
)
def test_the_check_notes_where_the_claim_does_not_fit_the_order_R1(
    make_order: Callable[..., model.Order],
    make_refund: Callable[..., model.Refund],
    order: dict[str, Any],
    reason: model.Reason,
    problem: str | None,
) -> None:
    refund = make_refund(order=make_order(**order), reason=reason)
    found = claim_problem(refund)
    assert (found is None) == (problem is None)
    if problem:
        assert problem in (found or "")


# --- human decisions (A1, X3, PH1, PR1) ----------------------------------------------------


@given(computed=st.integers(min_value=1, max_value=10**9), asked=st.integers(0, 2 * 10**9))
def test_an_approval_never_exceeds_the_computed_amount_A1(computed: int, asked: int) -> None:
    from tests.unit.conftest import build_refund

    refund = build_refund(amount=computed)
    if asked > computed:
        with pytest.raises(NotRefundable):
            approval_amount(refund, asked)
    else:
        assert approval_amount(refund, asked) == asked
    assert approval_amount(refund, None) == computed


def test_appeals_and_flagged_refunds_need_a_senior_X3(
    make_refund: Callable[..., model.Refund],
) -> None:
    assert needs_senior(make_refund(status=S.APPEALED))
    assert needs_senior(make_refund(senior_only=True))
    assert not needs_senior(make_refund(status=S.PENDING_REVIEW))


def _returned(
    make_order: Callable[..., model.Order],
    make_refund: Callable[..., model.Refund],
    reason: model.Reason,
) -> model.Refund:
    order = make_order(
        kind=model.OrderKind.PHYSICAL,
        status=model.OrderStatus.SHIPPED,
        list_price=10000,
        paid_amount=10500,
        shipping_fee=500,
        gifts=(model.Gift("mug", "Mug", 1500),),
    )
    return make_refund(order=order, reason=reason, amount=10000, approved_amount=10000)


def test_goods_back_opened_are_refused_unless_the_reason_is_quality_PH1(
    make_order: Callable[..., model.Order], make_refund: Callable[..., model.Refund]
) -> None:
    mind = _returned(make_order, make_refund, R.CHANGED_MIND)
    amount, rule, _ = return_outcome(mind, model.OrderBooking(), intact=False, gifts_returned=True)
    assert (amount, rule) == (None, "PH1")
    defect = _returned(make_order, make_refund, R.DEFECTIVE)
    amount, rule, _ = return_outcome(
        defect, model.OrderBooking(), intact=False, gifts_returned=True
    )
    assert (amount, rule) == (10000, None)  # approved 10000; shipping would be refunded too


def test_a_kept_gift_is_deducted_on_receipt_and_never_raises_the_amount_PR1(
    make_order: Callable[..., model.Order], make_refund: Callable[..., model.Refund]
) -> None:
    refund = _returned(make_order, make_refund, R.CHANGED_MIND)
    amount, rule, _ = return_outcome(
        refund, model.OrderBooking(), intact=True, gifts_returned=False
    )
    assert (amount, rule) == (8500, None)
    lower = _returned(make_order, make_refund, R.CHANGED_MIND)
    lower.approved_amount = 6000
    amount, _, _ = return_outcome(lower, model.OrderBooking(), intact=True, gifts_returned=True)
    assert amount == 6000
