"""Token verification (API.md, authentication and roles) with real PyJWT and a real JWKS server.

The HS256 verifier is the local stage's; the JWKS verifier is the deployed stages' (Amazon
Cognito), exercised against a JWKS served over HTTP from 127.0.0.1 so that fetching, caching
and failing to fetch are the real thing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chalicelib.adapters.auth import (
    MAX_TOKEN_CHARS,
    HS256Verifier,
    JWKSVerifier,
    Principal,
    parse_bearer,
)
from chalicelib.adapters.exceptions import InvalidToken
from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token

SECRET = LOCAL_DEFAULT_SECRET
OTHER_SECRET = "another-secret-of-at-least-32-bytes!!"
ISSUER = "https://cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_TestPool"
AUDIENCE = "app-client-id-123"
KID = "test-key-1"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(obj: dict[str, Any]) -> str:
    return _b64url(json.dumps(obj, separators=(",", ":")).encode("utf-8"))


# ---------------------------------------------------------------- parse_bearer


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER abc.def.ghi", "abc.def.ghi"),
        ("  Bearer   abc.def.ghi  ", "abc.def.ghi"),
    ],
)
def test_parse_bearer_returns_the_token_whatever_the_scheme_case(header: str, token: str) -> None:
    # GIVEN an Authorization header with the Bearer scheme in any case
    # WHEN it is parsed
    # THEN the token comes back unchanged
    assert parse_bearer(header) == token


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "abc.def.ghi", "Bearer a b"],
)
def test_parse_bearer_refuses_anything_but_one_bearer_token(header: str | None) -> None:
    # GIVEN a missing, empty, other-scheme or ill-formed Authorization header
    # WHEN it is parsed
    # THEN it is an invalid token (401), never a crash
    with pytest.raises(InvalidToken):
        parse_bearer(header)


# ---------------------------------------------------------------- Principal


def test_principal_has_any_is_true_when_one_role_matches() -> None:
    # GIVEN a cs-agent
    principal = Principal(user_id="u_1", roles=frozenset({"cs-agent"}))
    # WHEN asked about alternatives
    # THEN one match is enough, and no match or no alternative is False
    assert principal.has_any("cs-agent", "cs-senior")
    assert not principal.has_any("cs-senior")
    assert not principal.has_any()


# ---------------------------------------------------------------- HS256 (local stage)


def test_hs256_valid_token_gives_the_principal_with_its_roles() -> None:
    # GIVEN a token minted with the local secret for a cs-senior
    token = mint_token(SECRET, "u_42", ["cs-agent", "cs-senior"])
    # WHEN it is verified
    principal = HS256Verifier(SECRET).verify(token)
    # THEN the user id is sub and the roles are cognito:groups
    assert principal == Principal(user_id="u_42", roles=frozenset({"cs-agent", "cs-senior"}))


def test_hs256_token_without_groups_has_no_roles() -> None:
    # GIVEN an app user's token without cognito:groups
    token = mint_token(SECRET, "u_1")
    # WHEN it is verified
    # THEN the principal has no roles
    assert HS256Verifier(SECRET).verify(token).roles == frozenset()


def test_hs256_token_expired_beyond_leeway_is_refused() -> None:
    # GIVEN a token that expired 60 s ago, beyond the 30 s leeway
    token = mint_token(SECRET, "u_1", ttl_seconds=3600, now=time.time() - 3660)
    # WHEN it is verified
    # THEN it is refused, and the cause is PyJWT's expiry error
    with pytest.raises(InvalidToken) as excinfo:
        HS256Verifier(SECRET).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.ExpiredSignatureError)


def test_hs256_token_expired_within_leeway_is_accepted() -> None:
    # GIVEN a token that expired 10 s ago, within the 30 s leeway
    token = mint_token(SECRET, "u_1", ttl_seconds=60, now=time.time() - 70)
    # WHEN it is verified
    # THEN it is still accepted (clock skew between issuer and us)
    assert HS256Verifier(SECRET).verify(token).user_id == "u_1"


def test_hs256_leeway_zero_refuses_a_token_expired_10_s_ago() -> None:
    # GIVEN a verifier with no leeway and a token that expired 10 s ago
    token = mint_token(SECRET, "u_1", ttl_seconds=60, now=time.time() - 70)
    # WHEN it is verified
    # THEN it is refused
    with pytest.raises(InvalidToken):
        HS256Verifier(SECRET, leeway_seconds=0).verify(token)


def test_hs256_token_signed_with_another_secret_is_refused() -> None:
    # GIVEN a token signed with a different secret
    token = mint_token(OTHER_SECRET, "u_1")
    # WHEN it is verified
    # THEN the signature check fails
    with pytest.raises(InvalidToken) as excinfo:
        HS256Verifier(SECRET).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.InvalidSignatureError)


def test_hs256_unsigned_alg_none_token_is_refused() -> None:
    # GIVEN an unsigned token, built by hand: alg none and an empty signature
    header = _segment({"alg": "none", "typ": "JWT"})
    payload = _segment({"sub": "u_1", "exp": int(time.time()) + 3600, "cognito:groups": ["x"]})
    token = f"{header}.{payload}."
    # WHEN it is verified
    # THEN it is refused for its algorithm
    with pytest.raises(InvalidToken) as excinfo:
        HS256Verifier(SECRET).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.InvalidAlgorithmError)


def test_hs256_verifier_refuses_an_rs256_token(rsa_key: rsa.RSAPrivateKey) -> None:
    # GIVEN a well-formed RS256 token
    token = jwt.encode({"sub": "u_1", "exp": int(time.time()) + 3600}, rsa_key, "RS256")
    # WHEN the local verifier sees it
    # THEN it is refused: only HS256 is accepted there
    with pytest.raises(InvalidToken) as excinfo:
        HS256Verifier(SECRET).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.InvalidAlgorithmError)


# The local secret is short for HS512; PyJWT warns when signing, which is beside the point.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_hs256_verifier_refuses_another_hmac_algorithm() -> None:
    # GIVEN a token signed with the right secret but HS512
    token = jwt.encode({"sub": "u_1", "exp": int(time.time()) + 3600}, SECRET, "HS512")
    # WHEN it is verified
    # THEN it is refused: the algorithm list is HS256 only
    with pytest.raises(InvalidToken):
        HS256Verifier(SECRET).verify(token)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b", "a.b.c", "!!!.???.***", "eyJhbGciOiJIUzI1NiJ9.e30", "中文.中文.中文"],
)
def test_hs256_malformed_token_is_refused(token: str) -> None:
    # GIVEN something that is not a JWT
    # WHEN it is verified
    # THEN it is an invalid token, not a crash
    with pytest.raises(InvalidToken):
        HS256Verifier(SECRET).verify(token)


@pytest.mark.parametrize(
    ("claims", "problem"),
    [
        ({"sub": "u_1"}, "missing exp"),
        ({"exp": 4_000_000_000}, "missing sub"),
        ({"sub": "", "exp": 4_000_000_000}, "empty sub"),
        ({"sub": 42, "exp": 4_000_000_000}, "non-string sub"),
        ({"sub": "u_1", "exp": "4000000000"}, "string exp"),
        ({"sub": "u_1", "exp": 4_000_000_000, "cognito:groups": "cs-agent"}, "groups not a list"),
        ({"sub": "u_1", "exp": 4_000_000_000, "cognito:groups": ["cs-agent", 7]}, "non-str group"),
    ],
)
def test_hs256_token_with_missing_or_ill_typed_claims_is_refused(
    claims: dict[str, Any], problem: str
) -> None:
    # GIVEN a correctly signed token whose claims are incomplete or of the wrong type
    token = jwt.encode(claims, SECRET, "HS256")
    # WHEN it is verified
    # THEN it is refused
    with pytest.raises(InvalidToken):
        HS256Verifier(SECRET).verify(token)


def test_hs256_does_not_check_issuer_or_audience() -> None:
    # GIVEN a local token that happens to carry iss and aud
    claims = {"sub": "u_1", "exp": int(time.time()) + 60, "iss": "anyone", "aud": "anything"}
    token = jwt.encode(claims, SECRET, "HS256")
    # WHEN it is verified
    # THEN it is accepted: the local stage checks neither (API.md)
    assert HS256Verifier(SECRET).verify(token).user_id == "u_1"


@pytest.mark.parametrize("secret", ["", "too-short", "x" * 31])
def test_hs256_secret_shorter_than_32_bytes_is_a_configuration_error(secret: str) -> None:
    # GIVEN a secret under 32 bytes
    # WHEN a verifier is built with it
    # THEN construction fails at once
    with pytest.raises(ValueError, match="32 bytes"):
        HS256Verifier(secret)


@pytest.mark.parametrize("leeway", [-1, 31])
def test_leeway_outside_0_to_30_seconds_is_a_configuration_error(leeway: int) -> None:
    # GIVEN a leeway API.md does not allow
    # WHEN a verifier is built with it
    # THEN construction fails
    with pytest.raises(ValueError, match="leeway"):
        HS256Verifier(SECRET, leeway_seconds=leeway)
    with pytest.raises(ValueError, match="leeway"):
        JWKSVerifier("http://127.0.0.1:1/jwks.json", ISSUER, AUDIENCE, leeway_seconds=leeway)


def test_mint_token_refuses_a_bare_string_of_groups() -> None:
    # GIVEN groups passed as one string
    # WHEN a token is minted
    # THEN it fails instead of making one group per character
    with pytest.raises(TypeError):
        mint_token(SECRET, "u_1", "cs-agent")


# ---------------------------------------------------------------- RS256 via JWKS (deployed)


@dataclass
class JwksServer:
    """A JWKS endpoint on 127.0.0.1, counting the requests it answered."""

    url: str
    not_json_url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_server(rsa_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
    body = json.dumps({"keys": [jwk]}).encode("utf-8")
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            requests.append(self.path)
            if self.path == "/.well-known/jwks.json":
                status, payload, content_type = 200, body, "application/json"
            elif self.path == "/not-json":
                status, payload, content_type = 200, b"<html>oops</html>", "text/html"
            else:
                status, payload, content_type = 404, b"{}", "application/json"
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # A short poll interval so that shutdown() returns quickly at teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield JwksServer(
            url=f"{base}/.well-known/jwks.json", not_json_url=f"{base}/not-json", requests=requests
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _rs256(key: rsa.RSAPrivateKey, kid: str | None = KID, ttl: int = 3600, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "u_7",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "token_use": "id",
        "iat": now,
        "exp": now + ttl,
        "cognito:groups": ["order-service"],
    }
    claims.update(overrides)
    # An override of None removes the claim.
    claims = {name: value for name, value in claims.items() if value is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def _verifier(server: JwksServer) -> JWKSVerifier:
    return JWKSVerifier(server.url, ISSUER, AUDIENCE)


def test_jwks_valid_token_gives_the_principal(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN an RS256 ID token with the pool's issuer, the app client as audience, a known kid
    token = _rs256(rsa_key)
    # WHEN it is verified against the JWKS
    principal = _verifier(jwks_server).verify(token)
    # THEN the principal is sub with its groups
    assert principal == Principal(user_id="u_7", roles=frozenset({"order-service"}))


def test_jwks_access_token_audience_is_its_client_id(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN a Cognito access token: no aud, the app client in client_id
    token = _rs256(rsa_key, aud=None, token_use="access", client_id=AUDIENCE)
    other_client = _rs256(rsa_key, aud=None, token_use="access", client_id="another-client")
    not_access = _rs256(rsa_key, aud=None, token_use="id", client_id=AUDIENCE)
    verifier = _verifier(jwks_server)
    # WHEN they are verified
    # THEN only the access token for our app client is accepted: client_id stands for the
    # audience on access tokens alone
    assert verifier.verify(token).user_id == "u_7"
    with pytest.raises(InvalidToken):
        verifier.verify(other_client)
    with pytest.raises(InvalidToken):
        verifier.verify(not_access)


def test_jwks_is_fetched_lazily_and_cached(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN a new verifier
    verifier = _verifier(jwks_server)
    # WHEN it is built, THEN nothing is fetched
    assert jwks_server.requests == []
    # WHEN it verifies three tokens
    for _ in range(3):
        verifier.verify(_rs256(rsa_key))
    # THEN the JWKS was fetched once
    assert jwks_server.requests == ["/.well-known/jwks.json"]


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"iss": "https://cognito-idp.example.com/other-pool"}, "wrong issuer"),
        ({"iss": None}, "missing issuer"),
        ({"aud": "another-client"}, "wrong audience"),
        ({"aud": None}, "missing audience on an ID token"),
        ({"sub": None}, "missing sub"),
        ({"exp": None}, "missing exp"),
        ({"cognito:groups": {"cs-agent": True}}, "groups not a list"),
    ],
)
def test_jwks_token_with_wrong_claims_is_refused(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, overrides: dict[str, Any], problem: str
) -> None:
    # GIVEN a correctly signed RS256 token whose claims are wrong or missing
    token = _rs256(rsa_key, **overrides)
    # WHEN it is verified
    # THEN it is refused
    with pytest.raises(InvalidToken):
        _verifier(jwks_server).verify(token)


def test_jwks_token_signed_by_another_key_is_refused(
    jwks_server: JwksServer, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN a token that names the pool's kid but is signed by another key
    token = _rs256(other_rsa_key)
    # WHEN it is verified
    # THEN the signature check fails
    with pytest.raises(InvalidToken) as excinfo:
        _verifier(jwks_server).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.InvalidSignatureError)


def test_jwks_token_expired_beyond_leeway_is_refused(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN a token that expired 60 s ago
    token = _rs256(rsa_key, ttl=-60)
    # WHEN it is verified
    # THEN it is refused as expired
    with pytest.raises(InvalidToken) as excinfo:
        _verifier(jwks_server).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.ExpiredSignatureError)


def test_jwks_hs256_token_is_refused(jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey) -> None:
    # GIVEN the classic key-confusion forgery: HS256, with the pool's public key (PEM, which
    # anyone can fetch) as the HMAC secret, and the pool's kid
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    signing_input = (
        _segment({"alg": "HS256", "typ": "JWT", "kid": KID})
        + "."
        + _segment({"sub": "u_7", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 3600})
    )
    signature = hmac.new(public_pem, signing_input.encode("ascii"), hashlib.sha256).digest()
    token = f"{signing_input}.{_b64url(signature)}"
    # WHEN it is verified
    # THEN it is refused for its algorithm
    with pytest.raises(InvalidToken) as excinfo:
        _verifier(jwks_server).verify(token)
    assert isinstance(excinfo.value.__cause__, jwt.InvalidAlgorithmError)


def test_jwks_unsigned_alg_none_token_is_refused(jwks_server: JwksServer) -> None:
    # GIVEN an unsigned token naming the pool's kid
    header = _segment({"alg": "none", "typ": "JWT", "kid": KID})
    payload = _segment({"sub": "u_7", "iss": ISSUER, "aud": AUDIENCE, "exp": 4_000_000_000})
    # WHEN it is verified
    # THEN it is refused
    with pytest.raises(InvalidToken):
        _verifier(jwks_server).verify(f"{header}.{payload}.")


@pytest.mark.parametrize("kid", ["unknown-kid", None])
def test_jwks_token_with_unknown_or_no_kid_is_refused(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, kid: str | None
) -> None:
    # GIVEN a token whose kid is not in the JWKS, or that has none
    token = _rs256(rsa_key, kid=kid)
    # WHEN it is verified
    # THEN no signing key is found and it is refused
    with pytest.raises(InvalidToken):
        _verifier(jwks_server).verify(token)


def test_jwks_malformed_token_is_refused(jwks_server: JwksServer) -> None:
    # GIVEN garbage
    # WHEN it is verified
    # THEN it is refused before the JWKS is fetched: garbage costs no network call
    with pytest.raises(InvalidToken):
        _verifier(jwks_server).verify("not-a-jwt")
    assert jwks_server.requests == []


def test_jwks_unreachable_url_is_an_invalid_token(rsa_key: rsa.RSAPrivateKey) -> None:
    # GIVEN a JWKS URL where nothing listens (a port that was free a moment ago)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    verifier = JWKSVerifier(f"http://127.0.0.1:{port}/jwks.json", ISSUER, AUDIENCE)
    # WHEN a valid-looking token is verified
    # THEN it is an invalid token (401), not an unhandled network error
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(_rs256(rsa_key))
    assert isinstance(excinfo.value.__cause__, jwt.PyJWKClientConnectionError)


@pytest.mark.parametrize("path", ["not_json_url", "missing"])
def test_jwks_endpoint_answering_garbage_is_an_invalid_token(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, path: str
) -> None:
    # GIVEN a JWKS URL that answers HTML, or 404
    url = jwks_server.not_json_url if path == "not_json_url" else jwks_server.url + ".missing"
    verifier = JWKSVerifier(url, ISSUER, AUDIENCE)
    # WHEN a token is verified
    # THEN it is an invalid token, not a JSONDecodeError escaping as a 500
    with pytest.raises(InvalidToken):
        verifier.verify(_rs256(rsa_key))


@pytest.mark.parametrize("url", ["file:///etc/passwd", "jwks.json", "ftp://example.com/jwks"])
def test_jwks_url_must_be_http(url: str) -> None:
    # GIVEN a JWKS URL that is not http(s)
    # WHEN a verifier is built with it
    # THEN construction fails, rather than every request becoming a 401
    with pytest.raises(ValueError, match="http"):
        JWKSVerifier(url, ISSUER, AUDIENCE)


# ---------------------------------------------------------------- 401 messages in our words


def test_parse_bearer_refuses_a_token_longer_than_any_gateway_passes() -> None:
    # GIVEN a token one character over the limit, and one at it
    # WHEN they are parsed
    # THEN the longer one is refused before anything of it is decoded; the other is returned
    with pytest.raises(InvalidToken, match=r"^token too long$"):
        parse_bearer("Bearer " + "a" * (MAX_TOKEN_CHARS + 1))
    assert parse_bearer("Bearer " + "a" * MAX_TOKEN_CHARS) == "a" * MAX_TOKEN_CHARS


def _signed_bad_utf8_payload() -> str:
    """A token signed with the local secret whose payload is not UTF-8 (PyJWT's message then
    quotes the codec: "'utf-8' codec can't decode byte 0xb7...")."""
    signing_input = _segment({"alg": "HS256", "typ": "JWT"}) + "." + _b64url(b"\xb7\xfe\xff")
    signature = hmac.new(SECRET.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


HS256_REFUSALS = {
    "malformed": ("garbage", "malformed token"),
    "not-utf8": (_signed_bad_utf8_payload(), "malformed token"),
    "wrong-secret": (mint_token(OTHER_SECRET, "u_1"), "bad signature"),
    "expired": (mint_token(SECRET, "u_1", now=time.time() - 3700), "expired token"),
    "alg-none": (
        f"{_segment({'alg': 'none'})}.{_segment({'sub': 'u_1', 'exp': 4_000_000_000})}.",
        "algorithm not allowed",
    ),
    "no-exp": (jwt.encode({"sub": "u_1"}, SECRET, "HS256"), "missing claim exp"),
    "no-sub": (jwt.encode({"exp": 4_000_000_000}, SECRET, "HS256"), "missing claim sub"),
    "nbf-ahead": (
        jwt.encode({"sub": "u_1", "exp": 4_000_000_000, "nbf": 3_900_000_000}, SECRET, "HS256"),
        "token not yet valid",
    ),
}


@pytest.mark.parametrize(("token", "message"), HS256_REFUSALS.values(), ids=HS256_REFUSALS)
def test_hs256_refusals_say_why_in_our_words(token: str, message: str) -> None:
    # GIVEN a token the local stage refuses
    # WHEN it is verified
    with pytest.raises(InvalidToken) as excinfo:
        HS256Verifier(SECRET).verify(token)
    # THEN the message is ours, and the library's own text stays in the cause (for the logs)
    assert str(excinfo.value) == message
    assert excinfo.value.__cause__ is not None
    assert str(excinfo.value.__cause__) not in str(excinfo.value)


def test_jwks_refusals_say_why_in_our_words(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, other_rsa_key: rsa.RSAPrivateKey
) -> None:
    verifier = _verifier(jwks_server)
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged_input = (
        _segment({"alg": "HS256", "typ": "JWT", "kid": KID})
        + "."
        + _segment({"sub": "u_7", "iss": ISSUER, "aud": AUDIENCE, "exp": 4_000_000_000})
    )
    forged = hmac.new(public_pem, forged_input.encode("ascii"), hashlib.sha256).digest()
    # GIVEN tokens a deployed stage refuses, each for one reason
    refusals = {
        "not-a-jwt": ("not-a-jwt", "malformed token"),
        "unknown-kid": (_rs256(rsa_key, kid="unknown-kid"), "unknown signing key"),
        "other-key": (_rs256(other_rsa_key), "bad signature"),
        "key-confusion": (f"{forged_input}.{_b64url(forged)}", "algorithm not allowed"),
        "expired": (_rs256(rsa_key, ttl=-60), "expired token"),
        "other-issuer": (_rs256(rsa_key, iss="https://example.com/pool"), "wrong issuer"),
        "no-issuer": (_rs256(rsa_key, iss=None), "missing claim iss"),
        "other-audience": (_rs256(rsa_key, aud="another-client"), "wrong audience"),
        "nbf-ahead": (_rs256(rsa_key, nbf=int(time.time()) + 3600), "token not yet valid"),
    }
    for name, (token, message) in refusals.items():
        # WHEN each is verified
        with pytest.raises(InvalidToken) as excinfo:
            verifier.verify(token)
        # THEN the message says why, in our words
        assert str(excinfo.value) == message, name


@pytest.mark.parametrize("path", ["unreachable", "not_json_url"])
def test_jwks_that_cannot_be_read_is_signing_keys_unavailable(
    jwks_server: JwksServer, rsa_key: rsa.RSAPrivateKey, path: str
) -> None:
    # GIVEN a JWKS URL where nothing listens, or that answers HTML
    if path == "unreachable":
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            url = f"http://127.0.0.1:{probe.getsockname()[1]}/jwks.json"
    else:
        url = jwks_server.not_json_url
    # WHEN a token is verified against it
    with pytest.raises(InvalidToken) as excinfo:
        JWKSVerifier(url, ISSUER, AUDIENCE).verify(_rs256(rsa_key))
    # THEN the message says the keys are unavailable, not what the network or parser said
    assert str(excinfo.value) == "signing keys unavailable"
