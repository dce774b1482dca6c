"""Routes with their contract: auth, role, body size, validation, errors, in API.md's order.

Each route is declared once with ``Router.route``: the same declaration registers the
Chalice view and describes the route in the OpenAPI document. The wrapper around every view
runs the checks in the order API.md fixes (401, 403, 413, 400, then the view's own 404, 409,
422) and turns every exception into the error envelope, so nothing reaches Chalice's own
error handling and no stack trace leaves the process.
"""

from __future__ import annotations

import functools
import json
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from chalice.app import Blueprint, Chalice, Request, Response
from pydantic import BaseModel, ValidationError

from chalicelib.adapters.auth import Principal, TokenVerifier, parse_bearer
from chalicelib.service.exceptions import NotFound

from .errors import (
    Forbidden,
    InvalidRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    envelope,
    error_answer,
    validation_details,
)

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger

__all__ = [
    "JSON",
    "MAX_BODY_BYTES",
    "ROUTES",
    "Access",
    "Call",
    "Reply",
    "RouteSpec",
    "Router",
    "answer_other_methods",
    "json_response",
    "json_text",
    "logger",
    "request_context",
    "request_id_for",
]

MAX_BODY_BYTES = 64 * 1024
MAX_PATH_ID = 128
OTHER_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
"""Every method API Gateway routes: a known path answers those it does not serve with 405."""
# Printable ASCII (spaces inside allowed): safe to send back in a header.
_CALLER_REQUEST_ID = re.compile(r"^[\x21-\x7e](?:[\x20-\x7e]{0,198}[\x21-\x7e])?$")
JSON = "application/json"


@functools.cache
def logger() -> Logger:
    """Structured JSON logs (Powertools), made on first use to keep imports light."""
    from aws_lambda_powertools import Logger

    return Logger(service="refunds")


class Access(Enum):
    """Who may call a route (API.md, Authentication and roles)."""

    PUBLIC = frozenset[str]()
    USER = frozenset({"*"})  # any valid token; the roles it has do not matter
    CS = frozenset({"cs-agent", "cs-senior"})
    SENIOR = frozenset({"cs-senior"})
    ORDER_SERVICE = frozenset({"order-service"})
    CHANNEL = frozenset({"channel"})  # no token: the channel's own signature, checked by the view


@dataclass(frozen=True)
class Call:
    """One validated request, as a view sees it."""

    principal: Principal | None
    body: Any
    query: Any
    headers: Mapping[str, str]
    raw_body: bytes

    @property
    def user_id(self) -> str:
        if self.principal is None:
            raise RuntimeError("route declared public reads a user")
        return self.principal.user_id


@dataclass(frozen=True)
class Reply:
    """A view's answer: a response model, or JSON already rendered (idempotent replays)."""

    body: BaseModel | str
    status: int | None = None


@dataclass(frozen=True)
class RouteSpec:
    path: str
    method: str
    name: str
    summary: str
    access: Access
    status: int
    response: type[BaseModel]
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    headers: tuple[str, ...] = ()
    raw_body: bool = False
    """The view reads the body's bytes itself, in whatever type its sender uses (webhooks)."""


ROUTES: list[RouteSpec] = []
"""Every route of every blueprint, in declaration order: the OpenAPI document's source."""


