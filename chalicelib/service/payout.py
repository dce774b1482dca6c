"""Payout: money back along the original path or to the balance, exactly once (P1, P2).

The refund moves to ``paying`` before the channel is called, and the refund id is the
channel's refund number, so a resend can never pay twice. An answer that never came is an
unknown outcome: it is resolved by asking the channel, and the request is sent again (the
same refund number) only when the channel knows nothing of it. Every later attempt asks
first. A payout the channel accepted but has not made yet is confirmed by its notification
or by the ``confirm-payout`` step's queries, whichever comes first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from chalicelib.domain.model import Action, PaymentChannel, PayoutChannel, Refund, RefundStatus
from chalicelib.domain.transitions import allowed, record
from chalicelib.domain.workflow import WORKFLOW, Step, finish_step

from .changes import SYSTEM, get_refund_or_404, on_fresh_state
from .exceptions import (
    ChannelOutcomeUnknown,
    ChannelUnavailable,
    Conflict,
    RefundTotalExceeded,
    StepRetry,
)
from .ports import PaymentGateway, PayoutRequest, PayoutResult, PayoutState, Ports
from .review import Agent, decidable
from .workflow import StepOutcome, attempt, begin_step, send_awaited_step

__all__ = [
    "RetryPayout",
    "accept_notification",
    "handle_confirm_payout",
    "handle_payout",
    "retry_payout",
]

log = logging.getLogger("refunds.payout")


@dataclass(frozen=True)
class RetryPayout:
    refund_id: str
    payout_channel: PayoutChannel


def handle_payout(ports: Ports, refund_id: str, received: int) -> StepOutcome:
    """The ``payout`` step's message; after its last attempt the refund is ``payout_failed``."""
    return attempt(
        ports,
        Step.PAYOUT,
        refund_id,
        received,
        lambda: _run_payout(ports, refund_id),
        catch=lambda refund, error: _fail(ports, refund, error),
    )


def handle_confirm_payout(ports: Ports, refund_id: str, received: int) -> StepOutcome:
    """The ``confirm-payout`` step's message: ask the channel about an accepted payout."""
    return attempt(
        ports,
        Step.CONFIRM_PAYOUT,
        refund_id,
        received,
        lambda: _run_confirm(ports, refund_id),
        catch=lambda refund, error: _fail(ports, refund, error),
    )


def accept_notification(ports: Ports, result: PayoutResult) -> None:
    """A channel's asynchronous result, its signature checked. Duplicates (channels retry
    for a day) and results for refunds the platform does not know change nothing."""
    refund = ports.refunds.get(result.refund_id)
    if refund is None:
        log.warning(
            "payout notification for an unknown refund", extra={"refund_id": result.refund_id}
        )
        return
    if result.state is PayoutState.PROCESSING:
        return
    _settle(ports, result, step=None)


def retry_payout(ports: Ports, agent: Agent, command: RetryPayout) -> Refund:
    """P2: a failed payout is sent again, to the original channel or to the balance.

    Switching channels is safe only if the old channel did not pay after all: when a request
    may have reached it, it is asked first. Paid: the refund is marked paid; still processing,
    or it cannot be asked now: 409, try later. A channel that refused every request never
    paid, and needs no asking.
    """

    def change() -> Refund:
        refund = decidable(ports, agent, command.refund_id, Action.RETRY_PAYOUT)
        target = (
            PaymentChannel.BALANCE
            if command.payout_channel is PayoutChannel.BALANCE
            else refund.order.payment_channel
        )
        if target is not refund.channel and refund.channel_may_have_paid:
            try:
                known = ports.gateways[refund.channel].query(refund.refund_id)
            except (ChannelUnavailable, ChannelOutcomeUnknown) as failure:
                raise Conflict(
                    f"{refund.channel} cannot be asked now whether it paid ({failure});"
                    " retry later, or retry through it"
                ) from failure
            if known is not None and known.state is PayoutState.PROCESSING:
                raise Conflict(f"{refund.channel} is still processing this payout; retry later")
            if known is not None and known.state is PayoutState.SUCCESS:
                record(
                    refund,
                    Action.RETRY_PAYOUT,
                    actor=agent.user_id,
                    at=ports.clock.now(),
                    to=RefundStatus.PAYING,
                    note=f"{refund.channel.value} had paid it already",
                )
                _mark_paid(ports, refund, known, actor=SYSTEM, step=None)
                ports.refunds.save(refund)
                return refund
        record(
            refund,
            Action.RETRY_PAYOUT,
            actor=agent.user_id,
            at=ports.clock.now(),
            to=RefundStatus.PAYING,
            note=f"to {target.value}",
        )
        if target is not refund.channel:
            refund.channel_may_have_paid = False
        refund.channel = target
        refund.payout_channel = command.payout_channel
        begin_step(ports, refund, Step.PAYOUT)
        ports.refunds.save(refund)
        return refund

    refund = on_fresh_state(change)
    _after_save(ports, refund)
    return refund


