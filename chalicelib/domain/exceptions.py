"""Errors the domain raises; the API layer maps each to an HTTP status in one place."""

from __future__ import annotations

__all__ = [
    "DomainError",
    "EvidenceSlotsFull",
    "InvalidTransition",
    "MissingEvidence",
    "NotRefundable",
]


class DomainError(Exception):
    """Base class of every business-rule violation."""


class InvalidTransition(DomainError):
    """The action is not allowed from the refund's current status."""

    def __init__(self, action: str, status: str) -> None:
        super().__init__(f"cannot {action} a refund that is {status}")
        self.action = action
        self.status = status


class NotRefundable(DomainError):
    """A policy refusal, naming the rule it rests on (O3)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message


class MissingEvidence(DomainError):
    """Submit without every evidence kind F2 requires."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__("evidence required by F2 is missing: " + ", ".join(missing))
        self.missing = missing


class EvidenceSlotsFull(DomainError):
    """A refund already has the maximum number of evidence slots."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a refund has at most {limit} evidence slots")
        self.limit = limit
