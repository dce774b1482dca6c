"""GET /openapi.json: a valid OpenAPI 3 document that describes exactly the routes served.

Every answer of the functional suite is already validated against the documented schema of
its route, method and status (conftest.Api). Here: the document itself, the routes, methods,
parameters and statuses it lists, and the main response bodies checked by name.
"""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.functional.conftest import Api, Contract, Shop
from tests.support import order_payload

ROUTES = {
    ("/health", "get"),
    ("/openapi.json", "get"),
    ("/refund-policy", "get"),
    ("/internal/orders/{order_id}", "put"),
    ("/orders/{order_id}/refund-quote", "get"),
    ("/refunds", "post"),
    ("/refunds", "get"),
    ("/refunds/{refund_id}", "get"),
    ("/refunds/{refund_id}/evidence", "post"),
    ("/refunds/{refund_id}/submit", "post"),
    ("/refunds/{refund_id}/cancel", "post"),
    ("/refunds/{refund_id}/messages", "post"),
    ("/refunds/{refund_id}/evidence/{evidence_id}", "delete"),
    ("/refunds/{refund_id}/return-shipment", "post"),
    ("/refunds/{refund_id}/appeal", "post"),
    ("/refunds/{refund_id}/nudge", "post"),
    ("/admin/refunds", "get"),
    ("/admin/refunds/{refund_id}", "get"),
    ("/admin/refunds/{refund_id}/claim", "post"),
    ("/admin/refunds/{refund_id}/approve", "post"),
    ("/admin/refunds/{refund_id}/reject", "post"),
    ("/admin/refunds/{refund_id}/request-info", "post"),
    ("/admin/refunds/{refund_id}/return-received", "post"),
    ("/admin/refunds/{refund_id}/retry-payout", "post"),
    ("/admin/orders/{order_id}/status", "put"),
    ("/admin/stats", "get"),
    ("/admin/reconciliation", "get"),
    ("/webhooks/payouts/{channel}", "post"),
    ("/_local/channels/{channel}", "put"),
    ("/_local/channels/{channel}/statement", "get"),
    ("/_local/schedules/{name}/run", "post"),
    ("/_local/clock", "post"),
    ("/_local/events", "get"),
    ("/asyncapi.json", "get"),
}
PUBLIC = {
    ("/health", "get"),
    ("/openapi.json", "get"),
    ("/refund-policy", "get"),
    ("/webhooks/payouts/{channel}", "post"),  # the channel's signature instead of a token
    ("/_local/channels/{channel}", "put"),
    ("/_local/channels/{channel}/statement", "get"),
    ("/_local/schedules/{name}/run", "post"),
    ("/_local/clock", "post"),
    ("/_local/events", "get"),
    ("/asyncapi.json", "get"),
}
DECISION = {200, 400, 401, 403, 404, 409, 413, 415}

