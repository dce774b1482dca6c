"""Routes anyone may call: liveness, this API's OpenAPI document, the product-page rules."""

from __future__ import annotations

import json
from functools import lru_cache

from chalice.app import Blueprint

from chalicelib.api.asyncapi import build_asyncapi
from chalicelib.api.http import ROUTES, Access, Call, Reply, Router
from chalicelib.api.models import (
    AsyncApiOut,
    HealthOut,
    OpenApiOut,
    RefundPolicyOut,
    RefundPolicyQuery,
)
from chalicelib.api.openapi import build_openapi
from chalicelib.bootstrap import get_verifier
from chalicelib.domain.rules import rules_for
from chalicelib.settings import get_settings

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)


@api.route("/health", "GET", access=Access.PUBLIC, response=HealthOut, summary="Liveness")
def health(call: Call) -> HealthOut:
    return HealthOut(status="ok")


@lru_cache(maxsize=1)
def _openapi_document() -> str:
    return json.dumps(build_openapi(ROUTES, "Refunds API", "1.0.0"), ensure_ascii=False)


@api.route(
    "/openapi.json",
    "GET",
    access=Access.PUBLIC,
    response=OpenApiOut,
    summary="This API's OpenAPI 3 document",
)
def openapi(call: Call) -> Reply:
    return Reply(_openapi_document())


@api.route(
    "/refund-policy",
    "GET",
    access=Access.PUBLIC,
    query=RefundPolicyQuery,
    response=RefundPolicyOut,
    summary="The refund rules a product page shows (F4)",
)
def refund_policy(call: Call) -> RefundPolicyOut:
    return RefundPolicyOut.of(call.query.kind, rules_for(call.query.kind))


@lru_cache(maxsize=1)
def _asyncapi_document() -> str:
    return json.dumps(build_asyncapi(get_settings().event_bus), ensure_ascii=False)


@api.route(
    "/asyncapi.json",
    "GET",
    access=Access.PUBLIC,
    response=AsyncApiOut,
    summary="The AsyncAPI 3 document of the refund events",
)
def asyncapi(call: Call) -> Reply:
    return Reply(_asyncapi_document())
