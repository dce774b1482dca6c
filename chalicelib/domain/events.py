"""Refund events for the rest of the platform (API.md, "Events for the rest of the platform").

A refund's creation, every change of its status and every escalation is an event. The event
is derived from the stored change itself (the refund before and after one write), never from
the request that made it: whatever writes a refund, its events follow, and a redelivered
change gives the same event, with the same ``event_id`` (refund id and version).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .model import Refund

__all__ = ["SOURCE", "RefundEvent", "refund_event"]

SOURCE = "refunds"


@dataclass(frozen=True)
class RefundEvent:
    detail_type: str
    """``refund.<status>`` or ``refund.escalated``."""
    event_id: str
    refund_id: str
    order_id: str
    user_id: str
    status: str
    previous_status: str | None
    amount: int
    approved_amount: int | None
    channel: str
    escalation_level: int
    version: int
    at: datetime


def refund_event(before: Refund | None, after: Refund | None) -> RefundEvent | None:
    """The event of one stored change of a refund, if it is one: created (``refund.draft``),
    moved to another status, or escalated. None for any other change (evidence, messages)."""
    if after is None:
        return None
    if before is None:
        kind, previous = f"refund.{after.status.value}", None
    elif before.status is not after.status:
        kind, previous = f"refund.{after.status.value}", before.status.value
    elif after.escalation_level > before.escalation_level:
        kind, previous = "refund.escalated", before.status.value
    else:
        return None
    return RefundEvent(
        detail_type=kind,
        event_id=f"{after.refund_id}#{after.version}",
        refund_id=after.refund_id,
        order_id=after.order_id,
        user_id=after.user_id,
        status=after.status.value,
        previous_status=previous,
        amount=after.amount,
        approved_amount=after.approved_amount,
        channel=after.channel.value,
        escalation_level=after.escalation_level,
        version=after.version,
        at=after.updated_at,
    )
