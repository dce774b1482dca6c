"""Metrics in CloudWatch's embedded metric format, written by the functions themselves.

The events_publisher stream consumer counts each refund change (created, a counted status, an
escalation by level, an SLA breach by phase); each SQS worker counts its step attempts by
outcome, with their latency; ``record_run`` writes a reconcile run's channels. Every test
drives the real entry point and reads what it printed: one JSON document a line, beside the
JSON logs, on the stage's dimensions. Stream records are built from the items as stored, as in
test_analytics (moto's in-process mode serves no streams).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError

from chalicelib.adapters.sqs import queue_name
from chalicelib.api.metrics import NAMESPACE, SERVICE, record_run
from chalicelib.domain.model import RefundStatus
from chalicelib.domain.reconciliation import (
    ChannelReconciliation,
    Mismatch,
    MismatchKind,
    Reconciliation,
)
from chalicelib.domain.transitions import STATUS_CHANGES, record
from chalicelib.domain.workflow import WORKFLOW, Step
from tests.functional.conftest import Shop
from tests.functional.test_analytics import Stream
from tests.support import as_json, order_payload

S = RefundStatus
Written = dict[tuple[str, frozenset[tuple[str, str]]], list[float]]
"""The values of each metric by its name and one exact dimension set (service, stage and the
breakdown): what a CloudWatch alarm or graph names."""


def written(capsys: pytest.CaptureFixture[str]) -> tuple[Written, int]:
    """The metrics printed since the last read, and how many documents they came in. Every
    line printed must be one whole JSON document: metrics never break a log line."""
    values: Written = {}
    documents = 0
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        if "_aws" not in document:
            continue  # a log line
        documents += 1
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            names = [metric["Name"] for metric in directive["Metrics"]]
            for dimension_set in directive["Dimensions"]:
                dimensions = frozenset((name, document[name]) for name in dimension_set)
                for name in names:
                    values.setdefault((name, dimensions), []).extend(document[name])
    return values, documents


def on(stage: str, metric: str, **breakdown: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """The key of ``metric`` on the stage's dimensions and ``breakdown``."""
    return metric, frozenset({"service": SERVICE, "stage": stage, **breakdown}.items())


@pytest.fixture
def stream(aws: Any) -> Stream:
    return Stream(aws)


@pytest.fixture
def bus(aws: Any) -> None:
    """The refund events' bus, where events_publisher publishes before it counts."""
    import boto3

    boto3.client("events", region_name=aws.settings.region).create_event_bus(
        Name=aws.settings.event_bus
    )


def move(aws: Any, refund_id: str, *statuses: RefundStatus) -> None:
    """Store the refund's moves through ``statuses``, one write each, by the transition table's
    action for each move (as the console's and the workers' use cases would)."""
    for target in statuses:
        refund = aws.ports.refunds.get(refund_id)
        (action,) = (
            action
            for action, moves in STATUS_CHANGES.items()
            if target in moves.get(refund.status, ())
        )
        record(refund, action, actor="agent-1", at=refund.updated_at, to=target)
        aws.ports.refunds.save(refund)


def submitted(shop: Shop, order_id: str) -> str:
    shop.order(order_id=order_id)
    refund_id = str(shop.refund(order_id)["refund_id"])
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    assert shop.submit(refund_id).status == 200
    return refund_id


# --- the refunds' changes, counted by events_publisher ------------------------------------


