"""Refund events, published from the stored changes themselves (API.md, "Events"): the
refunds table's stream is the outbox, so a crash between a write and its publication delays
the event, never drops it, and a redelivered change publishes the same ``event_id``."""

from __future__ import annotations

from chalicelib.domain.events import RefundEvent, refund_event
from chalicelib.domain.model import Refund

from .ports import Ports, StoredChange

__all__ = ["publish_changes"]


def publish_changes(ports: Ports, changes: list[StoredChange]) -> int:
    """Publish the events of ``changes`` (in their order); how many there were."""
    events = [event for change in changes if (event := _event(change)) is not None]
    if events:
        ports.events.publish(events)
    return len(events)


def _event(change: StoredChange) -> RefundEvent | None:
    before = change.before if isinstance(change.before, Refund) else None
    after = change.after if isinstance(change.after, Refund) else None
    return refund_event(before, after)