# --- the steps -----------------------------------------------------------------------------


def _run_payout(ports: Ports, refund_id: str) -> None:
    refund = ports.refunds.get(refund_id)
    if refund is None:
        return
    if refund.status is RefundStatus.APPROVED:
        refund = on_fresh_state(lambda: _start_paying(ports, refund_id))
    if refund.status is not RefundStatus.PAYING or refund.awaiting_step is not Step.PAYOUT:
        return  # paid, failed or waiting on a confirmation already: a duplicate message
    gateway = ports.gateways[refund.channel]
    # An earlier attempt may have paid and lost its answer: ask before sending again.
    known = _ask(gateway, refund_id) if refund.channel_may_have_paid else None
    result = known or _pay(ports, gateway, refund)
    _settle(ports, result, step=Step.PAYOUT)


def _start_paying(ports: Ports, refund_id: str) -> Refund:
    refund = get_refund_or_404(ports, refund_id)
    if allowed(Action.PAYOUT, refund.status):
        record(refund, Action.PAYOUT, actor=SYSTEM, at=ports.clock.now(), to=RefundStatus.PAYING)
        if refund.awaiting_step is not Step.PAYOUT:
            begin_step(ports, refund, Step.PAYOUT)
        ports.refunds.save(refund)
    return refund


def _run_confirm(ports: Ports, refund_id: str) -> None:
    refund = ports.refunds.get(refund_id)
    if refund is None or refund.status is not RefundStatus.PAYING:
        return
    if refund.awaiting_step is not Step.CONFIRM_PAYOUT:
        return
    known = _ask(ports.gateways[refund.channel], refund_id)
    if known is None or known.state is PayoutState.PROCESSING:
        raise StepRetry(f"{refund.channel} has not made the payout yet")
    _settle(ports, known, step=Step.CONFIRM_PAYOUT)


def _pay(ports: Ports, gateway: PaymentGateway, refund: Refund) -> PayoutResult:
    request = PayoutRequest(
        refund_id=refund.refund_id,
        order_id=refund.order_id,
        channel_trade_no=refund.order.channel_trade_no,
        amount=refund.approved_amount if refund.approved_amount is not None else refund.amount,
        order_total=refund.order.paid_amount,
        reason=refund.reason.value,
        user_id=refund.user_id,
    )
    try:
        return gateway.pay(request)
    except ChannelUnavailable as refused:
        raise StepRetry(f"channel unavailable: {refused}") from refused
    except ChannelOutcomeUnknown as unknown:
        # P2: the money may have moved. Say so on the refund first, so that nothing sends it
        # another way without asking; then ask, and pay again (same number) only if the
        # channel knows nothing of it.
        _may_have_paid(ports, refund.refund_id)
        found = _ask(gateway, refund.refund_id)
        if found is None:
            raise StepRetry(
                f"the channel's answer was lost ({unknown}) and it knows no such refund yet"
            ) from unknown
        return found


def _may_have_paid(ports: Ports, refund_id: str) -> None:
    def change() -> None:
        refund = get_refund_or_404(ports, refund_id)
        if not refund.channel_may_have_paid:
            refund.channel_may_have_paid = True
            ports.refunds.save(refund)

    on_fresh_state(change)


