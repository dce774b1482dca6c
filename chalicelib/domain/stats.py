"""Refund analytics (O4) as pure functions: what each order and refund contributes to its
day's counters, the change between two states of one, and a period's figures from the days'
counters (API.md, ``GET /admin/stats``).

Counters are keyed by the Asia/Shanghai day an order was paid or a refund first submitted, so
that a change to a refund (its status, its decision, its payout, an escalation) moves counts
within the day it belongs to. A contribution is a pure function of the stored order or
refund: the difference between the old and the new one is what a change adds, whatever
happened in between, so counting can be exact when each change is applied exactly once.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from .days import shanghai_day
from .model import Action, Order, Refund, RefundStatus

__all__ = [
    "ANOMALY_MIN_ORDERS",
    "Anomaly",
    "Contribution",
    "PeriodStats",
    "change",
    "order_contribution",
    "refund_contribution",
    "summarize",
]

HOUR_BUCKETS_PER_HOUR = 10
"""Durations are counted in tenths of an hour: medians to 0.1 h, counters bounded."""
MAX_BUCKET_HOURS = 24 * 60
ANOMALY_MIN_ORDERS = 30
ANOMALY_FACTOR = 2
ANOMALY_POINTS = Fraction(1, 10)
HUMAN_DECISIONS = frozenset({Action.APPROVE, Action.REJECT, Action.REQUEST_INFO})

Contribution = dict[tuple[date, str], Counter[str]]
"""(day, item group) -> counter name -> count. The group is ``p#n`` (platform-wide counters,
sharded by the refund or order id) or ``s#k`` (per-SKU counters, sharded by the SKU)."""


