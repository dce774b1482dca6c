"""Errors the adapters raise, so that callers never see an AWS or library exception."""

from __future__ import annotations

__all__ = ["AdapterError", "InvalidToken"]


class AdapterError(Exception):
    """Base class of every error an adapter translates from AWS or a library."""


class InvalidToken(AdapterError):
    """A bearer token that is missing, malformed, unsigned, wrongly signed or expired."""