# The statuses API.md says each route can answer (besides 500), from its checks and errors.
STATUSES = {
    ("/health", "get"): {200, 400},
    ("/openapi.json", "get"): {200, 400},
    ("/refund-policy", "get"): {200, 400},
    ("/internal/orders/{order_id}", "put"): {200, 400, 401, 403, 413, 415},
    ("/orders/{order_id}/refund-quote", "get"): {200, 400, 401, 404},
    ("/refunds", "post"): {201, 400, 401, 404, 409, 413, 415, 422},
    ("/refunds", "get"): {200, 400, 401},
    ("/refunds/{refund_id}", "get"): {200, 400, 401, 404},
    ("/refunds/{refund_id}/evidence", "post"): {201, 400, 401, 404, 409, 413, 415},
    ("/refunds/{refund_id}/submit", "post"): {200, 400, 401, 404, 409, 413, 415, 422},
    ("/refunds/{refund_id}/cancel", "post"): {200, 400, 401, 404, 409, 413, 415},
    ("/refunds/{refund_id}/messages", "post"): {201, 400, 401, 404, 413, 415},
    ("/refunds/{refund_id}/evidence/{evidence_id}", "delete"): {204, 400, 401, 404, 409},
    ("/refunds/{refund_id}/return-shipment", "post"): {200, 400, 401, 404, 409, 413, 415},
    ("/refunds/{refund_id}/appeal", "post"): {200, 400, 401, 404, 409, 413, 415},
    ("/admin/refunds", "get"): {200, 400, 401, 403},
    ("/admin/refunds/{refund_id}", "get"): {200, 400, 401, 403, 404},
    ("/admin/refunds/{refund_id}/claim", "post"): {200, 400, 401, 403, 404, 409, 413, 415},
    ("/admin/refunds/{refund_id}/approve", "post"): DECISION | {422},
    ("/admin/refunds/{refund_id}/reject", "post"): DECISION,
    ("/admin/refunds/{refund_id}/request-info", "post"): DECISION,
    ("/admin/refunds/{refund_id}/return-received", "post"): DECISION,
    ("/admin/refunds/{refund_id}/retry-payout", "post"): DECISION,
    ("/admin/orders/{order_id}/status", "put"): DECISION,
    ("/admin/stats", "get"): {200, 400, 401, 403},
    ("/admin/reconciliation", "get"): {200, 400, 401, 403, 404},
    ("/webhooks/payouts/{channel}", "post"): {200, 400, 401, 404, 413},
    ("/_local/channels/{channel}", "put"): {200, 400, 404, 413, 415},
    ("/_local/channels/{channel}/statement", "get"): {200, 400, 404},
    ("/_local/schedules/{name}/run", "post"): {200, 400, 404},
    ("/_local/clock", "post"): {200, 400, 404, 413, 415},
    ("/_local/events", "get"): {200, 400, 404},
    ("/asyncapi.json", "get"): {200, 400},
    ("/refunds/{refund_id}/nudge", "post"): {200, 400, 401, 404, 409, 413, 415, 429},
}


def _operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    methods = {"get", "put", "post", "delete", "patch", "head", "options"}
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def test_document_is_valid_openapi_3(public_api: Api) -> None:
    # GIVEN no token
    # WHEN GET /openapi.json
    answer = public_api.get("/openapi.json")
    # THEN a document that passes the OpenAPI validator
    assert answer.status == 200
    document = answer.json
    assert document["openapi"].startswith("3.")
    validate(document)


def test_document_lists_every_route_and_method_served(contract: Contract) -> None:
    # GIVEN the document
    # THEN it lists exactly the implemented routes and methods
    assert _operations(contract.document) == ROUTES


@pytest.mark.parametrize(("path", "method"), sorted(ROUTES))
def test_each_operation_documents_its_statuses_and_security(
    contract: Contract, path: str, method: str
) -> None:
    operation = contract.document["paths"][path][method]
    # THEN every status API.md gives the route is documented, each error with the envelope
    documented = {int(status) for status in operation["responses"]}
    missing = STATUSES[(path, method)] - documented
    assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"
    for status, response in operation["responses"].items():
        if int(status) == 204:
            assert "content" not in response
            continue
        schema = response["content"]["application/json"]["schema"]
        if int(status) >= 400:
            assert schema == {"$ref": "#/components/schemas/ErrorOut"}, status
    # AND public routes need no token, the others a bearer token
    expected = [] if (path, method) in PUBLIC else [{"bearer": []}]
    assert operation["security"] == expected


def test_parameters_are_documented(contract: Contract) -> None:
    paths = contract.document["paths"]

    def params(path: str, method: str) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in paths[path][method]["parameters"]}

    # THEN the query parameters, path parameters and Idempotency-Key are described
    assert params("/refund-policy", "get")["kind"]["required"] is True
    assert set(params("/orders/{order_id}/refund-quote", "get")) == {
        "order_id",
        "reason",
        "gifts_returned",
    }
    listing = params("/refunds", "get")
    assert set(listing) == {"status", "limit", "cursor"}
    assert listing["limit"]["schema"]["minimum"] == 1
    assert listing["limit"]["schema"]["maximum"] == 100
    key = params("/refunds", "post")["Idempotency-Key"]
    assert (key["in"], key["required"]) == ("header", True)
    assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
    assert params("/refunds/{refund_id}", "get")["refund_id"]["in"] == "path"
    # AND the submit body is optional, the other bodies required
    assert paths["/refunds/{refund_id}/submit"]["post"]["requestBody"]["required"] is False
    assert paths["/refunds"]["post"]["requestBody"]["required"] is True
    assert "requestBody" not in paths["/refunds/{refund_id}/cancel"]["post"]


