"""Hostile input, through the whole app: forged and odd bearer tokens in the local stage and
in a deployed one, replayed and stale payment webhooks, and evidence keys that try to leave
their refund's prefix (API.md: authentication, payment channels, evidence)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote_plus

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chalicelib.adapters.auth import MAX_TOKEN_CHARS, JWKSVerifier
from chalicelib.adapters.channels.simulator import sign
from chalicelib.domain.model import PaymentChannel, RefundStatus
from chalicelib.service import payout, refunds, review
from chalicelib.service.ports import PayoutState
from chalicelib.settings import DEFAULT_LOCAL_CHANNEL_SECRET
from tests.fakes import FakeGateway
from tests.functional.conftest import MAGIC, OTHER_USER, Api, Shop
from tests.support import JWT_SECRET, bearer, order_payload

OUR_WORDS = {
    "missing Authorization header",
    "Authorization header is not 'Bearer <token>'",
    "token too long",
    "malformed token",
    "expired token",
    "token not yet valid",
    "bad signature",
    "algorithm not allowed",
    "wrong issuer",
    "wrong audience",
    "unknown signing key",
    "signing keys unavailable",
    "missing claim exp",
    "missing claim sub",
    "missing claim iss",
}
"""Every 401 message a token can get: our words, never the token library's."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(value: Any) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode())


