"""Stage settings, refused when they are read (before any request is served) if unsafe.

The idempotency lease must outlive the function (DESIGN.md, "Lost answers"): a booking older
than the lease with no refund item is taken for a create that died; if a create could still be
running then, its late writes would meet a fence, and its first answer could race its retry's.

The local stage's HS256 tokens (a shared secret with a public default) never run in Lambda, and
in a deployed stage every AWS call the app makes ends within the function's timeout.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from chalicelib import bootstrap
from chalicelib.adapters.dynamodb import MODELS, bind_models
from chalicelib.settings import LOCAL_STAGE, STAGE_PARAMETER, Settings, process_stage

CONFIG = json.loads((Path(__file__).parents[2] / ".chalice" / "config.json").read_text())


def test_a_lease_not_longer_than_the_function_timeout_is_refused_at_start_up() -> None:
    env = {"REFUNDS_STAGE": "local", "REFUNDS_IDEMPOTENCY_LEASE_SECONDS": "25"}
    with pytest.raises(RuntimeError, match="longer than the function's timeout"):
        Settings.from_environ({**env, "REFUNDS_FUNCTION_TIMEOUT_SECONDS": "25"})
    settings = Settings.from_environ({**env, "REFUNDS_FUNCTION_TIMEOUT_SECONDS": "20"})
    assert (settings.idempotency_lease_seconds, settings.function_timeout_seconds) == (25, 20)


@pytest.mark.parametrize("stage", sorted(CONFIG["stages"]))
def test_every_stage_tells_the_app_its_real_timeout_and_outlives_it(stage: str) -> None:
    stage_config = CONFIG["stages"][stage]
    env = {
        **CONFIG.get("environment_variables", {}),
        **stage_config.get("environment_variables", {}),
    }
    timeout = stage_config.get("lambda_timeout", CONFIG["lambda_timeout"])
    assert env["REFUNDS_FUNCTION_TIMEOUT_SECONDS"] == str(timeout)
    # A deployed stack's functions are told their stage by the template (REFUNDS_STAGE).
    settings = Settings.from_environ({"REFUNDS_STAGE": stage, **env})
    assert settings.idempotency_lease_seconds > settings.function_timeout_seconds == timeout


DEPLOYED = {"REFUNDS_STAGE": "prod", "AWS_REGION": "eu-west-1"}
IN_LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "refunds-APIHandler-1A2B3C"}


def test_the_local_stages_hs256_tokens_are_refused_in_lambda() -> None:
    """API.md: deployed stages verify RS256 tokens against the issuer's JWKS; the local stage's
    HS256 secret has a public default. GIVEN a function in Lambda THEN the local stage refuses
    to start, while a deployed stage starts, and the local stage starts off Lambda."""
    with pytest.raises(RuntimeError, match="refuses to run in Lambda"):
        Settings.from_environ({"REFUNDS_STAGE": LOCAL_STAGE, **IN_LAMBDA})
    deployed = Settings.from_environ({**DEPLOYED, **IN_LAMBDA})
    local = Settings.from_environ({"REFUNDS_STAGE": LOCAL_STAGE})
    assert (deployed.in_lambda, deployed.jwt_secret) == (True, None)
    assert (local.in_lambda, local.is_local) == (False, True)


def test_one_aws_call_ends_within_the_function_timeout() -> None:
    """Each call's worst case (every attempt timing out, with the retries' backoff) is under
    the function's timeout, where botocore's own timeouts (60 s) are not; settings where it is
    not are refused."""
    settings = Settings.from_environ(DEPLOYED)
    assert settings.aws_call_budget_seconds < settings.function_timeout_seconds
    assert settings.aws_connect_timeout_seconds <= 2
    assert settings.aws_read_timeout_seconds <= 5
    with pytest.raises(RuntimeError, match="the function would die waiting on it"):
        dataclasses.replace(settings, aws_max_attempts=4)


@pytest.fixture
def deployed_ports() -> Iterator[tuple[Settings, Any]]:
    """A deployed stage's ports, as a function in eu-west-1 builds them (nothing is called);
    the models are bound to the local stage again afterwards."""
    settings = Settings.from_environ(DEPLOYED)
    try:
        yield settings, bootstrap.build_ports(settings)
    finally:
        bind_models(Settings.from_environ())


def test_every_client_a_deployed_stage_builds_bounds_its_calls(
    deployed_ports: tuple[Settings, Any],
) -> None:
    """GIVEN a deployed stage's ports WHEN their AWS clients and the models' connections are
    made THEN each has the settings' connect and read timeouts and standard retries."""
    settings, ports = deployed_ports
    clients = [
        client
        for port in dataclasses.fields(ports)
        if (client := getattr(getattr(ports, port.name), "client", None)) is not None
    ]
    clients += [model._get_connection().connection.client for model in MODELS]
    assert len(clients) > len(MODELS)
    for client in clients:
        config = client.meta.config
        assert (config.connect_timeout, config.read_timeout) == (
            settings.aws_connect_timeout_seconds,
            settings.aws_read_timeout_seconds,
        ), client.meta.service_model.service_name
        assert config.retries["mode"] == "standard"
        assert config.retries["total_max_attempts"] == settings.aws_max_attempts


@pytest.mark.parametrize("region", ["us-east-1", "ap-east-1", "eu-west-1"])
def test_presigned_uploads_go_to_the_buckets_regional_endpoint(region: str) -> None:
    """S3's legacy global endpoint answers a bucket of another region (or a new one) with a
    redirect a browser's POST does not follow: uploads and downloads are presigned for the
    bucket's regional virtual-hosted endpoint, in us-east-1 too."""
    bucket = f"refunds-prod-evidence-123456789012-{region}"
    settings = Settings.from_environ(
        {**DEPLOYED, "AWS_REGION": region, "REFUNDS_EVIDENCE_BUCKET": bucket}
    )
    try:
        evidence = bootstrap.build_ports(settings).evidence
        expires_at = datetime.now(UTC) + timedelta(minutes=15)
        upload = evidence.presign_upload("evidence/rf_1/ev_1", "image/png", 1024, expires_at)
        download = evidence.presign_download("evidence/rf_1/ev_1", "v1", expires_at)
    finally:
        bind_models(Settings.from_environ())
    expected = f"{bucket}.s3.{region}.amazonaws.com"
    assert urlsplit(upload.url).hostname == urlsplit(download).hostname == expected


def test_a_packaged_app_names_its_queues_for_the_stacks_stage() -> None:
    """Chalice takes an SQS handler's queue as a literal when the app is imported: Lambda and
    the local stack import it in their stage; `chalice package` in none, and the names then
    carry the template's `${Stage}`, which the event source mapping's Fn::Sub resolves."""
    assert process_stage({"REFUNDS_STAGE": "staging"}) == "staging"
    assert process_stage({}) == STAGE_PARAMETER == "${Stage}"