def test_documented_request_schemas_accept_what_the_api_accepts(contract: Contract) -> None:
    paths = contract.document["paths"]

    def body_ref(path: str, method: str) -> str:
        return paths[path][method]["requestBody"]["content"]["application/json"]["schema"]["$ref"]

    # GIVEN bodies the API takes
    # THEN the documented request schemas accept them too
    contract.validate(
        order_payload(gifts=[{"sku": "g", "title": "赠品", "value": 5}], version=2),
        body_ref("/internal/orders/{order_id}", "put"),
    )
    contract.validate(
        {"order_id": "o-1", "reason": "invalid_code", "description": "点卡无效"},
        body_ref("/refunds", "post"),
    )
    contract.validate(
        {"kind": "order_screenshot", "content_type": "image/png", "size": 48213},
        body_ref("/refunds/{refund_id}/evidence", "post"),
    )
    contract.validate({"body": "你好"}, body_ref("/refunds/{refund_id}/messages", "post"))
    contract.validate({}, body_ref("/refunds/{refund_id}/submit", "post"))


def test_answers_validate_against_the_documented_schemas(
    api: Api, shop: Shop, contract: Contract, user_headers: dict[str, str]
) -> None:
    def schema(path: str, method: str, status: int) -> str:
        found = contract.response_schema(path, method, status)
        assert found is not None, f"{method} {path} {status} is not documented"
        return found["$ref"]

    # GIVEN a refund walked through the routes
    order = shop.order(gifts=[{"sku": "g-1", "title": "赠品", "value": 300}])
    quote = api.get("/orders/o-1001/refund-quote?gifts_returned=false", user_headers).json
    refund = shop.refund(reason="changed_mind")
    slot = shop.slot(refund["refund_id"])
    shop.upload(slot, b"not a png")
    message = api.post(
        f"/refunds/{refund['refund_id']}/messages", {"body": "谢谢"}, user_headers
    ).json
    read = shop.get(refund["refund_id"])
    listing = api.get("/refunds", user_headers).json
    errors = {
        400: api.get("/refunds?limit=0", user_headers).json,
        401: api.get("/refunds").json,
        404: api.get("/refunds/rf_01ARZ3NDEKTSV4RRFFQ69G5FAV", user_headers).json,
        409: shop.create(reason="changed_mind").json,
        422: shop.submit(refund["refund_id"]).json,
    }
    # THEN each body validates against its route's documented schema
    contract.validate(order, schema("/internal/orders/{order_id}", "put", 200))
    contract.validate(quote, schema("/orders/{order_id}/refund-quote", "get", 200))
    contract.validate(refund, schema("/refunds", "post", 201))
    contract.validate(slot, schema("/refunds/{refund_id}/evidence", "post", 201))
    contract.validate(message, schema("/refunds/{refund_id}/messages", "post", 201))
    contract.validate(read, schema("/refunds/{refund_id}", "get", 200))
    contract.validate(listing, schema("/refunds", "get", 200))
    for status, body in errors.items():
        contract.validate(body, "#/components/schemas/ErrorOut")
        assert body["error"]["code"], status
    # AND the bodies were the interesting ones: a deduction, a problem, a message, a list
    assert any(b["item"] == "gift_not_returned" for b in quote["breakdown"])
    assert read["evidence"][0]["problem"]
    assert read["messages"] == [message]
    assert [item["refund_id"] for item in listing["items"]] == [refund["refund_id"]]


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("RefundOut", {"refund_id": "rf_1"}),
        ("QuoteOut", {"order_id": "o-1", "refundable": "yes"}),
        ("ErrorOut", {"error": {"code": "x"}}),
    ],
)
def test_documented_schemas_are_not_vacuous(contract: Contract, name: str, wrong: dict) -> None:
    # GIVEN a body missing required fields or with a wrong type
    # THEN the documented schema refuses it (the validation above means something)
    problems = list(contract.validator({"$ref": f"#/components/schemas/{name}"}).iter_errors(wrong))
    assert problems
