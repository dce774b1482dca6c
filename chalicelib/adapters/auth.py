"""Bearer-token verification: who is calling, and in which roles (API.md, authentication).

Deployed stages trust RS256 tokens from an Amazon Cognito user pool, checked against the
pool's JWKS; the local stage trusts HS256 tokens signed with a shared secret, so that tests
and demos can mint their own. Both yield the same ``Principal``, so nothing past this module
knows which stage it runs in. Every rejection is an ``InvalidToken`` (a 401), whatever PyJWT
or the network raised underneath, and its message is in this module's own words ("expired
token", "bad signature"): the library's text (which can quote a decoder's internals) stays in
the exception's cause, for the logs, and never reaches the caller.

PyJWT is imported inside the methods, not at module level: with ``cryptography`` it costs
about 130 ms, which would land on every cold start whether or not the request has a token.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from chalicelib.adapters.exceptions import InvalidToken

if TYPE_CHECKING:
    from jwt import PyJWKClient

__all__ = [
    "MAX_LEEWAY_SECONDS",
    "MAX_TOKEN_CHARS",
    "MIN_HS256_SECRET_BYTES",
    "HS256Verifier",
    "JWKSVerifier",
    "Principal",
    "TokenVerifier",
    "parse_bearer",
]

MAX_LEEWAY_SECONDS = 30
"""API.md allows at most 30 s of clock skew on ``exp``; more would stretch a token's life."""
MAX_SUB_LENGTH = 128
"""Cognito subs are UUIDs; a longer one could not key a DynamoDB item."""

MIN_HS256_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key must be at least as long as the hash output."""

MAX_TOKEN_CHARS = 10 * 1024
"""API Gateway refuses request headers over 10 KiB, so no genuine token is longer; a longer
one is refused before anything of it is decoded."""

_GROUPS_CLAIM = "cognito:groups"
_REQUIRED_CLAIMS = ["exp", "sub"]


@dataclass(frozen=True)
class Principal:
    """The verified caller: the token's ``sub`` and its Cognito groups."""

    user_id: str
    roles: frozenset[str]

    def has_any(self, *roles: str) -> bool:
        """Whether the caller holds at least one of ``roles`` (routes accept alternatives)."""
        return not self.roles.isdisjoint(roles)


class TokenVerifier(Protocol):
    """Turns a raw bearer token into a ``Principal``, or raises ``InvalidToken``."""

    def verify(self, token: str) -> Principal:
        """Check signature, algorithm and claims; return who the token speaks for."""
        ...


