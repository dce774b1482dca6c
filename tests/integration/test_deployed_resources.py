"""The packaged template deployed, and the commands that deploy it.

tests/integration/test_infra_template.py reads the template; here CloudFormation (moto's)
creates what it declares that is not a SAM resource (tables, bucket, queues, bus, log groups),
for two stages in one account, and what it created is checked against the PynamoDB models, the
workflow's queues and the names the settings derive for a stage; then the app's own adapters
work on it. A renamed table, index or queue fails here as it would fail a deploy. The Makefile's
deploy and interpreter choice are checked by what `make` would run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pynamodb.models import Model

from chalicelib import bootstrap
from chalicelib.adapters.dynamodb import (
    MODELS,
    IdempotencyModel,
    LedgerModel,
    MessageModel,
    OrderModel,
    RefundModel,
    StatsModel,
    bind_models,
)
from chalicelib.adapters.sqs import (
    DEAD_LETTER_RETENTION_SECONDS,
    dead_letter_queue_name,
    queue_attributes,
    queue_name,
)
from chalicelib.domain.workflow import Step
from chalicelib.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "build" / "sam.yaml"
REGION = "eu-west-1"
STAGES = ("ci", "qa")
# What moto's CloudFormation creates as AWS does. Not deployed here: SAM's resources (the
# functions, the API: they need SAM's transform), and what hangs on them (alarms, WAF's
# association, the role's grants), the secret, WAF and the bucket's policy (moto's
# CloudFormation lacks them), and the order system's example rule (moto cannot put a rule on a
# bus given by Ref). The queue policy, which the bucket waits for, moto passes over.
DEPLOYED_TYPES = {
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::SQS::QueuePolicy",
    "AWS::Events::EventBus",
    "AWS::Events::Archive",
    "AWS::SNS::Topic",
    "AWS::Logs::LogGroup",
}
PARAMETERS = {
    "JwksUrl": "https://issuer.example.com/.well-known/jwks.json",
    "JwtIssuer": "https://issuer.example.com",
    "JwtAudience": "refunds-app",
    "EvidenceAllowedOrigins": "https://console.example.com",
}
TABLE_SETTINGS: dict[type[Model], str] = {
    OrderModel: "orders_table",
    RefundModel: "refunds_table",
    MessageModel: "messages_table",
    IdempotencyModel: "idempotency_table",
    LedgerModel: "ledger_table",
    StatsModel: "stats_table",
}


def _references(value: Any) -> Iterator[str]:
    """The resources and parameters a piece of template refers to (Ref, GetAtt, Sub)."""
    if isinstance(value, list):
        for item in value:
            yield from _references(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key == "Ref":
                yield item.split(".")[0]
            elif key == "Fn::GetAtt":
                yield item[0] if isinstance(item, list) else item.split(".")[0]
            elif key == "Fn::Sub":
                text = item if isinstance(item, str) else item[0]
                yield from (name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text))
                yield from _references(item)
            else:
                yield from _references(item)


def _deployable(template: Mapping[str, Any]) -> dict[str, Any]:
    """The template's resources of DEPLOYED_TYPES, less any that refer to one left out."""
    kept = {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] in DEPLOYED_TYPES
    }
    known = set(template["Parameters"])
    dropped = True
    while dropped:
        dropped = False
        for name, resource in list(kept.items()):
            depends = resource.get("DependsOn", [])
            needs = set(_references(resource.get("Properties", {}))) | set(
                [depends] if isinstance(depends, str) else depends
            )
            if any(not n.startswith("AWS::") and n not in kept and n not in known for n in needs):
                del kept[name]
                dropped = True
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": template["Parameters"],
        "Resources": kept,
        "Outputs": {"EvidenceBucketName": {"Value": {"Ref": "EvidenceBucket"}}},
    }


