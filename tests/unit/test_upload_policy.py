"""S3's checks of a presigned POST, as the local emulator applies them (infra/local/upload_policy).

The forms are the ones boto3's ``generate_presigned_post`` makes with the conditions of the
evidence store (chalicelib/adapters/s3_evidence.py): signed by another implementation than
the one under test, so a signing mistake on either side shows.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest
from botocore.config import Config

from infra.local.upload_policy import (
    MISSING_CONTENT_LENGTH,
    FormPart,
    Refusal,
    UploadForm,
    check_upload,
    error_document,
    form_upload_bucket,
    read_form,
    screen,
)

BUCKET = "refunds-local-evidence"
KEY = "evidence/rf_1/ev_1"
OTHER_KEY = "evidence/rf_2/ev_9"
SECRETS = {"local": "local"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(24)
MAX_SIZE = 64


@pytest.fixture(scope="module")
def s3() -> Any:
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


Presign = Callable[..., dict[str, str]]


@pytest.fixture(scope="module")
def presign(s3: Any) -> Presign:
    """The fields of a slot's presigned POST, as the evidence store asks for them."""

    def fields(
        key: str = KEY,
        content_type: str = "image/png",
        max_size: int = MAX_SIZE,
        expires_in: int = 900,
        conditions: list[Any] | None = None,
    ) -> dict[str, str]:
        post = s3.generate_presigned_post(
            Bucket=BUCKET,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=conditions
            if conditions is not None
            else [{"Content-Type": content_type}, ["content-length-range", 1, max_size]],
            ExpiresIn=expires_in,
        )
        return dict(post["fields"])

    return fields


def form(
    fields: dict[str, str],
    content: bytes | None = PNG,
    bucket: str = BUCKET,
    after_file: tuple[tuple[str, str], ...] = (),
) -> UploadForm:
    parts = [FormPart(name, value, value.encode()) for name, value in fields.items()]
    if content is not None:
        parts.append(FormPart("file", "", content, "shot.png"))
    parts.extend(FormPart(name, value, value.encode()) for name, value in after_file)
    return UploadForm(bucket, tuple(parts))


def check(upload: UploadForm, now: datetime | None = None) -> Refusal | None:
    return check_upload(upload, SECRETS.get, now or datetime.now(UTC))


def sign_policy(document: bytes, fields: dict[str, str]) -> dict[str, str]:
    """``fields`` carrying ``document`` as their policy, signed with the local secret."""
    encoded = base64.b64encode(document).decode()
    _, day, region, service, terminator = fields["x-amz-credential"].split("/")
    key = b"AWS4local"
    for part in (day, region, service, terminator):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, encoded.encode(), hashlib.sha256).hexdigest()
    return {**fields, "policy": encoded, "x-amz-signature": signature}


