"""Refund analytics (O4; X2 for SLA breaches): what orders and refunds contribute to their
Asia/Shanghai day's counters, the change between two states of a refund, and a period's
figures as API.md's ``GET /admin/stats`` describes them."""

from __future__ import annotations

import copy
import itertools
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib.domain.model import Action, HistoryEntry, Order, Reason, Refund, RefundStatus
from chalicelib.domain.stats import (
    Anomaly,
    Contribution,
    PeriodStats,
    change,
    order_contribution,
    refund_contribution,
    summarize,
)
from chalicelib.domain.transitions import STATUS_CHANGES, STAY_ACTIONS, record

S = RefundStatus
A = Action
MakeOrder = Callable[..., Order]
MakeRefund = Callable[..., Refund]

SHARDS = 4
SKU_SHARDS = 2
PAID_AT = datetime(2026, 11, 19, 16, 30, tzinfo=UTC)
"""00:30 on 2026-11-20 in Asia/Shanghai, the evening of 2026-11-19 in UTC."""
SUBMITTED_AT = datetime(2026, 11, 19, 17, 0, tzinfo=UTC)
"""01:00 on 2026-11-20 in Asia/Shanghai."""
SHANGHAI_DAY = date(2026, 11, 20)
AGENT = "agent-7"


# --- builders and readers ------------------------------------------------------------------


def at(hours: float) -> datetime:
    """``hours`` after the first submission."""
    return SUBMITTED_AT + timedelta(hours=hours)


def entry(
    when: datetime,
    actor: str,
    action: Action,
    from_status: RefundStatus | None,
    to_status: RefundStatus | None,
) -> HistoryEntry:
    return HistoryEntry(when, actor, action, from_status, to_status)


CREATED = entry(SUBMITTED_AT - timedelta(hours=3), "u-1", A.CREATE, None, S.DRAFT)
SUBMIT = entry(SUBMITTED_AT, "u-1", A.SUBMIT, S.DRAFT, S.SUBMITTED)
TO_REVIEW = entry(at(0.01), "system", A.AUTO_REVIEW, S.SUBMITTED, S.PENDING_REVIEW)


def refund_with(make_refund: MakeRefund, *entries: HistoryEntry, **overrides: object) -> Refund:
    """A refund created as a draft, then through ``entries``; its status is the last one."""
    history = [CREATED, *entries]
    status = [e.to_status for e in history if e.to_status is not None][-1]
    return make_refund(history=history, status=status, **overrides)


def totals(contribution: Contribution) -> Counter[str]:
    """Every group's counters summed (negative counts kept), zeros left out."""
    total: Counter[str] = Counter()
    for counters in contribution.values():
        total.update(counters)
    return Counter({name: n for name, n in total.items() if n})


def days_of(contribution: Contribution) -> set[date]:
    return {day for day, _ in contribution}


def add(into: dict[tuple[date, str], Counter[str]], delta: Contribution) -> None:
    for key, counters in delta.items():
        into.setdefault(key, Counter()).update(counters)


def nonzero(contribution: Mapping[tuple[date, str], Counter[str]]) -> Contribution:
    kept: Contribution = {}
    for key, counters in contribution.items():
        counts = Counter({name: n for name, n in counters.items() if n})
        if counts:
            kept[key] = counts
    return kept


def summarize_all(contributions: Iterable[Contribution]) -> PeriodStats:
    """The period's figures from the counters of every day and group the contributions touch."""
    return summarize(counters for c in contributions for counters in c.values())


def shop(
    make_order: MakeOrder,
    make_refund: MakeRefund,
    *,
    sku: str,
    category: str,
    orders: int,
    refunds: int,
) -> list[Contribution]:
    """``orders`` orders of one SKU paid in the period, ``refunds`` of them refunds submitted."""
    contributions: list[Contribution] = []
    for n in range(orders):
        order = make_order(order_id=f"o-{sku}-{n}", sku=sku, category=category, paid_at=PAID_AT)
        contributions.append(order_contribution(order, SHARDS, SKU_SHARDS))
        if n < refunds:
            refund = refund_with(make_refund, SUBMIT, order=order, refund_id=f"rf-{sku}-{n}")
            contributions.append(refund_contribution(refund, SHARDS, SKU_SHARDS))
    return contributions


def by_key(anomalies: list[Anomaly]) -> list[Anomaly]:
    return sorted(anomalies, key=lambda a: (a.scope, a.key))


# --- order_contribution ----------------------------------------------------------------------


def test_order_counts_once_on_its_shanghai_paid_day_for_platform_category_and_sku(
    make_order: MakeOrder,
) -> None:
    """O4: GIVEN an order paid at 2026-11-19T16:30Z (00:30 on the 20th in Shanghai) WHEN its
    contribution is taken THEN it counts once, on 2026-11-20, for the platform, its category
    and its SKU."""
    order = make_order(paid_at=PAID_AT, sku="steam-100", category="game-card")

    contribution = order_contribution(order, 1, 1)

    assert contribution == {
        (SHANGHAI_DAY, "p#0"): Counter({"orders": 1, "cat_orders|game-card": 1}),
        (SHANGHAI_DAY, "s#0"): Counter(
            {"sku_orders|steam-100": 1, "sku_cat|steam-100|game-card": 1}
        ),
    }


