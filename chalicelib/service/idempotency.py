"""Idempotent creates (IETF Idempotency-Key draft, Stripe's semantics; API.md, POST /refunds).

A key is scoped to its caller. The first request claims it with a lease and the refund id it
will create; a retry with the same body replays the first answer, or, if the first request
died half-way, takes over the lease and completes the same create under the same refund id.
A successful answer is not written back to the key: the refund item keeps its state as
created, so success costs no extra write. Every write of the key names the request that holds
its lease (``holder``), so a request that outlived its lease can neither store its answer
over its retry's nor end the retry's lease.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta

from chalicelib.domain.exceptions import DomainError
from chalicelib.domain.model import Refund

from .exceptions import (
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    RefundIdFenced,
    ServiceError,
)
from .ports import IdempotencyRecord, Ports
from .refunds import CreateRefund, create_refund

__all__ = ["Answer", "create_refund_once", "scope_key"]


@dataclass(frozen=True)
class Answer:
    """A rendered answer, as the caller sees it and a replay repeats it."""

    status_code: int
    body: str


def scope_key(user_id: str, key: str) -> str:
    """A key's scope is its caller, encoded so that no (user, key) pair reads like another."""
    return json.dumps([user_id, key], ensure_ascii=False, separators=(",", ":"))


def create_refund_once(
    ports: Ports,
    command: CreateRefund,
    *,
    key: str,
    fingerprint: str,
    render: Callable[[Refund | DomainError | ServiceError], Answer],
) -> Answer:
    """Create the refund at most once per (caller, key); ``render`` shapes every answer."""
    now = ports.clock.wall_now()
    config = ports.config
    lease_until = now + timedelta(seconds=config.idempotency_lease_seconds)
    fresh = IdempotencyRecord(
        scope_key=scope_key(command.user_id, key),
        fingerprint=fingerprint,
        refund_id=ports.ids.new_id("rf_"),
        holder=ports.ids.new_id("rq_"),
        lease_until=lease_until,
        expires_at=now + timedelta(hours=config.idempotency_keep_hours),
    )
    held = ports.idempotency.claim(fresh, now)
    record = fresh
    if held is not None:
        if held.fingerprint != fingerprint:
            raise IdempotencyKeyReused("this Idempotency-Key was used with another body")
        if held.status_code is not None and held.body is not None:
            return Answer(held.status_code, held.body)
        created = ports.refunds.get_as_created(held.refund_id)
        if created is not None:
            return render(created)
        if held.lease_until > now:
            raise IdempotencyKeyInFlight()
        record = replace(held, holder=fresh.holder, lease_until=lease_until)
        ports.idempotency.take_over(held, record)
    try:
        refund = _create_under_key(ports, command, record)
    except (DomainError, ServiceError) as refusal:
        answer = render(refusal)
        ports.idempotency.finish(record, answer.status_code, answer.body)
        return answer
    except Exception:
        ports.idempotency.release(record, ports.clock.wall_now())
        raise
    return render(refund)


def _create_under_key(ports: Ports, command: CreateRefund, record: IdempotencyRecord) -> Refund:
    """Create under the key's refund id; if that id was fenced as a dead create's, under a
    new one. A fenced id means the create that held it was taken for dead and its booking
    released: the work is not done, and the key's own request does it again in full."""
    try:
        return create_refund(ports, command, refund_id=record.refund_id)
    except RefundIdFenced:
        renewed = replace(record, refund_id=ports.ids.new_id("rf_"))
        ports.idempotency.reassign(renewed)
        # A new id is booked afresh within this request, far inside its lease, so it cannot
        # be taken for a dead create's and fenced again.
        return create_refund(ports, command, refund_id=renewed.refund_id)