def policy_of(fields: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return document


# ---------------------------------------------------------------- what S3 stores


def test_the_slot_s_own_form_and_file_are_accepted(presign: Presign) -> None:
    # GIVEN the presigned POST of a slot WHEN its own fields carry a PNG within the size
    # THEN nothing refuses it
    assert check(form(presign())) is None


def test_field_names_match_the_policy_whatever_their_case(presign: Presign) -> None:
    # GIVEN the fields as AWS's own example form spells them (X-Amz-Credential, ...)
    fields = {
        name.title() if name.startswith("x-amz") else name: v for name, v in presign().items()
    }
    # THEN they are the policy's fields all the same
    assert check(form(fields)) is None


def test_x_ignore_fields_need_no_condition(presign: Presign) -> None:
    assert check(form({**presign(), "x-ignore-submit": "Upload"})) is None


def test_starts_with_and_string_bounds_are_honoured(presign: Presign) -> None:
    fields = presign(conditions=[["starts-with", "$Content-Type", "image/"]])
    document = policy_of(fields)
    document["conditions"].append(["content-length-range", "1", str(MAX_SIZE)])
    signed = sign_policy(json.dumps(document).encode(), fields)
    assert check(form(signed)) is None


# ---------------------------------------------------------------- the policy's conditions


def test_another_slot_s_key_fails_the_key_condition(presign: Presign) -> None:
    # GIVEN one user's slot WHEN its form names another slot's key
    refusal = check(form({**presign(), "key": OTHER_KEY}))
    # THEN 403 AccessDenied, as S3 words it
    assert refusal == Refusal(
        403,
        "AccessDenied",
        f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{KEY}"]',
    )


def test_another_content_type_fails_its_condition(presign: Presign) -> None:
    refusal = check(form({**presign(), "Content-Type": "text/html"}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "AccessDenied")
    assert refusal.message.endswith('["eq", "$Content-Type", "image/png"]')


def test_a_field_given_twice_meets_its_condition_with_every_value(presign: Presign) -> None:
    # GIVEN the slot's own Content-Type, and a second one spelled in lower case
    upload = form(presign(), after_file=(("content-type", "text/html"),))
    # THEN refused: the emulator may store either
    refusal = check(upload)
    assert refusal is not None
    assert refusal.message.endswith('["eq", "$Content-Type", "image/png"]')


def test_another_bucket_fails_the_bucket_condition(presign: Presign) -> None:
    refusal = check(form(presign(), bucket="other-bucket"))
    assert refusal is not None
    assert refusal.message.endswith(f'["eq", "$bucket", "{BUCKET}"]')


def test_another_x_amz_date_of_the_same_day_fails_its_condition(presign: Presign) -> None:
    fields = presign()
    later = fields["x-amz-date"][:9] + "235959Z"
    refusal = check(form({**fields, "x-amz-date": later}))
    assert refusal is not None
    assert (refusal.code, refusal.message.split(": ")[-1]) == (
        "AccessDenied",
        f'["eq", "$x-amz-date", "{fields["x-amz-date"]}"]',
    )


def test_a_field_the_policy_does_not_cover_is_refused(presign: Presign) -> None:
    refusal = check(form({**presign(), "x-amz-meta-owner": "u-2", "acl": "public-read"}))
    assert refusal == Refusal(
        403,
        "AccessDenied",
        "Invalid according to Policy: Extra input fields: acl, x-amz-meta-owner",
    )


def test_fields_after_the_file_are_checked_too(presign: Presign) -> None:
    refusal = check(form(presign(), after_file=(("x-amz-meta-owner", "u-2"),)))
    assert refusal is not None
    assert refusal.message.endswith("Extra input fields: x-amz-meta-owner")


def test_an_expired_policy_is_refused(presign: Presign) -> None:
    fields = presign(expires_in=60)
    expiration = datetime.fromisoformat(policy_of(fields)["expiration"])
    # AT its expiration it still holds; a second later it does not
    assert check(form(fields), now=expiration) is None
    refusal = check(form(fields), now=expiration + timedelta(seconds=1))
    assert refusal == Refusal(403, "AccessDenied", "Invalid according to Policy: Policy expired.")


# ---------------------------------------------------------------- content-length-range


def test_a_file_over_the_range_is_entity_too_large(presign: Presign) -> None:
    refusal = check(form(presign(), content=PNG + bytes(MAX_SIZE)))
    # S3 answers 400 here, not 403
    assert refusal == Refusal(
        400,
        "EntityTooLarge",
        "Your proposed upload exceeds the maximum allowed size",
        (("ProposedSize", str(len(PNG) + MAX_SIZE)), ("MaxSizeAllowed", str(MAX_SIZE))),
    )


def test_an_empty_file_is_entity_too_small(presign: Presign) -> None:
    refusal = check(form(presign(), content=b""))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "EntityTooSmall")
    assert ("MinSizeAllowed", "1") in refusal.extra


# ---------------------------------------------------------------- the signature


def test_an_edited_policy_no_longer_matches_its_signature(presign: Presign) -> None:
    # GIVEN a slot's form WHEN its policy is re-encoded to allow 10 MiB under the old signature
    fields = presign()
    document = policy_of(fields)
    document["conditions"][1] = ["content-length-range", 1, 10 * 1024 * 1024]
    edited = base64.b64encode(json.dumps(document).encode()).decode()
    refusal = check(form({**fields, "policy": edited}))
    # THEN 403 SignatureDoesNotMatch, naming the string it signed
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "SignatureDoesNotMatch")
    assert ("StringToSign", edited) in refusal.extra


