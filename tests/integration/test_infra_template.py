"""infra/template.yaml against the code's own declarations: the models, the workflow, config.json,
API.md.

DESIGN.md, "infra/": what Chalice cannot declare (tables, bucket, queues, S3 notifications,
ReportBatchItemFailures, stream event sources, the event bus, alarms, IAM, gateway responses) is a
CloudFormation template merged into `chalice package` output. Nothing but these tests keeps it in step with the PynamoDB models
and the workflow's step table, which the local stack and the other tests create their tables
and queues from, so every expectation here is derived from the code, not restated.
"""

from __future__ import annotations

import copy
import fnmatch
import inspect
import json
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from chalice.utils import to_cfn_resource_name
from pynamodb.attributes import TTLAttribute
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import (
    MODELS,
    IdempotencyModel,
    LedgerModel,
    MessageModel,
    OrderModel,
    RefundModel,
    StatsModel,
)
from chalicelib.adapters.eventbridge import EventBridgeBus
from chalicelib.adapters.holidays import china_working_day
from chalicelib.adapters.reconciliation_store import DynamoReconciliationStore
from chalicelib.adapters.sqs import (
    DEAD_LETTER_RETENTION_SECONDS,
    QUEUE_PREFIX,
    dead_letter_queue_name,
    queue_attributes,
    queue_name,
)
from chalicelib.adapters.stats_store import MARKER_DAYS, DynamoStatsStore
from chalicelib.api import metrics
from chalicelib.api.http import MAX_BODY_BYTES
from chalicelib.api.queues import run_batch
from chalicelib.api.routes.workers import STREAM_CONSUMERS
from chalicelib.domain.calendar import WorkingCalendar
from chalicelib.domain.events import SOURCE, RefundEvent
from chalicelib.domain.model import RefundStatus
from chalicelib.domain.promises import escalate, start_review_promise
from chalicelib.domain.reconciliation import (
    ChannelReconciliation,
    Mismatch,
    MismatchKind,
    Reconciliation,
)
from chalicelib.domain.workflow import WORKFLOW, Step
from chalicelib.service.ports import CounterChange, StoredChange
from chalicelib.service.refunds import evidence_key, parse_evidence_key
from chalicelib.service.workflow import DONE
from chalicelib.settings import STAGE_PARAMETER, Settings, get_settings
from infra.local.event_sources import StreamPoller
from tests.fakes import FakeStepQueue, sample_refund

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"
BUILT = ROOT / "build" / "sam.yaml"

# The setting naming each model's table (chalicelib/settings.py), which derives it from the
# stage: in the template, `refunds-${Stage}-*`.
TABLE_SETTINGS: dict[type[Model], str] = {
    OrderModel: "orders_table",
    RefundModel: "refunds_table",
    MessageModel: "messages_table",
    IdempotencyModel: "idempotency_table",
    LedgerModel: "ledger_table",
    StatsModel: "stats_table",
}
# The stack's stage, as the template's names carry it (its `Stage` parameter).
STAGE = STAGE_PARAMETER
# Nothing deletes an item: the refunds and the ledger are kept for good, keys expire by TTL.
TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
}
# What Lambda's stream event source mappings do through the function's role. Not ListStreams:
# it takes no resource but `*`, and a mapping names its stream.
STREAM_ACTIONS = {
    "dynamodb:DescribeStream",
    "dynamodb:GetShardIterator",
    "dynamodb:GetRecords",
}
# A stream keeps a record 24 hours: a mapping gives up on it no later.
STREAM_RETENTION_SECONDS = 24 * 3600
ROLE = "RefundsFunctionRole"
# What the app does on a step queue (send, and a failed attempt's backoff) and what Lambda's
# event source mapping does through the function's role.
QUEUE_ACTIONS = {
    "sqs:GetQueueUrl",
    "sqs:SendMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
}
# AWS: a Lambda event source queue's visibility timeout is at least 6 x the function's timeout.
VISIBILITY_PER_FUNCTION_TIMEOUT = 6
ALARM_WINDOW_SECONDS = 300
# Replays of the refund events to a consumer's rule reach back a year, like the logs.
ARCHIVE_MIN_DAYS = 365
ORDER_SYSTEM_RULE = "OrderSystemRefundPaidRule"
ALARM_TOPIC = "AlarmTopic"
ENVELOPE_CODES = {
    "MISSING_AUTHENTICATION_TOKEN": (404, "not_found"),
    "THROTTLED": (429, "too_many_requests"),
    "DEFAULT_4XX": (None, "invalid_request"),
    "DEFAULT_5XX": (None, "internal_error"),
}


class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, read into their long form as chalice does."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]


@pytest.fixture(scope="module")
def chalice_config() -> dict[str, Any]:
    config: dict[str, Any] = json.loads(CHALICE_CONFIG.read_text(encoding="utf-8"))
    return config


@pytest.fixture(scope="module")
def prod_stage(chalice_config: dict[str, Any]) -> dict[str, Any]:
    stage: dict[str, Any] = chalice_config["stages"]["prod"]
    return stage


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r.get("Type") == kind}


def _table_of(model: type[Model], resources: dict[str, Any]) -> str:
    """The table resource whose TableName is the one the stack's settings give ``model``."""
    stack = Settings.from_environ({"REFUNDS_STAGE": STAGE})
    return _table_named(getattr(stack, TABLE_SETTINGS[model]), resources)


def _table_named(name: str, resources: dict[str, Any]) -> str:
    """The table resource whose TableName is ``name`` (``${Stage}`` for the stack's stage)."""
    tables = _of_type(resources, "AWS::DynamoDB::Table")
    found = [
        logical
        for logical, t in tables.items()
        if _arn_pattern(t["Properties"]["TableName"]) == name
    ]
    assert len(found) == 1, f"{len(found)} tables named {name!r} in {TEMPLATE.name}"
    return found[0]


def _queue_named(name: str, resources: dict[str, Any]) -> str:
    """The queue resource whose QueueName is ``name`` (``${Stage}`` for the stack's stage)."""
    queues = _of_type(resources, "AWS::SQS::Queue")
    found = [
        logical
        for logical, q in queues.items()
        if _arn_pattern(q["Properties"]["QueueName"]) == name
    ]
    assert len(found) == 1, f"{len(found)} queues named {name!r} in {TEMPLATE.name}"
    return found[0]


def _assert_kept(resource: dict[str, Any]) -> None:
    """Kept when the stack goes or replaces it; deleted when the deploy that created it rolls
    back, so that a failed first deploy can run again under the same names."""
    assert resource["DeletionPolicy"] == "RetainExceptOnCreate"
    assert resource["UpdateReplacePolicy"] == "Retain"


def _get_att(value: Any, attribute: str) -> str:
    """The resource of ``!GetAtt Resource.attribute``."""
    assert isinstance(value, dict), value
    assert "Fn::GetAtt" in value, value
    resource, got = value["Fn::GetAtt"]
    assert got == attribute, value
    return str(resource)


def _keys(key_schema: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(k["AttributeName"], k["KeyType"]) for k in key_schema}


def _definitions(definitions: Iterable[Mapping[str, Any]]) -> set[tuple[str, str]]:
    return {(d["AttributeName"], d["AttributeType"]) for d in definitions}


