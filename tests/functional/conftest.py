"""Functional fixtures: the app through Chalice's test client, checked against its contract.

Every request goes through ``api`` (an ``Api``), which checks what API.md promises of every
answer, whatever the test is about: an ``X-Request-Id`` header, a UTF-8 JSON body, the error
envelope on every 4xx/5xx, and a body that validates against the response schema the OpenAPI
document gives for that route, method and status (when it documents that status; test_openapi
checks which statuses are documented). ``shop`` seeds orders and walks refunds through the
routes, so that tests read as GIVEN / WHEN / THEN.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.support import as_json, bearer, order_payload

USER = "u-1"
OTHER_USER = "u-2"
ORDER_SERVICE = "svc-orders"

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(64)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64)
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64)
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + bytes(64)
MAGIC = {"image/png": PNG, "image/jpeg": JPEG, "image/webp": WEBP, "application/pdf": PDF}

DESCRIPTION = "订单 o-1001 的点卡到账后提示序列号无效，要求全额退款"


# ---------------------------------------------------------------- the OpenAPI contract


class Contract:
    """The OpenAPI document: route templates, and a validator per documented response."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._routes = [
            (re.compile("^" + re.sub(r"{\w+}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]
        self._validators: dict[str, Draft202012Validator] = {}

    def template(self, path: str) -> str | None:
        """The documented path template that ``path`` (without its query) falls under."""
        matches = [template for pattern, template in self._routes if pattern.match(path)]
        # A literal segment beats a parameter: the template with fewer braces wins.
        return min(matches, key=lambda t: t.count("{")) if matches else None

    def response_schema(self, template: str, method: str, status: int) -> dict[str, Any] | None:
        operation = self.document["paths"].get(template, {}).get(method.lower())
        if operation is None:
            return None
        response = operation["responses"].get(str(status))
        if response is None or "content" not in response:
            return None  # undocumented, or no body (204)
        return response["content"]["application/json"]["schema"]

    def validator(self, schema: dict[str, Any]) -> Draft202012Validator:
        """A validator for ``schema``, resolving ``#/components/...`` against the document."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._validators:
            root = {**schema, "components": self.document["components"]}
            self._validators[key] = Draft202012Validator(root)
        return self._validators[key]

    def validate(self, body: Any, ref: str) -> None:
        """Validate ``body`` against ``{"$ref": ref}``; raises with every problem listed."""
        problems = [e.message for e in self.validator({"$ref": ref}).iter_errors(body)]
        assert not problems, f"{ref}: {problems}"


@pytest.fixture(scope="session")
def public_client() -> Iterator[Any]:
    """A test client without AWS, for the public routes, which never touch storage."""
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="local") as client:
        yield client


@pytest.fixture(scope="session")
def contract(public_client: Any) -> Contract:
    """The OpenAPI document as GET /openapi.json serves it."""
    response = public_client.http.get("/openapi.json")
    assert response.status_code == 200
    return Contract(json.loads(response.body))


# ---------------------------------------------------------------- requests and answers


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    raw: bytes
    json: Any

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None

    @property
    def error(self) -> dict[str, Any]:
        return self.json["error"]

    @property
    def code(self) -> str:
        return self.json["error"]["code"]

    def fields(self) -> list[str]:
        """The ``field`` of every detail of an error."""
        return [detail.get("field") for detail in self.json["error"]["details"]]


ENVELOPE_KEYS = {"code", "message", "rule", "details"}


@dataclass
class Api:
    """Chalice's test client, with the checks API.md makes of every answer."""

    client: Any
    contract: Contract

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        sent = dict(headers or {})
        if body is None:
            raw = b""
        elif isinstance(body, bytes):
            raw = body
        else:
            raw = as_json(body)
            sent.setdefault("Content-Type", "application/json")
        response = self.client.http.request(method, path, headers=sent, body=raw)
        answer = Answer(
            status=response.status_code,
            headers=dict(response.headers),
            raw=response.body,
            json=json.loads(response.body.decode("utf-8")) if response.body else None,
        )
        self._check(method, path, answer)
        return answer

    def _check(self, method: str, path: str, answer: Answer) -> None:
        # Every response carries X-Request-Id (API.md, Conventions).
        assert answer.header("X-Request-Id"), f"{method} {path}: no X-Request-Id"
        if answer.status >= 400:
            # Errors always have the envelope's shape, never a stack trace.
            assert set(answer.json) == {"error"}, answer.json
            error = answer.json["error"]
            assert set(error) == ENVELOPE_KEYS, error
            assert isinstance(error["code"], str)
            assert error["code"]
            assert isinstance(error["message"], str)
            assert "Traceback" not in error["message"]
            assert error["rule"] is None or isinstance(error["rule"], str)
            assert isinstance(error["details"], list)
        template = self.contract.template(path.split("?", 1)[0])
        if template is None:
            return
        schema = self.contract.response_schema(template, method, answer.status)
        if schema is not None:
            problems = [e.message for e in self.contract.validator(schema).iter_errors(answer.json)]
            assert not problems, f"{method} {path} {answer.status} vs OpenAPI: {problems}"

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Answer:
        return self.call("GET", path, None, headers)

    def post(self, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Answer:
        return self.call("POST", path, body, headers)

    def put(self, path: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Answer:
        return self.call("PUT", path, body, headers)


@pytest.fixture
def api(client: Any, contract: Contract) -> Api:
    """The whole app on a fresh moto-backed AWS (the ``aws`` fixture)."""
    return Api(client, contract)


@pytest.fixture
def public_api(public_client: Any, contract: Contract) -> Api:
    """The public routes only: /health, /openapi.json, /refund-policy (no AWS set up)."""
    return Api(public_client, contract)


@pytest.fixture
def sqs(aws: Any) -> Any:
    """The step queues and their dead-letter queues on moto, as the local stack makes them."""
    import boto3

    from infra.local.stack import create_step_queues

    client = boto3.client("sqs", region_name=aws.settings.region)
    create_step_queues(client)
    return client


@pytest.fixture
def user_headers() -> dict[str, str]:
    return bearer(USER)


@pytest.fixture
def other_headers() -> dict[str, str]:
    return bearer(OTHER_USER)


@pytest.fixture
def service_headers() -> dict[str, str]:
    return bearer(ORDER_SERVICE, "order-service")


# ---------------------------------------------------------------- walking refunds through


@dataclass
class Shop:
    """Seeds orders and drives refunds through the HTTP routes, asserting each step worked."""

    api: Api
    aws: Any
    user_headers: dict[str, str]
    service_headers: dict[str, str]
    _keys: Iterator[int] = field(default_factory=lambda: count(1))

    def order(self, **overrides: Any) -> dict[str, Any]:
        payload = order_payload(**overrides)
        answer = self.api.put(
            f"/internal/orders/{payload['order_id']}", payload, self.service_headers
        )
        assert answer.status == 200, answer.json
        return answer.json

    def key(self) -> str:
        return f"key-{next(self._keys)}"

    def create(
        self,
        order_id: str = "o-1001",
        reason: str = "invalid_code",
        *,
        headers: Mapping[str, str] | None = None,
        key: str | None = None,
        **body: Any,
    ) -> Answer:
        payload = {"order_id": order_id, "reason": reason, "description": DESCRIPTION, **body}
        sent = {**(headers or self.user_headers), "Idempotency-Key": key or self.key()}
        return self.api.post("/refunds", payload, sent)

    def refund(self, order_id: str = "o-1001", reason: str = "invalid_code", **body: Any) -> dict:
        """A draft refund of a (seeded) order."""
        answer = self.create(order_id, reason, **body)
        assert answer.status == 201, answer.json
        return answer.json

    def get(self, refund_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/refunds/{refund_id}", self.user_headers)
        assert answer.status == 200, answer.json
        return answer.json

    def slot(
        self,
        refund_id: str,
        kind: str = "order_screenshot",
        content_type: str = "image/png",
        size: int = 4096,
    ) -> dict[str, Any]:
        answer = self.api.post(
            f"/refunds/{refund_id}/evidence",
            {"kind": kind, "content_type": content_type, "size": size},
            self.user_headers,
        )
        assert answer.status == 201, answer.json
        return answer.json

    def upload(self, slot: dict[str, Any], data: bytes, key: str | None = None) -> None:
        """Put the object where the slot's presigned POST would (or under ``key``)."""
        fields = slot["upload"]["fields"]
        self.aws.s3.put_object(
            Bucket=self.aws.settings.evidence_bucket,
            Key=key or fields["key"],
            Body=data,
            ContentType=fields["Content-Type"],
        )

    def evidence(self, refund_id: str, *kinds: str, content_type: str = "image/png") -> None:
        """Slots of ``kinds``, each uploaded with a real file of ``content_type``."""
        for kind in kinds:
            self.upload(self.slot(refund_id, kind, content_type), MAGIC[content_type])

    def submit(self, refund_id: str) -> Answer:
        return self.api.post(f"/refunds/{refund_id}/submit", None, self.user_headers)

    def cancel(self, refund_id: str) -> Answer:
        return self.api.post(f"/refunds/{refund_id}/cancel", None, self.user_headers)


@pytest.fixture
def shop(api: Api, aws: Any, user_headers: dict[str, str], service_headers: dict[str, str]) -> Shop:
    return Shop(api, aws, user_headers, service_headers)


@pytest.fixture
def seeded_order(shop: Shop) -> dict[str, Any]:
    """GIVEN u-1's delivered game card o-1001, 8800 fen paid, deadline far ahead."""
    return shop.order()


@pytest.fixture
def draft(shop: Shop, seeded_order: dict[str, Any]) -> dict[str, Any]:
    """GIVEN a draft refund of o-1001 for an invalid code (F2: order + problem screenshot)."""
    return shop.refund()