@pytest.mark.parametrize(
    ("paid_at", "day"),
    [
        (datetime(2026, 11, 19, 15, 59, 59, tzinfo=UTC), date(2026, 11, 19)),
        (datetime(2026, 11, 19, 16, 0, tzinfo=UTC), date(2026, 11, 20)),
        (datetime(2026, 11, 20, 15, 59, 59, tzinfo=UTC), date(2026, 11, 20)),
    ],
)
def test_order_day_is_the_shanghai_day_around_midnight(
    make_order: MakeOrder, paid_at: datetime, day: date
) -> None:
    """O4: GIVEN an order paid around Shanghai midnight (16:00Z) WHEN its contribution is
    taken THEN every counter it touches is on the Shanghai day of its payment."""
    contribution = order_contribution(make_order(paid_at=paid_at), SHARDS, SKU_SHARDS)

    assert days_of(contribution) == {day}


@pytest.mark.parametrize(("shards", "sku_shards"), [(1, 1), (4, 2), (16, 8)])
def test_order_counts_once_whatever_the_sharding(
    make_order: MakeOrder, shards: int, sku_shards: int
) -> None:
    """O4: GIVEN orders spread over any number of shards WHEN their contributions are summed
    THEN each order counts exactly once, for the platform, its category and its SKU."""
    orders = [make_order(order_id=f"o-{n}", paid_at=PAID_AT) for n in range(25)]

    contributions = [order_contribution(o, shards, sku_shards) for o in orders]

    total: Counter[str] = Counter()
    for contribution in contributions:
        assert all(group.startswith(("p#", "s#")) for _, group in contribution)
        total.update(totals(contribution))
    assert total == Counter(
        {
            "orders": 25,
            "cat_orders|game-card": 25,
            "sku_orders|steam-100": 25,
            "sku_cat|steam-100|game-card": 25,
        }
    )
    assert summarize_all(contributions).orders == 25


def test_no_order_contributes_nothing() -> None:
    """O4: GIVEN no order (none stored before the first write) WHEN its contribution is taken
    THEN it is empty."""
    assert order_contribution(None, SHARDS, SKU_SHARDS) == {}


# --- refund_contribution ---------------------------------------------------------------------


def test_no_refund_contributes_nothing() -> None:
    """O4: GIVEN no refund WHEN its contribution is taken THEN it is empty."""
    assert refund_contribution(None, SHARDS, SKU_SHARDS) == {}


@pytest.mark.parametrize(
    "after_creation",
    [
        [],
        [entry(at(1), "u-1", A.CANCEL, S.DRAFT, S.CANCELLED)],
        [entry(at(30), "system", A.CLOSE, S.DRAFT, S.CLOSED)],
    ],
    ids=["draft", "cancelled-draft", "closed-draft"],
)
def test_a_draft_never_submitted_counts_nowhere(
    make_refund: MakeRefund, after_creation: list[HistoryEntry]
) -> None:
    """O4 (API.md: drafts never submitted do not count): GIVEN a refund that never had a
    `submit` entry WHEN its contribution is taken THEN it is empty."""
    refund = refund_with(make_refund, *after_creation, sla_breaches=["review"])

    assert refund_contribution(refund, SHARDS, SKU_SHARDS) == {}


def test_a_draft_without_any_history_counts_nowhere(make_refund: MakeRefund) -> None:
    """O4: GIVEN a fresh draft with no history at all WHEN its contribution is taken THEN it
    is empty."""
    assert refund_contribution(make_refund(), SHARDS, SKU_SHARDS) == {}


def test_a_submitted_refund_counts_once_on_its_submission_day_by_reason_and_status(
    make_refund: MakeRefund, make_order: MakeOrder
) -> None:
    """O4: GIVEN a refund submitted at 2026-11-19T17:00Z (the 20th in Shanghai) on an order
    paid days earlier WHEN its contribution is taken THEN it counts once on 2026-11-20 by
    reason, current status, category and SKU, with no review, payout or breach counts."""
    order = make_order(paid_at=datetime(2026, 11, 10, 2, 0, tzinfo=UTC))
    refund = refund_with(make_refund, SUBMIT, order=order, reason=Reason.INVALID_CODE)

    contribution = refund_contribution(refund, 1, 1)

    assert contribution == {
        (SHANGHAI_DAY, "p#0"): Counter(
            {
                "refunds": 1,
                "reason|invalid_code": 1,
                "status|submitted": 1,
                "cat_refunds|game-card": 1,
            }
        ),
        (SHANGHAI_DAY, "s#0"): Counter({"sku_refunds|steam-100": 1}),
    }