def _statements(resources: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in resources[ROLE]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _arn_pattern(resource: Any) -> str:
    """A policy Resource as text: ``!GetAtt T.Arn`` is ``${T.Arn}``, ``!Sub`` its string."""
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        return "${%s}" % ".".join(resource["Fn::GetAtt"])  # noqa: UP031 - a literal ${...}
    if isinstance(resource, dict) and "Fn::Sub" in resource:
        return str(resource["Fn::Sub"])
    return str(resource)


@pytest.fixture(scope="module")
def prod_settings(
    template: dict[str, Any], chalice_config: dict[str, Any], prod_stage: dict[str, Any]
) -> Settings:
    """The settings a function of the stack reads: the environment config.json's prod stage
    gives it, and the template's Globals, whose REFUNDS_STAGE is the stack's `Stage`."""
    stack = template["Globals"]["Function"]["Environment"]["Variables"]
    assert stack["REFUNDS_STAGE"] == {"Ref": "Stage"}
    return Settings.from_environ(
        {
            **chalice_config["environment_variables"],
            **prod_stage["environment_variables"],
            "REFUNDS_STAGE": STAGE,
        }
    )


def _stream_consumers() -> list[tuple[str, str]]:
    """(function, setting naming its table) for each stream a function reads."""
    return [
        (function, setting) for function, tables in STREAM_CONSUMERS.items() for setting in tables
    ]


def _consumer_dead_letter_name(function: str) -> str:
    """The stream consumer's on-failure queue, named like the step DLQs:
    ``refunds-<stage>-<fn>-dlq``."""
    return f"{QUEUE_PREFIX}{STAGE}-{function.replace('_', '-')}-dlq"


# IAM authorises a TransactWriteItems by the actions of its items, not an action of its own.
TRANSACTION_ITEM_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


class _RecordingDynamoDB:
    """A DynamoDB client that answers nothing and keeps the IAM action of each call."""

    def __init__(self) -> None:
        self.actions: set[str] = set()

    def transact_write_items(self, TransactItems: list[dict[str, Any]]) -> dict[str, Any]:
        for item in TransactItems:
            (kind,) = item
            self.actions.add(TRANSACTION_ITEM_ACTIONS[kind])
        return {}

    def batch_get_item(self, **_: Any) -> dict[str, Any]:
        self.actions.add("dynamodb:BatchGetItem")
        return {"Responses": {}}

    def put_item(self, **_: Any) -> dict[str, Any]:
        self.actions.add("dynamodb:PutItem")
        return {}

    def get_item(self, **_: Any) -> dict[str, Any]:
        self.actions.add("dynamodb:GetItem")
        return {}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the stats table's stores call {name}: grant its action, list it")


def _stats_store_actions() -> set[str]:
    """The IAM actions the stats table's stores need, on a recording client: the counters'
    writes of a change, their reads of a period, daily-stats' record of a day
    (chalicelib/adapters/stats_store.py), and a reconciliation's record and read
    (chalicelib/adapters/reconciliation_store.py)."""
    client = _RecordingDynamoDB()
    store = DynamoStatsStore("stats", lambda: client)
    day = date(2026, 11, 11)
    store.apply(CounterChange("refunds#rf_01", "1", {(day, "p#0"): Counter(refunds=1)}))
    store.days(day, day, ["p#0"])
    store.record_day(day, "{}")
    runs = DynamoReconciliationStore("stats", lambda: client)
    runs.record(Reconciliation(day, datetime(2026, 11, 12, 2, tzinfo=UTC)))
    runs.get(day)
    return client.actions


def _table_actions(model: type[Model]) -> set[str]:
    if model is StatsModel:
        return _stats_store_actions()
    # reconcile reads the refunds a channel's statement names by batch.
    return TABLE_ACTIONS | {"dynamodb:BatchGetItem"} if model is RefundModel else TABLE_ACTIONS


# --- DynamoDB -----------------------------------------------------------------------------


def test_there_is_one_table_per_model(resources: dict[str, Any]) -> None:
    """GIVEN the models WHEN the template is read THEN each has its table and no table is extra."""
    tables = {_table_of(model, resources) for model in MODELS}
    assert tables == set(_of_type(resources, "AWS::DynamoDB::Table"))
    assert set(TABLE_SETTINGS) == set(MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_table_keys_and_indexes_are_the_models(
    model: type[Model], resources: dict[str, Any]
) -> None:
    """Keys, attribute definitions and GSIs are what the model's create_table would declare.

    DESIGN.md, "Queries, not scans": the CS queue, a user's refunds and the sweeps are GSIs; a
    GSI projects what its queries filter on (field notes: KEYS_ONLY plus a filter finds nothing).
    """
    schema = model._get_schema()
    props = resources[_table_of(model, resources)]["Properties"]

    assert _keys(props["KeySchema"]) == _keys(schema["key_schema"])
    assert _definitions(props["AttributeDefinitions"]) == _definitions(
        schema["attribute_definitions"]
    )
    declared = {
        index["IndexName"]: (_keys(index["KeySchema"]), index["Projection"])
        for index in props.get("GlobalSecondaryIndexes", [])
    }
    expected = {
        index["index_name"]: (_keys(index["key_schema"]), index["projection"])
        for index in schema["global_secondary_indexes"]
    }
    assert declared == expected
    assert not schema["local_secondary_indexes"]
    assert not props.get("LocalSecondaryIndexes")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_table_is_on_demand_recoverable_encrypted_and_retained(
    model: type[Model], resources: dict[str, Any]
) -> None:
    """PAY_PER_REQUEST like the models' Meta; PITR, SSE, kept, and deletion protection on
    unless the deploy that creates the stack turns it off (its rollback must delete them)."""
    table = resources[_table_of(model, resources)]
    props = table["Properties"]

    assert props["BillingMode"] == model.Meta.billing_mode == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] == {"Ref": "TableDeletionProtection"}
    _assert_kept(table)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_ttl_is_the_models_ttl_attribute(model: type[Model], resources: dict[str, Any]) -> None:
    """DynamoDB's TTL removes expired Idempotency-Keys (API.md): on the model's TTLAttribute only."""
    ttl_names = [
        name for name, attr in model.get_attributes().items() if isinstance(attr, TTLAttribute)
    ]
    props = resources[_table_of(model, resources)]["Properties"]
    spec = props.get("TimeToLiveSpecification")

    if ttl_names:
        assert spec == {"AttributeName": ttl_names[0], "Enabled": True}
    else:
        assert spec is None
    if model is IdempotencyModel:
        assert ttl_names == ["expires_at"]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_table_streams_are_the_models(model: type[Model], resources: dict[str, Any]) -> None:
    """A table has a stream when, and as, its model's Meta declares one: the local stack's
    create_table makes it from the same ``stream_view_type``."""
    view = getattr(model.Meta, "stream_view_type", None)
    props = resources[_table_of(model, resources)]["Properties"]

    if view:
        assert props["StreamSpecification"] == {"StreamViewType": view}
    else:
        assert "StreamSpecification" not in props


# --- S3 -----------------------------------------------------------------------------------


def test_evidence_bucket_is_private_encrypted_versioned_and_tls_only(
    resources: dict[str, Any],
) -> None:
    """DESIGN.md, "Evidence is uploaded straight to S3": one private bucket, presigned POSTs."""
    bucket = resources["EvidenceBucket"]
    props = bucket["Properties"]

    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rules = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rules[0]["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    _assert_kept(bucket)
    # Browsers' uploads from the configured origins only, with no header beyond a form's.
    (cors,) = props["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedMethods"] == ["POST"]
    assert cors["AllowedOrigins"] == {"Ref": "EvidenceAllowedOrigins"}
    assert "AllowedHeaders" not in cors

    (policy,) = _of_type(resources, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "EvidenceBucket"}
    assert {
        "Effect": "Deny",
        "Action": "s3:*",
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }.items() <= policy["Properties"]["PolicyDocument"]["Statement"][0].items()


def test_evidence_uploads_notify_the_verify_evidence_queue(resources: dict[str, Any]) -> None:
    """DESIGN.md, "Workflow": S3 ObjectCreated under the slots' keys reaches verify-evidence
    through SQS (chalice cannot package ``on_s3_event``), and only that bucket may send there."""
    bucket = resources["EvidenceBucket"]
    (notification,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    queue = _queue_named(queue_name(Step.VERIFY_EVIDENCE, STAGE), resources)

    assert notification["Event"] == "s3:ObjectCreated:*"
    assert _get_att(notification["Queue"], "Arn") == queue
    (rule,) = notification["Filter"]["S3Key"]["Rules"]
    assert rule["Name"] == "prefix"
    key = evidence_key("rf_01", "ev_01")
    assert key.startswith(rule["Value"])
    assert parse_evidence_key(key) == ("rf_01", "ev_01")

    # S3 checks its right to send when the notification is set: the policy must come first,
    # and must not name the bucket by !Ref (a circular dependency).
    (policy_name,) = (
        name
        for name, policy in _of_type(resources, "AWS::SQS::QueuePolicy").items()
        if {"Ref": queue} in policy["Properties"]["Queues"]
    )
    assert policy_name in _as_list(bucket.get("DependsOn", []))
    (statement,) = resources[policy_name]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert _as_list(statement["Action"]) == ["sqs:SendMessage"]
    assert _get_att(statement["Resource"], "Arn") == queue
    conditions = {
        key: value for test in statement["Condition"].values() for key, value in test.items()
    }
    bucket_name = _arn_pattern(bucket["Properties"]["BucketName"])
    assert (
        _arn_pattern(conditions["aws:SourceArn"]) == f"arn:${{AWS::Partition}}:s3:::{bucket_name}"
    )
    assert conditions["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}


# --- SQS: the workflow's step queues ------------------------------------------------------


def test_there_are_the_steps_queues_the_stream_consumers_dlqs_and_nothing_else(
    resources: dict[str, Any],
) -> None:
    """GIVEN the workflow's steps and the stream consumers WHEN the template is read THEN each
    step has its two queues and each stream consumer its on-failure queue."""
    names = {queue_name(step, STAGE) for step in Step} | {
        dead_letter_queue_name(step, STAGE) for step in Step
    }
    names |= {_consumer_dead_letter_name(function) for function in STREAM_CONSUMERS}
    declared = [
        _arn_pattern(q["Properties"]["QueueName"])
        for q in _of_type(resources, "AWS::SQS::Queue").values()
    ]
    assert sorted(declared) == sorted(names)


@pytest.mark.parametrize("step", list(Step), ids=str)
def test_step_queue_redrives_to_its_dlq_after_the_steps_last_attempt(
    step: Step, resources: dict[str, Any], chalice_config: dict[str, Any]
) -> None:
    """DESIGN.md, "Workflow": after the step's max attempts the redrive policy moves the message
    to the dead-letter queue (maxReceiveCount = retry.max_attempts); SQS shows a message in
    flight to no second worker while its function may still run. The local stack creates its
    queues with the same settings (``queue_attributes``), so both behave alike."""
    queue = resources[_queue_named(queue_name(step, STAGE), resources)]
    dead_letter = _queue_named(dead_letter_queue_name(step, STAGE), resources)
    props = queue["Properties"]
    redrive = props["RedrivePolicy"]
    timeout = chalice_config["stages"]["prod"].get(
        "lambda_timeout", chalice_config["lambda_timeout"]
    )

    local = queue_attributes(step, "arn:aws:sqs:us-east-1:000000000000:dlq")

    assert _get_att(redrive["deadLetterTargetArn"], "Arn") == dead_letter
    assert redrive["maxReceiveCount"] == WORKFLOW[step].retry.max_attempts
    assert redrive["maxReceiveCount"] == json.loads(local["RedrivePolicy"])["maxReceiveCount"]
    assert props["VisibilityTimeout"] >= VISIBILITY_PER_FUNCTION_TIMEOUT * timeout
    assert props["VisibilityTimeout"] == int(local["VisibilityTimeout"])
    assert props["SqsManagedSseEnabled"] is True
    dlq_props = resources[dead_letter]["Properties"]
    assert dlq_props["MessageRetentionPeriod"] == DEAD_LETTER_RETENTION_SECONDS
    # A standard queue's message keeps its first enqueue time: the DLQ must outlast the queue.
    assert props.get("MessageRetentionPeriod", 345600) < dlq_props["MessageRetentionPeriod"]
    assert dlq_props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in dlq_props
    for name in (_queue_named(queue_name(step, STAGE), resources), dead_letter):
        _assert_kept(resources[name])


@pytest.mark.parametrize("step", list(Step), ids=str)
def test_a_message_in_a_dead_letter_queue_raises_an_alarm(
    step: Step, template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """A message in a DLQ is a step that failed for good: one alarm on its depth, to the topic."""
    _assert_depth_alarm(
        _queue_named(dead_letter_queue_name(step, STAGE), resources), template, resources
    )


def _assert_depth_alarm(
    dead_letter: str, template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """One alarm on the queue's depth (>= 1 message over the window) notifies the topic."""
    alarms = [
        alarm["Properties"]
        for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letter, "QueueName"]}}
        in alarm["Properties"].get("Dimensions", [])
    ]
    assert len(alarms) == 1, f"{len(alarms)} alarms on {dead_letter}"
    (alarm,) = alarms

    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert len(alarm["Dimensions"]) == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["Threshold"] == 1
    assert alarm["Period"] * alarm["EvaluationPeriods"] == ALARM_WINDOW_SECONDS
    assert alarm.get("DatapointsToAlarm", alarm["EvaluationPeriods"]) == alarm["EvaluationPeriods"]
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}]
    assert resources[ALARM_TOPIC]["Type"] == "AWS::SNS::Topic"
    assert "Subscription" not in resources[ALARM_TOPIC]["Properties"]
    assert {"Ref": ALARM_TOPIC} in [output["Value"] for output in template["Outputs"].values()]


_UNKNOWN_REFUND = Mismatch(MismatchKind.UNKNOWN_REFUND, "rf_Z", 100, None, None)


# --- IAM ----------------------------------------------------------------------------------


def test_role_reaches_exactly_the_tables_their_indexes_and_the_streams_read(
    resources: dict[str, Any], prod_stage: dict[str, Any], prod_settings: Settings
) -> None:
    """Least privilege with exact ARNs: item actions on the tables (on the stats table, what the
    stats store calls), Query on the GSIs by name, and on the streams a function reads what
    Lambda's mapping does."""
    expected: dict[str, set[str]] = {}
    for model in MODELS:
        table = _table_of(model, resources)
        expected[f"${{{table}.Arn}}"] = _table_actions(model)
        for index in model._indexes.values():
            expected[f"${{{table}.Arn}}/index/{index.Meta.index_name}"] = {"dynamodb:Query"}
    for _, setting in _stream_consumers():
        table = _table_named(getattr(prod_settings, setting), resources)
        expected[f"${{{table}.Arn}}/stream/*"] = STREAM_ACTIONS
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources):
        for action in _as_list(statement["Action"]):
            if action.startswith("dynamodb:"):
                for resource in _as_list(statement["Resource"]):
                    granted.setdefault(_arn_pattern(resource), set()).add(action)

    assert _stats_store_actions() == {
        "dynamodb:UpdateItem",
        "dynamodb:BatchGetItem",
        "dynamodb:PutItem",
        "dynamodb:GetItem",
    }
    assert granted == expected


