"""Reconciliation (money integrity, P1, P2): each channel's statement of a day against the
refunds, every mismatch kind of API.md planted and reported, on the domain and through the
service over the fakes."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.model import (
    Action,
    HistoryEntry,
    PaymentChannel,
    PayoutChannel,
    Refund,
    RefundStatus,
)
from chalicelib.domain.reconciliation import (
    Mismatch,
    MismatchKind,
    StatementEntry,
    paid_day,
    reconcile_channel,
)
from chalicelib.service.exceptions import NotFound
from chalicelib.service.reconciliation import (
    reconcile_day,
    reconcile_yesterday,
    reconciliation_of,
)
from tests.fakes import NOW, FakeGateway, make_ports, sample_order, sample_refund

DAY = date(2026, 11, 30)
PAID_AT = datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)


def paid(
    refund_id: str,
    amount: int = 8800,
    channel: PaymentChannel = PaymentChannel.ALIPAY,
    at: datetime = PAID_AT,
    status: RefundStatus = RefundStatus.PAID,
) -> Refund:
    """A refund approved for ``amount`` and, unless ``status`` says otherwise, paid at ``at``."""
    order = sample_order(
        NOW, payment_channel=channel if channel != PaymentChannel.BALANCE else PaymentChannel.ALIPAY
    )
    refund = sample_refund(
        refund_id,
        order=order,
        status=status,
        channel=channel,
        payout_channel=PayoutChannel.BALANCE
        if channel is PaymentChannel.BALANCE
        else PayoutChannel.ORIGINAL,
        approved_amount=amount,
    )
    if status is RefundStatus.PAID:
        refund.history.append(
            HistoryEntry(at, "system", Action.PAID, RefundStatus.PAYING, RefundStatus.PAID)
        )
    return refund


def line(refund_no: str, amount: int = 8800, at: datetime = PAID_AT) -> StatementEntry:
    return StatementEntry(refund_no, amount, "SUCCESS", at)


def kinds(mismatches: tuple[Mismatch, ...]) -> list[tuple[MismatchKind, str]]:
    return sorted((m.kind, m.refund_id) for m in mismatches)


# ---------------------------------------------------------------- the domain


def test_a_statement_that_matches_the_paid_refunds_has_no_mismatch() -> None:
    refunds = [paid("rf_A"), paid("rf_B", 100)]
    result = reconcile_channel(
        PaymentChannel.ALIPAY,
        [line("rf_A"), line("rf_B", 100)],
        {r.refund_id: r for r in refunds},
        refunds,
    )
    assert (result.entries, result.amount, result.matched, result.mismatches) == (2, 8900, 2, ())


def test_every_mismatch_kind_is_reported_with_both_sides() -> None:
    matched, missing, differs, twice = paid("rf_A"), paid("rf_B"), paid("rf_C"), paid("rf_D")
    paying = paid("rf_E", status=RefundStatus.PAYING)
    balance = paid("rf_F", channel=PaymentChannel.BALANCE)
    statement = [
        line("rf_A"),
        line("rf_C", 8000),
        line("rf_D"),
        line("rf_D"),
        line("rf_E"),
        line("rf_F"),
        line("rf_Z", 500),
    ]
    known = {r.refund_id: r for r in (matched, missing, differs, twice, paying, balance)}
    result = reconcile_channel(
        PaymentChannel.ALIPAY, statement, known, [matched, missing, differs, twice, balance]
    )
    assert kinds(result.mismatches) == sorted(
        [
            (MismatchKind.MISSING_AT_CHANNEL, "rf_B"),
            (MismatchKind.AMOUNT_DIFFERS, "rf_C"),
            (MismatchKind.PAID_TWICE, "rf_D"),
            (MismatchKind.STATUS_DIFFERS, "rf_E"),
            # Paid to the balance, yet the money also moved on Alipay: paid the wrong way.
            (MismatchKind.STATUS_DIFFERS, "rf_F"),
            (MismatchKind.UNKNOWN_REFUND, "rf_Z"),
        ]
    )
    by_id = {m.refund_id: m for m in result.mismatches}
    assert by_id["rf_B"] == Mismatch(MismatchKind.MISSING_AT_CHANNEL, "rf_B", None, 8800, "paid")
    assert by_id["rf_C"] == Mismatch(MismatchKind.AMOUNT_DIFFERS, "rf_C", 8000, 8800, "paid")
    assert by_id["rf_D"] == Mismatch(MismatchKind.PAID_TWICE, "rf_D", 17600, 8800, "paid")
    assert by_id["rf_E"] == Mismatch(MismatchKind.STATUS_DIFFERS, "rf_E", 8800, 8800, "paying")
    assert by_id["rf_Z"] == Mismatch(MismatchKind.UNKNOWN_REFUND, "rf_Z", 500, None, None)
    assert (result.entries, result.amount, result.matched) == (7, 8800 * 5 + 8000 + 500, 1)


def test_lines_that_moved_no_money_are_not_money() -> None:
    refund = paid("rf_A")
    processing = StatementEntry("rf_A", 8800, "PROCESSING", PAID_AT)
    result = reconcile_channel(PaymentChannel.WECHAT, [processing], {}, [])
    assert (result.entries, result.mismatches) == (0, ())
    wechat = replace(refund, channel=PaymentChannel.WECHAT)
    missing = reconcile_channel(PaymentChannel.WECHAT, [processing], {"rf_A": wechat}, [wechat])
    assert kinds(missing.mismatches) == [(MismatchKind.MISSING_AT_CHANNEL, "rf_A")]


def test_the_paid_day_is_the_beijing_day_of_the_last_payout() -> None:
    late = paid("rf_A", at=datetime(2026, 11, 30, 23, 59, tzinfo=SHANGHAI))
    assert paid_day(late) == DAY
    assert paid_day(paid("rf_B", at=datetime(2026, 11, 30, 16, 0, tzinfo=SHANGHAI))) == DAY
    assert paid_day(paid("rf_C", status=RefundStatus.PAYING)) is None
    assert paid_day(None) is None


@given(st.lists(st.integers(min_value=1, max_value=10**9), max_size=30))
def test_paying_exactly_what_was_approved_always_reconciles(amounts: list[int]) -> None:
    refunds = [paid(f"rf_{n:04d}", amount) for n, amount in enumerate(amounts)]
    statement = [line(r.refund_id, r.approved_amount or 0) for r in refunds]
    result = reconcile_channel(
        PaymentChannel.ALIPAY, statement, {r.refund_id: r for r in refunds}, refunds
    )
    assert result.mismatches == ()
    assert (result.matched, result.amount) == (len(amounts), sum(amounts))


# ---------------------------------------------------------------- the service


def test_a_run_reconciles_every_channel_keeps_the_run_and_logs_each_mismatch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ports = make_ports()
    alipay, wechat, balance = (
        ports.gateways[channel]
        for channel in (PaymentChannel.ALIPAY, PaymentChannel.WECHAT, PaymentChannel.BALANCE)
    )
    assert isinstance(alipay, FakeGateway)
    assert isinstance(wechat, FakeGateway)
    assert isinstance(balance, FakeGateway)
    for refund in (
        paid("rf_A"),
        paid("rf_B"),
        paid("rf_W", 300, PaymentChannel.WECHAT),
        paid("rf_L", 50, PaymentChannel.BALANCE),
        paid("rf_E", status=RefundStatus.PAYING),
    ):
        ports.refunds.add(refund)
    alipay.lines += [line("rf_A"), line("rf_E"), line("rf_Z", 1)]
    wechat.lines += [line("rf_W", 300), line("rf_W", 300)]
    balance.lines += [line("rf_L", 40)]
    # Another day's money is another day's run.
    alipay.lines.append(line("rf_B", at=PAID_AT + timedelta(days=1)))

    with caplog.at_level(logging.ERROR, "refunds.reconciliation"):
        run = reconcile_day(ports, DAY, NOW)

    assert kinds(run.channels["alipay"].mismatches) == [
        (MismatchKind.MISSING_AT_CHANNEL, "rf_B"),
        (MismatchKind.STATUS_DIFFERS, "rf_E"),
        (MismatchKind.UNKNOWN_REFUND, "rf_Z"),
    ]
    assert kinds(run.channels["wechat"].mismatches) == [(MismatchKind.PAID_TWICE, "rf_W")]
    assert kinds(run.channels["balance"].mismatches) == [(MismatchKind.AMOUNT_DIFFERS, "rf_L")]
    assert run.channels["alipay"].matched == 1
    assert reconciliation_of(ports, DAY) == run
    logged = [(r.__dict__["kind"], r.__dict__["refund_id"]) for r in caplog.records]
    assert sorted(logged) == sorted(
        [
            ("missing_at_channel", "rf_B"),
            ("status_differs", "rf_E"),
            ("unknown_refund", "rf_Z"),
            ("paid_twice", "rf_W"),
            ("amount_differs", "rf_L"),
        ]
    )


def test_the_schedule_reconciles_the_beijing_day_before_its_time() -> None:
    ports = make_ports()
    run = reconcile_yesterday(ports, datetime(2026, 12, 1, 2, 0, tzinfo=SHANGHAI))
    assert run.day == DAY
    assert reconciliation_of(ports, DAY) == run


def test_a_day_no_run_covered_is_not_found() -> None:
    with pytest.raises(NotFound):
        reconciliation_of(make_ports(), DAY)


def test_a_statement_that_cannot_be_read_fails_the_run_and_keeps_nothing() -> None:
    ports = make_ports()
    wechat = ports.gateways[PaymentChannel.WECHAT]
    assert isinstance(wechat, FakeGateway)
    wechat.fail_next("statement", RuntimeError("bill not ready"))
    with pytest.raises(RuntimeError):
        reconcile_day(ports, DAY, NOW)
    with pytest.raises(NotFound):
        reconciliation_of(ports, DAY)