def _ask(gateway: PaymentGateway, refund_id: str) -> PayoutResult | None:
    try:
        return gateway.query(refund_id)
    except (ChannelUnavailable, ChannelOutcomeUnknown) as failure:
        raise StepRetry(f"the channel could not be asked: {failure}") from failure


def _settle(ports: Ports, result: PayoutResult, step: Step | None) -> None:
    """Apply a channel's answer to the refund, once: a refund no longer ``paying`` took an
    earlier answer already (a duplicate notification, a message delivered twice)."""

    def change() -> Refund | None:
        refund = ports.refunds.get(result.refund_id)
        if refund is None or refund.status is not RefundStatus.PAYING:
            return None
        now = ports.clock.now()
        awaited = refund.awaiting_step
        if result.state is PayoutState.SUCCESS:
            _mark_paid(ports, refund, result, actor=SYSTEM, step=step)
        elif result.state is PayoutState.FAILED:
            record(
                refund,
                Action.PAYOUT_FAILED,
                actor=SYSTEM,
                at=now,
                to=RefundStatus.PAYOUT_FAILED,
                note=result.detail or "refused by the channel",
            )
            if awaited is not None:
                finish_step(
                    refund,
                    awaited,
                    at=now,
                    error=result.detail or "refused by the channel",
                    attempted=awaited is step,
                )
        elif step is Step.PAYOUT:
            refund.channel_may_have_paid = True
            finish_step(refund, Step.PAYOUT, at=now)
            first = WORKFLOW[Step.CONFIRM_PAYOUT].retry.interval(
                1, ports.config.step_interval_scale
            )
            begin_step(ports, refund, Step.CONFIRM_PAYOUT, delay=first)
        else:
            return None
        ports.refunds.save(refund)
        return refund

    refund = on_fresh_state(change)
    if refund is not None:
        _after_save(ports, refund)


def _mark_paid(
    ports: Ports, refund: Refund, result: PayoutResult, *, actor: str, step: Step | None
) -> None:
    now = ports.clock.now()
    paid = refund.approved_amount if refund.approved_amount is not None else refund.amount
    if result.amount is not None and result.amount != paid:
        log.error(
            "the channel moved another amount than approved",
            extra={
                "refund_id": refund.refund_id,
                "channel_amount": result.amount,
                "approved": paid,
            },
        )
    note = f"{refund.channel.value} {result.channel_refund_no or ''}".strip()
    record(refund, Action.PAID, actor=actor, at=now, to=RefundStatus.PAID, note=note)
    if refund.awaiting_step is not None:
        finish_step(refund, refund.awaiting_step, at=now, attempted=refund.awaiting_step is step)


def _fail(ports: Ports, refund: Refund, error: str) -> None:
    """The last attempt failed: ``payout_failed``, first in the CS queue (P2)."""
    now = ports.clock.now()
    if refund.status is RefundStatus.APPROVED:
        record(refund, Action.PAYOUT, actor=SYSTEM, at=now, to=RefundStatus.PAYING)
    if refund.status is RefundStatus.PAYING:
        record(
            refund,
            Action.PAYOUT_FAILED,
            actor=SYSTEM,
            at=now,
            to=RefundStatus.PAYOUT_FAILED,
            note=error,
        )


def _after_save(ports: Ports, refund: Refund) -> None:
    """A paid refund closes its booking on the order, adding what it paid (E4); a step the
    refund now awaits gets its message."""
    if refund.status is RefundStatus.PAID:
        paid = refund.approved_amount if refund.approved_amount is not None else refund.amount
        try:
            ports.orders.settle_refund(
                refund.order_id, refund.refund_id, paid, paid_limit=refund.order.paid_amount
            )
        except RefundTotalExceeded:
            # The approval reserved this amount within what was paid; the money has moved.
            log.error(
                "a paid refund would pass the paid amount", extra={"refund_id": refund.refund_id}
            )
        return
    delay = timedelta(0)
    if refund.awaiting_step is Step.CONFIRM_PAYOUT:
        delay = WORKFLOW[Step.CONFIRM_PAYOUT].retry.interval(1, ports.config.step_interval_scale)
    send_awaited_step(ports, refund, delay)
