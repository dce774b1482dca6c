"""The S3 evidence store against moto: presigned POST policies and the server-side look.

moto does not enforce presigned POST policies, so these tests read the policy the store
signs (what S3 would enforce) and check that ``inspect`` reports what is really stored.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.service.ports import EvidenceStore

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
MIB = 1024 * 1024


@dataclass
class S3:
    store: EvidenceStore
    client: Any
    bucket: str
    secret_key: str


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    """The stage's evidence store as the bootstrap builds it, over one moto bucket."""
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.settings import Settings

    with mock_aws():
        settings = Settings.from_environ()
        ports = bootstrap.build_ports(settings)
        client = boto3.client("s3", region_name=settings.region)
        client.create_bucket(Bucket=settings.evidence_bucket)
        yield S3(
            ports.evidence,
            client,
            settings.evidence_bucket,
            os.environ["AWS_SECRET_ACCESS_KEY"],
        )


def _policy(fields: dict[str, str]) -> dict[str, Any]:
    return dict(json.loads(base64.b64decode(fields["policy"])))


def _sigv4_signature(secret_key: str, date: str, region: str, string_to_sign: str) -> str:
    key = ("AWS4" + secret_key).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("content_type", "max_size"),
    [("image/png", 48213), ("application/pdf", 10 * MIB)],
)
def test_presign_upload_signs_a_policy_for_one_key_type_and_size(
    s3: S3, content_type: str, max_size: int
) -> None:
    # GIVEN an evidence slot's key, declared type and size, and an expiry 15 minutes away
    key = "evidence/rf_01KBZ000000000000000000001/ev_01KBZ000000000000000000001"
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=15)
    # WHEN the store presigns its upload
    upload = s3.store.presign_upload(key, content_type, max_size, expires_at)
    # THEN it is a SigV4 POST to the bucket with the type fixed in the fields
    fields = upload.fields
    assert upload.expires_at == expires_at
    assert s3.bucket in upload.url
    assert fields["key"] == key
    assert fields["Content-Type"] == content_type
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["x-amz-credential"].endswith("/us-east-1/s3/aws4_request")
    assert "AWSAccessKeyId" not in fields  # not the SigV2 form
    # AND its policy allows only that type, 1 byte to the declared size, and that one key
    policy = _policy(fields)
    conditions = policy["conditions"]
    assert {"Content-Type": content_type} in conditions
    assert ["content-length-range", 1, max_size] in conditions
    assert {"key": key} in conditions
    assert {"bucket": s3.bucket} in conditions
    assert {"x-amz-algorithm": "AWS4-HMAC-SHA256"} in conditions
    assert {"x-amz-credential": fields["x-amz-credential"]} in conditions
    assert {"x-amz-date": fields["x-amz-date"]} in conditions
    # AND it expires when the slot's upload does
    expiration = datetime.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expiration - expires_at) <= timedelta(seconds=2)
    # AND the signature is the SigV4 signature of that policy
    date = fields["x-amz-date"][:8]
    expected = _sigv4_signature(s3.secret_key, date, "us-east-1", fields["policy"])
    assert fields["x-amz-signature"] == expected


def test_inspect_of_a_missing_key_is_none(s3: S3) -> None:
    assert s3.store.inspect("evidence/rf_x/ev_missing") is None


def test_inspect_reads_the_real_size_and_only_the_first_bytes_of_a_big_object(s3: S3) -> None:
    # GIVEN a 3 MiB PDF
    data = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + os.urandom(3 * MIB)
    put = s3.client.put_object(Bucket=s3.bucket, Key="evidence/rf_1/ev_big", Body=data)
    # WHEN the store inspects it
    found = s3.store.inspect("evidence/rf_1/ev_big")
    # THEN it has the real size (from Content-Range), the ETag, and just 16 leading bytes
    assert found is not None
    assert found.size == len(data)
    assert found.etag == put["ETag"]
    assert found.head == data[:16]


def test_inspect_of_an_object_smaller_than_the_head(s3: S3) -> None:
    s3.client.put_object(Bucket=s3.bucket, Key="evidence/rf_1/ev_small", Body=b"%PDF")
    found = s3.store.inspect("evidence/rf_1/ev_small")
    assert found is not None
    assert (found.size, found.head) == (4, b"%PDF")


def test_inspect_of_an_empty_object_has_size_zero(s3: S3) -> None:
    # S3 answers a ranged GET of an empty object with InvalidRange; the store asks HEAD.
    put = s3.client.put_object(Bucket=s3.bucket, Key="evidence/rf_1/ev_empty", Body=b"")
    found = s3.store.inspect("evidence/rf_1/ev_empty")
    assert found is not None
    assert (found.size, found.head, found.etag) == (0, b"", put["ETag"])


def test_a_replaced_object_has_another_etag(s3: S3) -> None:
    key = "evidence/rf_1/ev_replaced"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"%PDF-1.4 first")
    first = s3.store.inspect(key)
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=PNG)
    second = s3.store.inspect(key)
    assert first is not None
    assert second is not None
    assert first.etag != second.etag
    assert second.head == PNG


def test_an_upload_through_the_presigned_post_is_checked_by_its_real_size(s3: S3) -> None:
    # GIVEN a slot presigned for at most 64 bytes of PNG
    import requests

    key = "evidence/rf_1/ev_posted"
    expires_at = datetime.now(UTC) + timedelta(minutes=15)
    upload = s3.store.presign_upload(key, "image/png", 64, expires_at)
    # WHEN a client posts 1 KiB through it (moto, unlike S3, does not enforce the policy)
    data = PNG + b"\x00" * 1024
    response = requests.post(
        upload.url, data=upload.fields, files={"file": ("x.png", data)}, timeout=10
    )
    assert response.status_code in (200, 201, 204)
    # THEN the store sees the object under the slot's key with its real size
    found = s3.store.inspect(key)
    assert found is not None
    assert (found.size, found.head) == (len(data), data[:16])