@dataclass
class Deployed:
    """Two stacks of the packaged template, one per stage, in one moto account."""

    resources: dict[str, Any]
    stacks: dict[str, dict[str, Any]]
    dynamodb: Any
    sqs: Any
    s3: Any
    events: Any
    logs: Any

    def settings(self, stage: str) -> Settings:
        """A function's settings in ``stage``: its stage and bucket, as the template's Globals
        give them."""
        outputs = {o["OutputKey"]: o["OutputValue"] for o in self.stacks[stage]["Outputs"]}
        return Settings.from_environ(
            {
                "REFUNDS_STAGE": stage,
                "AWS_REGION": REGION,
                "REFUNDS_EVIDENCE_BUCKET": outputs["EvidenceBucketName"],
            }
        )


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    import boto3
    from moto import mock_aws

    if not BUILT.exists():
        pytest.skip("no build/sam.yaml: run `make package`")
    template = _deployable(yaml.safe_load(BUILT.read_text(encoding="utf-8")))
    with mock_aws(), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "Tried to parse AWS::SQS::QueuePolicy", category=UserWarning
        )
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        stacks = {}
        for stage in STAGES:
            cloudformation.create_stack(
                StackName=f"refunds-{stage}",
                TemplateBody=json.dumps(template),
                Parameters=[
                    {"ParameterKey": key, "ParameterValue": value}
                    for key, value in {**PARAMETERS, "Stage": stage}.items()
                ],
            )
            (stacks[stage],) = cloudformation.describe_stacks(StackName=f"refunds-{stage}")[
                "Stacks"
            ]
        yield Deployed(
            template["Resources"],
            stacks,
            *(
                boto3.client(service, region_name=REGION)
                for service in ("dynamodb", "sqs", "s3", "events", "logs")
            ),
        )


def test_the_stateful_resources_are_deployed(deployed: Deployed) -> None:
    """None of the tables, queues, the bucket or the bus is left out of what is deployed."""
    kinds = {resource["Type"] for resource in deployed.resources.values()}
    assert kinds == DEPLOYED_TYPES
    assert sum(r["Type"] == "AWS::DynamoDB::Table" for r in deployed.resources.values()) == len(
        MODELS
    )


def test_two_stages_fit_one_account(deployed: Deployed) -> None:
    """GIVEN the template deployed as `ci` and as `qa` in one account and region THEN both
    stacks are complete and each has its own tables, queues, bucket, bus and log groups."""
    for stage in STAGES:
        assert deployed.stacks[stage]["StackStatus"] == "CREATE_COMPLETE", stage
    tables = deployed.dynamodb.list_tables()["TableNames"]
    queues = [url.rsplit("/", 1)[-1] for url in deployed.sqs.list_queues()["QueueUrls"]]
    buckets = [bucket["Name"] for bucket in deployed.s3.list_buckets()["Buckets"]]
    buses = [bus["Name"] for bus in deployed.events.list_event_buses()["EventBuses"]]
    groups = [g["logGroupName"] for g in deployed.logs.describe_log_groups()["logGroups"]]
    per_stage = {
        kind: len(names) // len(STAGES)
        for kind, names in {"tables": tables, "queues": queues, "groups": groups}.items()
    }
    for stage in STAGES:
        settings = deployed.settings(stage)
        assert {getattr(settings, setting) for setting in TABLE_SETTINGS.values()} == {
            t for t in tables if t.startswith(f"refunds-{stage}-")
        }
        assert sum(q.startswith(f"refunds-{stage}-") for q in queues) == per_stage["queues"]
        assert sum(f"/refunds-{stage}-" in g for g in groups) == per_stage["groups"]
        assert settings.evidence_bucket in buckets
        assert settings.evidence_bucket.startswith(f"refunds-{stage}-evidence-")
        assert settings.event_bus in buses
    assert per_stage["tables"] == len(MODELS)


def _keys(key_schema: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(k["AttributeName"], k["KeyType"]) for k in key_schema}


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_deployed_table_is_its_models(
    model: type[Model], stage: str, deployed: Deployed
) -> None:
    """GIVEN the table the settings name for the model in a stage WHEN DynamoDB describes it
    THEN its keys, attribute types, indexes with their keys and projections, billing and
    stream are what the model declares (what its create_table would make)."""
    schema = model._get_schema()
    table = deployed.dynamodb.describe_table(
        TableName=getattr(deployed.settings(stage), TABLE_SETTINGS[model])
    )["Table"]

    assert _keys(table["KeySchema"]) == _keys(schema["key_schema"])
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        (a["AttributeName"], a["AttributeType"]) for a in schema["attribute_definitions"]
    }
    assert {
        index["IndexName"]: (_keys(index["KeySchema"]), index["Projection"])
        for index in table.get("GlobalSecondaryIndexes", [])
    } == {
        index["index_name"]: (_keys(index["key_schema"]), index["projection"])
        for index in schema["global_secondary_indexes"]
    }
    assert not table.get("LocalSecondaryIndexes")
    assert table["BillingModeSummary"]["BillingMode"] == model.Meta.billing_mode
    view = getattr(model.Meta, "stream_view_type", None)
    stream = {"StreamEnabled": True, "StreamViewType": view} if view else None
    assert table.get("StreamSpecification") == stream


