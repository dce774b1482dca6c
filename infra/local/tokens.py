"""Mint HS256 tokens the local stage accepts (API.md: the local stage verifies HS256).

Dev and test tooling for the local stack, the tests and the curl examples; it is never
shipped to Lambda, where tokens come from Amazon Cognito. The tokens have Cognito's shape
(``sub``, ``cognito:groups``) so that the same code reads them in every stage.

Usage: ``python -m infra.local.tokens SUB [GROUP ...]`` prints a token signed with
``REFUNDS_JWT_SECRET`` (or the local default), e.g. for
``curl -H "Authorization: Bearer $(python -m infra.local.tokens u_1 cs-agent)" ...``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any

__all__ = ["LOCAL_DEFAULT_SECRET", "mint_token"]

LOCAL_DEFAULT_SECRET = "local-dev-secret-0123456789abcdef"  # noqa: S105 - public by design
"""The local stage's default ``REFUNDS_JWT_SECRET`` (API.md); a dev value, not a secret."""


def mint_token(
    secret: str,
    sub: str,
    groups: Sequence[str] = (),
    ttl_seconds: int = 3600,
    now: float | None = None,
) -> str:
    """An HS256 token for ``sub`` in ``groups``, valid for ``ttl_seconds`` from ``now``.

    ``now`` defaults to the wall clock, which is what verifiers judge ``exp`` by; pass it
    to mint tokens that are already expired or close to expiry. A negative ``ttl_seconds``
    is allowed for the same reason.
    """
    # A bare string is a Sequence[str] too, and would become one group per character.
    if isinstance(groups, str):
        raise TypeError("groups must be a sequence of group names, not a string")
    import jwt

    issued_at = time.time() if now is None else now
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": int(issued_at),
        "exp": int(issued_at + ttl_seconds),
    }
    if groups:
        claims["cognito:groups"] = list(groups)
    return jwt.encode(claims, secret, algorithm="HS256")


def main(argv: Sequence[str]) -> int:
    """Print a token for ``SUB [GROUP ...]``, signed with the local stage's secret."""
    if not argv:
        print("usage: python -m infra.local.tokens SUB [GROUP ...]", file=sys.stderr)
        return 2
    secret = os.environ.get("REFUNDS_JWT_SECRET", LOCAL_DEFAULT_SECRET)
    print(mint_token(secret, argv[0], argv[1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