def parse_bearer(authorization_header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1).

    The scheme is case-insensitive (RFC 9110 §11.1); anything else, including an absent
    header or a token with spaces in it, is ``InvalidToken`` so the caller answers 401.
    """
    if not authorization_header:
        raise InvalidToken("missing Authorization header")
    parts = authorization_header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise InvalidToken("Authorization header is not 'Bearer <token>'")
    if len(parts[1]) > MAX_TOKEN_CHARS:
        raise InvalidToken("token too long")
    return parts[1]


def _rejected(error: Exception) -> InvalidToken:
    """The 401 for what PyJWT (or the JWKS fetch) raised, in our words; ``error`` stays its
    cause. The most specific classes come first (a bad signature is also a decode error)."""
    import jwt

    if isinstance(error, jwt.MissingRequiredClaimError):
        return InvalidToken(f"missing claim {error.claim}")  # one of the names we require
    reasons: list[tuple[type[Exception] | tuple[type[Exception], ...], str]] = [
        (jwt.ExpiredSignatureError, "expired token"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidSignatureError, "bad signature"),
        (jwt.InvalidAlgorithmError, "algorithm not allowed"),
        (jwt.InvalidIssuerError, "wrong issuer"),
        (jwt.InvalidAudienceError, "wrong audience"),
        (jwt.PyJWKClientConnectionError, "signing keys unavailable"),
        (jwt.PyJWKClientError, "unknown signing key"),
        ((jwt.PyJWKSetError, OSError, ValueError), "signing keys unavailable"),
    ]
    for kinds, reason in reasons:
        if isinstance(error, kinds):
            return InvalidToken(reason)
    return InvalidToken("malformed token")


def _check_leeway(leeway_seconds: int) -> int:
    if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
        raise ValueError(f"leeway_seconds must be between 0 and {MAX_LEEWAY_SECONDS}")
    return leeway_seconds


def _principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    """Build the ``Principal`` from claims whose signature and times PyJWT has checked.

    PyJWT's ``require`` only tests that a claim is not null, and it reads ``exp`` with
    ``int()``, so an empty ``sub`` or a string ``exp`` would slip through; both are refused
    here instead of becoming an anonymous user or a token that never expires by accident.
    """
    user_id = claims.get("sub")
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_SUB_LENGTH:
        raise InvalidToken(f"sub must be a string of 1 to {MAX_SUB_LENGTH} characters")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise InvalidToken("exp must be a number")
    groups = claims.get(_GROUPS_CLAIM, [])
    if not isinstance(groups, list) or not all(isinstance(group, str) for group in groups):
        raise InvalidToken(f"{_GROUPS_CLAIM} must be a list of strings")
    return Principal(user_id=user_id, roles=frozenset(groups))


class HS256Verifier:
    """The local stage's verifier: HS256 with a shared secret, no issuer or audience.

    Only HS256 is accepted, so neither an unsigned ``alg: none`` token nor an RS256 token
    reaches signature checking. ``exp`` is judged by the wall clock (PyJWT reads it
    itself), never by the local stage's settable business clock.
    """

    def __init__(self, secret: str, leeway_seconds: int = MAX_LEEWAY_SECONDS) -> None:
        if len(secret.encode("utf-8")) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes")
        self._secret = secret
        self._leeway_seconds = _check_leeway(leeway_seconds)

    def verify(self, token: str) -> Principal:
        """Verify an HS256 token signed with the secret; raise ``InvalidToken`` otherwise."""
        import jwt

        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                leeway=self._leeway_seconds,
                # verify_aud off: PyJWT otherwise rejects any token that carries an ``aud``
                # when no audience is configured, and the local stage checks none.
                options={
                    "require": _REQUIRED_CLAIMS,
                    "verify_aud": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as e:
            raise _rejected(e) from e
        return _principal_from_claims(claims)


class JWKSVerifier:
    """Deployed stages' verifier: RS256 tokens from a Cognito user pool, checked via its JWKS.

    The JWKS client is made on the first ``verify`` (no network at construction or import)
    and caches the key set, so a warm Lambda fetches it about once per cache lifespan. An
    unknown ``kid`` refetches at most once per PyJWKClient cooldown (30 s), so a flood of
    forged ``kid`` values cannot turn into a flood of requests to Cognito.

    The audience is the user pool's app client id. Cognito ID tokens carry it in ``aud``;
    access tokens carry no ``aud`` but ``client_id`` with ``token_use: access``; either is
    accepted, and a token with neither is refused.
    """

    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        leeway_seconds: int = MAX_LEEWAY_SECONDS,
        *,
        fetch_timeout_seconds: float = 5.0,
        cache_lifespan_seconds: float = 3600.0,
    ) -> None:
        # Checked here because PyJWKClient would only refuse the scheme on the first
        # request, turning a configuration mistake into a 401 for every caller.
        if urlparse(jwks_url).scheme not in ("http", "https"):
            raise ValueError("jwks_url must be an http(s) URL")
        if not issuer or not audience:
            raise ValueError("issuer and audience are required")
        self._jwks_url = jwks_url
        self._issuer = issuer
        self._audience = audience
        self._leeway_seconds = _check_leeway(leeway_seconds)
        # Well under API Gateway's 29 s integration timeout, so an unreachable JWKS is a
        # 401 rather than a gateway timeout.
        self._fetch_timeout_seconds = fetch_timeout_seconds
        self._cache_lifespan_seconds = cache_lifespan_seconds
        self._jwks_client: PyJWKClient | None = None
        self._lock = threading.Lock()

    def _client(self) -> PyJWKClient:
        # The local runner serves requests from several threads; one client keeps one cache.
        with self._lock:
            if self._jwks_client is None:
                import jwt

                self._jwks_client = jwt.PyJWKClient(
                    self._jwks_url,
                    cache_jwk_set=True,
                    lifespan=self._cache_lifespan_seconds,
                    timeout=self._fetch_timeout_seconds,
                )
            return self._jwks_client

    def verify(self, token: str) -> Principal:
        """Verify an RS256 token against the JWKS, issuer and audience; else ``InvalidToken``."""
        import jwt

        try:
            signing_key = self._client().get_signing_key_from_jwt(token)
        # OSError and ValueError: PyJWKClient wraps only some network failures (a reset
        # while reading the body, or a body that is not JSON, escape unwrapped).
        except (jwt.PyJWTError, OSError, ValueError) as e:
            raise _rejected(e) from e
        try:
            claims = jwt.decode(
                token,
                signing_key,
                algorithms=["RS256"],
                issuer=self._issuer,
                leeway=self._leeway_seconds,
                # The audience is checked below, since access tokens carry it elsewhere.
                options={
                    "require": [*_REQUIRED_CLAIMS, "iss"],
                    "verify_aud": False,
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.PyJWTError as e:
            raise _rejected(e) from e
        if not self._audience_matches(claims):
            raise InvalidToken("wrong audience")
        return _principal_from_claims(claims)

    def _audience_matches(self, claims: Mapping[str, Any]) -> bool:
        aud = claims.get("aud")
        if aud is not None:
            # RFC 7519 §4.1.3 allows a single string or a list of them.
            return aud == self._audience or (isinstance(aud, list) and self._audience in aud)
        return claims.get("token_use") == "access" and claims.get("client_id") == self._audience