@pytest.mark.usefixtures("bus")
def test_each_refund_change_counts_once_even_with_no_lambda_context(
    shop: Shop, stream: Stream, aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from app import app

    # GIVEN a refund created, then submitted with its evidence (each a stored change)
    shop.order()
    refund_id = shop.refund()["refund_id"]
    created = stream.changed("refunds", refund_id)
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    evidenced = stream.changed("refunds", refund_id)
    assert shop.submit(refund_id).status == 200
    records = [created, evidenced, stream.changed("refunds", refund_id)]
    capsys.readouterr()

    # WHEN the publisher gets them, called as the local stack calls it: no Lambda context
    answer = app.handler_map["events_publisher"]({"Records": records}, None)

    # THEN one document counts one creation and one submission, on the stage's dimensions;
    # the evidence's change is no event and counts nothing
    assert answer == {"batchItemFailures": []}
    values, documents = written(capsys)
    stage = aws.settings.stage
    assert values == {
        on(stage, "RefundsCreated"): [1.0],
        on(stage, "RefundsSubmitted"): [1.0],
    }
    assert documents == 1


@pytest.mark.usefixtures("bus")
def test_a_change_that_is_no_event_writes_no_metric(
    shop: Shop, stream: Stream, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    shop.order()
    refund_id = shop.refund()["refund_id"]
    stream.changed("refunds", refund_id)
    shop.evidence(refund_id, "order_screenshot")
    evidenced = stream.changed("refunds", refund_id)
    capsys.readouterr()

    client.lambda_.invoke("events_publisher", {"Records": [evidenced]})

    assert written(capsys) == ({}, 0)


@pytest.mark.usefixtures("bus")
def test_moves_to_the_counted_statuses_count_under_their_metrics(
    shop: Shop, stream: Stream, aws: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN two submitted refunds: one approved, its payout failed, retried and paid; the
    # other rejected (each move a stored change)
    paid = submitted(shop, "o-2001")
    rejected = submitted(shop, "o-2002")
    records = []
    for refund_id, path in (
        (paid, (S.PENDING_REVIEW, S.APPROVED, S.PAYING, S.PAYOUT_FAILED, S.PAYING, S.PAID)),
        (rejected, (S.PENDING_REVIEW, S.REJECTED)),
    ):
        stream.changed("refunds", refund_id)
        for status in path:
            move(aws, refund_id, status)
            records.append(stream.changed("refunds", refund_id))
    capsys.readouterr()

    # WHEN the publisher gets the moves
    client.lambda_.invoke("events_publisher", {"Records": records})

    # THEN each counted status is counted as often as a refund moved to it
    values, _ = written(capsys)
    stage = aws.settings.stage
    assert values == {
        on(stage, "RefundsApproved"): [1.0],
        on(stage, "RefundsPayoutFailed"): [1.0],
        on(stage, "RefundsPaid"): [1.0],
        on(stage, "RefundsRejected"): [1.0],
    }


@pytest.mark.usefixtures("bus")
def test_escalations_count_by_level_and_the_breach_once_per_phase_X2(
    shop: Shop, stream: Stream, aws: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a submitted refund whose review promise ran out long ago, escalated by the
    # schedule to level 1, then (still overdue a working day later) to level 2
    refund_id = submitted(shop, "o-1001")
    stream.changed("refunds", refund_id)
    due = aws.ports.refunds.get(refund_id).review_due_at
    records = []
    for later in (timedelta(days=1), timedelta(days=40)):
        event = client.events.generate_cw_event("aws.events", "Scheduled Event", {}, [])
        event["time"] = (due + later).isoformat()
        assert client.lambda_.invoke("escalate_overdue", event).payload == {"escalated": 1}
        records.append(stream.changed("refunds", refund_id))
    assert aws.ports.refunds.get(refund_id).escalation_level == 2
    capsys.readouterr()

    # WHEN the publisher gets both escalations
    client.lambda_.invoke("events_publisher", {"Records": records})

    # THEN each level counts once, and in the total; the review promise was breached once
    values, documents = written(capsys)
    stage = aws.settings.stage
    assert values == {
        on(stage, "RefundsEscalated", level="1"): [1.0],
        on(stage, "RefundsEscalated", level="2"): [1.0],
        on(stage, "RefundsEscalated"): [1.0, 1.0],
        on(stage, "SlaBreaches", phase="review"): [1.0],
        on(stage, "SlaBreaches"): [1.0],
    }
    assert documents == 3  # level 1, level 2, the review phase


# --- step attempts, counted by the SQS workers ---------------------------------------------

WORKERS = {Step.ORDER_EVENTS: "order_events_worker", Step.AUTO_REVIEW: "auto_review_worker"}


@pytest.fixture
def deliver(client: Any, sqs: Any) -> Callable[..., dict[str, Any]]:
    def run(step: Step, bodies: list[bytes], received: int | None = None) -> dict[str, Any]:
        """Send ``bodies`` to the step's queue, receive them and hand them to its worker as
        Lambda would (``received``: as if SQS had handed each over that often)."""
        url = sqs.get_queue_url(QueueName=queue_name(step))["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body.decode())
        messages = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
        )["Messages"]
        assert len(messages) == len(bodies)
        records = [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    **message["Attributes"],
                    "ApproximateReceiveCount": str(
                        received or message["Attributes"]["ApproximateReceiveCount"]
                    ),
                },
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for message in messages
        ]
        payload: dict[str, Any] = client.lambda_.invoke(WORKERS[step], {"Records": records}).payload
        return payload

    return run


class Unreachable:
    """A table that cannot be reached: every call fails as botocore does then."""

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def fail(*_: Any, **__: Any) -> Any:
            raise EndpointConnectionError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

        return fail


@pytest.fixture
def unreachable(aws: Any) -> Iterator[Callable[[str], None]]:
    from chalicelib import bootstrap

    def install(port: str) -> None:
        bootstrap.install(replace(aws.ports, **{port: Unreachable()}), bootstrap.get_verifier())

    yield install
    bootstrap.install(aws.ports, bootstrap.get_verifier())


def test_a_batch_counts_each_attempt_by_its_outcome_with_its_latency(
    deliver: Callable[..., dict[str, Any]], aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN an order message and one that can never be an order
    capsys.readouterr()

    # WHEN the order-events worker gets both in one batch
    answer = deliver(Step.ORDER_EVENTS, [as_json(order_payload()), b"not an order"])

    # THEN one attempt succeeded, one is bound for the dead-letter queue; each has its
    # latency, and the step's totals hold both
    assert len(answer["batchItemFailures"]) == 1
    values, documents = written(capsys)
    stage, step = aws.settings.stage, Step.ORDER_EVENTS.value
    attempts = {key: value for key, value in values.items() if key[0] == "StepAttempts"}
    assert attempts == {
        on(stage, "StepAttempts", step=step, outcome="succeeded"): [1.0],
        on(stage, "StepAttempts", step=step, outcome="failed"): [1.0],
        on(stage, "StepAttempts", step=step): [1.0, 1.0],
    }
    for outcome in ("succeeded", "failed"):
        (latency,) = values[on(stage, "StepLatency", step=step, outcome=outcome)]
        assert latency >= 0
    assert len(values[on(stage, "StepLatency", step=step)]) == 2
    assert documents == 2


@pytest.mark.parametrize(
    ("step", "port", "last"),
    [
        # The attempt catches the fault and backs off (ChangeMessageVisibility).
        (Step.ORDER_EVENTS, "orders", False),
        (Step.ORDER_EVENTS, "orders", True),
        # The fault escapes the attempt (it cannot even record the failure on the refund):
        # the message comes back after the queue's visibility timeout, or goes to its DLQ.
        (Step.AUTO_REVIEW, "refunds", False),
        (Step.AUTO_REVIEW, "refunds", True),
    ],
    ids=["order-events-first", "order-events-last", "auto-review-first", "auto-review-last"],
)
def test_a_failed_attempt_is_retried_until_its_last_which_failed(
    step: Step,
    port: str,
    last: bool,
    deliver: Callable[..., dict[str, Any]],
    unreachable: Callable[[str], None],
    aws: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a table the step needs that cannot be reached
    unreachable(port)
    body = as_json(order_payload()) if step is Step.ORDER_EVENTS else b'{"refund_id": "rf_01"}'
    received = WORKFLOW[step].retry.max_attempts if last else 1
    capsys.readouterr()

    # WHEN the worker gets the message for its first, or its last, attempt
    answer = deliver(step, [body], received)

    # THEN the attempt failed: retried after the first, failed for good after the last
    assert len(answer["batchItemFailures"]) == 1
    values, _ = written(capsys)
    outcome = "failed" if last else "retried"
    stage = aws.settings.stage
    assert values[on(stage, "StepAttempts", step=step.value, outcome=outcome)] == [1.0]
    assert [key for key in values if key[0] == "StepAttempts"] == [
        on(stage, "StepAttempts", step=step.value, outcome=outcome),
        on(stage, "StepAttempts", step=step.value),
    ]


# --- reconciliation -------------------------------------------------------------------------


def test_a_reconcile_runs_channels_are_written_at_once_zero_mismatches_included(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    unknown = Mismatch(MismatchKind.UNKNOWN_REFUND, "rf_Z", 100, None, None)
    twice = Mismatch(MismatchKind.PAID_TWICE, "rf_A", 200, 100, "paid")

    record_run(
        Reconciliation(
            date(2026, 11, 30),
            datetime(2026, 12, 1, 2, tzinfo=UTC),
            {
                "alipay": ChannelReconciliation("alipay", 41, 361200, 39, (unknown, twice)),
                "wechat": ChannelReconciliation("wechat", 7, 7000, 7),
            },
        )
    )

    values, documents = written(capsys)
    stage = aws.settings.stage
    assert values == {
        on(stage, "ReconciliationMismatches", channel="alipay"): [2.0],
        on(stage, "ReconciliationEntries", channel="alipay"): [41.0],
        on(stage, "ReconciliationMismatches", channel="wechat"): [0.0],
        on(stage, "ReconciliationEntries", channel="wechat"): [7.0],
        on(stage, "ReconciliationMismatches"): [2.0, 0.0],
        on(stage, "ReconciliationEntries"): [41.0, 7.0],
    }
    assert documents == 2
