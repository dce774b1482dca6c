"""S3's own checks of a browser-based upload (a presigned POST), which the emulator skips.

moto stores whatever a POST form sends: another key than the slot's, an edited policy, a
zeroed signature, an expired policy, an oversized file or another type (DESIGN.md, field
notes). The local stack screens every form upload with these functions before moto sees it,
as S3 would, so that local behaviour does not hide a policy the app got wrong:

- the form: ``multipart/form-data``, one ``file``, a ``key`` (400 ``InvalidArgument``);
  a form without a ``policy`` is anonymous, and the bucket is private (403 ``AccessDenied``);
- Signature Version 4: ``x-amz-algorithm`` (only ``AWS4-HMAC-SHA256``, 400
  ``InvalidRequest`` otherwise), ``x-amz-credential`` and ``x-amz-date`` well formed and of
  the same day (400 ``InvalidArgument``), a known access key (403 ``InvalidAccessKeyId``),
  and ``x-amz-signature`` the HMAC of the policy with the signing key of that scope (403
  ``SignatureDoesNotMatch``);
- the policy: base64 JSON with ``expiration`` and ``conditions`` (400
  ``InvalidPolicyDocument``), not expired (403 ``AccessDenied``), every condition met
  (``eq``, ``starts-with``, the ``{"name": value}`` shorthand, ``bucket`` against the
  bucket addressed; 403 ``AccessDenied``), and every form field covered by a condition
  except ``policy``, ``x-amz-signature``, ``file`` and ``x-ignore-*`` (403 ``AccessDenied``);
- ``content-length-range`` against the file's real size: 400 ``EntityTooLarge`` or
  ``EntityTooSmall``, which is what S3 answers there (not 403).

Field names are matched without regard to case, as S3 matches ``X-Amz-Credential`` in a
form against ``x-amz-credential`` in its policy; values are matched exactly.

Two points are stricter than S3, because moto reads a form differently: S3 ignores the
fields after the file, moto honours them, so they are checked like the others; and a field
given twice must meet its conditions with every value, since moto may take either. A part
other than ``file`` that carries a file name is refused as a second file, since moto would
store that part's content instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from xml.sax.saxutils import escape

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

__all__ = [
    "MISSING_CONTENT_LENGTH",
    "FormPart",
    "Refusal",
    "UploadForm",
    "check_upload",
    "error_document",
    "form_upload_bucket",
    "read_form",
    "respond",
    "screen",
]

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_FORM_PARTS = 1000
"""werkzeug's own bound on a form's parts, which moto's form parsing applies too."""
_UNCHECKED_FIELDS = frozenset({"policy", "x-amz-signature", "file"})
_AMZ_DATE = re.compile(r"^(\d{8})T\d{6}Z$")
_SCOPE_DATE = re.compile(r"^\d{8}$")


@dataclass(frozen=True)
class FormPart:
    """One part of a multipart form: a field's text, or a file's bytes (``filename`` set)."""

    name: str
    value: str
    content: bytes
    filename: str | None = None


@dataclass(frozen=True)
class UploadForm:
    """A form upload addressed to ``bucket``, its parts in the order they were sent."""

    bucket: str
    parts: tuple[FormPart, ...]

    def values(self, name: str) -> list[str]:
        """Every value given for ``name`` (case-insensitive); [""] when it is absent."""
        found = [part.value for part in self.parts if part.name.lower() == name.lower()]
        return found or [""]

    def has(self, name: str) -> bool:
        return any(part.name.lower() == name.lower() for part in self.parts)

    def first(self, name: str) -> str:
        return self.values(name)[0]


@dataclass(frozen=True)
class Refusal:
    """S3's answer to an upload it refuses: status, error code, message, extra elements."""

    status: int
    code: str
    message: str
    extra: tuple[tuple[str, str], ...] = ()