def json_text(body: Any) -> str:
    """Compact JSON; Chinese text goes out as UTF-8, not as escapes."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def json_response(
    status: int, body: str | dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    if status == 204:
        return Response(body="", status_code=204, headers={**(headers or {})})
    text = body if isinstance(body, str) else json_text(body)
    return Response(
        body=text, status_code=status, headers={"Content-Type": JSON, **(headers or {})}
    )


def _error_response(error: Exception) -> Response:
    answer = error_answer(error)
    if answer is None:
        logger().exception("unexpected fault")
        return json_response(500, envelope("internal_error", "an unexpected fault; it was logged"))
    return json_response(answer.status, answer.body)


def _bytes(raw: str | bytes | None) -> bytes:
    if raw is None:
        return b""
    return raw.encode() if isinstance(raw, str) else raw


def _parse_body(model: type[BaseModel] | None, raw: bytes, required: bool) -> Any:
    if not raw.strip():
        if model is not None and required:
            raise InvalidRequest(
                "a JSON body is required", [{"field": "body", "problem": "required"}]
            )
        return None
    if model is None:
        raise InvalidRequest(
            "this route takes no body", [{"field": "body", "problem": "unexpected"}]
        )
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        raise InvalidRequest("the body is not valid", validation_details(error)) from error


def _parse_query(model: type[BaseModel] | None, request: Request) -> Any:
    params = request.query_params
    values: dict[str, str] = {}
    if params:
        for name in params:
            given = params.getlist(name)
            if len(given) > 1:
                raise InvalidRequest(
                    "a query parameter was given twice", [{"field": name, "problem": "repeated"}]
                )
            values[name] = given[0]
    if model is None:
        if values:
            details = [{"field": name, "problem": "unknown parameter"} for name in values]
            raise InvalidRequest("this route takes no query parameters", details)
        return None
    try:
        return model.model_validate(values)
    except ValidationError as error:
        details = validation_details(error)
        for item in details:
            if item["problem"] == "unknown field":
                item["problem"] = "unknown parameter"
        raise InvalidRequest("the query parameters are not valid", details) from error


def _check_media_type(request: Request, raw: bytes) -> None:
    """API.md: a body in another type than JSON (a charset parameter allowed) is 415.

    An empty body is no body, whatever its type. The charset, if given, must be UTF-8, the
    only encoding JSON has (RFC 8259 §8.1): a body declared in another one is not taken.
    """
    if not raw.strip():
        return
    given = request.headers.get("content-type")
    if given is None:
        return  # untyped: read as the JSON every route takes
    media_type, _, parameters = given.partition(";")
    media_type = media_type.strip().lower()
    if media_type != JSON:
        raise UnsupportedMediaType(f"the body must be {JSON}, not {media_type or 'untyped'}")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"a JSON body is UTF-8, not {charset or 'no charset'}")


def _authorize(access: Access, request: Request, verifier: TokenVerifier) -> Principal | None:
    if access in (Access.PUBLIC, Access.CHANNEL):
        return None
    principal = verifier.verify(parse_bearer(request.headers.get("authorization")))
    if access is not Access.USER and not principal.has_any(*access.value):
        raise Forbidden("this route needs the role " + " or ".join(sorted(access.value)))
    return principal


class Router:
    """Declares routes on a Chalice app or blueprint; every spec joins ``ROUTES``."""

    def __init__(self, target: Chalice | Blueprint, verifier: Callable[[], TokenVerifier]) -> None:
        self._app = target
        self._verifier = verifier

    def route(
        self,
        path: str,
        method: str,
        *,
        response: type[BaseModel],
        summary: str,
        access: Access = Access.USER,
        status: int = 200,
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        query: type[BaseModel] | None = None,
        errors: tuple[int, ...] = (),
        headers: tuple[str, ...] = (),
        raw_body: bool = False,
    ) -> Callable[[Callable[..., Reply | BaseModel]], Callable[..., Response]]:
        def register(view: Callable[..., Reply | BaseModel]) -> Callable[..., Response]:
            spec = RouteSpec(
                path,
                method,
                view.__name__,
                summary,
                access,
                status,
                response,
                body,
                body_required,
                query,
                errors,
                headers,
                raw_body,
            )
            ROUTES.append(spec)

            @functools.wraps(view)
            def handle(**path_params: str) -> Response:
                request = self._app.current_request
                try:
                    if request is None:
                        raise RuntimeError("no current request")
                    principal = _authorize(access, request, self._verifier())
                    raw = _bytes(request.raw_body)
                    if len(raw) > MAX_BODY_BYTES:
                        raise PayloadTooLarge(f"the body is over {MAX_BODY_BYTES} bytes")
                    if not raw_body:
                        _check_media_type(request, raw)
                    call = Call(
                        principal=principal,
                        body=None if raw_body else _parse_body(body, raw, body_required),
                        query=_parse_query(query, request),
                        headers=request.headers,
                        raw_body=raw,
                    )
                    ids = {name: unquote(value) for name, value in path_params.items()}
                    for value in ids.values():
                        if len(value) > MAX_PATH_ID:
                            # No stored id is that long; DynamoDB would refuse the key.
                            raise NotFound("resource", value[:MAX_PATH_ID] + "...")
                    result = view(call, **ids)
                except Exception as error:
                    return _error_response(error)
                reply = result if isinstance(result, Reply) else Reply(result)
                rendered = (
                    reply.body
                    if isinstance(reply.body, str)
                    else reply.body.model_dump_json(by_alias=True)
                )
                return json_response(reply.status or status, rendered)

            self._app.route(path, methods=[method], content_types=["*/*"], name=view.__name__)(
                handle
            )
            return handle

        return register


def answer_other_methods(app: Chalice) -> None:
    """Answer every method a known path does not serve with a 405 in the envelope, whose
    ``Allow`` lists exactly the methods the path serves.

    API Gateway answers a method it has no integration for as a missing route (404), so the
    contract's 405 needs these methods to reach the function, deployed as locally: each path
    gets a route for every other method API Gateway can route. HEAD is one of them: API.md
    declares no HEAD route, so it is a 405 like any other (the HTTP layer sends a HEAD answer
    without its body). A method beyond those (TRACE, QUERY, ...) never passes API Gateway;
    the local server hands it to the app, and a middleware answers it the same way, before
    Chalice's own 405, whose Allow would list every routed method. Called once every
    blueprint is registered, so that it sees every route.
    """
    served: dict[str, set[str]] = {}
    for spec in ROUTES:
        served.setdefault(spec.path, set()).add(spec.method)
    allowed = {path: ", ".join(sorted(methods)) for path, methods in served.items()}

    def refuse(request: Request) -> Response:
        allow = allowed[request.context["resourcePath"]]
        return json_response(
            405,
            envelope("method_not_allowed", f"{request.method} is not served here; use {allow}"),
            {"Allow": allow},
        )

    def not_allowed(**_: str) -> Response:
        request = app.current_request
        if request is None:
            raise RuntimeError("no current request")
        return refuse(request)

    def unrouted_method(request: Request, get_response: Callable[[Request], Response]) -> Response:
        path = request.context.get("resourcePath")
        if path in allowed and request.method not in app.routes[path]:
            return refuse(request)
        return get_response(request)

    for number, (path, methods) in enumerate(sorted(served.items())):
        others = [m for m in OTHER_METHODS if m not in methods]
        app.route(path, methods=others, content_types=["*/*"], name=f"method_not_allowed_{number}")(
            not_allowed
        )
    app.register_middleware(unrouted_method, "http")


def request_id_for(given: str) -> str:
    """The caller's request id if it is a sane one, else a new one."""
    return given if _CALLER_REQUEST_ID.match(given) else uuid.uuid4().hex


_CHALICE_ERRORS = {404: "not_found", 405: "method_not_allowed", 415: "invalid_request"}


def request_context(request: Request, get_response: Callable[[Request], Response]) -> Response:
    """HTTP middleware: the request id on the logs and the response, Chalice's errors enveloped."""
    request_id = request_id_for(request.headers.get("x-request-id", ""))
    log = logger()
    log.thread_safe_append_keys(request_id=request_id, method=request.method, path=request.path)
    started = time.perf_counter()
    try:
        response = get_response(request)
        log.info(
            "answered",
            extra={
                "status": response.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
    finally:
        log.thread_safe_remove_keys(["request_id", "method", "path"])
    body = response.body
    if isinstance(body, dict) and "Code" in body:  # never ours: json_response sends text
        # Chalice's own answers (an unserved method, a fault outside a view) in the envelope.
        code = _CHALICE_ERRORS.get(response.status_code, "internal_error")
        message = (
            str(body.get("Message", "")) if code != "internal_error" else "an unexpected fault"
        )
        response = json_response(
            response.status_code,
            envelope(code, message),
            {k: str(v) for k, v in response.headers.items() if k.lower() == "allow"},
        )
    response.headers["X-Request-Id"] = request_id
    return response