def _hs256(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT signed by hand, whatever its header says (PyJWT would refuse some)."""
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64url(signature)}"


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": "u-1", "iat": now, "exp": now + 3600, **overrides}
    return {name: value for name, value in claims.items() if value is not None}


def _refused(api: Api, token: str) -> str:
    """The 401 message of GET /refunds with ``token``, checked to be in our words."""
    answer = api.get("/refunds", {"Authorization": f"Bearer {token}"})
    assert (answer.status, answer.code) == (401, "unauthenticated"), answer.json
    message: str = answer.error["message"]
    assert message in OUR_WORDS
    return message


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def attacker_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": "RS256", "use": "sig"})
    return jwk


# ---------------------------------------------------------------- tokens, local stage (HS256)


def test_a_malformed_token_is_401_in_our_words_not_the_decoders(api: Api) -> None:
    # GIVEN tokens that are not JWTs: a header, or a correctly signed payload, whose bytes
    # are not UTF-8 (PyJWT's message quotes the codec's), bad padding,
    # Chinese text, a header that is a list, two segments, four segments
    bad_utf8 = _b64url(b"\xb7\xff\xfe") + "." + _segment(_claims()) + ".c2ln"
    signing_input = _segment({"alg": "HS256"}) + "." + _b64url(b"\xb7\xff\xfe")
    digest = hmac.new(JWT_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    signed_bad_utf8 = f"{signing_input}.{_b64url(digest)}"
    tokens = [
        bad_utf8,
        signed_bad_utf8,
        "中文.中文.中文",
        _segment([1, 2]) + "." + _segment(_claims()) + ".c2ln",
        "a.b",
        _hs256({"alg": "HS256"}, _claims(), JWT_SECRET.encode()) + ".extra",
    ]
    for token in tokens:
        # WHEN each calls a user route
        # THEN 401 "malformed token": no codec, byte or padding talk from the library
        assert _refused(api, token) == "malformed token", token


def test_key_confusion_an_rs256_token_in_the_hs256_stage_is_401(
    api: Api, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN the local stage (HS256 with its secret), and tokens of the other scheme: RS256
    # signed by a private key, and HS256 headers over an RSA signature
    rs256 = jwt.encode(_claims(), rsa_key, "RS256")
    _, claims, signature = rs256.split(".")
    relabelled = f"{_segment({'alg': 'HS256', 'typ': 'JWT'})}.{claims}.{signature}"
    # WHEN they call a user route
    # THEN the algorithm is refused, and the relabelled one fails the HMAC
    assert _refused(api, rs256) == "algorithm not allowed"
    assert _refused(api, relabelled) == "bad signature"


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
def test_an_unsigned_token_is_401_whatever_its_spelling(api: Api, alg: str) -> None:
    # GIVEN alg: none in any case, with no signature, or with the HMAC of the secret anyway
    unsigned = f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(_claims())}."
    signed_anyway = _hs256({"alg": alg}, _claims(), JWT_SECRET.encode())
    # WHEN they call a user route
    # THEN 401: only HS256 is taken
    assert _refused(api, unsigned) == "algorithm not allowed"
    assert _refused(api, signed_anyway) == "algorithm not allowed"


def test_a_header_that_brings_its_own_key_is_not_believed(api: Api) -> None:
    # GIVEN tokens signed with the attacker's secret, whose header offers that secret as a
    # JWK, or points at a key set or certificate of the attacker's
    attacker = b"attacker-secret-of-at-least-32-bytes!"
    own_key = {"kty": "oct", "k": _b64url(attacker)}
    headers: list[dict[str, Any]] = [
        {"alg": "HS256", "jwk": own_key},
        {"alg": "HS256", "jku": "https://attacker.example/jwks.json"},
        {"alg": "HS256", "x5u": "https://attacker.example/cert.pem"},
        {"alg": "HS256", "x5c": [_b64url(b"not a certificate")]},
    ]
    for header in headers:
        # WHEN each calls a user route
        # THEN the signature is checked with the stage's own secret only: 401
        assert _refused(api, _hs256(header, _claims(), attacker)) == "bad signature", header


def test_kid_injection_selects_no_key(api: Api) -> None:
    # GIVEN kid values that try to name a file, a query, a URL; and ones that are not text
    kids: list[Any] = [
        "../../../../dev/null",
        "' OR '1'='1",
        "https://attacker.example/key",
        "a" * 2000,
        {"$ne": ""},
        ["k"],
        None,
    ]
    attacker = b"attacker-secret-of-at-least-32-bytes!"
    for kid in kids:
        # WHEN a token with that kid, signed with another secret, calls a user route
        # THEN 401: a kid chooses nothing in the local stage
        message = _refused(api, _hs256({"alg": "HS256", "kid": kid}, _claims(), attacker))
        assert message in ("bad signature", "malformed token"), kid
    # AND with the stage's secret, a path-like kid is just ignored: the caller is the token's
    token = _hs256({"alg": "HS256", "kid": "../../../../dev/null"}, _claims(), JWT_SECRET.encode())
    assert api.get("/refunds", {"Authorization": f"Bearer {token}"}).status == 200


def test_a_huge_token_is_401_before_anything_of_it_is_decoded(api: Api) -> None:
    # GIVEN a 100 KB token, a token just over the limit, and a 100 KB signed one
    padding = "A" * (100 * 1024)
    huge_signed = _hs256({"alg": "HS256"}, _claims(pad=padding), JWT_SECRET.encode())
    for token in (padding, "a" * (MAX_TOKEN_CHARS + 1), huge_signed):
        # WHEN it calls a user route and /internal
        answers = [
            api.get("/refunds", {"Authorization": f"Bearer {token}"}),
            api.put("/internal/orders/o-1", order_payload(), {"Authorization": f"Bearer {token}"}),
        ]
        # THEN 401 "token too long", never a 500
        for answer in answers:
            assert (answer.status, answer.error["message"]) == (401, "token too long")
    # AND a token at the limit is read as any other
    at_limit = "a" * MAX_TOKEN_CHARS
    assert _refused(api, at_limit) == "malformed token"


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (_claims(sub=None), "missing claim sub"),
        (_claims(exp=None), "missing claim exp"),
        (_claims(nbf=int(time.time()) + 3600), "token not yet valid"),
        (_claims(iat=int(time.time()) + 3600), "token not yet valid"),
        (_claims(exp=int(time.time()) - 3600), "expired token"),
        (_claims(nbf="tomorrow"), "malformed token"),
    ],
    ids=["no-sub", "no-exp", "nbf-ahead", "iat-ahead", "expired", "nbf-text"],
)
def test_a_token_with_bad_claims_is_401_naming_what_is_wrong(
    api: Api, claims: dict[str, Any], message: str
) -> None:
    # GIVEN a token signed with the stage's secret whose claims are missing or not yet valid
    token = _hs256({"alg": "HS256", "typ": "JWT"}, claims, JWT_SECRET.encode())
    # WHEN it calls a user route
    # THEN 401 in our words
    assert _refused(api, token) == message


def test_an_nbf_within_the_leeway_is_taken(api: Api) -> None:
    # GIVEN a token not valid before 10 s from now (clock skew, within API.md's 30 s)
    token = _hs256({"alg": "HS256"}, _claims(nbf=int(time.time()) + 10), JWT_SECRET.encode())
    # THEN it is taken
    assert api.get("/refunds", {"Authorization": f"Bearer {token}"}).status == 200


# ---------------------------------------------------------------- tokens, deployed stage (RS256)

ISSUER = "https://cognito-idp.cn-north-1.amazonaws.com.cn/cn-north-1_Pool"
AUDIENCE = "app-client-id-123"
KID = "pool-key-1"


@dataclass
class KeyServer:
    """A JWKS (or anything else) served on 127.0.0.1, counting the requests it answered."""

    body: bytes
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def key_servers(
    rsa_key: rsa.RSAPrivateKey, attacker_key: rsa.RSAPrivateKey
) -> Iterator[tuple[KeyServer, KeyServer]]:
    """The pool's JWKS, and an attacker's key set that a token may point at."""
    pool = KeyServer(json.dumps({"keys": [_jwk(rsa_key, KID)]}).encode())
    attacker = KeyServer(json.dumps({"keys": [_jwk(attacker_key, KID)]}).encode())
    servers = []
    for served in (pool, attacker):

        class Handler(BaseHTTPRequestHandler):
            this = served

            def do_GET(self) -> None:
                self.this.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(self.this.body)))
                self.end_headers()
                self.wfile.write(self.this.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        served.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
        servers.append((server, thread))
    try:
        yield pool, attacker
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def deployed(aws: Any, key_servers: tuple[KeyServer, KeyServer]) -> Iterator[KeyServer]:
    """The app verifying tokens as a deployed stage does: RS256 against the pool's JWKS."""
    from chalicelib import bootstrap

    pool, _ = key_servers
    bootstrap.install(aws.ports, JWKSVerifier(pool.url, ISSUER, AUDIENCE))
    yield pool
    bootstrap.install(aws.ports, bootstrap.build_verifier(aws.settings))


def _pool_claims(**overrides: Any) -> dict[str, Any]:
    return _claims(**{"iss": ISSUER, "aud": AUDIENCE, "token_use": "id", **overrides})


def _rs256(key: rsa.RSAPrivateKey, claims: dict[str, Any], **header: Any) -> str:
    return jwt.encode(claims, key, "RS256", headers={"kid": KID, **header})


def test_deployed_a_pool_token_is_taken(api: Api, deployed: KeyServer, rsa_key: Any) -> None:
    # GIVEN an RS256 token of the pool, for the app client
    token = _rs256(rsa_key, _pool_claims())
    # THEN the deployed stage takes it
    assert api.get("/refunds", {"Authorization": f"Bearer {token}"}).status == 200


def test_deployed_key_confusion_hs256_with_the_public_key_or_a_secret_is_401(
    api: Api, deployed: KeyServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN HS256 tokens naming the pool's kid, signed with the pool's public key (PEM, and
    # its JWK's modulus), and with the local stage's secret
    modulus = _jwk(rsa_key, KID)["n"].encode()
    for key in (_public_pem(rsa_key), modulus, JWT_SECRET.encode()):
        token = _hs256({"alg": "HS256", "typ": "JWT", "kid": KID}, _pool_claims(), key)
        # WHEN each calls a user route
        # THEN the algorithm is refused: the deployed stage takes RS256 only
        assert _refused(api, token) == "algorithm not allowed"
    # AND an unsigned token naming the pool's kid is refused too
    unsigned = f"{_segment({'alg': 'none', 'kid': KID})}.{_segment(_pool_claims())}."
    assert _refused(api, unsigned) == "algorithm not allowed"


def test_deployed_a_token_that_brings_or_points_at_its_own_key_is_401_and_fetches_nothing(
    api: Api,
    deployed: KeyServer,
    key_servers: tuple[KeyServer, KeyServer],
    attacker_key: rsa.RSAPrivateKey,
) -> None:
    _, attacker = key_servers
    # GIVEN RS256 tokens signed by the attacker under the pool's kid, whose header carries
    # the attacker's JWK, or points at the attacker's key set or certificate
    headers: list[dict[str, Any]] = [
        {"jwk": _jwk(attacker_key, KID)},
        {"jku": attacker.url},
        {"x5u": attacker.url},
        {},
    ]
    for header in headers:
        token = _rs256(attacker_key, _pool_claims(), **header)
        # WHEN each calls a user route
        # THEN the pool's key says the signature is bad
        assert _refused(api, token) == "bad signature", header
    # AND nothing was asked of the attacker's server; the pool's JWKS was read once
    assert attacker.requests == []
    assert deployed.requests == ["/.well-known/jwks.json"]


def test_deployed_forged_kids_are_401_and_cannot_flood_the_pool(
    api: Api, deployed: KeyServer, rsa_key: rsa.RSAPrivateKey
) -> None:
    # GIVEN tokens naming kids the pool does not have: unknown, path-like, query-like
    kids = ["unknown", "../../etc/passwd", "' OR '1'='1", "x" * 500, *[f"k-{n}" for n in range(20)]]
    for kid in kids:
        token = jwt.encode(_pool_claims(), rsa_key, "RS256", headers={"kid": kid})
        # WHEN each calls a user route
        # THEN 401 unknown signing key
        assert _refused(api, token) == "unknown signing key"
    # AND the pool's JWKS was fetched at most twice for all of them (first read, one refetch)
    assert 1 <= len(deployed.requests) <= 2


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        (_pool_claims(aud="another-client"), "wrong audience"),
        (_pool_claims(aud=None), "wrong audience"),
        (_pool_claims(iss="https://cognito-idp.example.com/other-pool"), "wrong issuer"),
        (_pool_claims(iss=None), "missing claim iss"),
        (_pool_claims(sub=None), "missing claim sub"),
        (_pool_claims(nbf=int(time.time()) + 3600), "token not yet valid"),
        (_pool_claims(exp=int(time.time()) - 3600), "expired token"),
    ],
    ids=["other-aud", "no-aud", "other-iss", "no-iss", "no-sub", "nbf-ahead", "expired"],
)
def test_deployed_a_pool_token_with_wrong_claims_is_401(
    api: Api,
    deployed: KeyServer,
    rsa_key: rsa.RSAPrivateKey,
    claims: dict[str, Any],
    message: str,
) -> None:
    # GIVEN a token the pool signed, with a claim wrong, missing or not yet valid
    token = _rs256(rsa_key, claims)
    # WHEN it calls a user route
    # THEN 401 in our words
    assert _refused(api, token) == message


def test_deployed_a_huge_token_fetches_no_keys(api: Api, deployed: KeyServer) -> None:
    # GIVEN a 100 KB token
    # WHEN it calls a user route
    # THEN 401 token too long, and the JWKS is not even read
    assert _refused(api, "a" * (100 * 1024)) == "token too long"
    assert deployed.requests == []


# ---------------------------------------------------------------- payment webhooks


@pytest.fixture
def alipay(aws: Any) -> Iterator[FakeGateway]:
    """Alipay as a fake that accepts payouts and answers later, by notification."""
    from chalicelib import bootstrap

    fake = FakeGateway("alipay")
    fake.answers = [PayoutState.PROCESSING]
    gateways = {**aws.ports.gateways, PaymentChannel.ALIPAY: fake}
    bootstrap.install(replace(aws.ports, gateways=gateways), bootstrap.get_verifier())
    yield fake
    bootstrap.install(aws.ports, bootstrap.get_verifier())


def _paying(api: Api, shop: Shop) -> str:
    """u-1's refund of o-1001, approved and accepted by Alipay: paying, awaiting its result."""
    from chalicelib import bootstrap

    ports = bootstrap.get_ports()
    shop.order()
    refund_id: str = shop.refund()["refund_id"]
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    assert shop.submit(refund_id).status == 200
    review.handle_auto_review(ports, refund_id, 1)
    agent = bearer("agent-1", "cs-agent")
    for action in ("claim", "approve"):
        assert api.post(f"/admin/refunds/{refund_id}/{action}", None, agent).status == 200
    payout.handle_payout(ports, refund_id, 1)
    assert shop.get(refund_id)["status"] == "paying"
    return refund_id


def _notification(
    refund_id: str, status: str = "SUCCESS", at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"refund_id": refund_id, "channel_refund_no": "ch-1", "status": status, "amount": 8800}
    ).encode()
    timestamp = str(int(time.time() if at is None else at))
    signature = sign(DEFAULT_LOCAL_CHANNEL_SECRET, timestamp, body)
    return body, {"X-Channel-Timestamp": timestamp, "X-Channel-Signature": signature}