_MALFORMED = Refusal(
    400,
    "MalformedPOSTRequest",
    "The body of your POST request is not well-formed multipart/form-data.",
)
_TOO_MANY_PARTS = Refusal(
    400,
    "MaxPostPreDataLengthExceeded",
    "Your POST request fields preceding the upload file were too large.",
)
_ONE_FILE = Refusal(400, "InvalidArgument", "POST requires exactly one file upload per request.")
_ANONYMOUS = Refusal(403, "AccessDenied", "Access Denied")
_SIGV4_ONLY = Refusal(
    400,
    "InvalidRequest",
    f"The authorization mechanism you have provided is not supported. Please use {ALGORITHM}.",
)
MISSING_CONTENT_LENGTH = Refusal(
    411, "MissingContentLength", "You must provide the Content-Length HTTP header."
)


def _missing(name: str) -> Refusal:
    return Refusal(
        400,
        "InvalidArgument",
        f"Bucket POST must contain a field named '{name}'.  "
        "If it is specified, please check the order of the fields.",
        (("ArgumentName", name), ("ArgumentValue", "")),
    )


def _policy_refusal(reason: str) -> Refusal:
    return Refusal(403, "AccessDenied", f"Invalid according to Policy: {reason}")


def _invalid_policy(reason: str) -> Refusal:
    return Refusal(400, "InvalidPolicyDocument", f"Invalid Policy: {reason}")


def form_upload_bucket(method: str, path: str, host: str, content_type: str) -> str | None:
    """The bucket a request uploads a form to, or None if it is not a form upload.

    A form upload is a ``multipart/form-data`` POST to a bucket's root: ``/bucket`` in path
    style, or ``/`` on the bucket's own host name (virtual-hosted style).
    """
    if method != "POST":
        return None
    if parse_options_header(content_type)[0] != "multipart/form-data":
        return None
    segments = [segment for segment in path.split("/") if segment]
    if len(segments) == 1:
        return segments[0]
    if not segments:
        return host.split(":", 1)[0].split(".", 1)[0]
    return None


def read_form(content_type: str, body: bytes) -> list[FormPart] | Refusal:
    """The parts of a multipart body, read with the decoder moto's own form parsing uses."""
    options = parse_options_header(content_type)[1]
    boundary = options.get("boundary", "")
    if not boundary:
        return _MALFORMED
    decoder = MultipartDecoder(boundary.encode("latin-1"), max_parts=MAX_FORM_PARTS)
    decoder.receive_data(body)
    decoder.receive_data(None)
    charset_of = MultiPartParser().get_part_charset
    parts: list[FormPart] = []
    current: Field | File | None = None
    chunks: list[bytes] = []
    try:
        while True:
            event = decoder.next_event()
            if isinstance(event, Field | File):
                current, chunks = event, []
            elif isinstance(event, Data) and current is not None:
                chunks.append(event.data)
                if not event.more_data:
                    content = b"".join(chunks)
                    if isinstance(current, File):
                        parts.append(FormPart(current.name, "", content, current.filename))
                    else:
                        text = content.decode(charset_of(current.headers), "replace")
                        parts.append(FormPart(current.name, text, content))
            elif isinstance(event, Epilogue):
                return parts
            elif isinstance(event, NeedData):
                return _MALFORMED  # the body ended before the closing boundary
    except ValueError:
        return _MALFORMED
    except RequestEntityTooLarge:
        return _TOO_MANY_PARTS


