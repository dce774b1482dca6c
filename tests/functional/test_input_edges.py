"""Edges of what a request may be (API.md, Conventions and the error table): integers
written with a fraction, bodies in another media type or empty, and validation errors that
name the field at fault in our own words."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, model_validator

import app  # noqa: F401 - registers every blueprint, so that ROUTES is complete
from chalicelib.api.errors import FieldInvalid, validation_details
from chalicelib.api.http import ROUTES, Access, RouteSpec
from tests.functional.conftest import ORDER_SERVICE, Api, Contract, Shop
from tests.support import bearer, order_payload

UNKNOWN_REFUND = "rf_01ARZ3NDEKTSV4RRFFQ69G5FAV"
PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


# ---------------------------------------------------------------- the request models


def _request_models() -> Iterator[type[BaseModel]]:
    """Every body and query model of every route, and the models nested in them."""
    seen: set[type[BaseModel]] = set()
    todo = [m for spec in ROUTES for m in (spec.body, spec.query) if m is not None]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        yield model
        for info in model.model_fields.values():
            todo += [t for t in _leaves(info.annotation) if issubclass(t, BaseModel)]


def _leaves(annotation: Any) -> list[type]:
    """The classes an annotation is made of (through unions, Annotated, lists and dicts)."""
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return [annotation]
    return [leaf for arg in typing.get_args(annotation) for leaf in _leaves(arg)]


def _integer_fields() -> list[tuple[type[BaseModel], str]]:
    return [
        (model, name)
        for model in _request_models()
        for name, info in model.model_fields.items()
        if int in _leaves(info.annotation)
    ]


INTEGER_FIELDS = _integer_fields()


def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    """The field's own validation, as its model runs it (strict for a body)."""
    info = model.model_fields[name]
    strict = bool(model.model_config.get("strict"))
    annotated: Any = (
        Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
    )
    return TypeAdapter(annotated, config=ConfigDict(strict=strict))


def _bounds(schema: dict[str, Any]) -> tuple[int, int]:
    """The integer member's minimum and maximum, asserting that the schema says integer."""
    members = schema.get("anyOf", [schema])
    (integer,) = [m for m in members if m.get("type") == "integer"]
    assert not {"ge", "le", "gt", "lt"} & set(integer), integer
    return integer["minimum"], integer["maximum"]


def test_the_request_models_have_integer_fields_to_check() -> None:
    # GIVEN the integer fields found through ROUTES
    found = {f"{model.__name__}.{name}" for model, name in INTEGER_FIELDS}
    # THEN the known ones are among them (the search itself works)
    assert {"EvidenceIn.size", "OrderIn.version", "UsageIn.used_units", "GiftIn.value"} <= found
    assert {"OrderIn.list_price", "ApproveIn.amount", "ListRefundsQuery.limit"} <= found


@pytest.mark.parametrize(
    ("model", "name"), INTEGER_FIELDS, ids=[f"{m.__name__}.{n}" for m, n in INTEGER_FIELDS]
)
def test_every_integer_field_takes_an_integral_number_and_only_that(
    model: type[BaseModel], name: str
) -> None:
    adapter = _adapter(model, name)
    # GIVEN the field's documented bounds: an integer, bounded both ways
    low, high = _bounds(adapter.json_schema())
    # WHEN an integral number is written with a fraction, or with an exponent
    # THEN it is that integer (API.md: 5948.0 is an integer, as JSON Schema says)
    for written, value in [(f"{low}.0", low), (f"{high}.0", high), (f"{high}", high)]:
        taken = adapter.validate_json(written)
        assert (taken, type(taken)) == (value, int), written
    assert adapter.validate_json(f"{float(low):e}") == low
    # AND a fraction, infinity or a number past the bounds is refused, and in a body (JSON,
    # where a query has only text) a boolean or a string too
    refused = [f"{low}.5", "1e400", f"{high + 1}.0", f"{low - 1}.0"]
    if model.model_config.get("strict"):
        refused += ["true", f'"{low}"']
    for written in refused:
        with pytest.raises(ValidationError):
            adapter.validate_json(written)