def test_a_zeroed_signature_does_not_match(presign: Presign) -> None:
    refusal = check(form({**presign(), "x-amz-signature": "0" * 64}))
    assert refusal is not None
    assert refusal.code == "SignatureDoesNotMatch"


def test_a_signature_with_another_secret_does_not_match(presign: Presign) -> None:
    refusal = check_upload(form(presign()), {"local": "another-secret"}.get, datetime.now(UTC))
    assert refusal is not None
    assert refusal.code == "SignatureDoesNotMatch"


def test_an_unknown_access_key_is_refused(presign: Presign) -> None:
    fields = presign()
    credential = "AKIDSOMEONEELSE/" + fields["x-amz-credential"].split("/", 1)[1]
    refusal = check(form({**fields, "x-amz-credential": credential}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "InvalidAccessKeyId")


def test_a_credential_of_another_day_than_its_date_is_refused(presign: Presign) -> None:
    fields = presign()
    refusal = check(form({**fields, "x-amz-date": "20200101T000000Z"}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidArgument")


@pytest.mark.parametrize(
    "credential", ["local/20261129/us-east-1/s3", "local/20261129/us-east-1/sqs/aws4_request"]
)
def test_a_malformed_credential_is_refused(presign: Presign, credential: str) -> None:
    refusal = check(form({**presign(), "x-amz-credential": credential}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidArgument")


def test_only_signature_version_4_is_taken(presign: Presign) -> None:
    fields = {
        name: value
        for name, value in presign().items()
        if name not in ("x-amz-algorithm", "x-amz-signature")
    }
    refusal = check(form({**fields, "AWSAccessKeyId": "local", "signature": "c2ln"}))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidRequest")
    other = check(form({**presign(), "x-amz-algorithm": "AWS4-HMAC-SHA1"}))
    assert other is not None
    assert other.code == "InvalidRequest"


def test_a_policy_that_is_not_json_is_an_invalid_policy_document(presign: Presign) -> None:
    refusal = check(form(sign_policy(b"{not json", presign())))
    assert refusal == Refusal(400, "InvalidPolicyDocument", "Invalid Policy: Invalid JSON.")


def test_an_unknown_condition_is_an_invalid_policy_document(presign: Presign) -> None:
    fields = presign()
    document = policy_of(fields)
    document["conditions"].append(["ends-with", "$key", ".png"])
    refusal = check(form(sign_policy(json.dumps(document).encode(), fields)))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidPolicyDocument")


# ---------------------------------------------------------------- the form itself


@pytest.mark.parametrize("missing", ["x-amz-signature", "x-amz-credential", "x-amz-date", "key"])
def test_a_missing_required_field_is_named(presign: Presign, missing: str) -> None:
    fields = {name: value for name, value in presign().items() if name != missing}
    refusal = check(form(fields))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidArgument")
    assert ("ArgumentName", missing) in refusal.extra


def test_a_form_without_a_policy_is_anonymous_and_denied(presign: Presign) -> None:
    fields = {name: value for name, value in presign().items() if name != "policy"}
    assert check(form(fields)) == Refusal(403, "AccessDenied", "Access Denied")


def test_a_form_without_a_file_is_refused(presign: Presign) -> None:
    refusal = check(form(presign(), content=None))
    assert refusal is not None
    assert (refusal.status, refusal.code) == (400, "InvalidArgument")


def test_a_second_file_part_is_refused(presign: Presign) -> None:
    # GIVEN a form whose ignored field carries a file: the emulator would store that one
    upload = form(presign())
    smuggled = FormPart("x-ignore-more", "", b"<html>", "page.html")
    refusal = check(UploadForm(BUCKET, (*upload.parts, smuggled)))
    assert refusal is not None
    assert refusal.message == "POST requires exactly one file upload per request."


# ---------------------------------------------------------------- reading the request


def multipart(fields: dict[str, str], content: bytes, boundary: str = "b0undary") -> bytes:
    lines = []
    for name, value in fields.items():
        lines.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        )
    head = "".join(lines).encode()
    file_part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + file_part + content + f"\r\n--{boundary}--\r\n".encode()


MULTIPART = "multipart/form-data; boundary=b0undary"


def test_read_form_keeps_the_parts_in_order_with_utf8_text() -> None:
    body = multipart({"key": "evidence/退款", "Content-Type": "image/png"}, PNG)
    parts = read_form(MULTIPART, body)
    assert parts == [
        FormPart("key", "evidence/退款", "evidence/退款".encode()),
        FormPart("Content-Type", "image/png", b"image/png"),
        FormPart("file", "", PNG, "a.png"),
    ]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        (MULTIPART, b"not a form"),
        (MULTIPART, multipart({"key": KEY}, PNG)[:-12]),  # cut before the closing boundary
        ("multipart/form-data", multipart({"key": KEY}, PNG)),  # no boundary
    ],
)
def test_a_body_that_is_not_a_whole_form_is_malformed(content_type: str, body: bytes) -> None:
    refusal = read_form(content_type, body)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.code) == (400, "MalformedPOSTRequest")


def test_a_form_of_more_parts_than_werkzeug_reads_is_refused() -> None:
    body = multipart({f"x-ignore-{n}": "v" for n in range(1000)}, PNG)
    refusal = read_form(MULTIPART, body)
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.code) == (400, "MaxPostPreDataLengthExceeded")