@pytest.mark.parametrize("step", list(Step), ids=str)
def test_each_step_queue_is_deployed_as_the_local_stack_makes_it(
    step: Step, deployed: Deployed
) -> None:
    """The queue a stage's app sends a step to exists, with the attributes the local stack
    gives it (queue_attributes: visibility and redrive to its own DLQ after the step's last
    attempt), and its DLQ keeps messages 14 days."""
    for stage in STAGES:
        dead_letter = deployed.sqs.get_queue_url(QueueName=dead_letter_queue_name(step, stage))
        dead = deployed.sqs.get_queue_attributes(
            QueueUrl=dead_letter["QueueUrl"], AttributeNames=["All"]
        )["Attributes"]
        url = deployed.sqs.get_queue_url(QueueName=queue_name(step, stage))["QueueUrl"]
        attributes = deployed.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"
        ]
        expected = queue_attributes(step, dead["QueueArn"])

        assert attributes["VisibilityTimeout"] == expected["VisibilityTimeout"]
        assert json.loads(attributes["RedrivePolicy"]) == json.loads(expected["RedrivePolicy"])
        assert int(dead["MessageRetentionPeriod"]) == DEAD_LETTER_RETENTION_SECONDS


def test_the_apps_adapters_work_on_a_deployed_stage(deployed: Deployed) -> None:
    """GIVEN the ports a function of the `ci` stack builds from its settings WHEN they read a
    table, send each step's message, publish to the bus and look for evidence THEN each finds
    the resource it names: the code and the template agree on every name."""
    settings = deployed.settings("ci")
    try:
        ports = bootstrap.build_ports(settings)
        assert ports.orders.get("o-none") is None
        for step in Step:
            ports.steps.send(step, "rf_01")
            url = deployed.sqs.get_queue_url(QueueName=queue_name(step, "ci"))["QueueUrl"]
            (message,) = deployed.sqs.receive_message(QueueUrl=url)["Messages"]
            assert json.loads(message["Body"]) == {"step": step.value, "refund_id": "rf_01"}
        assert ports.evidence.inspect("evidence/rf_01/ev_01") is None
        upload = ports.evidence.presign_upload(
            "evidence/rf_01/ev_01", "image/png", 1024, datetime.now(UTC) + timedelta(minutes=5)
        )
        assert upload.url == f"https://{settings.evidence_bucket}.s3.{REGION}.amazonaws.com/"
        bus = deployed.events.describe_event_bus(Name=settings.event_bus)
        assert bus["Name"] == "refunds-ci"
    finally:
        bind_models(Settings.from_environ())


# --- The Makefile: which interpreter makes .venv, and what `make deploy` runs ---------------


