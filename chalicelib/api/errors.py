"""The error envelope of API.md, and the one place that maps exceptions to HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chalicelib.adapters.exceptions import InvalidNotification, InvalidToken
from chalicelib.domain.exceptions import (
    EvidenceSlotsFull,
    InvalidTransition,
    MissingEvidence,
    NotRefundable,
)
from chalicelib.service.exceptions import (
    Conflict,
    IdempotencyKeyReused,
    InvalidInput,
    NotFound,
    NudgeTooSoon,
    RoleRequired,
)

if TYPE_CHECKING:
    from pydantic import ValidationError

__all__ = [
    "ApiError",
    "ErrorAnswer",
    "FieldInvalid",
    "Forbidden",
    "IdempotencyKeyMissing",
    "InvalidRequest",
    "MethodNotAllowed",
    "PayloadTooLarge",
    "RouteNotFound",
    "UnsupportedMediaType",
    "envelope",
    "error_answer",
    "validation_details",
]


class ApiError(Exception):
    """An error that belongs to the HTTP edge itself."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(ApiError):
    """Malformed JSON, unknown or missing fields, wrong types, bad query parameters."""


class IdempotencyKeyMissing(ApiError):
    """A create without its Idempotency-Key header."""

    code = "idempotency_key_missing"


class Forbidden(ApiError):
    """A valid token without the role the route needs."""

    status = 403
    code = "forbidden"


class PayloadTooLarge(ApiError):
    """A body over the 64 KiB the API accepts."""

    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ApiError):
    """A body in another type than JSON (webhooks excepted)."""

    status = 415
    code = "unsupported_media_type"


class RouteNotFound(ApiError):
    """No route at this path."""

    status = 404
    code = "not_found"


class MethodNotAllowed(ApiError):
    """A known path asked with a method it does not serve."""

    status = 405
    code = "method_not_allowed"


class FieldInvalid(ValueError):
    """A model validator's finding about one field of what it validates (a cross-field rule).

    Raised inside a pydantic validator, it becomes an ordinary validation error, and
    ``validation_details`` names ``field`` in it rather than the object that holds the field.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field


_PROBLEMS = {"missing": "required", "extra_forbidden": "unknown field"}
_RAISED = ("value_error", "assertion_error")
"""Errors raised by our own validators: their text is ours, without pydantic's prefix."""


def validation_details(error: ValidationError) -> list[dict[str, str]]:
    """One ``{"field", "problem"}`` per problem pydantic found, in API.md's terms.

    ``field`` is the dotted path of the field at fault (``usage.used_units``, ``gifts.0.value``),
    ``body`` for the body as a whole; ``problem`` is our validators' own text, never with
    pydantic's "Value error, " or "Assertion failed, " in front.
    """
    details = []
    for problem in error.errors(include_url=False):
        where = [str(part) for part in problem["loc"]]
        raised = problem.get("ctx", {}).get("error")
        kind = problem["type"]
        if isinstance(raised, FieldInvalid):
            where.append(raised.field)
        if kind in _RAISED and isinstance(raised, Exception):
            text = str(raised)
        elif kind == "json_invalid":
            text = f"malformed JSON: {raised}"
        else:
            text = _PROBLEMS.get(kind, problem["msg"])
        details.append({"field": ".".join(where) or "body", "problem": text})
    return details


@dataclass(frozen=True)
class ErrorAnswer:
    status: int
    body: dict[str, Any]


def envelope(
    code: str, message: str, rule: str | None = None, details: list[Any] | None = None
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "rule": rule, "details": details or []}}


def error_answer(error: Exception) -> ErrorAnswer | None:
    """The status and envelope for a known error; None for a fault (a 500)."""
    match error:
        case ApiError():
            return ErrorAnswer(
                error.status, envelope(error.code, error.message, None, error.details)
            )
        case InvalidToken() | InvalidNotification():
            return ErrorAnswer(401, envelope("unauthenticated", str(error)))
        case InvalidInput():
            details = [{"field": error.field, "problem": error.problem}]
            return ErrorAnswer(400, envelope("invalid_request", str(error), None, details))
        case RoleRequired():
            return ErrorAnswer(403, envelope("forbidden", str(error)))
        case NotFound():
            return ErrorAnswer(404, envelope("not_found", str(error)))
        case Conflict():
            return ErrorAnswer(409, envelope("conflict", error.message, error.rule))
        case InvalidTransition() | EvidenceSlotsFull():
            return ErrorAnswer(409, envelope("conflict", str(error)))
        case NotRefundable():
            return ErrorAnswer(422, envelope("not_refundable", error.message, error.rule))
        case MissingEvidence():
            details = [
                {"field": "evidence", "kind": kind, "problem": f"no uploaded {kind} yet"}
                for kind in error.missing
            ]
            return ErrorAnswer(422, envelope("missing_evidence", str(error), "F2", details))
        case NudgeTooSoon():
            return ErrorAnswer(429, envelope("too_many_requests", str(error), "X2"))
        case IdempotencyKeyReused():
            return ErrorAnswer(422, envelope("idempotency_key_reused", str(error)))
    return None
