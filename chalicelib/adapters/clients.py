"""What every AWS-backed adapter shares: its client, built on first use.

Building a boto3 client costs a botocore session (about 0.1 s), so no adapter builds one at
import time or when it is constructed: a cold start pays only for the clients its request
uses. Tests and the local stack hand in a factory pointed at moto.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["OnFirstUseClient"]


class OnFirstUseClient:
    """An adapter whose AWS client ``client_factory`` makes is made when first used."""

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._client_factory = client_factory
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client
