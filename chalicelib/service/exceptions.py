"""Errors of the use cases and of the ports they call; mapped to HTTP in one place."""

from __future__ import annotations

__all__ = [
    "ChannelOutcomeUnknown",
    "ChannelUnavailable",
    "ConcurrentChange",
    "Conflict",
    "IdempotencyKeyInFlight",
    "IdempotencyKeyReused",
    "InvalidInput",
    "NotFound",
    "NudgeTooSoon",
    "RefundIdFenced",
    "RefundTotalExceeded",
    "RoleRequired",
    "ServiceError",
    "StepRejected",
    "StepRetry",
]


class ServiceError(Exception):
    """Base class of the service layer's errors."""


class NotFound(ServiceError):
    """No such resource, or it belongs to someone else (never told apart)."""

    def __init__(self, resource: str, resource_id: str) -> None:
        super().__init__(f"{resource} {resource_id} not found")
        self.resource = resource
        self.resource_id = resource_id


class Conflict(ServiceError):
    """The resource changed under the request, or its state forbids it."""

    def __init__(self, message: str, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.rule = rule


class ConcurrentChange(Conflict):
    """Another request changed the item between this request's read and its write."""

    def __init__(self) -> None:
        super().__init__("the refund was changed by another request; retry")


class IdempotencyKeyInFlight(Conflict):
    """The first request with this idempotency key is still running."""

    def __init__(self) -> None:
        super().__init__("a request with this Idempotency-Key is still in flight; retry later")


class IdempotencyKeyReused(ServiceError):
    """The idempotency key was first used with another body."""


class RefundTotalExceeded(Conflict):
    """Settling the refund would take the order's refunded total past what was paid (E4)."""

    def __init__(self, order_id: str) -> None:
        super().__init__(
            f"refunds of order {order_id} would exceed what was paid for it", rule="E4"
        )


class RefundIdFenced(ServiceError):
    """The refund id was fenced off as the id of a create that died; it can never be stored."""

    def __init__(self, refund_id: str) -> None:
        super().__init__(f"refund id {refund_id} was abandoned")
        self.refund_id = refund_id


class ChannelUnavailable(ServiceError):
    """A payment channel refused before doing anything (busy, down): retrying is safe."""


class ChannelOutcomeUnknown(ServiceError):
    """A payment channel's answer never came or says nothing final: the money may have moved.

    Resolved by querying the channel with the same refund number, never by paying again.
    """


class RoleRequired(ServiceError):
    """This resource needs a role the caller lacks (a ``cs-agent`` on an appealed refund)."""

    def __init__(self, role: str, why: str) -> None:
        super().__init__(f"only a {role} may do this: {why}")
        self.role = role


class InvalidInput(ServiceError):
    """Input that is well-formed but wrong for this resource (400, naming the field)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class StepRetry(ServiceError):
    """A workflow step failed in a way another attempt may fix (its retry policy decides)."""


class StepRejected(ServiceError):
    """A step's message can never succeed (malformed): no backoff, on to the dead-letter queue."""


class NudgeTooSoon(ServiceError):
    """A second nudge within 24 hours of the last accepted one (429)."""

    def __init__(self, again_at: str) -> None:
        super().__init__(
            f"this refund was nudged less than 24 hours ago; nudge again after {again_at}"
        )
