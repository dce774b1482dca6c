"""Shared fixtures: a local-stage environment, moto-backed AWS, the Chalice test client, tokens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

os.environ.update(
    REFUNDS_STAGE="local",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    # Nothing listens there: a payout through it finds the channel unavailable. Tests that
    # pay replace the gateways with fakes, or start the simulator.
    REFUNDS_CHANNEL_SIMULATOR_URL="http://127.0.0.1:9",
)
os.environ.pop("REFUNDS_AWS_ENDPOINT", None)
os.environ.pop("AWS_PROFILE", None)


@dataclass
class Aws:
    """moto-backed AWS with the stage's tables and bucket, and the app wired to them."""

    settings: Any
    ports: Any
    s3: Any


@pytest.fixture
def aws() -> Iterator[Aws]:
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.adapters.dynamodb import create_tables
    from chalicelib.settings import Settings

    with mock_aws():
        settings = Settings.from_environ()
        ports = bootstrap.build_ports(settings)
        create_tables()
        s3 = boto3.client("s3", region_name=settings.region)
        s3.create_bucket(Bucket=settings.evidence_bucket)
        s3.put_bucket_versioning(
            Bucket=settings.evidence_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        bootstrap.install(ports, bootstrap.build_verifier(settings))
        yield Aws(settings, ports, s3)
        bootstrap.install(None, None)


@pytest.fixture
def client(aws: Aws) -> Iterator[Any]:
    from chalice.test import Client

    from app import app

    with Client(app, stage_name="local") as test_client:
        yield test_client
