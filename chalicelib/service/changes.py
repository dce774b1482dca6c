"""How every use case changes a refund: read it, judge the change on what is stored, write it
with its optimistic lock, and judge again on the fresh state if another request won."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from chalicelib.domain.model import Message, Refund

from .exceptions import ConcurrentChange, NotFound
from .ports import Ports

__all__ = [
    "CHANGE_ATTEMPTS",
    "SYSTEM",
    "attach_message",
    "get_owned",
    "get_refund_or_404",
    "new_message",
    "on_fresh_state",
]

SYSTEM = "system"
"""The actor of the workflow's own changes (API.md: the fast track approves as ``system``)."""

CHANGE_ATTEMPTS = 5
"""How often a change is tried again on top of a concurrent one before a 409."""

T = TypeVar("T")


def on_fresh_state(change: Callable[[], T]) -> T:
    """Run ``change`` (read, check, write) again when another request wrote in between.

    Each try reads the refund anew and judges the change against it, so a retry is exactly
    the request as if it had come a moment later; only a lost optimistic lock is retried.
    """
    for _ in range(CHANGE_ATTEMPTS - 1):
        try:
            return change()
        except ConcurrentChange:
            continue
    return change()


def get_refund_or_404(ports: Ports, refund_id: str) -> Refund:
    refund = ports.refunds.get(refund_id)
    if refund is None:
        raise NotFound("refund", refund_id)
    return refund


def get_owned(ports: Ports, user_id: str, refund_id: str) -> Refund:
    """The user's own refund; another user's is not found, never forbidden (API.md)."""
    refund = ports.refunds.get(refund_id)
    if refund is None or refund.user_id != user_id:
        raise NotFound("refund", refund_id)
    return refund


def new_message(
    ports: Ports, author: str, role: str, body: str, at: datetime | None = None
) -> Message:
    """A message on a refund (O5), at ``at`` or now by the business clock."""
    return Message(ports.ids.new_id("msg_"), at or ports.clock.now(), role, author, body)


def attach_message(ports: Ports, refund: Refund, message: Message) -> None:
    """Add ``message`` to the refund's latest messages (O5), before the refund is saved.

    The item carries the latest messages within a byte budget, so that reading a refund
    stays one GetItem; older ones move to the message log, which holds every message. The
    caller appends ``message`` itself to the log once the refund is saved.
    """
    kept = [*refund.messages, message]
    archived: list[Message] = []
    config = ports.config
    while kept and _too_many(kept, config.recent_messages, config.recent_message_bytes):
        archived.append(kept.pop(0))
    for old in archived:
        # Every message reached the log when it was posted, unless that write failed: make
        # sure before the refund stops carrying it (an idempotent put).
        ports.messages.append(refund.refund_id, old)
    refund.messages = kept
    refund.archived_messages += len(archived)
    refund.updated_at = max(refund.updated_at, message.at)


def _too_many(messages: list[Message], count: int, size: int) -> bool:
    return len(messages) > count or sum(len(m.body.encode()) for m in messages) > size