def test_an_evidence_size_written_with_a_fraction_is_an_integer(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    path = f"/refunds/{draft['refund_id']}/evidence"
    # GIVEN a slot asked for with {"size": 5948.0}
    body = b'{"kind": "order_screenshot", "content_type": "image/png", "size": 5948.0}'
    # WHEN it is posted
    answer = api.post(path, body, {**user_headers, "Content-Type": "application/json"})
    # THEN 201, and the slot's size is the integer 5948
    assert answer.status == 201, answer.json
    (slot,) = shop.get(draft["refund_id"])["evidence"]
    assert (slot["size"], type(slot["size"])) == (5948, int)
    # AND 5948.5, true, "5948" and 1e400 are 400 naming size
    for size in (b"5948.5", b"true", b'"5948"', b"1e400"):
        refused = api.post(
            path,
            b'{"kind": "other", "content_type": "image/png", "size": ' + size + b"}",
            {**user_headers, "Content-Type": "application/json"},
        )
        assert (refused.status, refused.fields()) == (400, ["size"]), size


def test_an_order_with_every_integer_written_with_a_fraction_is_stored_with_integers(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN an order whose every integer is written as a JSON number with a fraction
    payload = order_payload(
        list_price=10000.0,
        paid_amount=8.8e3,
        shipping_fee=0.0,
        usage={"total_units": 100.0, "used_units": 1e1},
        gifts=[{"sku": "g-1", "title": "赠品", "value": 500.0}],
        version=3.0,
    )
    # WHEN the order system PUTs it
    answer = api.put("/internal/orders/o-1001", payload, service_headers)
    # THEN 200, with integers back
    assert answer.status == 200, answer.json
    order = answer.json
    numbers = [
        order["list_price"],
        order["paid_amount"],
        order["shipping_fee"],
        order["usage"]["total_units"],
        order["usage"]["used_units"],
        order["gifts"][0]["value"],
        order["version"],
    ]
    assert numbers == [10000, 8800, 0, 100, 10, 500, 3]
    assert all(type(number) is int for number in numbers)


def test_the_documented_schema_and_the_api_agree_on_integers(contract: Contract) -> None:
    # GIVEN the documented evidence body
    ref = "#/components/schemas/EvidenceIn"
    # THEN its size is still an integer in the document, with its bounds
    size = contract.document["components"]["schemas"]["EvidenceIn"]["properties"]["size"]
    assert (size["type"], size["minimum"]) == ("integer", 1)
    # AND a client validating against it takes 5948.0 as the API does, and refuses 5948.5
    contract.validate({"kind": "other", "content_type": "image/png", "size": 5948.0}, ref)
    with pytest.raises(AssertionError):
        contract.validate({"kind": "other", "content_type": "image/png", "size": 5948.5}, ref)


# ---------------------------------------------------------------- media types


def _headers_for(spec: RouteSpec) -> dict[str, str]:
    """A token the route lets through (none for the public routes)."""
    groups = {
        Access.USER: (),
        Access.CS: ("cs-senior",),
        Access.SENIOR: ("cs-senior",),
        Access.ORDER_SERVICE: ("order-service",),
    }
    if spec.access not in groups:
        return {}
    return bearer(
        ORDER_SERVICE if spec.access is Access.ORDER_SERVICE else "u-1", *groups[spec.access]
    )


def _typed(spec: RouteSpec, content_type: str | None) -> dict[str, str]:
    """The route's token, and ``content_type`` unless it is None (no Content-Type at all)."""
    typed = {"Content-Type": content_type} if content_type is not None else {}
    return {**_headers_for(spec), **typed}


def _path(spec: RouteSpec) -> str:
    """The route's path about things that do not exist (415 and 400 come before 404)."""
    return spec.path.format(
        refund_id=UNKNOWN_REFUND,
        order_id="o-none",
        evidence_id="ev-none",
        channel="alipay",
        name="no-such-schedule",
    )


def _routes(keep: Any) -> list[Any]:
    specs = [s for s in ROUTES if not s.raw_body and keep(s)]
    return [pytest.param(s, id=f"{s.method} {s.path}") for s in specs]


BODY_ROUTES = _routes(lambda s: s.body is not None)
NO_BODY_ROUTES = _routes(lambda s: s.body is None and s.method != "GET")
OPTIONAL_BODY_ROUTES = _routes(
    lambda s: s.method != "GET" and (s.body is None or not s.body_required)
)
REQUIRED_BODY_ROUTES = _routes(lambda s: s.body is not None and s.body_required)

OTHER_TYPES = (
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/jsonx",
    "application/json-patch+json",
    "application/json; charset=iso-8859-1",
    "application/json; charset=utf-16",
    "",
)


@pytest.mark.parametrize("spec", BODY_ROUTES)
def test_a_json_body_sent_as_another_media_type_is_415_on_every_body_route(
    api: Api, spec: RouteSpec
) -> None:
    # GIVEN a JSON body, and a token the route lets through
    body = b'{"x": 1}'
    for content_type in OTHER_TYPES:
        # WHEN it is sent as another media type (or a JSON one not in UTF-8)
        answer = api.call(spec.method, _path(spec), body, _typed(spec, content_type))
        # THEN 415 unsupported_media_type, before validation and existence
        assert (answer.status, answer.code) == (415, "unsupported_media_type"), content_type
    json_types: tuple[str | None, ...] = (
        "application/json",
        'Application/JSON; Charset="UTF-8"',
        None,
    )
    for json_type in json_types:
        # AND as JSON (a UTF-8 charset allowed, or untyped) it is read: 400, naming the unknown field
        answer = api.call(spec.method, _path(spec), body, _typed(spec, json_type))
        assert (answer.status, answer.code) == (400, "invalid_request"), json_type
        assert {"field": "x", "problem": "unknown field"} in answer.error["details"]


@pytest.mark.parametrize("spec", NO_BODY_ROUTES)
def test_a_typed_body_on_a_route_that_takes_none_is_415(api: Api, spec: RouteSpec) -> None:
    # GIVEN a route that takes no body
    # WHEN a text body is sent to it
    answer = api.call(spec.method, _path(spec), b"hello", _typed(spec, "text/plain"))
    # THEN 415, whatever route it is
    assert (answer.status, answer.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("spec", OPTIONAL_BODY_ROUTES)
def test_an_empty_body_is_no_body_whatever_its_media_type(api: Api, spec: RouteSpec) -> None:
    for content_type in ("text/plain", "application/octet-stream", "application/json", None):
        # GIVEN an empty body, typed or not, on a route whose body is absent or optional
        # WHEN it is sent
        answer = api.call(spec.method, _path(spec), b"", _typed(spec, content_type))
        # THEN it is no body: neither 415 nor 400; here the thing asked about does not exist
        assert answer.status not in (400, 415), (content_type, answer.json)
        if "{" in spec.path:
            assert (answer.status, answer.code) == (404, "not_found"), content_type


@pytest.mark.parametrize("spec", REQUIRED_BODY_ROUTES)
def test_an_empty_typed_body_where_one_is_required_is_400_not_415(
    api: Api, spec: RouteSpec
) -> None:
    # GIVEN a route whose body is required, and an empty body typed as text
    # WHEN it is sent
    answer = api.call(spec.method, _path(spec), b"", _typed(spec, "text/plain"))
    # THEN the body is missing (400 naming it), not of the wrong type
    assert (answer.status, answer.code, answer.fields()) == (400, "invalid_request", ["body"])


def test_an_empty_typed_body_cancels_and_submits_like_no_body(
    api: Api, shop: Shop, seeded_order: dict[str, Any], user_headers: dict[str, str]
) -> None:
    plain = {**user_headers, "Content-Type": "text/plain"}
    # GIVEN a draft with the evidence F2 requires
    ready = shop.refund()["refund_id"]
    shop.evidence(ready, "order_screenshot", "problem_screenshot")
    # WHEN u-1 submits it with an empty text/plain body
    submitted = api.post(f"/refunds/{ready}/submit", b"", plain)
    # THEN it is submitted
    assert (submitted.status, submitted.json["status"]) == (200, "submitted")
    # AND a cancel with an empty text/plain body cancels it
    cancelled = api.post(f"/refunds/{ready}/cancel", b"", plain)
    assert (cancelled.status, cancelled.json["status"]) == (200, "cancelled")


# ---------------------------------------------------------------- naming the field at fault


def _problems(answer: Any) -> dict[str, str]:
    assert (answer.status, answer.code) == (400, "invalid_request"), answer.json
    return {d["field"]: d["problem"] for d in answer.error["details"]}


def _no_prefix(raw: bytes) -> None:
    for prefix in PYDANTIC_PREFIXES:
        assert prefix.encode() not in raw


def test_paid_above_price_names_paid_amount_in_our_words(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN an order paid above its list price plus shipping (API.md: 400)
    payload = order_payload(list_price=10000, shipping_fee=0, paid_amount=10001)
    # WHEN the order system PUTs it
    answer = api.put("/internal/orders/o-1001", payload, service_headers)
    # THEN the detail names paid_amount, not the body, and says why without pydantic's prefix
    assert _problems(answer) == {"paid_amount": "above list_price plus shipping_fee"}
    _no_prefix(answer.raw)


def test_used_above_total_names_the_nested_field(api: Api, service_headers: dict[str, str]) -> None:
    # GIVEN an order whose usage has more used units than units
    payload = order_payload(usage={"total_units": 10, "used_units": 11})
    # WHEN it is PUT
    answer = api.put("/internal/orders/o-1001", payload, service_headers)
    # THEN the detail names usage.used_units
    assert _problems(answer) == {"usage.used_units": "above total_units"}
    _no_prefix(answer.raw)


def test_the_clock_names_the_field_given_too_many_and_the_body_given_none(api: Api) -> None:
    # GIVEN bodies of POST /_local/clock with two fields, with none, and with only a null
    both = api.post("/_local/clock", {"now": "2026-12-03T09:00:00Z", "advance_hours": 3})
    none = api.post("/_local/clock", {})
    null = api.post("/_local/clock", {"now": None})
    # THEN the second field given is named; with nothing given, the body is
    assert _problems(both) == {"advance_hours": "give only one of now, advance_hours"}
    assert _problems(none) == {"body": "give exactly one of now, advance_hours, reset"}
    assert _problems(null) == {"body": "give exactly one of now, advance_hours, reset"}
    for answer in (both, none, null):
        _no_prefix(answer.raw)


def test_field_validators_speak_without_pydantic_prefixes(
    api: Api, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    agent = bearer("agent-1", "cs-agent")
    # GIVEN a slot of a type evidence cannot be, a rejection citing no policy rule, an order
    # with a time without its zone and a ratio given as text
    answers = [
        api.post(
            f"/refunds/{draft['refund_id']}/evidence",
            {"kind": "other", "content_type": "image/gif", "size": 10},
            user_headers,
        ),
        api.post(f"/admin/refunds/{UNKNOWN_REFUND}/reject", {"rule": "Z9", "message": "x"}, agent),
        api.put(
            "/internal/orders/o-1001",
            order_payload(paid_at="2026-11-20T08:00:00", service_completion="0.5"),
            bearer(ORDER_SERVICE, "order-service"),
        ),
    ]
    # THEN each names its field, in the validator's own words
    problems = [_problems(answer) for answer in answers]
    assert problems[0] == {
        "content_type": "must be one of image/jpeg, image/png, image/webp, application/pdf"
    }
    assert problems[1] == {"rule": "must be a rule id of the refund policy (E1, V2, PH1, ...)"}
    assert problems[2]["service_completion"] == "must be a JSON number"
    assert set(problems[2]) == {"paid_at", "service_completion"}
    for answer in answers:
        _no_prefix(answer.raw)


class _Line(BaseModel):
    low: int
    high: int

    @model_validator(mode="after")
    def _ordered(self) -> _Line:
        if self.high < self.low:
            raise FieldInvalid("high", "below low")
        return self


class _Lines(BaseModel):
    lines: list[_Line]
    note: str

    @model_validator(mode="after")
    def _noted(self) -> _Lines:
        if not self.note:
            raise AssertionError("a note is required")  # pydantic: "Assertion failed, ..."
        return self


def test_validation_details_name_the_field_a_model_validator_is_about() -> None:
    # GIVEN a model validator's finding about a field of the second item of a list, and an
    # assertion about the whole object
    with pytest.raises(ValidationError) as bad_line:
        _Lines.model_validate(
            {"lines": [{"low": 1, "high": 2}, {"low": 3, "high": 2}], "note": "n"}
        )
    with pytest.raises(ValidationError) as no_note:
        _Lines.model_validate({"lines": [], "note": ""})
    # WHEN they are shaped for the envelope
    # THEN the field is the one the finding is about, and the words are the validator's
    assert validation_details(bad_line.value) == [{"field": "lines.1.high", "problem": "below low"}]
    assert validation_details(no_note.value) == [{"field": "body", "problem": "a note is required"}]


def test_malformed_json_is_named_the_body(api: Api, service_headers: dict[str, str]) -> None:
    # GIVEN a truncated body
    answer = api.put("/internal/orders/o-1", b'{"order_id": "o-1",', service_headers)
    # THEN one detail, about the body, saying it is malformed JSON
    (detail,) = answer.error["details"]
    assert detail["field"] == "body"
    assert detail["problem"].startswith("malformed JSON: ")
    assert json.loads(answer.raw)["error"]["code"] == "invalid_request"
