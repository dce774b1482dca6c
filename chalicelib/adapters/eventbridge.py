"""Refund events on EventBridge: the bus ``refunds-<stage>``, source ``refunds``."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from chalicelib.adapters.clients import OnFirstUseClient
from chalicelib.domain.events import SOURCE, RefundEvent

__all__ = ["EventBridgeBus", "event_detail"]

ENTRIES_PER_CALL = 10
"""PutEvents takes at most 10 entries."""


def event_detail(event: RefundEvent) -> dict[str, Any]:
    """The event's ``detail``, as API.md shows it (times in UTC with a Z)."""
    detail = asdict(event)
    del detail["detail_type"]
    detail["at"] = event.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return detail


class EventBridgeBus(OnFirstUseClient):
    def __init__(self, bus: str, client_factory: Callable[[], Any]) -> None:
        self._bus = bus
        super().__init__(client_factory)

    def publish(self, events: list[RefundEvent]) -> None:
        for start in range(0, len(events), ENTRIES_PER_CALL):
            batch = events[start : start + ENTRIES_PER_CALL]
            answer = self.client.put_events(
                Entries=[
                    {
                        "EventBusName": self._bus,
                        "Source": SOURCE,
                        "DetailType": event.detail_type,
                        "Detail": json.dumps(event_detail(event), ensure_ascii=False),
                        "Time": event.at,
                    }
                    for event in batch
                ]
            )
            if answer.get("FailedEntryCount"):
                # The stream hands the whole batch over again: consumers drop duplicates by
                # event_id, and nothing is lost.
                failed = [e for e in answer.get("Entries", []) if e.get("ErrorCode")]
                raise RuntimeError(f"EventBridge refused {len(failed)} events: {failed[:3]}")
