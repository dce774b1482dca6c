"""Errors the adapters raise, so that callers never see an AWS or library exception."""

from __future__ import annotations

__all__ = ["AdapterError", "InvalidNotification", "InvalidToken"]


class AdapterError(Exception):
    """Base class of every error an adapter translates from AWS or a library."""


class InvalidToken(AdapterError):
    """A bearer token that is missing, malformed, unsigned, wrongly signed or expired."""


class InvalidNotification(AdapterError):
    """A channel notification that is unsigned, wrongly signed, stale or malformed."""
