"""Strict local uploads: the emulator checks every presigned POST as S3 does before it stores
anything (infra/local/upload_policy), over real HTTP to the presigned URL.

Each refusal is S3's own XML answer, and leaves no object under the slot's key: moto sends
the bucket's notification from inside the store, so no object also means no notification.
The honest upload of the same slot is still accepted, and the server-side check counts it.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import boto3
import pytest
import requests
from botocore.config import Config

from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import PNG, Api, Who, wait_until

pytestmark = pytest.mark.e2e

TIMEOUT = 10
DESCRIPTION = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"


@dataclass
class Stack:
    api: Api
    aws_endpoint: str

    def s3(self) -> Any:
        """An S3 client signing with the credentials the app signs with (the environment's,
        which the local stack sets unless they were set)."""
        return boto3.client(
            "s3",
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )


@dataclass(frozen=True)
class Slot:
    user: Who
    refund_id: str
    evidence_id: str
    url: str
    fields: dict[str, str]

    @property
    def key(self) -> str:
        return self.fields["key"]

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).path.strip("/")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with started_stack() as local:
        yield Stack(Api(local.api_url), local.aws_endpoint)


NewSlot = Callable[..., Slot]


@pytest.fixture
def new_slot(stack: Stack) -> NewSlot:
    """A draft refund of a fresh order of ``user`` (a new one if None), and one slot on it for
    the PNG the tests upload."""

    def make(user: Who | None = None) -> Slot:
        user = user or Who(f"u-up-{uuid.uuid4().hex[:10]}")
        api = stack.api.as_user(user)
        order = api.order("upload")
        api.put_order(order)
        refund = api.create_refund(order["order_id"], "invalid_code", DESCRIPTION)
        answer = api.slot(refund["refund_id"], "order_screenshot", "image/png", len(PNG))
        assert answer.status_code == 201, answer.text
        slot = answer.json()
        upload = slot["upload"]
        return Slot(user, refund["refund_id"], slot["evidence_id"], upload["url"], upload["fields"])

    return make


def post(
    url: str,
    fields: dict[str, str],
    content: bytes | None = PNG,
    content_type: str = "image/png",
) -> requests.Response:
    """A multipart form of ``fields``, then the file ``content`` (none if None)."""
    parts: list[tuple[str, tuple[Any, ...]]] = [(name, (None, v)) for name, v in fields.items()]
    if content is not None:
        parts.append(("file", ("shot.png", content, content_type)))
    return requests.post(url, files=parts, timeout=TIMEOUT)


def s3_error(answer: requests.Response) -> dict[str, str]:
    """S3's XML error answer, as element name to text."""
    assert answer.headers["Content-Type"] == "application/xml"
    assert answer.headers["x-amz-request-id"]
    root = ElementTree.fromstring(answer.content)  # noqa: S314 (the local emulator's answer)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def stored_versions(stack: Stack, slot: Slot) -> list[Any]:
    listing = stack.s3().list_object_versions(Bucket=slot.bucket, Prefix=slot.key)
    return [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]