def _stored(refund_id: str) -> Any:
    from chalicelib import bootstrap

    return bootstrap.get_ports().refunds.get(refund_id)


@pytest.mark.parametrize(("status", "ends"), [("SUCCESS", "paid"), ("FAILED", "payout_failed")])
def test_a_replayed_notification_changes_nothing_the_second_time(
    api: Api, shop: Shop, alipay: FakeGateway, status: str, ends: str
) -> None:
    # GIVEN a refund being paid, and the channel's signed notification of its result
    refund_id = _paying(api, shop)
    body, headers = _notification(refund_id, status)
    # WHEN the notification arrives
    first = api.post("/webhooks/payouts/alipay", body, headers)
    assert (first.status, first.json) == (200, {"received": True})
    after_first = _stored(refund_id)
    assert after_first.status.value == ends
    # AND the very same bytes arrive again, and again (a replay within the window)
    for _ in range(2):
        again = api.post("/webhooks/payouts/alipay", body, headers)
        # THEN each is acknowledged, and the refund is exactly as the first one left it
        assert (again.status, again.json) == (200, {"received": True})
    assert _stored(refund_id) == after_first
    assert [h["action"] for h in shop.get(refund_id)["history"]].count(ends) == 1


def test_a_stale_or_tampered_notification_is_401_and_changes_nothing(
    api: Api, shop: Shop, alipay: FakeGateway
) -> None:
    # GIVEN a refund being paid
    refund_id = _paying(api, shop)
    before = _stored(refund_id)
    old_body, old_headers = _notification(refund_id, at=time.time() - 301)
    future_body, future_headers = _notification(refund_id, at=time.time() + 301)
    body, headers = _notification(refund_id)
    attempts = [
        # signed over 300 s ago, or for over 300 s ahead
        (old_body, old_headers),
        (future_body, future_headers),
        # an old notification with its timestamp moved to now, its signature kept
        (old_body, {**old_headers, "X-Channel-Timestamp": headers["X-Channel-Timestamp"]}),
        # a fresh one whose amount was changed after signing
        (body.replace(b"8800", b"9900"), headers),
        # no signature, and an empty one
        (body, {"X-Channel-Timestamp": headers["X-Channel-Timestamp"]}),
        (body, {**headers, "X-Channel-Signature": ""}),
    ]
    for sent, sent_headers in attempts:
        # WHEN it arrives
        answer = api.post("/webhooks/payouts/alipay", sent, sent_headers)
        # THEN 401 unauthenticated
        assert (answer.status, answer.code) == (401, "unauthenticated"), sent_headers
    # AND the refund is untouched: still paying, not one write
    assert _stored(refund_id) == before
    assert before.status is RefundStatus.PAYING


