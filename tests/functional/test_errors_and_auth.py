"""The error envelope, the order of checks, request ids, and who may call what (API.md)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import jwt
import pytest

from tests.functional.conftest import ORDER_SERVICE, Api, Shop
from tests.support import JWT_SECRET, as_json, bearer, order_payload

LIMIT = 64 * 1024
JSON = "application/json"
UNKNOWN_REFUND = "rf_01ARZ3NDEKTSV4RRFFQ69G5FAV"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unsigned_token(sub: str, *groups: str) -> str:
    """A JWT with ``alg: none`` and an empty signature, built by hand."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    claims = {"sub": sub, "exp": int(time.time()) + 3600, "cognito:groups": list(groups)}
    return f"{header}.{_b64url(json.dumps(claims).encode())}."


def _padded(payload: dict[str, Any], size: int) -> bytes:
    """``payload`` as JSON, padded with trailing whitespace to exactly ``size`` bytes."""
    raw = as_json(payload)
    return raw + b" " * (size - len(raw))


# ---------------------------------------------------------------- request ids


def test_callers_request_id_is_echoed_on_success_and_error(
    api: Api, user_headers: dict[str, str]
) -> None:
    # GIVEN a caller that sends its own X-Request-Id
    rid = "3f2c1e9a-6b7d-4c1e-9f00-5a8b7c6d5e4f"
    # WHEN it calls a public route, an authenticated route, and fails authentication
    answers = [
        api.get("/health", {"X-Request-Id": rid}),
        api.get("/refunds", {**user_headers, "X-Request-Id": rid}),
        api.get("/refunds", {"X-Request-Id": rid}),
        api.call("DELETE", f"/refunds/{UNKNOWN_REFUND}", None, {"X-Request-Id": rid}),
    ]
    # THEN every answer carries that same id
    assert [a.status for a in answers] == [200, 200, 401, 405]
    assert {a.header("X-Request-Id") for a in answers} == {rid}


def test_callers_request_id_is_echoed_whatever_its_characters(public_api: Api) -> None:
    # GIVEN request ids as other systems make them: an X-Ray trace id (with '=' and ';'),
    # a base64 id (with '+', '/' and '='), a path-like id
    for rid in (
        "Root=1-67891233-abcdef012345678912345678;Sampled=1",
        "c2Vzc2lvbi8xMjM+Pz8=",
        "gateway/req/42",
    ):
        # WHEN each is sent
        answer = public_api.get("/health", {"X-Request-Id": rid})
        # THEN it is the one answered
        assert answer.header("X-Request-Id") == rid


# ---------------------------------------------------------------- the envelope for 400s


MALFORMED = {
    "truncated": b'{"order_id": "o-1001",',
    "not-json": b"not json",
    "single-quotes": b"{'order_id': 'o-1001'}",
    "array": b"[]",
    "string": b'"a string"',
    "null": b"null",
    "not-utf8": b"\xff\xfe{}",
}


