"""infra/template.yaml against the code's own declarations: the models, config.json, API.md.

DESIGN.md, "infra/": what Chalice cannot declare (tables, bucket, IAM, gateway responses) is a
CloudFormation template merged into `chalice package` output. Nothing but these tests keeps it
in step with the PynamoDB models, which the local stack and the other tests create their tables
from, so every expectation here is derived from the models, not restated.
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
    MessageModel,
    OrderModel,
    RefundModel,
)
from chalicelib.service.refunds import evidence_key

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
}
TABLE_ACTIONS = {
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
}
ROLE = "RefundsFunctionRole"
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
def prod_stage() -> dict[str, Any]:
    return json.loads(CHALICE_CONFIG.read_text(encoding="utf-8"))["stages"]["prod"]


def _of_type(resources: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in resources.items() if r.get("Type") == kind}


def _table_of(model: type[Model], resources: dict[str, Any], prod_stage: dict[str, Any]) -> str:
    """The table resource whose TableName is the one the prod stage gives ``model``."""
    wanted = prod_stage["environment_variables"][TABLE_VARIABLES[model]]
    tables = _of_type(resources, "AWS::DynamoDB::Table")
    found = [name for name, t in tables.items() if t["Properties"]["TableName"] == wanted]
    assert found, f"no table named {wanted!r} ({model.__name__}) in {TEMPLATE.name}"
    return found[0]


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


# --- IAM ----------------------------------------------------------------------------------


def test_role_reaches_exactly_the_tables_and_their_indexes(resources: dict[str, Any]) -> None:
    """Least privilege with exact ARNs: item actions on the tables, Query on the GSIs by name."""
    table_names = set(_of_type(resources, "AWS::DynamoDB::Table"))
    index_arns = {
        f"${{RefundsTable.Arn}}/index/{index.Meta.index_name}"
        for index in RefundModel._indexes.values()
    }
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