def _shard(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % max(shards, 1)


def _hours_bucket(start: datetime, end: datetime) -> int:
    hours = (end - start).total_seconds() / 3600
    return int(min(max(hours, 0), MAX_BUCKET_HOURS) * HOUR_BUCKETS_PER_HOUR)


def order_contribution(order: Order | None, shards: int, sku_shards: int) -> Contribution:
    """An order counts once, on its paid day, for the platform, its category and its SKU."""
    if order is None:
        return {}
    day = shanghai_day(order.paid_at)
    platform = Counter({"orders": 1, f"cat_orders|{order.category}": 1})
    per_sku = Counter({f"sku_orders|{order.sku}": 1, f"sku_cat|{order.sku}|{order.category}": 1})
    return {
        (day, f"p#{_shard(order.order_id, shards)}"): platform,
        (day, f"s#{_shard(order.sku, sku_shards)}"): per_sku,
    }


def refund_contribution(refund: Refund | None, shards: int, sku_shards: int) -> Contribution:
    """A refund counts from its first submission, on that day: by reason and by its current
    status, its review and payout times once they are known, and the phases it was escalated
    in (SLA breaches). A draft never submitted counts nowhere."""
    if refund is None:
        return {}
    submitted = next((e.at for e in refund.history if e.action is Action.SUBMIT), None)
    if submitted is None:
        return {}
    day = shanghai_day(submitted)
    order = refund.order
    platform: Counter[str] = Counter(
        {
            "refunds": 1,
            f"reason|{refund.reason.value}": 1,
            f"status|{refund.status.value}": 1,
            f"cat_refunds|{order.category}": 1,
        }
    )
    decided = next(
        (
            e.at
            for e in refund.history
            if e.at >= submitted
            and (
                (e.action in HUMAN_DECISIONS and e.actor != "system")
                or (e.action is Action.AUTO_REVIEW and e.to_status is RefundStatus.APPROVED)
            )
        ),
        None,
    )
    if decided is not None:
        platform[f"review_h|{_hours_bucket(submitted, decided)}"] += 1
    approved = next((e.at for e in refund.history if e.to_status is RefundStatus.APPROVED), None)
    paid = next((e.at for e in refund.history if e.to_status is RefundStatus.PAID), None)
    if approved is not None and paid is not None:
        platform[f"payout_h|{_hours_bucket(approved, paid)}"] += 1
    for phase in sorted(set(refund.sla_breaches)):
        platform[f"breach|{phase}"] += 1
    return {
        (day, f"p#{_shard(refund.refund_id, shards)}"): platform,
        (day, f"s#{_shard(order.sku, sku_shards)}"): Counter({f"sku_refunds|{order.sku}": 1}),
    }


def change(before: Contribution, after: Contribution) -> Contribution:
    """What a change adds to the counters: ``after`` minus ``before``, zeros left out."""
    delta: Contribution = {}
    for key in before.keys() | after.keys():
        counts = Counter(after.get(key, {}))
        counts.subtract(before.get(key, {}))
        nonzero = Counter({name: n for name, n in counts.items() if n})
        if nonzero:
            delta[key] = nonzero
    return delta


@dataclass(frozen=True)
class Anomaly:
    scope: str
    key: str
    orders: int
    refunds: int
    rate: float
    baseline_rate: float


@dataclass(frozen=True)
class PeriodStats:
    orders: int
    refunds: int
    by_reason: dict[str, int]
    by_status: dict[str, int]
    median_review_hours: float | None
    median_payout_hours: float | None
    sla_breaches: dict[str, int]
    anomalies: list[Anomaly]


def summarize(days: Iterable[Mapping[str, int]]) -> PeriodStats:
    """A period's figures from its days' counters (every group of every day, summed)."""
    total: Counter[str] = Counter()
    for counters in days:
        total.update(counters)

    def group(prefix: str) -> dict[str, int]:
        return {
            name.split("|", 1)[1]: n
            for name, n in sorted(total.items())
            if name.startswith(prefix + "|") and n
        }

    return PeriodStats(
        orders=total["orders"],
        refunds=total["refunds"],
        by_reason=group("reason"),
        by_status=group("status"),
        median_review_hours=_median_hours(group("review_h")),
        median_payout_hours=_median_hours(group("payout_h")),
        sla_breaches={"review": total["breach|review"], "payout": total["breach|payout"]},
        anomalies=_anomalies(total),
    )


def _median_hours(histogram: Mapping[str, int]) -> float | None:
    """The median of bucketed durations, each bucket read as its middle (to 0.05 h)."""
    counts = sorted((int(bucket), n) for bucket, n in histogram.items() if n > 0)
    total = sum(n for _, n in counts)
    if not total:
        return None

    def nth(index: int) -> int:
        """The ``index``-th smallest bucket (0-based)."""
        seen = 0
        for bucket, n in counts:
            if index < seen + n:
                return bucket
            seen += n
        raise IndexError(index)

    middle = Decimal(nth((total - 1) // 2) + nth(total // 2)) / 2
    hours = (middle + Decimal("0.5")) / HOUR_BUCKETS_PER_HOUR
    return float(hours.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def _rate(refunds: int, orders: int) -> Fraction:
    """Exact: "at least twice" and "at least 10 points" hold at their very edges too."""
    return Fraction(refunds, orders) if orders else Fraction(0)


def _is_anomaly(orders: int, refunds: int, rest_orders: int, rest_refunds: int) -> bool:
    """API.md: at least 30 orders, and a refund rate at least twice the comparison group's
    and at least 10 points above it (an empty comparison group has rate 0)."""
    if orders < ANOMALY_MIN_ORDERS:
        return False
    rate, baseline = _rate(refunds, orders), _rate(rest_refunds, rest_orders)
    return rate >= ANOMALY_FACTOR * baseline and rate - baseline >= ANOMALY_POINTS


def _anomalies(total: Mapping[str, int]) -> list[Anomaly]:
    def named(prefix: str) -> dict[str, int]:
        return {k.split("|", 1)[1]: n for k, n in total.items() if k.startswith(prefix + "|")}

    cat_orders, cat_refunds = named("cat_orders"), named("cat_refunds")
    sku_orders, sku_refunds = named("sku_orders"), named("sku_refunds")
    sku_category = {
        key.split("|")[1]: key.split("|")[2]
        for key, n in total.items()
        if key.startswith("sku_cat|") and n > 0
    }
    found: list[Anomaly] = []
    platform_orders, platform_refunds = total["orders"], total["refunds"]
    for category in sorted(cat_orders):
        orders, refunds = cat_orders[category], cat_refunds.get(category, 0)
        rest_orders, rest_refunds = platform_orders - orders, platform_refunds - refunds
        if _is_anomaly(orders, refunds, rest_orders, rest_refunds):
            found.append(_anomaly("category", category, orders, refunds, rest_orders, rest_refunds))
    for sku in sorted(sku_orders):
        sku_cat = sku_category.get(sku, "")
        orders, refunds = sku_orders[sku], sku_refunds.get(sku, 0)
        rest_orders = cat_orders.get(sku_cat, 0) - orders if sku_cat else 0
        rest_refunds = cat_refunds.get(sku_cat, 0) - refunds if sku_cat else 0
        if _is_anomaly(orders, refunds, rest_orders, rest_refunds):
            found.append(_anomaly("sku", sku, orders, refunds, rest_orders, rest_refunds))
    return found


def _anomaly(
    scope: str, key: str, orders: int, refunds: int, rest_orders: int, rest_refunds: int
) -> Anomaly:
    return Anomaly(
        scope,
        key,
        orders,
        refunds,
        round(float(_rate(refunds, orders)), 4),
        round(float(_rate(rest_refunds, rest_orders)), 4),
    )
