"""infra/template.yaml against the code's own declarations: the models, the workflow, config.json,
API.md.

DESIGN.md, "infra/": what Chalice cannot declare (tables, bucket, queues, S3 notifications,
ReportBatchItemFailures, alarms, IAM, gateway responses) is a CloudFormation template merged
into `chalice package` output. Nothing but these tests keeps it in step with the PynamoDB models
and the workflow's step table, which the local stack and the other tests create their tables
and queues from, so every expectation here is derived from the code, not restated.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from pynamodb.attributes import TTLAttribute
from pynamodb.models import Model

from chalicelib.adapters.dynamodb import (
    MODELS,
    IdempotencyModel,
    LedgerModel,
    MessageModel,
    OrderModel,
    RefundModel,
)
from chalicelib.adapters.sqs import (
    DEAD_LETTER_RETENTION_SECONDS,
    dead_letter_queue_name,
    queue_attributes,
    queue_name,
)
from chalicelib.domain.workflow import WORKFLOW, Step
from chalicelib.service.refunds import evidence_key, parse_evidence_key

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"
BUILT = ROOT / "build" / "sam.yaml"

# The prod stage's variable naming each model's table (chalicelib/settings.py).
TABLE_VARIABLES: dict[type[Model], str] = {
    OrderModel: "REFUNDS_ORDERS_TABLE",
    RefundModel: "REFUNDS_REFUNDS_TABLE",
    MessageModel: "REFUNDS_MESSAGES_TABLE",
    IdempotencyModel: "REFUNDS_IDEMPOTENCY_TABLE",
    LedgerModel: "REFUNDS_LEDGER_TABLE",
}
# Nothing deletes an item: the refunds and the ledger are kept for good, keys expire by TTL.
TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
}
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


def _table_of(model: type[Model], resources: dict[str, Any], prod_stage: dict[str, Any]) -> str:
    """The table resource whose TableName is the one the prod stage gives ``model``."""
    wanted = prod_stage["environment_variables"][TABLE_VARIABLES[model]]
    tables = _of_type(resources, "AWS::DynamoDB::Table")
    found = [name for name, t in tables.items() if t["Properties"]["TableName"] == wanted]
    assert found, f"no table named {wanted!r} ({model.__name__}) in {TEMPLATE.name}"
    return found[0]


def _queue_named(name: str, resources: dict[str, Any]) -> str:
    """The queue resource whose QueueName is ``name``."""
    queues = _of_type(resources, "AWS::SQS::Queue")
    found = [logical for logical, q in queues.items() if q["Properties"]["QueueName"] == name]
    assert len(found) == 1, f"{len(found)} queues named {name!r} in {TEMPLATE.name}"
    return found[0]


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


# --- DynamoDB -----------------------------------------------------------------------------


def test_there_is_one_table_per_model(
    resources: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """GIVEN the models WHEN the template is read THEN each has its table and no table is extra."""
    tables = {_table_of(model, resources, prod_stage) for model in MODELS}
    assert tables == set(_of_type(resources, "AWS::DynamoDB::Table"))
    assert set(TABLE_VARIABLES) == set(MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_table_keys_and_indexes_are_the_models(
    model: type[Model], resources: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """Keys, attribute definitions and GSIs are what the model's create_table would declare.

    DESIGN.md, "Queries, not scans": the CS queue, a user's refunds and the sweeps are GSIs; a
    GSI projects what its queries filter on (field notes: KEYS_ONLY plus a filter finds nothing).
    """
    schema = model._get_schema()
    props = resources[_table_of(model, resources, prod_stage)]["Properties"]

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
    model: type[Model], resources: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """PAY_PER_REQUEST like the models' Meta; PITR, SSE, Retain and deletion protection on."""
    table = resources[_table_of(model, resources, prod_stage)]
    props = table["Properties"]

    assert props["BillingMode"] == model.Meta.billing_mode == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"]["SSEEnabled"] is True
    assert props["DeletionProtectionEnabled"] is True
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_ttl_is_the_models_ttl_attribute(
    model: type[Model], resources: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """DynamoDB's TTL removes expired Idempotency-Keys (API.md): on the model's TTLAttribute only."""
    ttl_names = [
        name for name, attr in model.get_attributes().items() if isinstance(attr, TTLAttribute)
    ]
    props = resources[_table_of(model, resources, prod_stage)]["Properties"]
    spec = props.get("TimeToLiveSpecification")

    if ttl_names:
        assert spec == {"AttributeName": ttl_names[0], "Enabled": True}
    else:
        assert spec is None
    if model is IdempotencyModel:
        assert ttl_names == ["expires_at"]


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
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    cors = props["CorsConfiguration"]["CorsRules"]
    assert any("POST" in rule["AllowedMethods"] for rule in cors)

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
    queue = _queue_named(queue_name(Step.VERIFY_EVIDENCE), resources)

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


def test_there_is_a_queue_and_a_dead_letter_queue_per_step_and_nothing_else(
    resources: dict[str, Any],
) -> None:
    """GIVEN the workflow's steps WHEN the template is read THEN each step has its two queues."""
    names = {queue_name(step) for step in Step} | {dead_letter_queue_name(step) for step in Step}
    declared = [
        q["Properties"]["QueueName"] for q in _of_type(resources, "AWS::SQS::Queue").values()
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
    queue = resources[_queue_named(queue_name(step), resources)]
    dead_letter = _queue_named(dead_letter_queue_name(step), resources)
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
    for name in (_queue_named(queue_name(step), resources), dead_letter):
        assert resources[name]["DeletionPolicy"] == resources[name]["UpdateReplacePolicy"]
        assert resources[name]["DeletionPolicy"] == "Retain"


@pytest.mark.parametrize("step", list(Step), ids=str)
def test_a_message_in_a_dead_letter_queue_raises_an_alarm(
    step: Step, template: dict[str, Any], resources: dict[str, Any]
) -> None:
    """A message in a DLQ is a step that failed for good: one alarm on its depth, to the topic."""
    dead_letter = _queue_named(dead_letter_queue_name(step), resources)
    alarms = [
        alarm["Properties"]
        for alarm in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if {"Name": "QueueName", "Value": {"Fn::GetAtt": [dead_letter, "QueueName"]}}
        in alarm["Properties"]["Dimensions"]
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


# --- IAM ----------------------------------------------------------------------------------


def test_role_reaches_exactly_the_tables_and_their_indexes(
    resources: dict[str, Any], prod_stage: dict[str, Any]
) -> None:
    """Least privilege with exact ARNs: item actions on the tables, Query on the GSIs by name."""
    table_names = set(_of_type(resources, "AWS::DynamoDB::Table"))
    index_arns = {
        f"${{{_table_of(model, resources, prod_stage)}.Arn}}/index/{index.Meta.index_name}"
        for model in MODELS
        for index in model._indexes.values()
    }
    assert index_arns
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources):
        for action in _as_list(statement["Action"]):
            if action.startswith("dynamodb:"):
                for resource in _as_list(statement["Resource"]):
                    granted.setdefault(_arn_pattern(resource), set()).add(action)

    assert {f"${{{name}.Arn}}" for name in table_names} | index_arns == set(granted)
    for name in table_names:
        assert granted[f"${{{name}.Arn}}"] == TABLE_ACTIONS
    for arn in index_arns:
        assert granted[arn] == {"dynamodb:Query"}


def test_role_reaches_evidence_objects_only(resources: dict[str, Any]) -> None:
    """GetObject/PutObject (presigned POSTs are signed by the role) on evidence keys only."""
    objects = [s for s in _statements(resources) if "s3:PutObject" in _as_list(s["Action"])]
    assert len(objects) == 1
    assert set(_as_list(objects[0]["Action"])) == {"s3:GetObject", "s3:PutObject"}
    (pattern,) = (_arn_pattern(r) for r in _as_list(objects[0]["Resource"]))
    prefix = "${EvidenceBucket.Arn}/"
    assert pattern.startswith(prefix)
    assert fnmatch.fnmatchcase(evidence_key("rf_01", "ev_01"), pattern.removeprefix(prefix))


def test_role_reaches_exactly_the_step_queues(resources: dict[str, Any]) -> None:
    """The app sends step messages and sets a failed attempt's visibility; Lambda's event source
    mappings receive and delete through the function's role. Nothing on the DLQs."""
    granted: dict[str, set[str]] = {}
    for statement in _statements(resources):
        for action in _as_list(statement["Action"]):
            if action.startswith("sqs:"):
                for resource in _as_list(statement["Resource"]):
                    granted.setdefault(_arn_pattern(resource), set()).add(action)

    queues = {_queue_named(queue_name(step), resources) for step in Step}
    assert set(granted) == {f"${{{name}.Arn}}" for name in queues}
    for actions in granted.values():
        assert actions == QUEUE_ACTIONS


def test_role_grants_no_wildcards(resources: dict[str, Any]) -> None:
    """No ``*`` action and no resource that is all wildcard."""
    for statement in _statements(resources):
        assert statement["Effect"] == "Allow"
        assert not any("*" in action for action in _as_list(statement["Action"]))
        assert all(_arn_pattern(r) != "*" for r in _as_list(statement["Resource"]))


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
        "REFUNDS_JWKS_URL": "JwksUrl",
        "REFUNDS_JWT_ISSUER": "JwtIssuer",
        "REFUNDS_JWT_AUDIENCE": "JwtAudience",
    }.items():
        assert globals_env[variable] == {"Ref": parameter}
        assert "Default" not in template["Parameters"][parameter]


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
        assert resources[group]["DeletionPolicy"] == "Retain"
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
        queue = _queue_named(queue_name(step), resources)
        assert queue in polled, f"nothing polls {queue_name(step)}"
        function = polled[queue]
        (props,) = (p for f, _, p in events if f == function)
        assert props["BatchSize"] == WORKFLOW[step].batch_size
    dead_letters = {_queue_named(dead_letter_queue_name(step), resources) for step in Step}
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
    assert scheduled == {"ResumeSteps", "EscalateOverdue", "CloseStale"}
    assert scheduled <= alarmed