def check_upload(
    form: UploadForm, secret_for: Callable[[str], str | None], now: datetime
) -> Refusal | None:
    """What S3 answers to ``form`` (see the module's docstring), or None if it stores it.

    ``secret_for`` gives the secret key of an access key id (None: unknown); ``now`` is the
    wall clock, which judges the policy's expiration.
    """
    files = [part for part in form.parts if part.filename is not None or _is_file(part)]
    if len(files) != 1 or not _is_file(files[0]):
        return _ONE_FILE
    if not form.has("key"):
        return _missing("key")
    if not form.has("policy"):
        return _ANONYMOUS
    refused = _check_signature(form, secret_for)
    if refused is not None:
        return refused
    policy = _decode_policy(form.first("policy"))
    if isinstance(policy, Refusal):
        return policy
    expiration, conditions = policy
    if now > expiration:
        return _policy_refusal("Policy expired.")
    ranges: list[tuple[int, int]] = []
    covered: set[str] = set()
    for condition in conditions:
        parsed = _parse_condition(condition)
        if isinstance(parsed, Refusal):
            return parsed
        operator, name, expected = parsed
        if operator == "content-length-range":
            low, high = expected
            ranges.append((low, high))
            continue
        covered.add(name.lower())
        given = [form.bucket] if name.lower() == "bucket" else form.values(name)
        if not all(_meets(operator, value, expected) for value in given):
            shown = json.dumps([operator, f"${name}", expected], ensure_ascii=False)
            return _policy_refusal(f"Policy Condition failed: {shown}")
    extra = sorted(
        {
            part.name
            for part in form.parts
            if part.name.lower() not in _UNCHECKED_FIELDS
            and not part.name.lower().startswith("x-ignore-")
            and part.name.lower() not in covered
        }
    )
    if extra:
        return _policy_refusal("Extra input fields: " + ", ".join(extra))
    return _check_size(len(files[0].content), ranges)


def error_document(refusal: Refusal, request_id: str, host_id: str) -> bytes:
    """S3's XML error body for ``refusal``."""
    elements = [
        ("Code", refusal.code),
        ("Message", refusal.message),
        *refusal.extra,
        ("RequestId", request_id),
        ("HostId", host_id),
    ]
    inner = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in elements)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{inner}</Error>'.encode()


def screen(
    environ: dict[str, Any], secret_for: Callable[[str], str | None], now: datetime
) -> Refusal | None:
    """A WSGI request's refusal if it is a form upload S3 would refuse; None otherwise.

    The body is read and put back for the application behind, as a server would hand it.
    """
    bucket = form_upload_bucket(
        environ.get("REQUEST_METHOD", ""),
        environ.get("PATH_INFO", ""),
        environ.get("HTTP_HOST", ""),
        environ.get("CONTENT_TYPE", ""),
    )
    if bucket is None:
        return None
    length = environ.get("CONTENT_LENGTH")
    if not length:
        return MISSING_CONTENT_LENGTH
    raw = environ["wsgi.input"].read(int(length))
    environ["wsgi.input"] = io.BytesIO(raw)
    parts = read_form(environ.get("CONTENT_TYPE", ""), raw)
    if isinstance(parts, Refusal):
        return parts
    return check_upload(UploadForm(bucket, tuple(parts)), secret_for, now)


def respond(refusal: Refusal, start_response: Callable[..., Any]) -> list[bytes]:
    """Answer ``refusal`` to a WSGI server as S3 does: XML, with its request id headers."""
    request_id = secrets.token_hex(8).upper()
    host_id = base64.b64encode(secrets.token_bytes(48)).decode()
    body = error_document(refusal, request_id, host_id)
    start_response(
        f"{refusal.status} {HTTPStatus(refusal.status).phrase}",
        [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
            ("x-amz-id-2", host_id),
        ],
    )
    return [body]


def _is_file(part: FormPart) -> bool:
    return part.name.lower() == "file"


