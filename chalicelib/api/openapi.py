"""The OpenAPI 3.1 document, built from the route declarations and their pydantic models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .http import Access, RouteSpec
from .models import ErrorOut

__all__ = ["build_openapi"]

_PATH_PARAM = re.compile(r"{(\w+)}")
_ERROR_TEXT = {
    400: "Invalid request (invalid_request, idempotency_key_missing)",
    401: "No valid token (unauthenticated)",
    403: "The token lacks the role (forbidden)",
    404: "No such resource, or another user's (not_found)",
    409: "State conflict (conflict)",
    413: "Body over 64 KiB (payload_too_large)",
    415: "A body that is not application/json (unsupported_media_type)",
    422: "Policy refusal (not_refundable, missing_evidence, idempotency_key_reused)",
    429: "Too many requests (too_many_requests)",
    500: "Unexpected fault (internal_error)",
}
_REF = "#/components/schemas/{model}"
_REQUEST_ID_HEADER = {
    "X-Request-Id": {
        "description": "The caller's X-Request-Id if it sent one, else a new one",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
    }
}


def _error_statuses(spec: RouteSpec) -> list[int]:
    statuses = {400, 500, *spec.errors}
    if spec.access is Access.CHANNEL:
        statuses |= {401}
    elif spec.access is not Access.PUBLIC:
        statuses |= {401}
        if spec.access is not Access.USER:
            statuses |= {403}
    # Every route reads its body, whether it takes one or not: it refuses one over 64 KiB,
    # and, but for a webhook (which takes what its channel sends), one that is not JSON.
    statuses |= {413}
    if not spec.raw_body:
        statuses |= {415}
    if _PATH_PARAM.search(spec.path):
        statuses |= {404}
    return sorted(statuses)


def _query_parameters(model: type[BaseModel], schemas: dict[str, Any]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=_REF)
    schemas.update(schema.pop("$defs", {}))
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema.get("properties", {}).items()
    ]


def build_openapi(specs: list[RouteSpec], title: str, version: str) -> dict[str, Any]:
    models: list[tuple[type[BaseModel], Any]] = [(ErrorOut, "serialization")]
    for spec in specs:
        models.append((spec.response, "serialization"))
        if spec.body is not None:
            models.append((spec.body, "validation"))
    refs, defs = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    error_ref = refs[(ErrorOut, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for spec in specs:
        parameters: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PATH_PARAM.findall(spec.path)
        ]
        if spec.query is not None:
            parameters += _query_parameters(spec.query, schemas)
        parameters += [
            {
                "name": header,
                "in": "header",
                "required": True,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
            for header in spec.headers
        ]
        answer: dict[str, Any] = {"description": "OK", "headers": _REQUEST_ID_HEADER}
        if spec.status != 204:
            answer["content"] = {
                "application/json": {"schema": refs[(spec.response, "serialization")]}
            }
        responses: dict[str, Any] = {str(spec.status): answer}
        for status in _error_statuses(spec):
            responses[str(status)] = {
                "description": _ERROR_TEXT[status],
                "headers": _REQUEST_ID_HEADER,
                "content": {"application/json": {"schema": error_ref}},
            }
        operation: dict[str, Any] = {
            "operationId": spec.name,
            "summary": spec.summary,
            "parameters": parameters,
            "responses": responses,
            "security": [] if spec.access in (Access.PUBLIC, Access.CHANNEL) else [{"bearer": []}],
        }
        if spec.raw_body:
            operation["requestBody"] = {
                "required": True,
                "description": "The channel's notification as it sends it, signed by it",
                "content": {"*/*": {"schema": {}}},
            }
        if spec.body is not None:
            operation["requestBody"] = {
                "required": spec.body_required,
                "content": {"application/json": {"schema": refs[(spec.body, "validation")]}},
            }
        paths.setdefault(spec.path, {})[spec.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