# ---------------------------------------------------------------- evidence keys


def _notify(client: Any, *keys: str) -> dict[str, Any]:
    """S3's ObjectCreated notification of ``keys`` (URL-encoded, as S3 writes them), handed to
    the verify-evidence worker as Lambda would."""
    records = [
        {
            "eventSource": "aws:s3",
            "eventName": "ObjectCreated:Post",
            "s3": {"bucket": {"name": "evidence"}, "object": {"key": quote_plus(key, safe="/")}},
        }
        for key in keys
    ]
    event = {
        "Records": [
            {
                "messageId": f"m-{n}",
                "receiptHandle": f"r-{n}",
                "body": json.dumps({"Records": [record]}),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:refunds-local-verify-evidence",
                "awsRegion": "us-east-1",
            }
            for n, record in enumerate(records)
        ]
    }
    payload: dict[str, Any] = client.lambda_.invoke("verify_evidence_worker", event).payload
    return payload


@dataclass(frozen=True)
class Slots:
    mine: str
    my_slot: str
    theirs: str
    their_slot: str


@pytest.fixture
def slots(shop: Shop, api: Api, aws: Any) -> Slots:
    """GIVEN u-1's draft with an order-screenshot slot, and u-2's likewise, nothing uploaded."""
    shop.order()
    mine = shop.refund()["refund_id"]
    my_slot = shop.slot(mine)["evidence_id"]
    theirs_shop = Shop(api, aws, bearer(OTHER_USER), shop.service_headers)
    theirs_shop.order(order_id="o-2002", user_id=OTHER_USER)
    theirs = theirs_shop.refund("o-2002")["refund_id"]
    their_slot = theirs_shop.slot(theirs)["evidence_id"]
    return Slots(mine, my_slot, theirs, their_slot)