def _make(*args: str, path: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("MAKE")}
    env.pop("PYTHON", None)
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return subprocess.run(  # noqa: S603 - make, on our own Makefile
        ["make", "--no-print-directory", *args],  # noqa: S607 - make from PATH, as a developer runs it
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def _interpreters(folder: Path, versions: Mapping[str, str | None]) -> Path:
    """Stand-ins for python3.X on PATH: each prints its version, or fails like a pyenv shim of
    a version not selected (None)."""
    folder.mkdir()
    for version, prints in versions.items():
        script = folder / f"python{version}"
        body = f"echo {prints}" if prints else "exit 127"
        script.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
        script.chmod(0o755)
    return folder


@pytest.mark.parametrize(
    ("versions", "chosen"),
    [
        ({"3.13": "3.13", "3.12": "3.12"}, "python3.13"),
        ({"3.13": None, "3.12": "3.12"}, "python3.12"),
    ],
)
def test_make_builds_the_venv_with_the_first_supported_python(
    versions: dict[str, str | None], chosen: str, tmp_path: Path
) -> None:
    """GIVEN the Pythons on PATH WHEN make needs a venv THEN it makes it with the first of
    python3.13, python3.12 that runs, and records its version in the ready marker."""
    venv = tmp_path / "venv"
    path = _interpreters(tmp_path / "bin", versions)
    run = _make("-n", f"VENV={venv}", f"{venv}/.ready", path=path)
    assert run.returncode == 0, run.stderr
    assert f"{chosen} -m venv --clear {venv}" in run.stdout
    assert f"echo {chosen.removeprefix('python')} > {venv}/.ready" in run.stdout


def test_make_stops_with_a_clear_message_without_a_supported_python(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    path = _interpreters(tmp_path / "bin", {"3.13": None, "3.12": None})
    run = _make(f"VENV={venv}", f"{venv}/.ready", path=path)
    assert run.returncode != 0
    assert "needs Python 3.13 or 3.12" in run.stderr
    assert not venv.exists()
    old = _make("PYTHON=python3.11", f"VENV={venv}", f"{venv}/.ready", path=path)
    assert old.returncode != 0
    assert "PYTHON=python3.11 is 3.11" in old.stderr


def test_a_venv_made_by_another_python_is_made_again(tmp_path: Path) -> None:
    """GIVEN a venv whose marker records the interpreter that made it WHEN that is not the one
    make would use THEN make makes it again from scratch; when it is, nothing is redone."""
    venv = tmp_path / "venv"
    venv.mkdir()
    path = _interpreters(tmp_path / "bin", {"3.13": "3.13", "3.12": "3.12"})
    (venv / ".ready").write_text("3.11\n", encoding="utf-8")
    stale = _make("-n", f"VENV={venv}", f"{venv}/.ready", path=path)
    assert f"-m venv --clear {venv}" in stale.stdout
    (venv / ".ready").write_text("3.13\n", encoding="utf-8")
    ready = _make("-q", f"VENV={venv}", f"{venv}/.ready", path=path)
    assert ready.returncode == 0, ready.stdout


def test_make_deploy_packages_and_deploys_the_stage_with_what_it_needs(tmp_path: Path) -> None:
    """`make deploy` uploads the package and deploys the stack of its stage with the IAM and
    SAM capabilities, the stage's tags and parameters; a new stack first without the tables'
    deletion protection (its rollback must delete them), then with it."""
    venv = tmp_path / "venv"
    run = _make(
        "-n",
        f"VENV={venv}",
        "PYTHON=python3",
        "deploy",
        "STAGE=staging",
        "ARTIFACTS_BUCKET=artifacts",
        "JWKS_URL=https://issuer.example.com/jwks",
        "JWT_ISSUER=https://issuer.example.com",
        "JWT_AUDIENCE=refunds-app",
        "EVIDENCE_ORIGINS=https://console.example.com",
    )
    assert run.returncode == 0, run.stderr
    aws = f"{venv}/bin/aws"
    assert f"{aws} cloudformation package --template-file build/sam.yaml" in run.stdout
    assert "--s3-bucket artifacts --s3-prefix refunds-staging" in run.stdout
    deploys = [line for line in run.stdout.splitlines() if "cloudformation deploy" in line]
    assert len(deploys) == 2
    for line in deploys:
        assert "--stack-name refunds-staging" in line
        assert "--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND" in line
        assert "--tags project=refunds stage=staging" in line
        overrides = line.split("--parameter-overrides", 1)[1].split()
        assert {
            "Stage=staging",
            "JwksUrl=https://issuer.example.com/jwks",
            "JwtIssuer=https://issuer.example.com",
            "JwtAudience=refunds-app",
            "EvidenceAllowedOrigins=https://console.example.com",
        } <= set(overrides)
    assert "TableDeletionProtection=false" in deploys[0]
    assert "TableDeletionProtection=true" in deploys[1]
    assert "env -u REFUNDS_STAGE" in run.stdout


def test_make_deploy_needs_a_stage_and_a_bucket() -> None:
    run = _make("deploy", "ARTIFACTS_BUCKET=artifacts")
    assert run.returncode != 0
    assert "STAGE=" in run.stderr
    run = _make("deploy", "STAGE=staging")
    assert run.returncode != 0
    assert "ARTIFACTS_BUCKET=" in run.stderr
