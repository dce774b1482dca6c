"""``reconcile``: each channel's statement of a day against the refunds (API.md).

For every channel (``alipay``, ``wechat``, and the ``balance`` ledger) it reads the day's
statement, looks up every refund the statement names and every refund the platform paid that
day, and lets the domain judge (chalicelib/domain/reconciliation.py). The run is kept, so
``GET /admin/reconciliation`` shows it, and every mismatch is logged as an error.

A run reads what the day touched, never the table: one statement per channel, one batch read
per 100 refund numbers it names, and the sharded "paid that day" index.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from chalicelib.domain.days import shanghai_day
from chalicelib.domain.model import PaymentChannel
from chalicelib.domain.reconciliation import Reconciliation, reconcile_channel

from .exceptions import NotFound
from .ports import Ports

__all__ = ["reconcile_day", "reconcile_yesterday", "reconciliation_of"]

log = logging.getLogger("refunds.reconciliation")


def reconcile_day(ports: Ports, day: date, now: datetime) -> Reconciliation:
    """Reconcile every channel's statement of ``day`` (Asia/Shanghai) and keep the run.

    A channel whose statement cannot be read fails the run (nothing is kept), so that the
    schedule's retry or the next run covers the day whole.
    """
    paid = ports.refunds.list_paid_on(day)
    channels = {}
    for channel in PaymentChannel:
        statement = ports.gateways[channel].statement(day)
        known = ports.refunds.get_many(sorted({entry.refund_no for entry in statement}))
        channels[channel.value] = reconcile_channel(channel, statement, known, paid)
    run = Reconciliation(day=day, ran_at=now, channels=channels)
    ports.reconciliations.record(run)
    for result in run.channels.values():
        for mismatch in result.mismatches:
            log.error(
                "reconciliation mismatch",
                extra={
                    "day": day.isoformat(),
                    "channel": result.channel,
                    "kind": mismatch.kind.value,
                    "refund_id": mismatch.refund_id,
                    "channel_amount": mismatch.channel_amount,
                    "platform_amount": mismatch.platform_amount,
                    "platform_status": mismatch.platform_status,
                },
            )
    return run


def reconcile_yesterday(ports: Ports, now: datetime) -> Reconciliation:
    """The schedule's run: the Asia/Shanghai day before ``now`` (the business clock)."""
    return reconcile_day(ports, shanghai_day(now) - timedelta(days=1), now)


def reconciliation_of(ports: Ports, day: date) -> Reconciliation:
    """The kept run over ``day``; NotFound (404) if no run covered it."""
    run = ports.reconciliations.get(day)
    if run is None:
        raise NotFound("reconciliation", day.isoformat())
    return run