def _crafted_keys(s: Slots) -> list[str]:
    """Keys that name a slot other than the one whose refund they are under, or try to leave
    their prefix: by another refund's id, by ``..``, by encoded slashes."""
    return [
        f"evidence/{s.mine}/{s.their_slot}",
        f"evidence/{s.theirs}/{s.my_slot}",
        f"evidence/{s.mine}/../{s.theirs}/{s.their_slot}",
        f"evidence/{s.theirs}/{s.their_slot}/../../{s.mine}/{s.my_slot}",
        f"evidence/{s.mine}/{s.my_slot}/extra",
        f"evidence/{s.mine}%2F{s.my_slot}",
        f"evidence%2F{s.mine}%2F{s.my_slot}",
        f"evidence/{s.mine}/{s.my_slot}%2F..%2F{s.their_slot}",
        f"uploads/{s.mine}/{s.my_slot}",
        f"/evidence/{s.mine}/{s.my_slot}",
        f"evidence//{s.mine}/{s.my_slot}",
    ]


def test_an_upload_under_a_crafted_key_attaches_to_no_refund(
    client: Any, api: Api, aws: Any, shop: Shop, slots: Slots, other_headers: dict[str, str]
) -> None:
    # GIVEN real PNGs put under keys that are not a slot's own
    for key in _crafted_keys(slots):
        aws.s3.put_object(
            Bucket=aws.settings.evidence_bucket,
            Key=key,
            Body=MAGIC["image/png"],
            ContentType="image/png",
        )
    # WHEN S3 tells the verify-evidence worker about each of them
    assert _notify(client, *_crafted_keys(slots)) == {"batchItemFailures": []}
    # THEN neither refund counts anything, stored or read (a read checks the slots again)
    for refund_id in (slots.mine, slots.theirs):
        stored = _stored(refund_id)
        assert [(e.uploaded, e.problem) for e in stored.evidence] == [(False, None)]
    mine = shop.get(slots.mine)["evidence"]
    theirs = api.get(f"/refunds/{slots.theirs}", other_headers).json["evidence"]
    assert [e["uploaded"] for e in mine + theirs] == [False, False]


