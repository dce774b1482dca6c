"""The HTTP the channel adapters speak through: one call, one answer, two kinds of failure.

A payout channel must tell "nothing reached the channel" (retrying is safe) from "the request
may have reached it and the answer was lost" (the money may have moved, P2). Every transport
failure is one of those two exceptions, so the adapters never see a library's own errors and
tests drive them with a plain function instead of a network.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from chalicelib.adapters.exceptions import AdapterError

if TYPE_CHECKING:
    import urllib3

__all__ = [
    "HttpAnswer",
    "Transport",
    "TransportError",
    "TransportTimeout",
    "TransportUnreachable",
    "Urllib3Transport",
]

MAX_CONNECT_SECONDS = 5.0
"""A channel that takes longer than this to accept a connection is taken for unreachable."""


class TransportError(AdapterError):
    """Base class of the transport's two failures."""


class TransportTimeout(TransportError):
    """The request may have reached the channel, and no whole answer came back."""


class TransportUnreachable(TransportError):
    """The request never reached the channel: no connection, no TLS, nothing sent."""


@dataclass(frozen=True)
class HttpAnswer:
    """A channel's HTTP answer, its body exactly as received (signatures cover raw bytes)."""

    status: int
    headers: Mapping[str, str]
    body: bytes = field(repr=False)

    def header(self, name: str) -> str | None:
        """The header's value whatever the case of its name (HTTP names are case-insensitive)."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


class Transport(Protocol):
    def __call__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpAnswer:
        """Send one request, never retried; raise TransportTimeout or TransportUnreachable."""
        ...


class Urllib3Transport:
    """The transport on urllib3 (which botocore already brings), its pool made on first use.

    It never retries and never follows redirects: a payout request is resent only by its
    caller, who knows whether the first one may have been processed.
    """

    def __init__(self, max_connections: int = 4) -> None:
        self._max_connections = max_connections
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()

    def _pool_manager(self) -> urllib3.PoolManager:
        with self._lock:
            if self._pool is None:
                import urllib3

                self._pool = urllib3.PoolManager(maxsize=self._max_connections, retries=False)
            return self._pool

    def __call__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpAnswer:
        from urllib3 import Timeout
        from urllib3.exceptions import (
            ConnectTimeoutError,
            HTTPError,
            LocationValueError,
            SSLError,
        )

        pool = self._pool_manager()
        try:
            answer = pool.request(
                method,
                url,
                body=body,
                headers=dict(headers),
                timeout=Timeout(connect=min(timeout, MAX_CONNECT_SECONDS), read=timeout),
                retries=False,
                redirect=False,
            )
        except (ConnectTimeoutError, SSLError, LocationValueError) as error:
            # Refused, unresolvable or timed out while connecting, a failed TLS handshake
            # (urllib3 shakes hands before writing), or a URL it cannot send to: the
            # request was never written.
            raise TransportUnreachable(str(error)) from error
        except HTTPError as error:
            # A read timeout, or the connection dropped after the request was written.
            raise TransportTimeout(str(error)) from error
        return HttpAnswer(status=answer.status, headers=dict(answer.headers), body=answer.data)