def test_a_resubmitted_refund_stays_on_its_first_submission_day(make_refund: MakeRefund) -> None:
    """O4: GIVEN a refund first submitted on 2026-11-20 (Shanghai), sent back for more
    information and submitted again two days later WHEN its contribution is taken THEN it
    still counts once, on 2026-11-20, with its current status."""
    refund = refund_with(
        make_refund,
        SUBMIT,
        entry(at(0.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.NEEDS_INFO),
        entry(at(48), "u-1", A.SUBMIT, S.NEEDS_INFO, S.SUBMITTED),
        entry(at(48.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.PENDING_REVIEW),
    )

    contribution = refund_contribution(refund, SHARDS, SKU_SHARDS)

    assert days_of(contribution) == {SHANGHAI_DAY}
    total = totals(contribution)
    assert total["refunds"] == 1
    assert total["sku_refunds|steam-100"] == 1
    assert {name for name in total if name.startswith("status|")} == {"status|pending_review"}


@pytest.mark.parametrize(
    "decision",
    [
        entry(at(20.5), AGENT, A.APPROVE, S.PENDING_REVIEW, S.APPROVED),
        entry(at(20.5), AGENT, A.APPROVE, S.PENDING_REVIEW, S.AWAITING_RETURN),
        entry(at(20.5), AGENT, A.REJECT, S.PENDING_REVIEW, S.REJECTED),
        entry(at(20.5), AGENT, A.REQUEST_INFO, S.PENDING_REVIEW, S.NEEDS_INFO),
    ],
    ids=["approve", "approve-with-return", "reject", "request-info"],
)
def test_review_hours_run_from_submission_to_the_first_human_decision(
    make_refund: MakeRefund, decision: HistoryEntry
) -> None:
    """O4 (median_review_hours): GIVEN a refund decided by an agent 20.5 hours after its
    submission WHEN its contribution is taken THEN its review time is counted once, in the
    tenth-of-an-hour bucket 205, with the decision's status."""
    refund = refund_with(make_refund, SUBMIT, TO_REVIEW, decision)

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert {n: c for n, c in total.items() if n.startswith("review_h|")} == {"review_h|205": 1}
    assert total[f"status|{decision.to_status}"] == 1


def test_review_hours_of_an_automatic_approval(make_refund: MakeRefund) -> None:
    """O4 (median_review_hours: or the automatic approval): GIVEN a refund the auto-review
    approved 12 minutes after submission WHEN its contribution is taken THEN its review time is
    counted in bucket 2 (0.2 hours)."""
    refund = refund_with(
        make_refund, SUBMIT, entry(at(0.2), "system", A.AUTO_REVIEW, S.SUBMITTED, S.APPROVED)
    )

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert {n: c for n, c in total.items() if n.startswith("review_h|")} == {"review_h|2": 1}


@pytest.mark.parametrize(
    "entries",
    [
        [SUBMIT],
        [SUBMIT, TO_REVIEW],
        [SUBMIT, entry(at(0.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.NEEDS_INFO)],
        [SUBMIT, TO_REVIEW, entry(at(3), "system", A.REQUEST_INFO, S.PENDING_REVIEW, S.NEEDS_INFO)],
        [SUBMIT, TO_REVIEW, entry(at(3), AGENT, A.CLAIM, None, None)],
        [SUBMIT, entry(at(2), "u-1", A.CANCEL, S.SUBMITTED, S.CANCELLED)],
    ],
    ids=[
        "submitted",
        "pending-review",
        "auto-review-needs-info",
        "system-request-info",
        "claimed",
        "cancelled",
    ],
)
def test_no_review_hours_before_a_decision(
    make_refund: MakeRefund, entries: list[HistoryEntry]
) -> None:
    """O4: GIVEN a submitted refund that no human decided and the auto-review did not approve
    (a `system` request for information is not a decision) WHEN its contribution is taken THEN
    it counts as a refund but has no review time."""
    refund = refund_with(make_refund, *entries)

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert total["refunds"] == 1
    assert not [name for name in total if name.startswith("review_h|")]


def test_review_hours_skip_the_system_request_and_run_from_the_first_submission(
    make_refund: MakeRefund,
) -> None:
    """O4: GIVEN a refund the auto-review sent to needs_info, resubmitted after 10 hours and
    approved by an agent 30 hours after its first submission WHEN its contribution is taken
    THEN its review time is 30 hours (bucket 300): first submission to first human decision."""
    refund = refund_with(
        make_refund,
        SUBMIT,
        entry(at(0.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.NEEDS_INFO),
        entry(at(10), "u-1", A.SUBMIT, S.NEEDS_INFO, S.SUBMITTED),
        entry(at(10.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.PENDING_REVIEW),
        entry(at(30), AGENT, A.APPROVE, S.PENDING_REVIEW, S.APPROVED),
    )

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert {n: c for n, c in total.items() if n.startswith("review_h|")} == {"review_h|300": 1}


def test_payout_hours_run_from_approval_to_paid(make_refund: MakeRefund) -> None:
    """O4 (median_payout_hours): GIVEN a refund approved 2 hours after submission, whose first
    payout failed and whose retry was paid 6 hours after the approval WHEN its contribution is
    taken THEN its payout time is counted once, in bucket 60, and its status is paid."""
    refund = refund_with(
        make_refund,
        SUBMIT,
        TO_REVIEW,
        entry(at(2), AGENT, A.APPROVE, S.PENDING_REVIEW, S.APPROVED),
        entry(at(2.1), "system", A.PAYOUT, S.APPROVED, S.PAYING),
        entry(at(3), "system", A.PAYOUT_FAILED, S.PAYING, S.PAYOUT_FAILED),
        entry(at(5), AGENT, A.RETRY_PAYOUT, S.PAYOUT_FAILED, S.PAYING),
        entry(at(8), "system", A.PAID, S.PAYING, S.PAID),
    )

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert {n: c for n, c in total.items() if n.startswith("payout_h|")} == {"payout_h|60": 1}
    assert {n: c for n, c in total.items() if n.startswith("review_h|")} == {"review_h|20": 1}
    assert {n for n in total if n.startswith("status|")} == {"status|paid"}


def test_no_payout_hours_until_paid(make_refund: MakeRefund) -> None:
    """O4: GIVEN an approved refund whose payout is still in flight WHEN its contribution is
    taken THEN it has review time but no payout time."""
    refund = refund_with(
        make_refund,
        SUBMIT,
        entry(at(0.2), "system", A.AUTO_REVIEW, S.SUBMITTED, S.APPROVED),
        entry(at(0.3), "system", A.PAYOUT, S.APPROVED, S.PAYING),
    )

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert not [name for name in total if name.startswith("payout_h|")]
    assert total["review_h|2"] == 1


@pytest.mark.parametrize(
    ("breaches", "expected"),
    [
        ([], {}),
        (["review"], {"breach|review": 1}),
        (["payout"], {"breach|payout": 1}),
        (["review", "payout"], {"breach|review": 1, "breach|payout": 1}),
        (["review", "review", "payout", "review"], {"breach|review": 1, "breach|payout": 1}),
    ],
)
def test_sla_breaches_count_each_phase_once(
    make_refund: MakeRefund, breaches: list[str], expected: dict[str, int]
) -> None:
    """O4 / X2 (sla_breaches: refunds escalated at least once, by phase): GIVEN a submitted
    refund escalated in some phases, maybe more than once WHEN its contribution is taken THEN
    each phase counts once for it."""
    escalated = [entry(at(80 + n), "system", A.ESCALATE, None, None) for n in range(len(breaches))]
    refund = refund_with(make_refund, SUBMIT, TO_REVIEW, *escalated, sla_breaches=breaches)

    total = totals(refund_contribution(refund, SHARDS, SKU_SHARDS))

    assert {n: c for n, c in total.items() if n.startswith("breach|")} == expected


@pytest.mark.parametrize(("shards", "sku_shards"), [(1, 1), (4, 2), (16, 8)])
def test_refund_counts_once_whatever_the_sharding(
    make_refund: MakeRefund, shards: int, sku_shards: int
) -> None:
    """O4: GIVEN submitted refunds spread over any number of shards WHEN their contributions
    are summed THEN each counts exactly once, platform-wide and for its SKU."""
    refunds = [refund_with(make_refund, SUBMIT, refund_id=f"rf_{n:02}") for n in range(20)]

    total: Counter[str] = Counter()
    for refund in refunds:
        total.update(totals(refund_contribution(refund, shards, sku_shards)))

    assert total == Counter(
        {
            "refunds": 20,
            "reason|invalid_code": 20,
            "status|submitted": 20,
            "cat_refunds|game-card": 20,
            "sku_refunds|steam-100": 20,
        }
    )


# --- change ----------------------------------------------------------------------------------


def test_change_is_the_delta_between_two_states(make_refund: MakeRefund) -> None:
    """O4: GIVEN a refund pending review, then approved by an agent 5 hours after submission
    WHEN the change between the two is taken THEN it moves one count from pending_review to
    approved and adds the review time, leaving unchanged counters out."""
    before = refund_with(make_refund, SUBMIT, TO_REVIEW)
    after = refund_with(
        make_refund, SUBMIT, TO_REVIEW, entry(at(5), AGENT, A.APPROVE, S.PENDING_REVIEW, S.APPROVED)
    )

    delta = change(refund_contribution(before, 1, 1), refund_contribution(after, 1, 1))

    assert delta == {
        (SHANGHAI_DAY, "p#0"): Counter(
            {"status|pending_review": -1, "status|approved": 1, "review_h|50": 1}
        )
    }


def test_change_from_and_to_nothing_and_to_the_same(make_refund: MakeRefund) -> None:
    """O4: GIVEN a submitted refund's contribution WHEN changes from nothing, to nothing and to
    itself are taken THEN they are the contribution, its negation, and empty."""
    contribution = refund_contribution(refund_with(make_refund, SUBMIT), SHARDS, SKU_SHARDS)

    assert change({}, contribution) == contribution
    assert change(contribution, {}) == {
        key: Counter({name: -n for name, n in counters.items()})
        for key, counters in contribution.items()
    }
    assert change(contribution, contribution) == {}


def test_change_moves_counts_to_a_corrected_sku_and_category(
    make_refund: MakeRefund, make_order: MakeOrder
) -> None:
    """O4: GIVEN a refund whose order turns out to be another SKU of another category WHEN the
    change is taken THEN its SKU and category counts move and the rest stays."""
    before = refund_with(make_refund, SUBMIT)
    moved = make_order(sku="vip-30", category="membership")
    after = refund_with(make_refund, SUBMIT, order=moved)

    delta = change(refund_contribution(before, 1, 1), refund_contribution(after, 1, 1))

    assert totals(delta) == Counter(
        {
            "cat_refunds|game-card": -1,
            "cat_refunds|membership": 1,
            "sku_refunds|steam-100": -1,
            "sku_refunds|vip-30": 1,
        }
    )


def test_submitting_a_draft_changes_it_from_nothing(make_refund: MakeRefund) -> None:
    """O4: GIVEN a draft and the same refund once submitted WHEN the change is taken THEN it
    is the submitted refund's whole contribution."""
    draft = refund_with(make_refund)
    submitted = refund_with(make_refund, SUBMIT)

    delta = change(
        refund_contribution(draft, SHARDS, SKU_SHARDS),
        refund_contribution(submitted, SHARDS, SKU_SHARDS),
    )

    assert delta == refund_contribution(submitted, SHARDS, SKU_SHARDS)


ACTORS = ("u-1", "system", AGENT)
SKUS = ("steam-100", "steam-50", "vip-30")
CATEGORIES = ("game-card", "membership")
PHASES = ("review", "payout")


def _status_moves(status: RefundStatus) -> list[tuple[Action, RefundStatus]]:
    return sorted(
        (action, to)
        for action, table in STATUS_CHANGES.items()
        for to in table.get(status, frozenset())
    )


def _stay_moves(status: RefundStatus) -> list[Action]:
    return sorted(action for action, statuses in STAY_ACTIONS.items() if status in statuses)


def _next_state(
    data: st.DataObject, state: Refund, clock: datetime, make_order: MakeOrder
) -> Refund:
    """The refund after one plausible change: a transition of the table, an action that keeps
    the status, an escalation (a breach), or a corrected order."""
    state = copy.deepcopy(state)
    kind = data.draw(st.sampled_from(["status", "status", "stay", "breach", "order"]))
    actor = data.draw(st.sampled_from(ACTORS))
    if kind == "status" and (moves := _status_moves(state.status)):
        action, to = data.draw(st.sampled_from(moves))
        record(state, action, actor=actor, at=clock, to=to)
    elif kind == "stay" and (stays := _stay_moves(state.status)):
        record(state, data.draw(st.sampled_from(stays)), actor=actor, at=clock)
    elif kind == "breach" and state.status in STAY_ACTIONS[A.ESCALATE]:
        phase = data.draw(st.sampled_from(PHASES))
        if phase not in state.sla_breaches:
            state.sla_breaches.append(phase)
        state.escalation_level = min(state.escalation_level + 1, 2)
        record(state, A.ESCALATE, actor="system", at=clock)
    elif kind == "order":
        state.order = make_order(
            order_id=state.order.order_id,
            sku=data.draw(st.sampled_from(SKUS)),
            category=data.draw(st.sampled_from(CATEGORIES)),
            paid_at=state.order.paid_at,
        )
    return state


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), shards=st.integers(1, 8), sku_shards=st.integers(1, 4))
def test_changes_applied_once_each_add_up_to_the_final_contribution(
    data: st.DataObject,
    shards: int,
    sku_shards: int,
    make_order: MakeOrder,
    make_refund: MakeRefund,
) -> None:
    """O4 (exactly-once counting, property): GIVEN any sequence of states s0..sn of one refund
    (a draft, then transitions of the table at any times, escalations, order corrections) WHEN
    change(nothing, s0) and every change(s[i-1], s[i]) are summed THEN after each step the sum
    is exactly refund_contribution(s[i]), counter by counter (zeros ignored), and in the end
    refund_contribution(sn)."""
    reason = data.draw(st.sampled_from(Reason))
    clock = datetime(2026, 11, 18, 8, 0, tzinfo=UTC) + timedelta(
        minutes=data.draw(st.integers(0, 24 * 60))
    )
    states = [refund_with(make_refund, entry(clock, "u-1", A.CREATE, None, S.DRAFT), reason=reason)]
    for _ in range(data.draw(st.integers(0, 15))):
        clock += timedelta(minutes=data.draw(st.integers(0, 3 * 24 * 60)))
        states.append(_next_state(data, states[-1], clock, make_order))

    running: dict[tuple[date, str], Counter[str]] = {}
    add(running, change({}, refund_contribution(states[0], shards, sku_shards)))
    assert nonzero(running) == nonzero(refund_contribution(states[0], shards, sku_shards))
    for before, after in itertools.pairwise(states):
        add(
            running,
            change(
                refund_contribution(before, shards, sku_shards),
                refund_contribution(after, shards, sku_shards),
            ),
        )
        assert nonzero(running) == nonzero(refund_contribution(after, shards, sku_shards))

    final = refund_contribution(states[-1], shards, sku_shards)
    assert nonzero(running) == nonzero(final)
    assert all(n > 0 for counters in final.values() for n in counters.values())


# --- summarize -------------------------------------------------------------------------------


def test_summarize_a_period(make_order: MakeOrder, make_refund: MakeRefund) -> None:
    """O4 / X2: GIVEN three orders, a refund auto-approved after 2 hours and paid 3 hours
    later (payout breached), a refund rejected after 30 hours (review breached) whose counters
    were built by changes, and a draft never submitted WHEN the period is summarized THEN the
    totals, reasons, statuses (zero counts left out), medians and breaches are API.md's."""
    o1 = make_order(order_id="o-1", paid_at=PAID_AT)
    o2 = make_order(order_id="o-2", paid_at=PAID_AT - timedelta(days=1))
    o3 = make_order(order_id="o-3", sku="vip-30", category="membership", paid_at=PAID_AT)
    paid = refund_with(
        make_refund,
        SUBMIT,
        entry(at(2), "system", A.AUTO_REVIEW, S.SUBMITTED, S.APPROVED),
        entry(at(2.1), "system", A.PAYOUT, S.APPROVED, S.PAYING),
        entry(at(5), "system", A.PAID, S.PAYING, S.PAID),
        order=o1,
        refund_id="rf_1",
        reason=Reason.INVALID_CODE,
        sla_breaches=["payout"],
    )
    pending = refund_with(
        make_refund, SUBMIT, TO_REVIEW, order=o2, refund_id="rf_2", reason=Reason.CHANGED_MIND
    )
    rejected = refund_with(
        make_refund,
        SUBMIT,
        TO_REVIEW,
        entry(at(30), AGENT, A.REJECT, S.PENDING_REVIEW, S.REJECTED),
        order=o2,
        refund_id="rf_2",
        reason=Reason.CHANGED_MIND,
        sla_breaches=["review"],
    )
    draft = refund_with(make_refund, order=o3, refund_id="rf_3")
    contributions = [
        order_contribution(o1, SHARDS, SKU_SHARDS),
        order_contribution(o2, SHARDS, SKU_SHARDS),
        order_contribution(o3, SHARDS, SKU_SHARDS),
        refund_contribution(paid, SHARDS, SKU_SHARDS),
        change({}, refund_contribution(pending, SHARDS, SKU_SHARDS)),
        change(
            refund_contribution(pending, SHARDS, SKU_SHARDS),
            refund_contribution(rejected, SHARDS, SKU_SHARDS),
        ),
        refund_contribution(draft, SHARDS, SKU_SHARDS),
    ]

    stats = summarize_all(contributions)

    assert stats == PeriodStats(
        orders=3,
        refunds=2,
        by_reason={"changed_mind": 1, "invalid_code": 1},
        by_status={"paid": 1, "rejected": 1},
        median_review_hours=16.05,  # buckets 20 and 300: middles 2.05 and 30.05
        median_payout_hours=3.05,
        sla_breaches={"review": 1, "payout": 1},
        anomalies=[],
    )


def test_summarize_nothing() -> None:
    """O4: GIVEN no counters at all WHEN the period is summarized THEN everything is zero or
    empty, both breach phases are reported as 0, and the medians are None."""
    assert summarize([]) == PeriodStats(
        orders=0,
        refunds=0,
        by_reason={},
        by_status={},
        median_review_hours=None,
        median_payout_hours=None,
        sla_breaches={"review": 0, "payout": 0},
        anomalies=[],
    )


def test_medians_are_none_when_nothing_was_decided_or_paid(make_refund: MakeRefund) -> None:
    """O4: GIVEN refunds submitted, pending review or sent back by the system, none decided
    by a human or approved WHEN the period is summarized THEN both medians are None."""
    refunds = [
        refund_with(make_refund, SUBMIT, refund_id="rf_1"),
        refund_with(make_refund, SUBMIT, TO_REVIEW, refund_id="rf_2"),
        refund_with(
            make_refund,
            SUBMIT,
            entry(at(0.1), "system", A.AUTO_REVIEW, S.SUBMITTED, S.NEEDS_INFO),
            refund_id="rf_3",
        ),
    ]

    stats = summarize_all(refund_contribution(r, SHARDS, SKU_SHARDS) for r in refunds)

    assert stats.refunds == 3
    assert stats.by_status == {"submitted": 1, "pending_review": 1, "needs_info": 1}
    assert stats.median_review_hours is None
    assert stats.median_payout_hours is None


def _median_of_middles(days: list[dict[int, int]]) -> float:
    """The median of every counted duration read at its bucket's middle, to 0.01 hour."""
    middles = [
        (Fraction(bucket) + Fraction(1, 2)) / 10
        for histogram in days
        for bucket, n in histogram.items()
        for _ in range(n)
    ]
    return round(float(statistics.median(middles)), 2)


@pytest.mark.parametrize(
    ("days", "expected"),
    [
        ([{205: 1}], 20.55),
        ([{0: 1}], 0.05),
        ([{10: 1, 20: 1, 300: 1}], 2.05),
        ([{10: 1, 30: 1}], 2.05),
        ([{10: 2, 50: 1}], 1.05),
        ([{5: 2, 15: 2}], 1.05),
        ([{5: 1, 15: 3}], 1.55),
        ([{5: 1, 900: 0}], 0.55),
        ([{10: 1}, {10: 1, 40: 1}], 1.05),
        ([{10: 1}, {40: 1}, {70: 1}, {2000: 1}], 5.55),
        ([{1: 1, 2: 1}], 0.2),
    ],
)
def test_medians_are_the_median_of_bucket_middles(
    days: list[dict[int, int]], expected: float
) -> None:
    """O4 (medians to a tenth of an hour): GIVEN review and payout histograms of tenth-of-an-
    hour buckets over one or more days WHEN summarized THEN each median is the median of the
    bucket middles (bucket 205 reads 20.55; an even count takes the mean of the two middle
    values; zero counts are ignored)."""
    review = [{f"review_h|{b}": n for b, n in histogram.items()} for histogram in days]
    payout = [{f"payout_h|{b}": n for b, n in histogram.items()} for histogram in days]

    stats = summarize([*review, *payout])

    assert expected == _median_of_middles(days)
    assert stats.median_review_hours == expected
    assert stats.median_payout_hours == expected


@pytest.mark.parametrize("hours", [20.5, 20.59])
def test_median_review_hours_of_a_decision_after_20_5_hours(
    make_refund: MakeRefund, hours: float
) -> None:
    """O4: GIVEN one refund approved by an agent 20.5 (or 20.59) hours after submission WHEN
    the period is summarized THEN the median review time is its bucket's middle, 20.55."""
    refund = refund_with(
        make_refund,
        SUBMIT,
        TO_REVIEW,
        entry(at(hours), AGENT, A.APPROVE, S.PENDING_REVIEW, S.APPROVED),
    )

    stats = summarize_all([refund_contribution(refund, SHARDS, SKU_SHARDS)])

    assert stats.median_review_hours == 20.55
    assert stats.median_payout_hours is None


# --- anomalies -------------------------------------------------------------------------------


def sku_anomalies(stats: PeriodStats) -> list[Anomaly]:
    return by_key([a for a in stats.anomalies if a.scope == "sku"])


def test_a_sku_refunded_far_above_its_category_is_an_anomaly(
    make_order: MakeOrder, make_refund: MakeRefund
) -> None:
    """O4 (anomalies): GIVEN a SKU with 30 orders and 15 refunds in a category whose other
    SKUs have 300 orders and 6 refunds (the only category) WHEN summarized THEN that SKU is
    the one anomaly, rate 0.5 against a baseline of 0.02; the category (21/330 against an
    empty platform) and the other SKU are not."""
    contributions = [
        *shop(
            make_order, make_refund, sku="steam-bad", category="game-card", orders=30, refunds=15
        ),
        *shop(
            make_order, make_refund, sku="steam-100", category="game-card", orders=300, refunds=6
        ),
    ]

    stats = summarize_all(contributions)

    assert stats.orders == 330
    assert stats.refunds == 21
    assert stats.anomalies == [Anomaly("sku", "steam-bad", 30, 15, 0.5, 0.02)]


def test_a_sku_with_29_orders_is_never_an_anomaly(
    make_order: MakeOrder, make_refund: MakeRefund
) -> None:
    """O4: GIVEN a SKU with 29 orders and 15 refunds in a category whose other SKUs have 300
    orders and 6 refunds WHEN summarized THEN there is no anomaly (at least 30 orders)."""
    contributions = [
        *shop(
            make_order, make_refund, sku="steam-bad", category="game-card", orders=29, refunds=15
        ),
        *shop(
            make_order, make_refund, sku="steam-100", category="game-card", orders=300, refunds=6
        ),
    ]

    assert summarize_all(contributions).anomalies == []


@pytest.mark.parametrize(
    ("sku_orders", "sku_refunds", "rest_orders", "rest_refunds", "expected"),
    [
        # twice the baseline, but only 4 points above it: 0.08 against 0.04
        (50, 4, 100, 4, None),
        # 10 points above, but less than twice: 0.30 against 0.20
        (30, 9, 100, 20, None),
        # both, exactly: 0.20 against 0.10
        (30, 6, 100, 10, (0.2, 0.1)),
        # exactly twice, 15 points above: 0.30 against 0.15
        (30, 9, 100, 15, (0.3, 0.15)),
        # the SKU's rate against its category *without it*: 0.5 against 0.2 (with it 0.35)
        (30, 15, 30, 6, (0.5, 0.2)),
        # rates reported to 4 places: 1/3 against 1/150
        (30, 10, 300, 2, (0.3333, 0.0067)),
        # exactly twice, 1/3 against 1/6 (16.7 points above)
        (30, 10, 60, 10, (0.3333, 0.1667)),
        # exactly 10 points above, 2/15 against 1/30 (four times)
        (30, 4, 30, 1, (0.1333, 0.0333)),
    ],
    ids=[
        "twice-not-10-points",
        "10-points-not-twice",
        "exactly-twice-and-10-points",
        "exactly-twice",
        "baseline-without-the-sku",
        "rounded-rates",
        "exactly-twice-thirds",
        "exactly-10-points-thirtieths",
    ],
)
def test_sku_anomaly_needs_twice_the_rate_and_10_points(
    make_order: MakeOrder,
    make_refund: MakeRefund,
    sku_orders: int,
    sku_refunds: int,
    rest_orders: int,
    rest_refunds: int,
    expected: tuple[float, float] | None,
) -> None:
    """O4 (API.md: a refund rate at least twice its category's rate without it AND at least
    10 points above it): GIVEN a SKU and the rest of its category WHEN summarized THEN the SKU
    is an anomaly exactly when both hold (exact rational rates), reported with its rate and
    the category's rate without it, rounded to 4 places."""
    contributions = [
        *shop(
            make_order,
            make_refund,
            sku="steam-odd",
            category="game-card",
            orders=sku_orders,
            refunds=sku_refunds,
        ),
        *shop(
            make_order,
            make_refund,
            sku="steam-100",
            category="game-card",
            orders=rest_orders,
            refunds=rest_refunds,
        ),
    ]

    found = [a for a in sku_anomalies(summarize_all(contributions)) if a.key == "steam-odd"]

    if expected is None:
        assert found == []
    else:
        rate, baseline = expected
        assert found == [Anomaly("sku", "steam-odd", sku_orders, sku_refunds, rate, baseline)]


def test_an_empty_comparison_group_has_rate_zero(
    make_order: MakeOrder, make_refund: MakeRefund
) -> None:
    """O4 (an empty comparison group has rate 0): GIVEN one SKU that is its whole category,
    and that category the whole platform, with 30 orders and 3 refunds (rate 0.10) WHEN
    summarized THEN both the category and the SKU are anomalies against a baseline of 0."""
    contributions = shop(
        make_order, make_refund, sku="steam-100", category="game-card", orders=30, refunds=3
    )

    stats = summarize_all(contributions)

    assert by_key(stats.anomalies) == [
        Anomaly("category", "game-card", 30, 3, 0.1, 0.0),
        Anomaly("sku", "steam-100", 30, 3, 0.1, 0.0),
    ]


def test_less_than_10_points_against_an_empty_group_is_no_anomaly(
    make_order: MakeOrder, make_refund: MakeRefund
) -> None:
    """O4: GIVEN one SKU, its category and the platform alike, 30 orders and 2 refunds (6.7
    points above an empty group's 0) WHEN summarized THEN there is no anomaly."""
    contributions = shop(
        make_order, make_refund, sku="steam-100", category="game-card", orders=30, refunds=2
    )

    assert summarize_all(contributions).anomalies == []


def test_a_category_is_compared_with_the_platform_without_it(
    make_order: MakeOrder, make_refund: MakeRefund
) -> None:
    """O4: GIVEN a category with 100 orders and 30 refunds (0.30, in SKUs of 25 orders each)
    and another with 100 orders and 10 refunds (0.10) WHEN summarized THEN the first is a
    category anomaly against the platform without it (0.10; with it the rate would be 0.20,
    and 0.30 not twice that), and nothing else is."""
    contributions: list[Contribution] = []
    for n, refunds in enumerate([8, 8, 7, 7]):
        contributions += shop(
            make_order,
            make_refund,
            sku=f"vip-{n}",
            category="membership",
            orders=25,
            refunds=refunds,
        )
    for n in range(4):
        contributions += shop(
            make_order,
            make_refund,
            sku=f"steam-{n}",
            category="game-card",
            orders=25,
            refunds=2 + n % 2,
        )

    stats = summarize_all(contributions)

    assert stats.orders == 200
    assert stats.refunds == 40
    assert stats.anomalies == [Anomaly("category", "membership", 100, 30, 0.3, 0.1)]


@pytest.mark.parametrize(
    ("orders", "refunds", "rest_orders", "rest_refunds", "expected"),
    [
        (29, 29, 100, 10, False),  # too few orders, however high the rate
        (30, 5, 100, 10, False),  # 0.167 against 0.10: 6.7 points above, not twice
        (40, 6, 100, 2, True),  # 0.15 against 0.02: 7.5 times, 13 points above
        (30, 6, 100, 10, True),  # 0.20 against 0.10: twice and 10 points, exactly
        (30, 10, 60, 10, True),  # 1/3 against 1/6: exactly twice, 16.7 points above
    ],
    ids=["29-orders", "not-twice", "well-above", "exactly-twice-and-10-points", "thirds"],
)
def test_category_anomaly_thresholds(
    make_order: MakeOrder,
    make_refund: MakeRefund,
    orders: int,
    refunds: int,
    rest_orders: int,
    rest_refunds: int,
    expected: bool,
) -> None:
    """O4: GIVEN a category (in SKUs of at most 20 orders) against the rest of the platform
    WHEN summarized THEN it is an anomaly exactly per API.md's rule: at least 30 orders, a
    rate at least twice the platform's without it and at least 10 points above it."""
    contributions: list[Contribution] = []
    for name, category, total, refunded in [
        ("vip", "membership", orders, refunds),
        ("steam", "game-card", rest_orders, rest_refunds),
    ]:
        skus = -(-total // 20)
        for n in range(skus):
            contributions += shop(
                make_order,
                make_refund,
                sku=f"{name}-{n}",
                category=category,
                orders=total // skus + (1 if n < total % skus else 0),
                refunds=refunded // skus + (1 if n < refunded % skus else 0),
            )

    stats = summarize_all(contributions)

    assert stats.orders == orders + rest_orders
    assert stats.refunds == refunds + rest_refunds
    assert not [a for a in stats.anomalies if a.scope == "sku"]
    categories = [a.key for a in stats.anomalies if a.scope == "category"]
    assert categories == (["membership"] if expected else [])