@pytest.mark.parametrize(
    ("method", "path", "host", "content_type", "bucket"),
    [
        ("POST", f"/{BUCKET}", "127.0.0.1:5000", MULTIPART, BUCKET),
        ("POST", f"/{BUCKET}/", "127.0.0.1:5000", MULTIPART, BUCKET),
        ("POST", "/", f"{BUCKET}.localhost:5000", MULTIPART, BUCKET),
        ("POST", f"/{BUCKET}/{KEY}", "127.0.0.1:5000", MULTIPART, None),
        ("PUT", f"/{BUCKET}", "127.0.0.1:5000", MULTIPART, None),
        ("POST", "/", "127.0.0.1:5000", "application/x-amz-json-1.0", None),
    ],
)
def test_form_uploads_are_posts_of_a_form_to_a_bucket_root(
    method: str, path: str, host: str, content_type: str, bucket: str | None
) -> None:
    assert form_upload_bucket(method, path, host, content_type) == bucket


def environ_for(body: bytes, content_type: str = MULTIPART, **extra: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": f"/{BUCKET}",
        "HTTP_HOST": "127.0.0.1:5000",
        "CONTENT_TYPE": content_type,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        **extra,
    }


def test_screen_refuses_before_the_emulator_and_puts_the_body_back(presign: Presign) -> None:
    body = multipart({**presign(), "key": OTHER_KEY}, PNG)
    environ = environ_for(body)
    refusal = screen(environ, SECRETS.get, datetime.now(UTC))
    assert refusal is not None
    assert refusal.code == "AccessDenied"
    assert environ["wsgi.input"].read() == body


def test_screen_passes_an_honest_upload_with_its_body_intact(presign: Presign) -> None:
    body = multipart(presign(), PNG)
    environ = environ_for(body)
    assert screen(environ, SECRETS.get, datetime.now(UTC)) is None
    assert environ["wsgi.input"].read() == body


def test_screen_leaves_other_requests_alone() -> None:
    body = b'{"TableName": "t"}'
    environ = environ_for(body, content_type="application/x-amz-json-1.0")
    assert screen(environ, SECRETS.get, datetime.now(UTC)) is None
    assert environ["wsgi.input"].read() == body


def test_screen_wants_a_content_length(presign: Presign) -> None:
    environ = environ_for(multipart(presign(), PNG), CONTENT_LENGTH="")
    assert screen(environ, SECRETS.get, datetime.now(UTC)) == MISSING_CONTENT_LENGTH


def test_error_document_is_s3_s_xml_with_the_refusal_escaped() -> None:
    refusal = Refusal(403, "AccessDenied", 'Policy Condition failed: ["eq", "$key", "a<b&c"]')
    document = error_document(refusal, "REQ1", "HOST1")
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ElementTree.fromstring(document)  # noqa: S314 (the document under test)
    assert [(child.tag, child.text) for child in root] == [
        ("Code", "AccessDenied"),
        ("Message", refusal.message),
        ("RequestId", "REQ1"),
        ("HostId", "HOST1"),
    ]