def policy_document(fields: dict[str, str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(base64.b64decode(fields["policy"]))
    return document


def test_the_honest_upload_is_accepted_and_counted(stack: Stack, new_slot: NewSlot) -> None:
    # GIVEN a slot WHEN its own form carries its PNG
    slot = new_slot()
    answer = post(slot.url, slot.fields)
    # THEN S3 stores it, and the server-side check counts it
    assert answer.status_code == 204, answer.text
    refund = wait_until(
        lambda: stack.api.refund(slot.refund_id, slot.user),
        lambda refund: refund["evidence"][0]["uploaded"],
        "the upload counted",
    )
    assert refund["evidence"][0]["problem"] is None


def test_a_user_cannot_write_into_another_user_s_slot(stack: Stack, new_slot: NewSlot) -> None:
    # GIVEN u-a's slot and u-b's slot
    mine, theirs = new_slot(Who("u-up-a")), new_slot(Who("u-up-b"))
    # WHEN u-a posts with its own presigned form, but names u-b's key
    answer = post(mine.url, {**mine.fields, "key": theirs.key})
    # THEN 403 AccessDenied: the policy allows u-a's key only
    assert answer.status_code == 403
    error = s3_error(answer)
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == (
        f'Invalid according to Policy: Policy Condition failed: ["eq", "$key", "{mine.key}"]'
    )
    # AND nothing lands under u-b's key, which stays free for u-b's own upload
    assert stored_versions(stack, theirs) == []
    assert post(theirs.url, theirs.fields).status_code == 204


Form = tuple[str, dict[str, str], bytes | None, str]
"""Where a form goes, its fields, its file and the file's type."""
Tamper = Callable[[Slot, Stack], Form]


def _edited_policy(slot: Slot, stack: Stack) -> Form:
    document = policy_document(slot.fields)
    document["conditions"] = [
        ["content-length-range", 1, 10 * 1024 * 1024] if isinstance(c, list) else c
        for c in document["conditions"]
    ]
    edited = base64.b64encode(json.dumps(document).encode()).decode()
    return slot.url, {**slot.fields, "policy": edited}, PNG + bytes(4096), "image/png"


def _zeroed_signature(slot: Slot, stack: Stack) -> Form:
    return slot.url, {**slot.fields, "x-amz-signature": "0" * 64}, PNG, "image/png"


def _expired(slot: Slot, stack: Stack) -> Form:
    # The same policy as the slot's, signed by the same key, but already expired.
    presigned = stack.s3().generate_presigned_post(
        Bucket=slot.bucket,
        Key=slot.key,
        Fields={"Content-Type": "image/png"},
        Conditions=[{"Content-Type": "image/png"}, ["content-length-range", 1, len(PNG)]],
        ExpiresIn=-1,
    )
    return presigned["url"], presigned["fields"], PNG, "image/png"


def _oversized(slot: Slot, stack: Stack) -> Form:
    return slot.url, slot.fields, PNG + b"\x00", "image/png"


def _empty(slot: Slot, stack: Stack) -> Form:
    return slot.url, slot.fields, b"", "image/png"


def _mistyped(slot: Slot, stack: Stack) -> Form:
    return slot.url, {**slot.fields, "Content-Type": "text/html"}, b"<html>", "text/html"


def _extra_field(slot: Slot, stack: Stack) -> Form:
    return slot.url, {**slot.fields, "x-amz-meta-owner": "u-2"}, PNG, "image/png"


def _other_bucket(slot: Slot, stack: Stack) -> Form:
    other = f"{slot.bucket}-other"
    stack.s3().create_bucket(Bucket=other)
    return slot.url.replace(f"/{slot.bucket}", f"/{other}"), slot.fields, PNG, "image/png"


def _other_date(slot: Slot, stack: Stack) -> Form:
    later = slot.fields["x-amz-date"][:9] + "235959Z"
    return slot.url, {**slot.fields, "x-amz-date": later}, PNG, "image/png"


def _other_access_key(slot: Slot, stack: Stack) -> Form:
    scope = slot.fields["x-amz-credential"].split("/", 1)[1]
    return slot.url, {**slot.fields, "x-amz-credential": f"AKIDSOMEONE/{scope}"}, PNG, "image/png"


def _no_file(slot: Slot, stack: Stack) -> Form:
    return slot.url, slot.fields, None, "image/png"


def _condition_failed(condition: str) -> str:
    return f"Invalid according to Policy: Policy Condition failed: {condition}"


SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your key and signing method."
)
REFUSALS: list[tuple[Tamper, int, str, str]] = [
    (_edited_policy, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH),
    (_zeroed_signature, 403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH),
    (_expired, 403, "AccessDenied", "Invalid according to Policy: Policy expired."),
    # content-length-range: S3 answers 400 here, not 403
    (_oversized, 400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"),
    (
        _empty,
        400,
        "EntityTooSmall",
        "Your proposed upload is smaller than the minimum allowed size",
    ),
    (_mistyped, 403, "AccessDenied", _condition_failed('["eq", "$Content-Type", "image/png"]')),
    (
        _extra_field,
        403,
        "AccessDenied",
        "Invalid according to Policy: Extra input fields: x-amz-meta-owner",
    ),
    (_other_bucket, 403, "AccessDenied", _condition_failed('["eq", "$bucket", "{bucket}"]')),
    (_other_date, 403, "AccessDenied", _condition_failed('["eq", "$x-amz-date", "{date}"]')),
    (
        _other_access_key,
        403,
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist in our records.",
    ),
    (_no_file, 400, "InvalidArgument", "POST requires exactly one file upload per request."),
]


@pytest.mark.parametrize(
    ("tamper", "status", "code", "message"),
    REFUSALS,
    ids=[tamper.__name__.strip("_") for tamper, *_ in REFUSALS],
)
def test_a_form_s3_would_refuse_is_refused_and_nothing_is_stored(
    stack: Stack,
    new_slot: NewSlot,
    tamper: Tamper,
    status: int,
    code: str,
    message: str,
) -> None:
    # GIVEN a slot of one PNG
    slot = new_slot()
    url, fields, content, content_type = tamper(slot, stack)
    # WHEN the form, tampered with, is posted to the emulator
    answer = post(url, fields, content, content_type)
    # THEN S3's own answer
    assert answer.status_code == status, answer.text
    error = s3_error(answer)
    assert error["Code"] == code
    assert error["Message"] == message.format(bucket=slot.bucket, date=slot.fields["x-amz-date"])
    # AND nothing is stored under the slot's key (so nothing was notified either)
    assert stored_versions(stack, slot) == []
    # AND the slot's own honest upload still goes through
    assert post(slot.url, slot.fields).status_code == 204
