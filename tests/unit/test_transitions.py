"""Refund statuses and transitions: one table, one `record` (API.md Refunds; R4, O1, X2, X3)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from chalicelib.domain.exceptions import DomainError, InvalidTransition
from chalicelib.domain.model import Action, HistoryEntry, RefundStatus
from chalicelib.domain.transitions import (
    OPEN_STATUSES,
    STATUS_CHANGES,
    STAY_ACTIONS,
    TERMINAL,
    allowed,
    record,
)

S = RefundStatus
A = Action

# The moves API.md describes, written out independently of the code's table:
# (action, from) -> the statuses it may lead to.
EXPECTED_MOVES: dict[tuple[Action, RefundStatus], set[RefundStatus]] = {
    (A.SUBMIT, S.DRAFT): {S.SUBMITTED},
    (A.SUBMIT, S.NEEDS_INFO): {S.SUBMITTED},
    # R1: the automatic check moves a submitted refund on (O2 fast track: straight to approved;
    # R3: a failed check asks for info rather than rejecting).
    (A.AUTO_REVIEW, S.SUBMITTED): {S.PENDING_REVIEW, S.NEEDS_INFO, S.APPROVED},
    (A.APPROVE, S.PENDING_REVIEW): {S.APPROVED, S.AWAITING_RETURN},
    (A.APPROVE, S.APPEALED): {S.APPROVED, S.AWAITING_RETURN},
    (A.REJECT, S.PENDING_REVIEW): {S.REJECTED},
    (A.REJECT, S.APPEALED): {S.REJECTED},
    (A.REQUEST_INFO, S.PENDING_REVIEW): {S.NEEDS_INFO},
    (A.REQUEST_INFO, S.APPEALED): {S.NEEDS_INFO},
    # PH1: goods back intact (or a quality reason) -> payout; else rejected with PH1.
    (A.RETURN_RECEIVED, S.AWAITING_RETURN): {S.APPROVED, S.REJECTED},
    (A.PAYOUT, S.APPROVED): {S.PAYING},
    (A.PAID, S.PAYING): {S.PAID},
    (A.PAYOUT_FAILED, S.PAYING): {S.PAYOUT_FAILED},
    (A.RETRY_PAYOUT, S.PAYOUT_FAILED): {S.PAYING},
    (A.APPEAL, S.REJECTED): {S.APPEALED},  # X3
    (A.CANCEL, S.DRAFT): {S.CANCELLED},
    (A.CANCEL, S.SUBMITTED): {S.CANCELLED},
    (A.CANCEL, S.PENDING_REVIEW): {S.CANCELLED},
    (A.CANCEL, S.NEEDS_INFO): {S.CANCELLED},
    # close-stale: drafts untouched 24 h, needs_info unanswered 7 days.
    (A.CLOSE, S.DRAFT): {S.CLOSED},
    (A.CLOSE, S.NEEDS_INFO): {S.CLOSED},
}

NON_TERMINAL = set(RefundStatus) - {S.PAID, S.CANCELLED, S.CLOSED, S.REJECTED}

# Entries that do not change the status (from/to null in the history), and where they apply.
EXPECTED_STAYS: dict[Action, set[RefundStatus]] = {
    A.CLAIM: NON_TERMINAL - {S.DRAFT},
    A.RETURN_SHIPMENT: {S.AWAITING_RETURN},
    A.ESCALATE: NON_TERMINAL - {S.DRAFT},
    A.NUDGE: NON_TERMINAL - {S.DRAFT},  # "any non-terminal status but draft"
    A.ORDER_CORRECTED: NON_TERMINAL,  # X1: added to the order's open refund, if any
    A.REMOVE_EVIDENCE: {S.DRAFT, S.NEEDS_INFO, S.REJECTED},  # where evidence can be added
}


def test_terminal_statuses_are_paid_cancelled_closed_rejected():
    """X3 / E4: terminal statuses are exactly paid, cancelled, closed and rejected (an appeal
    reopens a rejected one); every other status is open."""
    assert set(TERMINAL) == {S.PAID, S.CANCELLED, S.CLOSED, S.REJECTED}
    assert set(OPEN_STATUSES) == NON_TERMINAL
    assert S.APPEALED in OPEN_STATUSES


def test_status_change_table_is_exactly_the_api_md_moves():
    """API.md Refunds: GIVEN the code's table WHEN flattened THEN it holds exactly the moves
    API.md describes, no more and no fewer."""
    actual = {
        (action, current): set(targets)
        for action, by_status in STATUS_CHANGES.items()
        for current, targets in by_status.items()
    }

    assert actual == EXPECTED_MOVES
    assert {action: set(statuses) for action, statuses in STAY_ACTIONS.items()} == EXPECTED_STAYS


def test_record_allows_exactly_the_table_for_every_action_status_and_target(make_refund, now):
    """API.md Refunds: GIVEN every action, current status and requested target WHEN recorded
    THEN it succeeds exactly for the moves and stays API.md allows, else InvalidTransition."""
    targets: list[RefundStatus | None] = [None, *RefundStatus]
    for action in Action:
        for current in RefundStatus:
            for to in targets:
                refund = make_refund(status=current)
                if action in EXPECTED_STAYS:
                    allowed = to is None and current in EXPECTED_STAYS[action]
                else:
                    allowed = to in EXPECTED_MOVES.get((action, current), set())
                case = f"{action} from {current} to {to}"
                if allowed:
                    record(refund, action, actor="u-1", at=now, to=to)
                    assert refund.status is (to or current), case
                else:
                    with pytest.raises(InvalidTransition):
                        record(refund, action, actor="u-1", at=now, to=to)
                    assert refund.status is current, case


def test_allowed_says_whether_some_move_or_stay_exists_from_a_status():
    """API.md Refunds: GIVEN every action and status WHEN asked before acting (state is judged
    before policy) THEN allowed is true exactly when API.md has a move or stay from there."""
    for action in Action:
        for current in RefundStatus:
            if action in EXPECTED_STAYS:
                expected = current in EXPECTED_STAYS[action]
            else:
                expected = bool(EXPECTED_MOVES.get((action, current)))
            assert allowed(action, current) is expected, f"{action} from {current}"


def test_create_is_not_a_transition_of_record(make_refund, now):
    """API.md: the first history entry is `create` (null -> draft), written when the refund is
    made, not a move `record` performs on an existing refund."""
    refund = make_refund(status=S.DRAFT)

    with pytest.raises(InvalidTransition):
        record(refund, Action.CREATE, actor="u-1", at=now, to=S.DRAFT)

    assert refund.history == []


@pytest.mark.parametrize("current", [S.DRAFT, S.NEEDS_INFO])
def test_submit_from_draft_or_needs_info(make_refund, now, current):
    """F1 / R3: GIVEN a draft or a refund sent back for info WHEN submitted THEN submitted."""
    refund = make_refund(status=current)

    entry = record(refund, Action.SUBMIT, actor="u-1", at=now, to=S.SUBMITTED)

    assert refund.status is S.SUBMITTED
    assert (entry.from_status, entry.to_status) == (current, S.SUBMITTED)


@pytest.mark.parametrize("current", [S.DRAFT, S.SUBMITTED, S.PENDING_REVIEW, S.NEEDS_INFO])
def test_cancel_is_allowed_before_a_decision(make_refund, now, current):
    """API.md cancel: GIVEN a refund in draft, submitted, pending_review or needs_info WHEN the
    user cancels THEN it is cancelled, and the history says from where."""
    refund = make_refund(status=current)

    entry = record(refund, Action.CANCEL, actor="u-1", at=now, to=S.CANCELLED)

    assert refund.status is S.CANCELLED
    assert entry.from_status is current
    assert entry.to_status is S.CANCELLED


@pytest.mark.parametrize(
    "current",
    sorted(set(RefundStatus) - {S.DRAFT, S.SUBMITTED, S.PENDING_REVIEW, S.NEEDS_INFO}),
)
def test_cancel_from_any_other_status_is_an_invalid_transition(make_refund, now, current):
    """API.md cancel (409): GIVEN a refund approved, paying, paid, rejected... WHEN the user
    cancels THEN InvalidTransition (the API's 409), naming the action and the status."""
    refund = make_refund(status=current)

    with pytest.raises(InvalidTransition) as raised:
        record(refund, Action.CANCEL, actor="u-1", at=now, to=S.CANCELLED)

    assert isinstance(raised.value, DomainError)
    assert raised.value.action == Action.CANCEL
    assert raised.value.status == current
    assert str(current) in str(raised.value)


def test_record_appends_exactly_one_entry_and_sets_updated_at(make_refund, now):
    """O1 / R4: GIVEN a refund WHEN a transition is recorded THEN exactly one history entry
    says who, when, what, from where to where and why, and updated_at is its time."""
    refund = make_refund(status=S.PENDING_REVIEW)
    earlier = HistoryEntry(now - timedelta(hours=2), "u-1", Action.SUBMIT, S.DRAFT, S.SUBMITTED)
    refund.history.append(earlier)
    at = now + timedelta(minutes=5)

    entry = record(
        refund,
        Action.REJECT,
        actor="agent-7",
        at=at,
        to=S.REJECTED,
        note="序列号已被使用过",
        rule="E2",
    )

    assert refund.history == [earlier, entry]
    assert entry == HistoryEntry(
        at, "agent-7", Action.REJECT, S.PENDING_REVIEW, S.REJECTED, "序列号已被使用过", "E2"
    )
    assert refund.status is S.REJECTED
    assert refund.updated_at == at


@pytest.mark.parametrize(
    ("action", "current"),
    [
        (Action.CLAIM, S.PENDING_REVIEW),
        (Action.NUDGE, S.SUBMITTED),
        (Action.NUDGE, S.PAYING),
        (Action.ESCALATE, S.PENDING_REVIEW),
        (Action.RETURN_SHIPMENT, S.AWAITING_RETURN),
        (Action.ORDER_CORRECTED, S.DRAFT),
    ],
)
def test_stay_actions_record_an_entry_with_null_from_and_to(make_refund, now, action, current):
    """X2 / R4 / X1: GIVEN an open refund WHEN it is claimed, nudged, escalated... THEN the
    status stays, and one entry with from/to None is appended and updated_at moves."""
    refund = make_refund(status=current)

    entry = record(refund, action, actor="agent-7", at=now, note="催办")

    assert refund.status is current
    assert refund.history == [entry]
    assert entry.action is action
    assert entry.from_status is None
    assert entry.to_status is None
    assert entry.note == "催办"
    assert refund.updated_at == now


def test_stay_action_with_a_target_status_is_refused(make_refund, now):
    """X2: GIVEN a refund in review WHEN a nudge asks to change the status THEN it is refused:
    a stay action never moves a refund."""
    refund = make_refund(status=S.PENDING_REVIEW)

    with pytest.raises(InvalidTransition):
        record(refund, Action.NUDGE, actor="u-1", at=now, to=S.APPROVED)


@pytest.mark.parametrize(
    ("action", "current", "to"),
    [
        (Action.NUDGE, S.DRAFT, None),  # nudge: not in draft
        (Action.NUDGE, S.PAID, None),  # nor once terminal
        (Action.CLAIM, S.CANCELLED, None),
        (Action.APPROVE, S.DRAFT, S.APPROVED),
        (Action.APPROVE, S.PENDING_REVIEW, S.PAID),  # allowed action, wrong target
        (Action.SUBMIT, S.DRAFT, None),  # a move needs its target
        (Action.APPEAL, S.APPEALED, S.APPEALED),  # X3: once
        (Action.RETRY_PAYOUT, S.PAYING, S.PAYING),
    ],
)
def test_refused_transition_changes_nothing(make_refund, now, action, current, to):
    """R4 / O1: GIVEN a refund WHEN a move the table does not allow is recorded THEN
    InvalidTransition, and status, history and updated_at are untouched."""
    refund = make_refund(status=current)
    before_updated = refund.updated_at

    with pytest.raises(InvalidTransition):
        record(refund, action, actor="u-1", at=now + timedelta(days=1), to=to)

    assert refund.status is current
    assert refund.history == []
    assert refund.updated_at == before_updated


def test_full_happy_path_history_reads_back_in_order(make_refund, now):
    """O1: GIVEN a refund WHEN it goes submit -> review -> claim -> approve -> payout -> paid
    THEN the history holds one entry per step, in time order, and it ends paid (terminal)."""
    refund = make_refund(status=S.DRAFT)
    steps = [
        (Action.SUBMIT, S.SUBMITTED),
        (Action.AUTO_REVIEW, S.PENDING_REVIEW),
        (Action.CLAIM, None),
        (Action.APPROVE, S.APPROVED),
        (Action.PAYOUT, S.PAYING),
        (Action.PAID, S.PAID),
    ]
    for minute, (action, to) in enumerate(steps):
        record(refund, action, actor="x", at=now + timedelta(minutes=minute), to=to)

    assert [entry.action for entry in refund.history] == [action for action, _ in steps]
    assert [entry.at for entry in refund.history] == sorted(e.at for e in refund.history)
    assert refund.status is S.PAID
    assert refund.status in TERMINAL