def test_role_reaches_evidence_objects_only(resources: dict[str, Any]) -> None:
    """GetObject/PutObject (presigned POSTs are signed by the role) on evidence keys only."""
    objects = [s for s in _statements(resources) if "s3:PutObject" in _as_list(s["Action"])]
    assert len(objects) == 1
    assert set(_as_list(objects[0]["Action"])) == {"s3:GetObject", "s3:PutObject"}
    (pattern,) = (_arn_pattern(r) for r in _as_list(objects[0]["Resource"]))
    prefix = "${EvidenceBucket.Arn}/"
    assert pattern.startswith(prefix)
    assert fnmatch.fnmatchcase(evidence_key("rf_01", "ev_01"), pattern.removeprefix(prefix))


def test_role_reaches_exactly_the_step_queues_and_the_stream_failure_queues(
    resources: dict[str, Any],
) -> None:
    """The app sends step messages and sets a failed attempt's visibility; Lambda's event source
    mappings receive and delete through the function's role. Nothing on the steps' DLQs. A
    stream mapping's on-failure records are sent through the function's role too: SendMessage
    on the stream consumers' DLQs, and only that."""
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources):
        for action in _as_list(statement["Action"]):
            if action.startswith("sqs:"):
                for resource in _as_list(statement["Resource"]):
                    granted.setdefault(_arn_pattern(resource), set()).add(action)

    expected = {
        f"${{{_queue_named(queue_name(step, STAGE), resources)}.Arn}}": QUEUE_ACTIONS
        for step in Step
    }
    for function in STREAM_CONSUMERS:
        dead_letter = _queue_named(_consumer_dead_letter_name(function), resources)
        expected[f"${{{dead_letter}.Arn}}"] = {"sqs:SendMessage"}
    assert granted == expected