def test_verify_upload_of_another_refunds_slot_or_a_crafted_id_changes_nothing(
    aws: Any, slots: Slots
) -> None:
    # GIVEN both slots' objects uploaded where they belong, and the refunds as stored
    for refund_id, slot in ((slots.mine, slots.my_slot), (slots.theirs, slots.their_slot)):
        aws.s3.put_object(
            Bucket=aws.settings.evidence_bucket,
            Key=refunds.evidence_key(refund_id, slot),
            Body=MAGIC["image/png"],
            ContentType="image/png",
        )
    before = [_stored(slots.mine), _stored(slots.theirs)]
    # WHEN the step is asked about a slot under a refund that does not have it, or about ids
    # that try to walk to the other refund
    for refund_id, slot in [
        (slots.mine, slots.their_slot),
        (slots.theirs, slots.my_slot),
        (f"{slots.mine}/../{slots.theirs}", slots.their_slot),
        (f"../{slots.theirs}", slots.their_slot),
        (slots.mine, f"../{slots.theirs}/{slots.their_slot}"),
    ]:
        refunds.verify_upload(aws.ports, refund_id, slot)
    # THEN nothing was counted on either refund
    assert [_stored(slots.mine), _stored(slots.theirs)] == before


def test_a_slots_presigned_post_allows_exactly_its_own_key(
    aws: Any, shop: Shop, slots: Slots
) -> None:
    # GIVEN a new slot of u-1's draft
    slot = shop.slot(slots.mine, "problem_screenshot")
    fields = slot["upload"]["fields"]
    # WHEN its POST policy is read
    policy = json.loads(base64.b64decode(fields["policy"]))
    # THEN it names that one key, exactly, under the refund's prefix: no starts-with that
    # another refund's key could satisfy
    key = refunds.evidence_key(slots.mine, slot["evidence_id"])
    assert fields["key"] == key
    assert {"key": key} in policy["conditions"]
    assert not [c for c in policy["conditions"] if isinstance(c, list) and c[0] == "starts-with"]


def test_path_ids_that_walk_to_another_refund_are_404(
    api: Api, slots: Slots, user_headers: dict[str, str]
) -> None:
    # GIVEN u-1, and ids that try to climb into u-2's refund
    attempts = [
        ("GET", f"/refunds/..%2F{slots.theirs}"),
        ("GET", f"/refunds/{slots.mine}%2F..%2F{slots.theirs}"),
        ("DELETE", f"/refunds/{slots.mine}/evidence/..%2F..%2F{slots.theirs}%2F{slots.their_slot}"),
        ("DELETE", f"/refunds/{slots.mine}/evidence/{slots.their_slot}"),
        ("POST", f"/refunds/..%2F{slots.theirs}/cancel"),
    ]
    for method, path in attempts:
        # WHEN u-1 calls them
        answer = api.call(method, path, None, user_headers)
        # THEN 404 not_found, and u-2's refund keeps its slot and its status
        assert (answer.status, answer.code) == (404, "not_found"), path
    theirs = _stored(slots.theirs)
    assert (theirs.status, [e.evidence_id for e in theirs.evidence]) == (
        RefundStatus.DRAFT,
        [slots.their_slot],
    )