def _check_signature(form: UploadForm, secret_for: Callable[[str], str | None]) -> Refusal | None:
    if not form.has("x-amz-algorithm"):
        return _SIGV4_ONLY if form.has("AWSAccessKeyId") else _missing("x-amz-algorithm")
    if form.first("x-amz-algorithm") != ALGORITHM:
        return _SIGV4_ONLY
    for name in ("x-amz-credential", "x-amz-date", "x-amz-signature"):
        if not form.has(name):
            return _missing(name)
    credential, amz_date = form.first("x-amz-credential"), form.first("x-amz-date")
    scope = credential.split("/")
    if (
        len(scope) != 5
        or not all(scope)
        or not _SCOPE_DATE.match(scope[1])
        or scope[3] != "s3"
        or scope[4] != "aws4_request"
    ):
        return Refusal(
            400,
            "InvalidArgument",
            f"Invalid credential: {credential}",
            (("ArgumentName", "x-amz-credential"), ("ArgumentValue", credential)),
        )
    date_match = _AMZ_DATE.match(amz_date)
    if date_match is None or date_match.group(1) != scope[1]:
        return Refusal(
            400,
            "InvalidArgument",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{scope[1]}' != '{amz_date[:8]}', from '{amz_date}'.",
            (("ArgumentName", "x-amz-date"), ("ArgumentValue", amz_date)),
        )
    access_key, day, region, service, terminator = scope
    secret = secret_for(access_key)
    if secret is None:
        return Refusal(
            403,
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
            (("AWSAccessKeyId", access_key),),
        )
    policy = form.first("policy")
    key = f"AWS4{secret}".encode()
    for part in (day, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    expected = hmac.new(key, policy.encode(), hashlib.sha256).hexdigest()
    provided = form.first("x-amz-signature")
    if hmac.compare_digest(expected, provided.lower()):
        return None
    return Refusal(
        403,
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method.",
        (
            ("AWSAccessKeyId", access_key),
            ("StringToSign", policy),
            ("SignatureProvided", provided),
        ),
    )


def _decode_policy(encoded: str) -> tuple[datetime, list[Any]] | Refusal:
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return _invalid_policy("Invalid JSON.")
    if not isinstance(document, dict):
        return _invalid_policy("Invalid JSON.")
    expiration, conditions = document.get("expiration"), document.get("conditions")
    if not isinstance(expiration, str):
        return _invalid_policy("Policy missing expiration.")
    if not isinstance(conditions, list):
        return _invalid_policy("Policy missing conditions.")
    try:
        moment = datetime.fromisoformat(expiration)
    except ValueError:
        return _invalid_policy(f"Invalid 'expiration' value: '{expiration}'")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment, conditions


def _parse_condition(condition: Any) -> tuple[str, str, Any] | Refusal:
    """(operator, field name as the policy writes it, expected) of one condition."""
    shown = json.dumps(condition, ensure_ascii=False)
    if isinstance(condition, dict) and len(condition) == 1:
        ((name, expected),) = condition.items()
        if isinstance(expected, str):
            return "eq", name, expected
    elif isinstance(condition, list) and len(condition) == 3:
        operator, first, second = condition
        if isinstance(operator, str):
            operator = operator.lower()
        if operator == "content-length-range":
            bounds = _bounds(first, second)
            if bounds is not None:
                return operator, "", bounds
        elif (
            operator in ("eq", "starts-with")
            and isinstance(first, str)
            and first.startswith("$")
            and isinstance(second, str)
        ):
            return operator, first[1:], second
    return _invalid_policy(f"Invalid Policy condition: {shown}")


def _bounds(low: Any, high: Any) -> tuple[int, int] | None:
    values = []
    for bound in (low, high):
        if isinstance(bound, bool):
            return None
        if isinstance(bound, int):
            values.append(bound)
        elif isinstance(bound, str) and bound.isdigit():
            values.append(int(bound))
        else:
            return None
    return values[0], values[1]


def _meets(operator: str, value: str, expected: str) -> bool:
    return value == expected if operator == "eq" else value.startswith(expected)


def _check_size(size: int, ranges: Iterable[tuple[int, int]]) -> Refusal | None:
    for low, high in ranges:
        if size > high:
            return Refusal(
                400,
                "EntityTooLarge",
                "Your proposed upload exceeds the maximum allowed size",
                (("ProposedSize", str(size)), ("MaxSizeAllowed", str(high))),
            )
        if size < low:
            return Refusal(
                400,
                "EntityTooSmall",
                "Your proposed upload is smaller than the minimum allowed size",
                (("ProposedSize", str(size)), ("MinSizeAllowed", str(low))),
            )
    return None