@pytest.mark.usefixtures("seeded_order")
def test_malformed_or_non_object_json_is_400(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, raw in MALFORMED.items():
        with subtests.test(msg=name):
            # GIVEN a body that is not a JSON object
            # WHEN it is posted to POST /refunds
            answer = api.post(
                "/refunds",
                raw,
                {**user_headers, "Idempotency-Key": f"k-{name}", "Content-Type": JSON},
            )
            # THEN 400 invalid_request in the envelope, never a 500
            assert (answer.status, answer.code) == (400, "invalid_request")
            assert answer.error["details"]
            assert answer.error["rule"] is None


def test_wrong_types_unknown_and_missing_fields_each_get_a_detail(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN an order with a text amount, an unknown field, and two required fields missing
    payload = order_payload(paid_amount="8800", colour="red")
    del payload["sku"], payload["status"]
    # WHEN the order system PUTs it
    answer = api.put("/internal/orders/o-1001", payload, service_headers)
    # THEN 400 invalid_request, one detail per field, each with its problem
    assert (answer.status, answer.code) == (400, "invalid_request")
    details = {d["field"]: d["problem"] for d in answer.error["details"]}
    assert set(details) == {"paid_amount", "colour", "sku", "status"}
    assert all(isinstance(problem, str) for problem in details.values())
    assert all(details.values())


def test_bad_query_is_400_naming_the_parameter(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for path, field in [
        ("/refunds?limit=0", "limit"),
        ("/refunds?cursor=%25%25%25", "cursor"),
        ("/refunds?page=2", "page"),
        (f"/refunds/{UNKNOWN_REFUND}?verbose=1", "verbose"),
        ("/health?probe=1", "probe"),
    ]:
        with subtests.test(msg=path):
            # GIVEN a query outside the contract: out of range, a bad cursor, unknown
            # WHEN it is sent
            answer = api.get(path, user_headers)
            # THEN 400 invalid_request with a detail for the parameter
            assert (answer.status, answer.code) == (400, "invalid_request")
            assert field in answer.fields()


def test_body_over_64_kib_is_413(api: Api, draft: dict[str, Any], user_headers) -> None:
    # GIVEN a valid message body padded to 64 KiB + 1 byte
    path = f"/refunds/{draft['refund_id']}/messages"
    # WHEN it is posted
    answer = api.post(path, _padded({"body": "hi"}, LIMIT + 1), user_headers)
    # THEN 413 payload_too_large
    assert (answer.status, answer.code) == (413, "payload_too_large")
    # AND exactly 64 KiB is still accepted
    assert api.post(path, _padded({"body": "hi"}, LIMIT), user_headers).status == 201


def test_known_route_with_another_method_is_405(
    api: Api, draft: dict[str, Any], user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for method, path in [
        ("DELETE", f"/refunds/{draft['refund_id']}"),
        ("PUT", f"/refunds/{draft['refund_id']}"),
        ("PATCH", f"/refunds/{draft['refund_id']}"),
        ("GET", f"/refunds/{draft['refund_id']}/cancel"),
        ("DELETE", "/refunds"),
        ("POST", "/health"),
        ("GET", "/internal/orders/o-1001"),
    ]:
        with subtests.test(msg=f"{method} {path}"):
            # GIVEN a known route
            # WHEN it is called with a method it does not serve
            answer = api.call(method, path, None, user_headers)
            # THEN 405 method_not_allowed in the envelope
            assert (answer.status, answer.code) == (405, "method_not_allowed")
    # AND the refund is untouched
    assert api.get(f"/refunds/{draft['refund_id']}", user_headers).json["status"] == "draft"


def test_body_on_a_route_that_takes_none_is_400(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    # GIVEN u-1's draft refund
    # WHEN u-1 cancels it with a JSON body (cancel takes no body)
    answer = api.post(f"/refunds/{draft['refund_id']}/cancel", {"reason": "x"}, user_headers)
    # THEN 400 invalid_request, and the refund is still a draft
    assert (answer.status, answer.code) == (400, "invalid_request")
    assert answer.fields() == ["body"]
    assert shop.get(draft["refund_id"])["status"] == "draft"


def test_unexpected_fault_is_500_internal_error_without_a_stack_trace(
    api: Api, aws: Any, user_headers: dict[str, str]
) -> None:
    # GIVEN storage fails underneath the API (the refunds table is gone)
    dynamodb = boto3.client("dynamodb", region_name=aws.settings.region)
    dynamodb.delete_table(TableName=aws.settings.refunds_table)
    # WHEN u-1 lists its refunds, sending a request id
    answer = api.get("/refunds", {**user_headers, "X-Request-Id": "req-500"})
    # THEN 500 internal_error in the envelope, with the request id and no internals
    assert (answer.status, answer.code) == (500, "internal_error")
    assert answer.header("X-Request-Id") == "req-500"
    for leak in (b"Traceback", b"ResourceNotFound", b"pynamodb", b".py"):
        assert leak not in answer.raw


# ---------------------------------------------------------------- the order of checks


def test_401_before_413_and_400(api: Api) -> None:
    # GIVEN no token, a body over 64 KiB, and malformed JSON
    # WHEN they are sent to a user route and to /internal
    big = api.post("/refunds", b"{" * (LIMIT + 10), {"Idempotency-Key": "k"})
    bad = api.post("/refunds", b"{oops", {"Idempotency-Key": "k"})
    internal = api.put("/internal/orders/o-1", b"x" * (LIMIT + 10))
    # THEN authentication answers first: 401
    assert [a.status for a in (big, bad, internal)] == [401, 401, 401]
    assert {a.code for a in (big, bad, internal)} == {"unauthenticated"}


def test_403_before_413_and_400(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN a plain user's token on /internal, with a huge body and with a bad body
    huge = api.put("/internal/orders/o-1", b"x" * (LIMIT + 10), user_headers)
    bad = api.put("/internal/orders/o-1", {"order_id": "o-2"}, user_headers)
    # THEN the role check answers first: 403 forbidden
    assert [(a.status, a.code) for a in (huge, bad)] == [(403, "forbidden")] * 2


def test_413_before_400(
    api: Api, user_headers: dict[str, str], service_headers: dict[str, str]
) -> None:
    # GIVEN valid tokens and bodies over 64 KiB that are not even JSON
    junk = b"{" * (LIMIT + 10)
    answers = [
        api.post("/refunds", junk, {**user_headers, "Idempotency-Key": "k"}),
        api.post("/refunds", junk, user_headers),
        api.put("/internal/orders/o-1", junk, service_headers),
        api.post(f"/refunds/{UNKNOWN_REFUND}/submit", junk, user_headers),
    ]
    # THEN 413 payload_too_large, before validation and existence
    assert [(a.status, a.code) for a in answers] == [(413, "payload_too_large")] * 4


def test_400_before_404(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN requests that are invalid AND about things that do not exist
    answers = [
        api.post(f"/refunds/{UNKNOWN_REFUND}/submit", {"bogus": 1}, user_headers),
        api.post(f"/refunds/{UNKNOWN_REFUND}/messages", {"body": ""}, user_headers),
        api.post(f"/refunds/{UNKNOWN_REFUND}/evidence", {"kind": "other"}, user_headers),
        api.post(f"/refunds/{UNKNOWN_REFUND}/cancel", {"x": 1}, user_headers),
        api.get("/orders/o-nope/refund-quote?reason=bored", user_headers),
        api.get(f"/refunds/{UNKNOWN_REFUND}?x=1", user_headers),
        api.post("/refunds", {"order_id": "o-nope"}, {**user_headers, "Idempotency-Key": "k"}),
    ]
    # THEN validation answers first: 400 invalid_request
    assert [(a.status, a.code) for a in answers] == [(400, "invalid_request")] * len(answers)


def test_missing_idempotency_key_before_404(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN a valid create body for an order that does not exist, without Idempotency-Key
    body = {"order_id": "o-nope", "reason": "other", "description": "没有这个订单的退款申请"}
    # WHEN it is posted
    answer = api.post("/refunds", body, user_headers)
    # THEN the key is checked right after the body: 400 idempotency_key_missing
    assert (answer.status, answer.code) == (400, "idempotency_key_missing")


def test_404_before_409(api: Api, shop: Shop, draft: dict[str, Any], other_headers) -> None:
    # GIVEN u-1's cancelled refund (any further cancel or submit would be 409)
    shop.cancel(draft["refund_id"])
    # WHEN u-2 cancels or submits it
    cancel = api.post(f"/refunds/{draft['refund_id']}/cancel", None, other_headers)
    submit = api.post(f"/refunds/{draft['refund_id']}/submit", None, other_headers)
    # THEN existence and ownership answer first: 404
    assert [(a.status, a.code) for a in (cancel, submit)] == [(404, "not_found")] * 2


def test_409_before_422(shop: Shop, draft: dict[str, Any]) -> None:
    # GIVEN a cancelled refund that also lacks its F2 evidence
    shop.cancel(draft["refund_id"])
    # WHEN u-1 submits it
    answer = shop.submit(draft["refund_id"])
    # THEN the state answers first: 409, not 422 missing_evidence
    assert (answer.status, answer.code) == (409, "conflict")


def test_open_refund_409_before_the_policy_422(shop: Shop, draft: dict[str, Any]) -> None:
    # GIVEN an open refund of o-1001, and the order since marked completed (X1 would refuse)
    shop.order(status="completed")
    # WHEN u-1 opens another refund of it
    answer = shop.create()
    # THEN 409 conflict E4, not 422 not_refundable X1
    assert (answer.status, answer.code, answer.error["rule"]) == (409, "conflict", "E4")


# ---------------------------------------------------------------- authentication


def _token(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    return "Bearer " + jwt.encode(claims, secret, "HS256")


BAD_AUTHORIZATIONS = {
    "missing": None,
    "expired": _token({"sub": "u-1", "exp": int(time.time()) - 120}),
    "alg-none": "Bearer " + _unsigned_token("u-1", "order-service"),
    "wrong-secret": _token(
        {"sub": "u-1", "exp": int(time.time()) + 3600, "cognito:groups": ["order-service"]},
        "another-secret-of-at-least-32-bytes!!",
    ),
    "garbage": "Bearer garbage",
    "no-exp": _token({"sub": "u-1"}),
    "basic": "Basic dXNlcjpwYXNz",
    "bearer-without-token": "Bearer",
    "other-scheme": "Token abc.def.ghi",
}


def test_missing_or_invalid_token_is_401(
    api: Api, draft: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for name, authorization in BAD_AUTHORIZATIONS.items():
        with subtests.test(msg=name):
            # GIVEN no token, or one that is expired, unsigned, wrongly signed, malformed, or
            # not a bearer token at all
            headers = {"Authorization": authorization} if authorization else {}
            # WHEN it calls user routes and /internal
            answers = [
                api.get("/refunds", headers),
                api.get(f"/refunds/{draft['refund_id']}", headers),
                api.post(f"/refunds/{draft['refund_id']}/cancel", None, headers),
                api.put("/internal/orders/o-1001", order_payload(status="completed"), headers),
            ]
            # THEN 401 unauthenticated every time
            assert [(a.status, a.code) for a in answers] == [(401, "unauthenticated")] * 4
    # AND nothing changed
    assert api.get(f"/refunds/{draft['refund_id']}", bearer("u-1")).json["status"] == "draft"
    quote = api.get("/orders/o-1001/refund-quote", bearer("u-1")).json
    assert quote["rule"] == "E4"


def test_expiry_has_at_most_30_seconds_of_leeway(api: Api) -> None:
    now = int(time.time())
    # GIVEN a token that expired 10 s ago, and one that expired 45 s ago
    recent = {"Authorization": _token({"sub": "u-1", "exp": now - 10})}
    stale = {"Authorization": _token({"sub": "u-1", "exp": now - 45})}
    # WHEN each lists refunds
    # THEN the first is within the leeway, the second is 401
    assert api.get("/refunds", recent).status == 200
    assert api.get("/refunds", stale).code == "unauthenticated"


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_token_signed_with_another_algorithm_is_401(api: Api) -> None:
    # GIVEN a token signed with the right secret, but HS512 (the local stage takes HS256)
    claims = {"sub": "u-1", "exp": int(time.time()) + 3600, "cognito:groups": ["order-service"]}
    headers = {"Authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, "HS512")}
    # WHEN it calls a user route and /internal
    answers = [
        api.get("/refunds", headers),
        api.put("/internal/orders/o-1001", order_payload(), headers),
    ]
    # THEN 401 unauthenticated
    assert [(a.status, a.code) for a in answers] == [(401, "unauthenticated")] * 2


def test_internal_route_without_the_order_service_role_is_403(
    api: Api, subtests: pytest.Subtests
) -> None:
    for groups in [(), ("cs-agent",), ("cs-senior",), ("order-services",)]:
        with subtests.test(msg=str(groups)):
            # GIVEN a valid token without the order-service role
            # WHEN it PUTs an order
            answer = api.put("/internal/orders/o-1001", order_payload(), bearer("u-1", *groups))
            # THEN 403 forbidden
            assert (answer.status, answer.code) == (403, "forbidden")


def test_order_service_may_put_orders(api: Api) -> None:
    # GIVEN a token in the order-service group, among others
    headers = bearer(ORDER_SERVICE, "cs-agent", "order-service")
    # WHEN it PUTs an order
    # THEN 200
    assert api.put("/internal/orders/o-1001", order_payload(), headers).status == 200


# ---------------------------------------------------------------- own data only


def test_another_users_refund_is_404_on_every_route(
    api: Api, shop: Shop, draft: dict[str, Any], other_headers: dict[str, str]
) -> None:
    # GIVEN u-1's draft refund
    base = f"/refunds/{draft['refund_id']}"
    # WHEN u-2 reads it, submits, cancels, adds evidence and posts a message
    answers = [
        api.get(base, other_headers),
        api.post(f"{base}/submit", None, other_headers),
        api.post(f"{base}/cancel", None, other_headers),
        api.post(
            f"{base}/evidence",
            {"kind": "other", "content_type": "image/png", "size": 10},
            other_headers,
        ),
        api.post(f"{base}/messages", {"body": "我来看看"}, other_headers),
    ]
    # THEN 404 not_found every time, never 403
    assert [(a.status, a.code) for a in answers] == [(404, "not_found")] * 5
    # AND the same as for a refund that does not exist, and the refund is untouched
    missing = api.get(f"/refunds/{UNKNOWN_REFUND}", other_headers)
    assert (missing.status, missing.code) == (404, "not_found")
    refund = shop.get(draft["refund_id"])
    assert (refund["status"], refund["evidence"], refund["messages"]) == ("draft", [], [])
