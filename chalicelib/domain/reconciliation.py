"""Reconciliation (money integrity): a channel's statement of one day against the refunds.

A payment team checks every day that the money each channel says it moved is the money the
platform believes it paid (P1, P2: each approved refund paid once, for its approved amount,
through its channel). The statement is the channel's truth; the refunds are the platform's.
Every difference is a mismatch of one kind (API.md, ``reconcile``):

- ``missing_at_channel``: the refund is ``paid`` through the channel, and paid that day, but
  the statement has no success for it;
- ``unknown_refund``: money moved for a refund number the platform does not know;
- ``amount_differs``: the channel moved another amount than the refund's approved amount;
- ``paid_twice``: two successes (or more) for one refund number;
- ``status_differs``: the channel paid, and the refund is not ``paid`` through that channel.

A refund number that is both paid twice and differs otherwise is reported once per kind, so
nothing hides behind another finding. Pure functions over plain data: the service reads the
statement and the refunds, this decides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum

from .days import shanghai_day
from .model import PaymentChannel, Refund, RefundStatus

__all__ = [
    "SUCCESS",
    "ChannelReconciliation",
    "Mismatch",
    "MismatchKind",
    "Reconciliation",
    "StatementEntry",
    "paid_day",
    "reconcile_channel",
]

SUCCESS = "SUCCESS"
"""The status of a statement line whose money moved."""


class MismatchKind(StrEnum):
    MISSING_AT_CHANNEL = "missing_at_channel"
    UNKNOWN_REFUND = "unknown_refund"
    AMOUNT_DIFFERS = "amount_differs"
    PAID_TWICE = "paid_twice"
    STATUS_DIFFERS = "status_differs"


@dataclass(frozen=True)
class StatementEntry:
    """One line of a channel's statement: the refund number the platform sent (the refund id,
    P2), the fen moved, the channel's status and when."""

    refund_no: str
    amount: int
    status: str
    at: datetime


@dataclass(frozen=True)
class Mismatch:
    kind: MismatchKind
    refund_id: str
    channel_amount: int | None
    """What the channel moved for it that day (the sum of its successes), if anything."""
    platform_amount: int | None
    """What the platform approved (and, if ``paid``, paid), if it knows the refund."""
    platform_status: str | None
    """The refund's status, if the platform knows it."""


@dataclass(frozen=True)
class ChannelReconciliation:
    channel: str
    entries: int
    """Successful lines in the statement."""
    amount: int
    """Their total, in fen."""
    matched: int
    """Lines that match a refund paid through this channel for the same amount, once."""
    mismatches: tuple[Mismatch, ...] = ()


@dataclass(frozen=True)
class Reconciliation:
    """One run over one day: what ``GET /admin/reconciliation`` shows."""

    day: date
    ran_at: datetime
    channels: dict[str, ChannelReconciliation] = field(default_factory=dict)

    @property
    def mismatch_count(self) -> int:
        return sum(len(channel.mismatches) for channel in self.channels.values())


def paid_day(refund: Refund | None) -> date | None:
    """The Asia/Shanghai day a ``paid`` refund was paid (its last move to ``paid``); None for
    any other refund."""
    if refund is None or refund.status is not RefundStatus.PAID:
        return None
    for entry in reversed(refund.history):
        if entry.to_status is RefundStatus.PAID:
            return shanghai_day(entry.at)
    return shanghai_day(refund.updated_at)


def _platform_amount(refund: Refund) -> int:
    return refund.approved_amount if refund.approved_amount is not None else refund.amount


def reconcile_channel(
    channel: PaymentChannel,
    statement: Iterable[StatementEntry],
    known: Mapping[str, Refund],
    paid_that_day: Iterable[Refund],
) -> ChannelReconciliation:
    """The statement of ``channel`` for one day against the platform.

    ``known`` holds every refund the statement names that the platform has (absent: unknown);
    ``paid_that_day`` the refunds the platform paid that day, of any channel.
    """
    successes: dict[str, list[int]] = defaultdict(list)
    for line in statement:
        if line.status == SUCCESS:
            successes[line.refund_no].append(line.amount)
    mismatches: list[Mismatch] = []
    matched = 0
    for refund_no, amounts in successes.items():
        moved = sum(amounts)
        refund = known.get(refund_no)
        if refund is None:
            mismatches.append(Mismatch(MismatchKind.UNKNOWN_REFUND, refund_no, moved, None, None))
            continue
        approved = _platform_amount(refund)
        status = refund.status.value
        found: list[MismatchKind] = []
        if len(amounts) > 1:
            found.append(MismatchKind.PAID_TWICE)
        if refund.status is not RefundStatus.PAID or refund.channel is not channel:
            found.append(MismatchKind.STATUS_DIFFERS)
        elif any(amount != approved for amount in amounts):
            found.append(MismatchKind.AMOUNT_DIFFERS)
        mismatches += [Mismatch(kind, refund_no, moved, approved, status) for kind in found]
        if not found:
            matched += 1
    for refund in sorted(paid_that_day, key=lambda refund: refund.refund_id):
        if refund.channel is channel and refund.refund_id not in successes:
            mismatches.append(
                Mismatch(
                    MismatchKind.MISSING_AT_CHANNEL,
                    refund.refund_id,
                    None,
                    _platform_amount(refund),
                    refund.status.value,
                )
            )
    return ChannelReconciliation(
        channel=channel.value,
        entries=sum(len(amounts) for amounts in successes.values()),
        amount=sum(sum(amounts) for amounts in successes.values()),
        matched=matched,
        mismatches=tuple(mismatches),
    )