# X-Ray's write actions take no resource but `*`: the one statement allowed a wildcard.
XRAY_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_role_grants_no_wildcards(resources: dict[str, Any]) -> None:
    """No ``*`` action and no resource that is all wildcard, but for X-Ray's traces."""
    wildcards = []
    for statement in _statements(resources):
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in _as_list(statement["Action"]))
        if any(_arn_pattern(r) == "*" for r in _as_list(statement["Resource"])):
            wildcards.append(statement)
    assert [(set(_as_list(s["Action"])), s["Resource"]) for s in wildcards] == [(XRAY_ACTIONS, "*")]


def test_prod_stage_leaves_the_role_and_deploy_settings_to_the_template(
    template: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """config.json's values would win over SAM Globals, so the two never name the same key."""
    assert prod_stage["manage_iam_role"] is False
    assert template["Resources"]["APIHandler"]["Properties"]["Role"] == {
        "Fn::GetAtt": [ROLE, "Arn"]
    }
    globals_env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert not set(globals_env) & set(prod_stage["environment_variables"])
    assert globals_env["REFUNDS_EVIDENCE_BUCKET"] == {"Ref": "EvidenceBucket"}
    for variable, parameter in {
        "REFUNDS_STAGE": "Stage",
        "REFUNDS_JWKS_URL": "JwksUrl",
        "REFUNDS_JWT_ISSUER": "JwtIssuer",
        "REFUNDS_JWT_AUDIENCE": "JwtAudience",
    }.items():
        assert globals_env[variable] == {"Ref": parameter}
        assert "Default" not in template["Parameters"][parameter]
    # The console's hosted sign-in is optional: without it, it says sign-in is not configured.
    for variable, parameter in {
        "REFUNDS_COGNITO_DOMAIN": "CognitoDomain",
        "REFUNDS_COGNITO_CLIENT_ID": "CognitoClientId",
    }.items():
        assert globals_env[variable] == {"Ref": parameter}
        assert template["Parameters"][parameter]["Default"] == ""


# --- API Gateway --------------------------------------------------------------------------


def test_gateway_responses_wear_the_error_envelope(resources: dict[str, Any]) -> None:
    """API.md, Conventions: API Gateway's own answers are in the envelope, with X-Request-Id."""
    responses = resources["RestAPI"]["Properties"]["GatewayResponses"]
    assert set(ENVELOPE_CODES) <= set(responses)
    for kind, response in responses.items():
        # API Gateway fills in $context.error.messageString as a quoted JSON string.
        body = response["ResponseTemplates"]["application/json"].replace(
            "$context.error.messageString", json.dumps("gateway message")
        )
        error = json.loads(body)["error"]
        assert set(error) == {"code", "message", "rule", "details"}, kind
        assert error["rule"] is None, kind
        assert error["details"] == [], kind
        assert response["ResponseParameters"]["Headers"]["X-Request-Id"] == "context.requestId"
        if kind in ENVELOPE_CODES:
            status, code = ENVELOPE_CODES[kind]
            assert error["code"] == code, kind
            assert response.get("StatusCode") == (str(status) if status else None), kind


# --- The merged output (`make package` writes it; `make test` runs that first) --------------


@pytest.fixture(scope="module")
def built() -> dict[str, Any]:
    if not BUILT.exists():
        pytest.skip("no build/sam.yaml: run `make package`")
    return yaml.safe_load(BUILT.read_text(encoding="utf-8"))


def test_merge_kept_every_resource_of_the_template(
    built: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Resources of our own arrive whole; overrides of chalice's resources land on them."""
    for name, resource in resources.items():
        if "Type" in resource:
            assert built["Resources"][name] == resource, f"{name} differs: re-run make package"
        else:
            assert name in built["Resources"], f"{name} overrides nothing chalice emits"


def test_every_function_runs_as_the_templates_role(built: dict[str, Any]) -> None:
    """config.json's iam_role_arn is a placeholder: each function must get the real role here."""
    functions = _of_type(built["Resources"], "AWS::Serverless::Function")
    assert functions
    for name, function in functions.items():
        assert function["Properties"]["Role"] == {"Fn::GetAtt": [ROLE, "Arn"]}, name


def test_every_function_logs_to_its_own_retained_group(
    built: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Each function writes to a log group of this template, with a retention; the role may
    write to exactly those groups."""
    functions = _of_type(built["Resources"], "AWS::Serverless::Function")
    groups = {}
    for name, function in functions.items():
        group = function["Properties"].get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
        assert group in _of_type(resources, "AWS::Logs::LogGroup"), name
        groups[name] = group
        assert resources[group]["Properties"]["RetentionInDays"] > 0
        _assert_kept(resources[group])
    assert len(set(groups.values())) == len(groups), "functions share a log group"

    (logs,) = (s for s in _statements(resources) if "logs:PutLogEvents" in _as_list(s["Action"]))
    assert set(_as_list(logs["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert {_get_att(r, "Arn") for r in _as_list(logs["Resource"])} == set(groups.values())


def _sqs_events(built: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(function, event, event properties) of every SQS event source mapping chalice emits."""
    return [
        (name, event_name, event["Properties"])
        for name, function in _of_type(built["Resources"], "AWS::Serverless::Function").items()
        for event_name, event in function["Properties"].get("Events", {}).items()
        if event["Type"] == "SQS"
    ]


def _queue_of_event(queue: Any, resources: dict[str, Any]) -> str:
    """The queue resource an event source mapping polls: chalice names it by ARN from its name."""
    if isinstance(queue, dict) and "Fn::GetAtt" in queue:
        return _get_att(queue, "Arn")
    arn = _arn_pattern(queue)
    prefix = "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
    assert arn.startswith(prefix), arn
    return _queue_named(arn.removeprefix(prefix), resources)


def test_every_step_queue_has_a_worker_that_reports_batch_item_failures(
    built: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Chalice cannot set ReportBatchItemFailures (field notes): without it Lambda ignores the
    handlers' batchItemFailures and one bad message runs its whole batch again."""
    events = _sqs_events(built)
    polled: dict[str, str] = {}
    for function, event_name, props in events:
        queue = _queue_of_event(props["Queue"], resources)
        polled[queue] = function
        assert props.get("FunctionResponseTypes") == ["ReportBatchItemFailures"], event_name
        assert set(props["Queue"]) == {"Fn::Sub"} or set(props["Queue"]) == {"Fn::GetAtt"}
        timeout = built["Resources"][function]["Properties"]["Timeout"]
        visibility = resources[queue]["Properties"]["VisibilityTimeout"]
        assert visibility >= VISIBILITY_PER_FUNCTION_TIMEOUT * timeout, queue

    assert len(polled) == len(events), "two mappings poll one queue"
    for step in Step:
        queue = _queue_named(queue_name(step, STAGE), resources)
        assert queue in polled, f"nothing polls {queue_name(step, STAGE)}"
        function = polled[queue]
        (props,) = (p for f, _, p in events if f == function)
        assert props["BatchSize"] == WORKFLOW[step].batch_size
    dead_letters = {_queue_named(dead_letter_queue_name(step, STAGE), resources) for step in Step}
    assert not dead_letters & set(polled)


def test_the_channels_keys_come_from_one_secret_only_the_functions_may_read(
    template: dict[str, Any],
) -> None:
    resources = template["Resources"]
    assert resources["ChannelCredentialsSecret"]["Type"] == "AWS::SecretsManager::Secret"
    assert "SecretString" not in resources["ChannelCredentialsSecret"]["Properties"]
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["REFUNDS_CHANNEL_CREDENTIALS_SECRET"] == {"Ref": "ChannelCredentialsSecret"}
    statements = [
        statement
        for policy in resources["RefundsFunctionRole"]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
        if any("secretsmanager" in action for action in _actions(statement))
    ]
    assert [(_actions(s), s["Resource"]) for s in statements] == [
        (["secretsmanager:GetSecretValue"], {"Ref": "ChannelCredentialsSecret"})
    ]


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_every_schedule_alarms_on_its_errors(
    resources: dict[str, Any], built: dict[str, Any]
) -> None:
    """A scheduled function that fails does so with nobody waiting on it (X2 escalations,
    stale closings, resent step messages): each has an alarm on its Errors metric."""
    scheduled = {
        name
        for name, function in _of_type(built["Resources"], "AWS::Serverless::Function").items()
        if any(
            e.get("Type") == "Schedule" for e in function["Properties"].get("Events", {}).values()
        )
    }
    alarmed = {
        alarm["Properties"]["Dimensions"][0]["Value"]["Ref"]
        for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if alarm["Properties"].get("MetricName") == "Errors"
    }
    assert scheduled == {"ResumeSteps", "EscalateOverdue", "CloseStale", "DailyStats", "Reconcile"}
    assert scheduled <= alarmed


def _errors_alarms(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Errors alarms of the template by the function they watch."""
    return _function_alarms(resources, "Errors")


def _function_alarms(resources: dict[str, Any], metric: str) -> dict[str, dict[str, Any]]:
    """The alarms of the template on a function's ``metric``, by the function they watch."""
    alarms: dict[str, dict[str, Any]] = {}
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        if props.get("MetricName") == metric:
            function = props["Dimensions"][0]["Value"]["Ref"]
            assert function not in alarms, f"two {metric} alarms on {function}"
            alarms[function] = props
    return alarms


def test_errors_alarms_notify_the_topic(resources: dict[str, Any]) -> None:
    for function, alarm in _errors_alarms(resources).items():
        assert alarm["Namespace"] == "AWS/Lambda", function
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert alarm["Threshold"] == 1, function
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", function
        assert alarm["TreatMissingData"] == "notBreaching", function
        assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}], function


def test_every_function_alarms_on_its_errors(resources: dict[str, Any]) -> None:
    """GIVEN the functions chalice packages from the app (the API handler, each event source,
    each plain Lambda function) WHEN the template is read THEN each has one Errors alarm, and
    no Errors alarm watches anything else."""
    from app import app

    functions = {"APIHandler"} | {
        to_cfn_resource_name(function.name)
        for function in [*app.event_sources, *app.pure_lambda_functions]
    }
    assert set(_errors_alarms(resources)) == functions


def test_every_dead_letter_queue_has_a_depth_alarm(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Whatever a redrive policy or a stream mapping's on-failure destination sends a message
    to is a dead-letter queue, and each has its depth alarm; every `-dlq` queue is one."""
    redrives = [
        _get_att(queue["Properties"]["RedrivePolicy"]["deadLetterTargetArn"], "Arn")
        for queue in _of_type(resources, "AWS::SQS::Queue").values()
        if "RedrivePolicy" in queue["Properties"]
    ]
    on_failure = [
        _get_att(event["Properties"]["DestinationConfig"]["OnFailure"]["Destination"], "Arn")
        for function in resources.values()
        for event in function.get("Properties", {}).get("Events", {}).values()
        if "DestinationConfig" in event.get("Properties", {})
    ]
    dead_letters = set(redrives) | set(on_failure)
    named = {
        name
        for name, queue in _of_type(resources, "AWS::SQS::Queue").items()
        if _arn_pattern(queue["Properties"]["QueueName"]).endswith("-dlq")
    }
    assert dead_letters == named
    for dead_letter in sorted(dead_letters):
        _assert_depth_alarm(dead_letter, template, resources)


MetricIdentity = tuple[str, str, frozenset[tuple[str, str]]]
"""(namespace, metric name, dimensions with their values): what an alarm names."""


def _emitted_metrics(capsys: pytest.CaptureFixture[str]) -> set[MetricIdentity]:
    """Every metric the functions emit, as chalicelib/api/metrics.py writes it: the refunds'
    changes as events_publisher counts them (a creation, an escalation that breaches the
    review promise), a batch of step attempts, a reconcile run's channel; read back from the
    embedded-metric-format lines on stdout, each dimension set of each document apart."""
    calendar = WorkingCalendar(china_working_day)
    now = datetime(2026, 11, 11, 8, 0, tzinfo=UTC)
    waiting = sample_refund("rf_01", now, status=RefundStatus.PENDING_REVIEW, version=4)
    start_review_promise(waiting, calendar, now)
    escalated = copy.deepcopy(waiting)
    assert escalate(escalated, calendar, now + timedelta(days=30), "system") is not None
    escalated.version = 5
    draft = sample_refund("rf_02", now, version=1)
    capsys.readouterr()
    metrics.count_refund_changes(
        [
            StoredChange("refunds#rf_02", "1", None, draft),
            StoredChange("refunds#rf_01", "2", waiting, escalated),
        ]
    )
    record = {
        "messageId": "m-1",
        "receiptHandle": "r-1",
        "body": "{}",
        "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:us-east-1:000000000000:{queue_name(Step.PAYOUT)}",
        "awsRegion": "us-east-1",
    }
    run_batch({"Records": [record]}, FakeStepQueue(), Step.PAYOUT, lambda body, received: DONE)
    metrics.record_run(
        Reconciliation(
            date(2026, 11, 30),
            datetime(2026, 12, 1, 2, tzinfo=UTC),
            {"alipay": ChannelReconciliation("alipay", 3, 300, 2, (_UNKNOWN_REFUND,))},
        )
    )

    emitted: set[MetricIdentity] = set()
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line) if line.startswith("{") else {}
        for directive in document.get("_aws", {}).get("CloudWatchMetrics", []):
            for dimension_set in directive["Dimensions"]:
                values = frozenset((name, document[name]) for name in dimension_set)
                for metric in directive["Metrics"]:
                    emitted.add((directive["Namespace"], metric["Name"], values))
    return emitted


def test_the_alarms_on_the_functions_metrics_watch_what_the_code_emits(
    template: dict[str, Any], resources: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN the metrics the code writes (run here, on this process's stage) WHEN an alarm of
    the template watches the namespace THEN it names one of them exactly: the metric, every
    dimension and its value, the stage being the one the stack gives its functions. A renamed
    metric or dimension would leave the alarm watching nothing, silently (missing data is
    notBreaching)."""
    emitted = _emitted_metrics(capsys)
    stage = get_settings().stage
    stack_stage = template["Globals"]["Function"]["Environment"]["Variables"]["REFUNDS_STAGE"]
    alarms = {
        name: alarm["Properties"]
        for name, alarm in _of_type(resources, "AWS::CloudWatch::Alarm").items()
        if alarm["Properties"].get("Namespace") == metrics.NAMESPACE
    }

    assert {alarm["MetricName"] for alarm in alarms.values()} == {
        metrics.Metric.SLA_BREACHES,
        metrics.Metric.RECONCILIATION_MISMATCHES,
    }
    for name, alarm in alarms.items():
        dimensions = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dimensions.get("stage") == stack_stage, name
        watched = (
            alarm["Namespace"],
            alarm["MetricName"],
            frozenset({**dimensions, "stage": stage}.items()),
        )
        assert watched in emitted, f"{name} watches {watched}, which nothing emits"
        # Any one is worth a look: a mismatch is money, a breach a broken promise (X2).
        assert alarm["Statistic"] == "Sum", name
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)
        assert alarm["Period"] * alarm["EvaluationPeriods"] == ALARM_WINDOW_SECONDS, name
        assert alarm["TreatMissingData"] == "notBreaching", name
        assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}], name


# --- Stream consumers (workers.STREAM_CONSUMERS): chalice cannot map a table's stream --------


def _stream_events(built: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(function, event, event properties) of every DynamoDB stream event source mapping."""
    return [
        (name, event_name, event["Properties"])
        for name, function in _of_type(built["Resources"], "AWS::Serverless::Function").items()
        for event_name, event in function["Properties"].get("Events", {}).items()
        if event["Type"] == "DynamoDB"
    ]


def test_the_stream_mappings_are_exactly_the_stream_consumers(
    built: dict[str, Any], resources: dict[str, Any], prod_settings: Settings
) -> None:
    """GIVEN STREAM_CONSUMERS WHEN the merged template is read THEN each (function, table) has
    one mapping, and no other function or table has one."""
    mapped = [
        (function, _get_att(props["Stream"], "StreamArn"))
        for function, _, props in _stream_events(built)
    ]
    expected = [
        (to_cfn_resource_name(function), _table_named(getattr(prod_settings, setting), resources))
        for function, setting in _stream_consumers()
    ]
    assert sorted(mapped) == sorted(expected)


@pytest.mark.parametrize(("function", "setting"), _stream_consumers())
def test_a_stream_consumer_reads_its_tables_stream_and_reports_batch_item_failures(
    function: str,
    setting: str,
    built: dict[str, Any],
    resources: dict[str, Any],
    prod_settings: Settings,
) -> None:
    """The handler returns the failed record's SequenceNumber in batchItemFailures: without
    ReportBatchItemFailures Lambda would ignore it and count the whole batch as done. A record
    that keeps failing is bisected out, retried a bounded number of times, then described to an
    on-failure queue, before its stream drops it and while the stats markers still hold."""
    name = to_cfn_resource_name(function)
    table = _table_named(getattr(prod_settings, setting), resources)
    (props,) = (
        p
        for f, _, p in _stream_events(built)
        if f == name and _get_att(p["Stream"], "StreamArn") == table
    )
    dead_letter = _queue_named(_consumer_dead_letter_name(function), resources)
    poller_batch = inspect.signature(StreamPoller).parameters["batch_size"].default

    # stored_change reads both images of a record.
    stream = resources[table]["Properties"]["StreamSpecification"]
    assert stream == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert props["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert props["BisectBatchOnFunctionError"] is True
    assert props["StartingPosition"] == "TRIM_HORIZON"
    assert props["BatchSize"] == poller_batch
    assert 0 <= props["MaximumRetryAttempts"] <= 10_000
    assert 0 < props["MaximumRecordAgeInSeconds"] <= STREAM_RETENTION_SECONDS
    assert MARKER_DAYS * 86400 > STREAM_RETENTION_SECONDS
    assert props["DestinationConfig"] == {
        "OnFailure": {"Type": "SQS", "Destination": {"Fn::GetAtt": [dead_letter, "Arn"]}}
    }


@pytest.mark.parametrize("function", list(STREAM_CONSUMERS))
def test_a_stream_consumers_failures_are_kept_and_raise_alarms(
    function: str, template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """What a stream mapping gave up on waits 14 days in its DLQ, whose depth alarms like the
    steps' DLQs; the function's own errors alarm too."""
    dead_letter = _queue_named(_consumer_dead_letter_name(function), resources)
    queue = resources[dead_letter]
    props = queue["Properties"]

    assert props["MessageRetentionPeriod"] == DEAD_LETTER_RETENTION_SECONDS
    assert props["SqsManagedSseEnabled"] is True
    assert "RedrivePolicy" not in props
    _assert_kept(queue)
    _assert_depth_alarm(dead_letter, template, resources)
    name = to_cfn_resource_name(function)
    assert name in _errors_alarms(resources)

    # A record retried holds its shard back, whether or not its invocation fails (a record
    # reported in batchItemFailures fails none): the age of what the consumer reads tells, and
    # must tell before the mapping gives the records up.
    age = _function_alarms(resources, "IteratorAge").get(name)
    assert age is not None, f"no IteratorAge alarm on {name}"
    mappings = [
        event["Properties"]
        for event in resources[name]["Properties"]["Events"].values()
        if event["Type"] == "DynamoDB"
    ]
    assert mappings
    assert age["Namespace"] == "AWS/Lambda"
    assert age["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": name}}]
    assert age["Statistic"] == "Maximum"
    assert age["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert 0 < age["Threshold"] < min(m["MaximumRecordAgeInSeconds"] for m in mappings) * 1000
    assert age["Period"] * age["EvaluationPeriods"] == ALARM_WINDOW_SECONDS
    assert age["TreatMissingData"] == "notBreaching"
    assert age["AlarmActions"] == [{"Ref": ALARM_TOPIC}]


def test_every_stream_consumer_alarms_on_its_errors_and_its_iterator_age(
    resources: dict[str, Any], built: dict[str, Any]
) -> None:
    """Whatever function chalice emits with a stream mapping is watched like the others."""
    consumers = {name for name, _, _ in _stream_events(built)}
    assert consumers == {to_cfn_resource_name(function) for function in STREAM_CONSUMERS}
    assert consumers <= set(_errors_alarms(resources))
    assert consumers <= set(_function_alarms(resources, "IteratorAge"))


# --- EventBridge: the refund events (API.md, "Events for the rest of the platform") ---------


class _RecordingEvents:
    """An EventBridge client that accepts every entry and keeps the IAM action of each call."""

    def __init__(self) -> None:
        self.actions: set[str] = set()
        self.entries: list[dict[str, Any]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.actions.add("events:PutEvents")
        self.entries.extend(Entries)
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "e"} for _ in Entries]}

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the event bus adapter calls {name}: grant its action, list it here")


def _published(bus: str, status: RefundStatus) -> _RecordingEvents:
    """What chalicelib/adapters/eventbridge.py sends for a refund moved to ``status``."""
    client = _RecordingEvents()
    event = RefundEvent(
        detail_type=f"refund.{status.value}",
        event_id="rf_01#7",
        refund_id="rf_01",
        order_id="o-1001",
        user_id="u-1",
        status=status.value,
        previous_status=RefundStatus.PAYING.value,
        amount=8800,
        approved_amount=8800,
        channel="alipay",
        escalation_level=0,
        version=7,
        at=datetime(2026, 11, 11, 8, 0, tzinfo=UTC),
    )
    EventBridgeBus(bus, lambda: client).publish([event])
    return client


def _bus_named(name: str, resources: dict[str, Any]) -> str:
    """The event bus resource whose Name is ``name`` (``${Stage}`` for the stack's stage)."""
    buses = _of_type(resources, "AWS::Events::EventBus")
    found = [
        logical for logical, b in buses.items() if _arn_pattern(b["Properties"]["Name"]) == name
    ]
    assert len(found) == 1, f"{len(found)} event buses named {name!r} in {TEMPLATE.name}"
    return found[0]


def test_the_event_bus_is_the_one_the_stacks_functions_name(
    resources: dict[str, Any], prod_settings: Settings
) -> None:
    """GIVEN the bus the stack's functions publish to WHEN the template is read THEN it
    declares that bus, the only one, under API.md's `refunds-<stage>`, and keeps it (the
    consumers' rules hang on it by name)."""
    bus = resources[_bus_named(prod_settings.event_bus, resources)]

    assert len(_of_type(resources, "AWS::Events::EventBus")) == 1
    assert prod_settings.event_bus == f"refunds-{STAGE}"
    _assert_kept(bus)


def test_every_function_reads_the_names_of_the_stacks_resources(
    built: dict[str, Any], resources: dict[str, Any]
) -> None:
    """GIVEN each function's environment as the merged template sets it (its own variables
    over SAM's Globals, the stage the stack's parameter) WHEN the code reads its settings
    THEN they name the stack's own tables, bus and bucket: nothing sets a name apart."""
    stack = built["Globals"]["Function"]["Environment"]["Variables"]
    functions = _of_type(built["Resources"], "AWS::Serverless::Function")
    assert functions
    for name, function in functions.items():
        env = {**stack, **function["Properties"]["Environment"]["Variables"]}
        assert env.pop("REFUNDS_STAGE") == {"Ref": "Stage"}, name
        assert env.pop("REFUNDS_EVIDENCE_BUCKET") == {"Ref": "EvidenceBucket"}, name
        literal = {key: value for key, value in env.items() if isinstance(value, str)}
        settings = Settings.from_environ({**literal, "REFUNDS_STAGE": STAGE})
        for model, setting in TABLE_SETTINGS.items():
            assert _table_of(model, resources) == _table_named(
                getattr(settings, setting), resources
            )
        _bus_named(settings.event_bus, resources)


def test_the_archive_keeps_every_event_of_the_bus(
    resources: dict[str, Any], prod_settings: Settings
) -> None:
    """Events a consumer lost or mishandled can be replayed to its rule: the archive takes all
    of the bus's events (no pattern) and keeps them a year."""
    bus = _bus_named(prod_settings.event_bus, resources)
    (archive,) = _of_type(resources, "AWS::Events::Archive").values()
    props = archive["Properties"]

    assert _get_att(props["SourceArn"], "Arn") == bus
    assert "EventPattern" not in props
    assert props["RetentionDays"] >= ARCHIVE_MIN_DAYS
    _assert_kept(archive)


def test_role_publishes_to_exactly_the_bus_and_nothing_else_of_eventbridge(
    resources: dict[str, Any], prod_settings: Settings
) -> None:
    """What the adapter calls, on the bus it names, and no other EventBridge action or bus."""
    published = _published(prod_settings.event_bus, RefundStatus.PAID)
    bus = _bus_named(prod_settings.event_bus, resources)
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources):
        for action in _as_list(statement["Action"]):
            if action.startswith("events:"):
                for resource in _as_list(statement["Resource"]):
                    granted.setdefault(_arn_pattern(resource), set()).add(action)

    assert {entry["EventBusName"] for entry in published.entries} == {prod_settings.event_bus}
    assert published.actions == {"events:PutEvents"}
    assert granted == {f"${{{bus}.Arn}}": published.actions}


def test_the_order_systems_example_rule_matches_what_is_published_on_paid(
    resources: dict[str, Any], prod_settings: Settings
) -> None:
    """The rule the order system copies takes the `refund.paid` events of source `refunds`, as
    the adapter sends them, from the bus, and no other kind."""
    bus = _bus_named(prod_settings.event_bus, resources)
    rule = resources[ORDER_SYSTEM_RULE]
    props = rule["Properties"]
    paid = f"refund.{RefundStatus.PAID.value}"

    assert rule["Type"] == "AWS::Events::Rule"
    assert props["EventBusName"] == {"Ref": bus}
    assert props["State"] == "ENABLED"
    assert props["EventPattern"] == {"source": [SOURCE], "detail-type": [paid]}
    assert "order system" in props["Description"]
    for status in RefundStatus:
        (entry,) = _published(prod_settings.event_bus, status).entries
        matched = (
            entry["Source"] in props["EventPattern"]["source"]
            and entry["DetailType"] in props["EventPattern"]["detail-type"]
        )
        assert matched == (status is RefundStatus.PAID), status


# --- Launch readiness: stages, the edge, what watches it, the runtime ------------------------

# Every property that names a resource for good: two stages in one account must not share one.
NAME_PROPERTIES = (
    "TableName",
    "BucketName",
    "QueueName",
    "TopicName",
    "LogGroupName",
    "AlarmName",
    "ArchiveName",
    "Name",
)
# Lambda's supported Python runtimes that the pinned dependencies have wheels for; python3.11
# reached its deprecation on 2026-06-30.
SUPPORTED_RUNTIMES = {"python3.12", "python3.13"}
# The highest glibc those runtimes (Amazon Linux 2023) provide, for manylinux_2_<n> wheels.
RUNTIME_GLIBC = (2, 34)
NATIVE_PACKAGES = ("pydantic_core", "cryptography")
# A function this close to its timeout (lambda_timeout) is one slow call from being killed.
DURATION_ALARM_SHARE = 0.8
API_FUNCTION = "APIHandler"


def test_every_resource_name_carries_the_stage(template: dict[str, Any]) -> None:
    """Two stages fit one account: each name a resource is given carries the `Stage`
    parameter, which has no default (a deploy says which stage it is)."""
    stage = template["Parameters"]["Stage"]
    assert "Default" not in stage
    named = 0
    for logical, resource in template["Resources"].items():
        for prop in NAME_PROPERTIES:
            value = resource.get("Properties", {}).get(prop)
            if value is not None:
                named += 1
                assert "${Stage}" in value.get("Fn::Sub", ""), f"{logical}.{prop} = {value}"
    assert named


def test_the_longest_stage_fits_the_bucket_name(template: dict[str, Any]) -> None:
    """S3 names are at most 63 characters: with the account and the longest region name."""
    pattern = template["Parameters"]["Stage"]["AllowedPattern"]
    longest = "a" * 12
    assert re.fullmatch(pattern, longest)
    assert not re.fullmatch(pattern, longest + "a")
    assert not re.fullmatch(pattern, "Prod")
    name = _arn_pattern(template["Resources"]["EvidenceBucket"]["Properties"]["BucketName"])
    real = name.replace("${Stage}", longest).replace("${AWS::AccountId}", "1" * 12)
    assert len(real.replace("${AWS::Region}", "ap-southeast-5")) <= 63


def test_evidence_expires_after_the_configured_days(template: dict[str, Any]) -> None:
    """Evidence under `evidence/` expires after EvidenceRetentionDays, and a version a
    re-upload replaced (the one checked may be that one) as long after."""
    bucket = template["Resources"]["EvidenceBucket"]["Properties"]
    (rule,) = (
        rule for rule in bucket["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in rule
    )
    days = {"Ref": "EvidenceRetentionDays"}
    assert rule["Status"] == "Enabled"
    assert evidence_key("rf_01", "ev_01").startswith(rule["Prefix"])
    assert rule["ExpirationInDays"] == days
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": days}
    assert template["Parameters"]["EvidenceRetentionDays"]["Default"] >= 365


def test_the_api_stage_is_throttled_traced_and_logged_in_json(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """Throttling of the whole stage from parameters; X-Ray; one JSON access-log line per
    request to a group with a retention; no extra SAM `Stage` stage; the API named for the
    stage (its metrics' ApiName)."""
    api = resources["RestAPI"]["Properties"]
    (method,) = api["MethodSettings"]
    parameters = template["Parameters"]

    assert (method["ResourcePath"], method["HttpMethod"]) == ("/*", "*")
    for setting, parameter in {
        "ThrottlingRateLimit": "ApiThrottlingRateLimit",
        "ThrottlingBurstLimit": "ApiThrottlingBurstLimit",
    }.items():
        assert method[setting] == {"Ref": parameter}
        assert parameters[parameter]["Default"] >= 1
    assert api["TracingEnabled"] is True
    assert template["Globals"]["Api"]["OpenApiVersion"] == "2.0"
    assert api["Name"] == api["DefinitionBody"]["info"]["title"] == {"Fn::Sub": "refunds-${Stage}"}

    log = api["AccessLogSetting"]
    group = resources[_get_att(log["DestinationArn"], "Arn")]
    assert group["Properties"]["RetentionInDays"] > 0
    _assert_kept(group)
    fields = json.loads(log["Format"])
    assert fields["requestId"] == "$context.requestId"
    assert all(value.startswith("$context.") for value in fields.values())


def test_the_api_is_behind_a_web_acl_limiting_rate_and_body(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """WAF on the API stage: a rate per client address (a parameter) answered 429, and API.md's
    body limit answered 413, both in the error envelope of the gateway's own answers."""
    (acl_name,) = _of_type(resources, "AWS::WAFv2::WebACL")
    acl = resources[acl_name]["Properties"]
    (association,) = _of_type(resources, "AWS::WAFv2::WebACLAssociation").values()
    rules = {rule["Name"]: rule for rule in acl["Rules"]}
    gateway = resources["RestAPI"]["Properties"]["GatewayResponses"]

    assert acl["Scope"] == "REGIONAL"
    assert acl["DefaultAction"] == {"Allow": {}}
    assert _get_att(association["Properties"]["WebACLArn"], "Arn") == acl_name
    assert association["Properties"]["ResourceArn"] == {
        "Fn::Sub": (
            "arn:${AWS::Partition}:apigateway:${AWS::Region}::/restapis/${RestAPI}"
            "/stages/${RestAPI.Stage}"
        )
    }
    rate = rules["requests-per-address"]["Statement"]["RateBasedStatement"]
    assert rate["AggregateKeyType"] == "IP"
    assert rate["Limit"] == {"Ref": "WafRateLimit"}
    assert template["Parameters"]["WafRateLimit"]["Default"] >= 100
    size = rules["body-size"]["Statement"]["SizeConstraintStatement"]
    assert (size["ComparisonOperator"], size["Size"]) == ("GT", MAX_BODY_BYTES)
    # A body longer than WAF reads is "oversize": it must count as too large.
    assert size["FieldToMatch"] == {"Body": {"OversizeHandling": "MATCH"}}
    limit = acl["AssociationConfig"]["RequestBody"]["API_GATEWAY"]["DefaultSizeInspectionLimit"]
    assert int(limit.removeprefix("KB_")) * 1024 >= MAX_BODY_BYTES
    for rule, (status, kind) in {
        "requests-per-address": (429, "THROTTLED"),
        "body-size": (413, "REQUEST_TOO_LARGE"),
    }.items():
        response = rules[rule]["Action"]["Block"]["CustomResponse"]
        assert response["ResponseCode"] == status == int(gateway[kind]["StatusCode"])
        body = acl["CustomResponseBodies"][response["CustomResponseBodyKey"]]
        assert body["ContentType"] == "APPLICATION_JSON"
        expected = json.loads(gateway[kind]["ResponseTemplates"]["application/json"])
        assert json.loads(body["Content"]) == expected


def test_the_api_function_has_its_reserved_concurrency(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    api = resources[API_FUNCTION]["Properties"]
    assert api["ReservedConcurrentExecutions"] == {"Ref": "ApiReservedConcurrency"}
    assert template["Parameters"]["ApiReservedConcurrency"]["Default"] >= 1


def test_every_function_is_traced_and_tagged(
    built: dict[str, Any], template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """X-Ray on every function (config.json's `xray`), which the role may write; the
    functions and the API carry the project and the stage."""
    tags = {"project": "refunds", "stage": {"Ref": "Stage"}}
    assert template["Globals"]["Function"]["Tags"] == tags
    assert resources["RestAPI"]["Properties"]["Tags"] == tags
    for name, function in _of_type(built["Resources"], "AWS::Serverless::Function").items():
        assert function["Properties"]["Tracing"] == "Active", name
    granted = {a for s in _statements(resources) for a in _as_list(s["Action"])}
    assert granted >= XRAY_ACTIONS


def _api_and_workers(built: dict[str, Any]) -> dict[str, int]:
    """The API function and each SQS worker, with its timeout in seconds."""
    functions = _of_type(built["Resources"], "AWS::Serverless::Function")
    names = {API_FUNCTION} | {function for function, _, _ in _sqs_events(built)}
    return {name: functions[name]["Properties"]["Timeout"] for name in names}


@pytest.mark.parametrize("metric", ["Throttles", "Duration"])
def test_the_api_and_the_workers_alarm_on_throttles_and_on_nearing_their_timeout(
    metric: str, built: dict[str, Any], resources: dict[str, Any]
) -> None:
    """A throttled invocation is a request answered 5xx or a step waiting; a run near the
    timeout is one slow call from being killed mid-step. Each notifies the topic."""
    functions = _api_and_workers(built)
    alarms = _function_alarms(resources, metric)
    assert set(functions) <= set(alarms)
    for function, timeout in functions.items():
        alarm = alarms[function]
        assert alarm["Namespace"] == "AWS/Lambda", function
        assert alarm["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold", function
        assert alarm["Period"] * alarm["EvaluationPeriods"] == ALARM_WINDOW_SECONDS
        assert alarm["TreatMissingData"] == "notBreaching", function
        assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}], function
        if metric == "Throttles":
            assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1), function
        else:
            assert alarm["Statistic"] == "Maximum", function
            assert alarm["Threshold"] == DURATION_ALARM_SHARE * timeout * 1000, function


def test_the_api_alarms_on_its_5xx_answers(resources: dict[str, Any]) -> None:
    (alarm,) = (
        a["Properties"]
        for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if a["Properties"].get("Namespace") == "AWS/ApiGateway"
    )
    api = resources["RestAPI"]["Properties"]
    assert alarm["MetricName"] == "5XXError"
    assert alarm["Dimensions"] == [
        {"Name": "ApiName", "Value": api["Name"]},
        {"Name": "Stage", "Value": {"Ref": "RestAPI.Stage"}},
    ]
    assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
    assert alarm["Period"] * alarm["EvaluationPeriods"] == ALARM_WINDOW_SECONDS
    assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}]


@pytest.mark.parametrize("metric", ["SystemErrors", "ThrottledRequests"])
def test_every_table_alarms_on_dynamodbs_errors_and_throttles(
    metric: str, resources: dict[str, Any]
) -> None:
    """DynamoDB's own faults and its throttling (of a table, or of a GSI holding back the
    table's writes), on each table whatever the operation: one Metrics Insights query each."""
    watched: dict[str, dict[str, Any]] = {}
    for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values():
        for query in alarm["Properties"].get("Metrics", []):
            found = re.fullmatch(
                rf'SELECT SUM\({metric}\) FROM SCHEMA\("AWS/DynamoDB", Operation, TableName\) '  # noqa: S608 - CloudWatch's query language
                r"WHERE TableName = '\$\{(\w+)\}'",
                _arn_pattern(query.get("Expression")),
            )
            if found:
                assert found.group(1) not in watched, f"two {metric} alarms on {found.group(1)}"
                watched[found.group(1)] = alarm["Properties"]
                assert (query["Period"], query["ReturnData"]) == (ALARM_WINDOW_SECONDS, True)
    assert set(watched) == set(_of_type(resources, "AWS::DynamoDB::Table"))
    for table, alarm in watched.items():
        assert len(alarm["Metrics"]) == 1, table
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
            "GreaterThanOrEqualToThreshold",
            1,
        )
        assert alarm["EvaluationPeriods"] == 1, table
        assert alarm["TreatMissingData"] == "notBreaching", table
        assert alarm["AlarmActions"] == [{"Ref": ALARM_TOPIC}], table


def _wheel_tags(archive: zipfile.ZipFile, package: str) -> list[str]:
    """The tags of ``package``'s wheel, as its dist-info's WHEEL file lists them."""
    (wheel,) = (
        name
        for name in archive.namelist()
        if re.fullmatch(rf"{package}-[^/]+\.dist-info/WHEEL", name)
    )
    text = archive.read(wheel).decode()
    return re.findall(r"^Tag: (\S+)$", text, flags=re.MULTILINE)


def test_the_runtime_is_supported_and_the_native_libraries_are_built_for_it(
    built: dict[str, Any],
) -> None:
    """GIVEN the package (chalice takes the runtime from the interpreter that packages it)
    WHEN its functions and its zip are read THEN every function runs one supported runtime, this
    interpreter's, on x86_64, and every native library in the zip is built for that CPython (or
    its stable ABI), that architecture and a glibc the runtime has."""
    functions = _of_type(built["Resources"], "AWS::Serverless::Function").values()
    (runtime,) = {function["Properties"]["Runtime"] for function in functions}
    (architectures,) = {tuple(function["Properties"]["Architectures"]) for function in functions}
    (code,) = {function["Properties"]["CodeUri"] for function in functions}
    version = runtime.removeprefix("python")
    cpython = "cp" + version.replace(".", "")

    assert runtime in SUPPORTED_RUNTIMES
    assert runtime == f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert architectures == ("x86_64",)
    with zipfile.ZipFile(BUILT.parent / code) as archive:
        libraries = [name for name in archive.namelist() if name.endswith(".so")]
        for package in NATIVE_PACKAGES:
            assert any(name.startswith(f"{package}/") for name in libraries), package
            tags = _wheel_tags(archive, package)
            assert tags, package
            for tag in tags:
                python, abi, platform = tag.split("-")
                if abi == "abi3":
                    assert python.startswith("cp3")
                    assert int(python.removeprefix("cp3")) <= int(cpython.removeprefix("cp3"))
                else:
                    assert (python, abi) == (cpython, cpython), tag
                found = re.fullmatch(r"manylinux(?:2014|_(\d+)_(\d+))_(\w+)", platform)
                assert found, tag
                assert found.group(3) == architectures[0], tag
                glibc = (int(found.group(1)), int(found.group(2))) if found.group(1) else (2, 17)
                assert glibc <= RUNTIME_GLIBC, tag
    for library in libraries:
        suffix = library.rsplit("/", 1)[-1].split(".", 1)[1]
        assert suffix in {
            f"cpython-{cpython.removeprefix('cp')}-x86_64-linux-gnu.so",
            "abi3.so",
        }, library
