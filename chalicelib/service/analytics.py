"""Refund analytics (O4): counting each stored change of an order or a refund, once, and a
period's figures from the counters, never from the refunds themselves."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import date, datetime, timedelta

from chalicelib.domain.days import shanghai_day
from chalicelib.domain.model import Order, Refund
from chalicelib.domain.stats import (
    PeriodStats,
    change,
    order_contribution,
    refund_contribution,
    summarize,
)

from .exceptions import InvalidInput
from .ports import CounterChange, Ports, StoredChange

__all__ = ["MAX_PERIOD_DAYS", "StoredChange", "count_change", "period_stats", "record_yesterday"]

MAX_PERIOD_DAYS = 366


def count_change(ports: Ports, stored: StoredChange) -> bool:
    """Add what the change moved to the day counters, once. A change that moves nothing (a
    booking on an order, a message on a refund) costs no write."""
    config = ports.config
    if isinstance(stored.before or stored.after, Refund):
        before = refund_contribution(_refund(stored.before), config.shards, config.sku_shards)
        after = refund_contribution(_refund(stored.after), config.shards, config.sku_shards)
    else:
        before = order_contribution(_order(stored.before), config.shards, config.sku_shards)
        after = order_contribution(_order(stored.after), config.shards, config.sku_shards)
    delta = change(before, after)
    if not delta:
        return False
    return ports.stats.apply(CounterChange(stored.source, stored.sequence_number, delta))


def _refund(value: Order | Refund | None) -> Refund | None:
    return value if isinstance(value, Refund) else None


def _order(value: Order | Refund | None) -> Order | None:
    return value if isinstance(value, Order) else None


def period_stats(ports: Ports, first: date, last: date) -> PeriodStats:
    """The figures of the Asia/Shanghai days ``first`` to ``last``, both included."""
    if last < first:
        raise InvalidInput("to", "the period ends before it starts")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise InvalidInput("to", f"a period covers at most {MAX_PERIOD_DAYS} days")
    return summarize(ports.stats.days(first, last, _groups(ports)))


def record_yesterday(ports: Ports, now: datetime) -> PeriodStats:
    """``daily-stats``: keep the figures of the Asia/Shanghai day before ``now``."""
    day = shanghai_day(now) - timedelta(days=1)
    figures = period_stats(ports, day, day)
    ports.stats.record_day(day, json.dumps(asdict(figures), ensure_ascii=False))
    return figures


def _groups(ports: Ports) -> list[str]:
    config = ports.config
    return [f"p#{n}" for n in range(config.shards)] + [f"s#{k}" for k in range(config.sku_shards)]
