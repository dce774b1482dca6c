"""The local stage's own routes (API.md, "Local stage only"): the payment-channel simulator's
faults and statements, and scheduled functions run on demand. Every deployed stage answers
them 404, as if they did not exist."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from chalice.app import Blueprint

from chalicelib.adapters.clock import SettableClock
from chalicelib.api import metrics
from chalicelib.api.http import Access, Call, Router
from chalicelib.api.models import (
    ChannelSettingsIn,
    ChannelSettingsOut,
    ClockIn,
    ClockOut,
    LocalEventsOut,
    LocalEventsQuery,
    ScheduleRunOut,
    StatementOut,
    StatementQuery,
)
from chalicelib.bootstrap import get_event_log, get_ports, get_simulator_control, get_verifier
from chalicelib.domain.days import shanghai_day
from chalicelib.domain.model import PaymentChannel
from chalicelib.domain.reconciliation import Reconciliation
from chalicelib.domain.stats import PeriodStats
from chalicelib.service import analytics, promises, reconciliation, workflow
from chalicelib.service.exceptions import NotFound
from chalicelib.settings import get_settings

__all__ = ["SCHEDULES", "blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)

SIMULATED = frozenset({PaymentChannel.ALIPAY.value, PaymentChannel.WECHAT.value})
STATEMENT_DAYS = 31
"""Without ``?day=``, the balance's statement covers the last 31 days (business clock)."""

SCHEDULES: dict[str, Callable[[datetime], dict[str, Any]]] = {
    "escalate-overdue": lambda now: {"escalated": promises.escalate_overdue(get_ports(), now)},
    "close-stale": lambda now: {"closed": promises.close_stale(get_ports(), now)},
    "resume-steps": lambda now: {"resent": workflow.resume_waiting_steps(get_ports())},
    "daily-stats": lambda now: _recorded(analytics.record_yesterday(get_ports(), now)),
    "reconcile": lambda now: _reconciled(reconciliation.reconcile_yesterday(get_ports(), now)),
}
"""The scheduled functions that can be run now, by name, on the business clock
(chalicelib/api/routes/workers.py runs them at their rates)."""


def _recorded(figures: PeriodStats) -> dict[str, Any]:
    return {"orders": figures.orders, "refunds": figures.refunds}


def _reconciled(run: Reconciliation) -> dict[str, Any]:
    metrics.record_run(run)
    return {
        "day": run.day.isoformat(),
        "mismatches": {name: len(channel.mismatches) for name, channel in run.channels.items()},
    }


def _local_only(path: str) -> None:
    if not get_settings().is_local:
        raise NotFound("route", path)


@api.route(
    "/_local/channels/{channel}",
    "PUT",
    access=Access.PUBLIC,
    body=ChannelSettingsIn,
    response=ChannelSettingsOut,
    errors=(415,),
    summary="Local stage: fault injection in the payment-channel simulator",
)
def configure_channel(call: Call, channel: str) -> ChannelSettingsOut:
    _local_only("/_local/channels")
    if channel not in SIMULATED:
        raise NotFound("simulated channel", channel)
    # Fields left out, or null, keep their value (every field defaults to None).
    given = call.body.model_dump(exclude_none=True)
    return ChannelSettingsOut.model_validate(get_simulator_control().configure(channel, given))


@api.route(
    "/_local/channels/{channel}/statement",
    "GET",
    access=Access.PUBLIC,
    query=StatementQuery,
    response=StatementOut,
    summary="Local stage: the money a channel actually moved (balance: the wallet ledger)",
)
def channel_statement(call: Call, channel: str) -> StatementOut:
    _local_only("/_local/channels")
    if channel not in {c.value for c in PaymentChannel}:
        raise NotFound("payment channel", channel)
    ports = get_ports()
    gateway = ports.gateways[PaymentChannel(channel)]
    if call.query.day is not None:
        return StatementOut.of(channel, gateway.statement(call.query.day))
    if channel in SIMULATED:
        return StatementOut.of(channel, get_simulator_control().statement(channel))
    today = shanghai_day(ports.clock.now())
    days = [today - timedelta(days=n) for n in reversed(range(STATEMENT_DAYS))]
    return StatementOut.of(channel, [entry for day in days for entry in gateway.statement(day)])


@api.route(
    "/_local/schedules/{name}/run",
    "POST",
    access=Access.PUBLIC,
    response=ScheduleRunOut,
    summary="Local stage: run a scheduled function now, on the business clock",
)
def run_schedule(call: Call, name: str) -> ScheduleRunOut:
    _local_only("/_local/schedules")
    run = SCHEDULES.get(name)
    if run is None:
        raise NotFound("schedule", name)
    now = get_ports().clock.now()
    return ScheduleRunOut(schedule=name, now=now, result=run(now))


@api.route(
    "/_local/clock",
    "POST",
    access=Access.PUBLIC,
    body=ClockIn,
    response=ClockOut,
    errors=(404,),  # in every deployed stage
    summary="Local stage: set, move on or reset the business clock",
)
def set_clock(call: Call) -> ClockOut:
    _local_only("/_local/clock")
    clock = get_ports().clock
    if not isinstance(clock, SettableClock):
        raise NotFound("route", "/_local/clock")
    body: ClockIn = call.body
    if body.now is not None:
        now = clock.set(body.now)
    elif body.advance_hours is not None:
        now = clock.advance(timedelta(hours=body.advance_hours))
    else:
        now = clock.reset()
    return ClockOut(now=now)


@api.route(
    "/_local/events",
    "GET",
    access=Access.PUBLIC,
    query=LocalEventsQuery,
    response=LocalEventsOut,
    errors=(404,),  # in every deployed stage
    summary="Local stage: the events a consumer of the bus received for a refund",
)
def received_events(call: Call) -> LocalEventsOut:
    _local_only("/_local/events")
    return LocalEventsOut.model_validate(
        {"items": get_event_log().for_refund(call.query.refund_id)}
    )
