"""The customer-service console: one page and its ES modules, shipped in the Lambda package
(``chalicelib/console/``) and served under ``/console``.

The page calls the ``/admin`` routes like any other client, with the agent's bearer token.
These routes serve files, not the API, so they are declared on the blueprint directly and
stay out of ``ROUTES`` and the OpenAPI document. Modules are served under a path that names
their content's digest, so a browser keeps them for good and a deployment changes the path;
the page itself is revalidated on every load.
"""

from __future__ import annotations

import functools
import hashlib
import html
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from chalice.app import Blueprint, Response

from chalicelib.api.errors import envelope
from chalicelib.api.http import json_response, json_text
from chalicelib.domain.rules import POLICY_RULE_IDS
from chalicelib.settings import Settings, get_settings

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)

FILES = Path(__file__).resolve().parents[2] / "console"
INDEX = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
FOREVER = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    # Presigned evidence URLs and sign-in codes never leave in a Referer.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class _Bundle:
    version: str
    """A digest of every file: the path segment the modules are served under."""
    index: str
    assets: dict[str, tuple[str, str]]
    """File name -> (media type, text)."""


@functools.cache
def _bundle() -> _Bundle:
    digest = hashlib.sha256()
    assets: dict[str, tuple[str, str]] = {}
    for path in sorted(FILES.iterdir()):
        if path.is_file() and path.suffix in MEDIA_TYPES:
            text = path.read_text(encoding="utf-8")
            digest.update(f"{path.name}\0{text}\0".encode())
            assets[path.name] = (MEDIA_TYPES[path.suffix], text)
    index = assets.pop(INDEX)[1]
    return _Bundle(digest.hexdigest()[:16], index, assets)


def _origin(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    return f"{parts.scheme}://{parts.netloc}"


def _evidence_origins(settings: Settings) -> list[str]:
    """Where the evidence download URLs point: the emulator locally, else the bucket's
    virtual-hosted S3 address (regional, and the global one us-east-1 signs for)."""
    if settings.aws_endpoint_url:
        return [_origin(settings.aws_endpoint_url)]
    suffix = "amazonaws.com.cn" if settings.region.startswith("cn-") else "amazonaws.com"
    bucket = settings.evidence_bucket
    return [f"https://{bucket}.s3.{settings.region}.{suffix}", f"https://{bucket}.s3.{suffix}"]


def _content_security_policy(settings: Settings) -> str:
    """Only this stage's own files run; the page reaches the API, the evidence bucket and,
    where agents sign in through it, the Cognito domain (its token endpoint); the DOM is built
    without HTML strings, so Trusted Types can refuse every string sink."""
    connect = ["'self'"]
    if settings.cognito_domain:
        connect.append(_origin(settings.cognito_domain))
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' " + " ".join(_evidence_origins(settings)),
            "connect-src " + " ".join(connect),
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
            "require-trusted-types-for 'script'",
            "trusted-types 'none'",
        ]
    )


def _api_base() -> str:
    """The path the API is served under, as the browser sees it (an API Gateway stage or a
    custom domain's base path come before ``/console``; locally nothing does)."""
    request = blueprint.current_request
    path = str(request.context.get("path") or "").rstrip("/")
    return path.removesuffix("/console") if path.endswith("/console") else ""


@blueprint.route("/console", methods=["GET"])
def console_page() -> Response:
    bundle = _bundle()
    base = html.escape(_api_base(), quote=True)
    page = bundle.index.replace("{{api}}", base).replace(
        "{{assets}}", f"{base}/console/{bundle.version}"
    )
    return Response(
        body=page,
        status_code=200,
        headers={
            **COMMON_HEADERS,
            "Content-Type": MEDIA_TYPES[".html"],
            "Content-Security-Policy": _content_security_policy(get_settings()),
            "Cache-Control": REVALIDATE,
        },
    )


@blueprint.route("/console/config.json", methods=["GET"])
def console_config() -> Response:
    """How agents sign in on this stage, and the rule ids a rejection may cite (POLICY.md)."""
    settings = get_settings()
    cognito = None
    if settings.cognito_domain and settings.cognito_client_id:
        sign_in = "cognito"
        cognito = {
            "domain": _origin(settings.cognito_domain),
            "client_id": settings.cognito_client_id,
        }
    else:
        sign_in = "token" if settings.is_local else "unconfigured"
    body = {
        "stage": settings.stage,
        "sign_in": sign_in,
        "cognito": cognito,
        "rule_ids": sorted(POLICY_RULE_IDS),
    }
    return Response(
        body=json_text(body),
        status_code=200,
        headers={**COMMON_HEADERS, "Content-Type": "application/json", "Cache-Control": REVALIDATE},
    )


@blueprint.route("/console/{version}/{name}", methods=["GET"])
def console_asset(version: str, name: str) -> Response:
    bundle = _bundle()
    asset = bundle.assets.get(name)
    if asset is None:
        return json_response(404, envelope("not_found", f"the console has no file {name}"))
    if version != bundle.version:
        # A page loaded before a deployment asks for its own files: reloading gets the new.
        message = "the console was updated since this page was loaded; reload it"
        return json_response(404, envelope("not_found", message))
    media_type, text = asset
    return Response(
        body=text,
        status_code=200,
        headers={**COMMON_HEADERS, "Content-Type": media_type, "Cache-Control": FOREVER},
    )
