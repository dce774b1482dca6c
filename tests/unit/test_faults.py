"""The local stack's fault plan: what it injects, where, how often, and that the SDK reads its
throttles as DynamoDB's own. No network: the emulator is a WSGI callable, botocore is stubbed,
the SQS poller runs against a fake queue."""

from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.parsers import create_parser
from botocore.retries.standard import RetryContext, ThrottledRetryableChecker
from botocore.stub import Stubber
from chalice.app import SQSEventConfig

from infra.local.event_sources import SqsPoller, Wakeup
from infra.local.faults import ENVIRONMENT_VARIABLE, FaultPlan, WorkerKilled

REFUNDS = "refunds-local-refunds"
ORDERS = "refunds-local-orders"


class Backend:
    """The emulator behind the plan: counts what it applied, answers 200."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = environ["wsgi.input"].read()
        self.applied.append(environ.get("HTTP_X_AMZ_TARGET", "") + " " + body.decode())
        start_response("200 OK", [("Content-Type", "application/x-amz-json-1.0")])
        return [b"{}"]


class Socket:
    def __init__(self) -> None:
        self.shut = False

    def shutdown(self, how: int) -> None:
        self.shut = True


def _request(operation: str, body: dict[str, Any], service: str = "DynamoDB_20120810") -> Any:
    raw = json.dumps(body).encode()
    return {
        "REQUEST_METHOD": "POST",
        "HTTP_X_AMZ_TARGET": f"{service}.{operation}",
        "CONTENT_LENGTH": str(len(raw)),
        "wsgi.input": io.BytesIO(raw),
        "werkzeug.socket": Socket(),
    }


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    body = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], body


# ---------------------------------------------------------------------- DynamoDB answers


def test_a_throttled_request_is_not_applied_and_the_sdk_reads_dynamodbs_throttle() -> None:
    # GIVEN every GetItem on the refunds table throttled
    backend = Backend()
    plan = FaultPlan(seed=1).throttle(1.0, operations=["GetItem"], tables=[REFUNDS])

    # WHEN one arrives
    status, headers, body = _call(
        plan.wsgi(backend), _request("GetItem", {"TableName": REFUNDS, "Key": {}})
    )

    # THEN it is answered as DynamoDB throttles, and never reaches the emulator
    assert status.startswith("400 ")
    assert headers["Content-Type"] == "application/x-amz-json-1.0"
    assert backend.applied == []
    parsed = create_parser("json").parse(
        {"status_code": 400, "headers": headers, "body": body}, None
    )
    assert parsed["Error"]["Code"] == "ProvisionedThroughputExceededException"
    # AND the SDK's standard retry mode takes it for throttling (retried, with backoff)
    context = RetryContext(attempt_number=1, parsed_response=parsed)
    assert ThrottledRetryableChecker().is_retryable(context)
    assert plan.injected() == {"throttle dynamodb.GetItem": 1}


def test_throttling_exception_is_dynamodbs_other_throttle() -> None:
    plan = FaultPlan().throttle(1.0, code="ThrottlingException")
    _, headers, body = _call(plan.wsgi(Backend()), _request("Query", {"TableName": ORDERS}))
    parsed = create_parser("json").parse(
        {"status_code": 400, "headers": headers, "body": body}, None
    )
    assert parsed["Error"]["Code"] == "ThrottlingException"
    assert ThrottledRetryableChecker().is_retryable(RetryContext(1, parsed_response=parsed))


def test_only_the_chosen_operations_and_tables_are_touched() -> None:
    backend = Backend()
    plan = FaultPlan().throttle(1.0, operations=["UpdateItem"], tables=[REFUNDS])
    app = plan.wsgi(backend)

    other_table = _call(app, _request("UpdateItem", {"TableName": ORDERS}))
    other_operation = _call(app, _request("GetItem", {"TableName": REFUNDS}))
    transaction = _call(
        app,
        _request(
            "TransactWriteItems",
            {"TransactItems": [{"Put": {"TableName": REFUNDS}}, {"Update": {"TableName": ORDERS}}]},
        ),
    )
    s3_upload = _call(app, {"REQUEST_METHOD": "POST", "wsgi.input": io.BytesIO(b"form")})

    assert [answer[0] for answer in (other_table, other_operation, transaction, s3_upload)] == [
        "200 OK"
    ] * 4
    assert len(backend.applied) == 4
    assert plan.injected() == {}


def test_a_transaction_naming_a_chosen_table_is_throttled() -> None:
    plan = FaultPlan().throttle(1.0, tables=[REFUNDS])
    status, _, _ = _call(
        plan.wsgi(Backend()),
        _request("TransactWriteItems", {"TransactItems": [{"Update": {"TableName": REFUNDS}}]}),
    )
    assert status.startswith("400 ")


def test_a_limit_bounds_how_often_a_rule_fires() -> None:
    backend = Backend()
    plan = FaultPlan().throttle(1.0, limit=2)
    app = plan.wsgi(backend)
    statuses = [_call(app, _request("GetItem", {"TableName": REFUNDS}))[0] for _ in range(4)]
    assert [status[:3] for status in statuses] == ["400", "400", "200", "200"]
    assert len(backend.applied) == 2


def test_a_lost_answer_is_applied_and_its_connection_dropped() -> None:
    # GIVEN every PutItem's answer lost
    backend = Backend()
    plan = FaultPlan().lose_answers(1.0, operations=["PutItem"])
    environ = _request("PutItem", {"TableName": REFUNDS, "Item": {"pk": {"S": "a"}}})

    # WHEN one arrives THEN the emulator applied it, and the caller gets no answer at all
    with pytest.raises(ConnectionAbortedError):
        _call(plan.wsgi(backend), environ)
    assert len(backend.applied) == 1
    assert '"Item"' in backend.applied[0]  # the request reached the emulator whole
    assert environ["werkzeug.socket"].shut
    assert plan.injected() == {"dropped answer dynamodb.PutItem": 1}


def test_a_stalled_answer_is_applied_at_once_and_answered_late() -> None:
    backend = Backend()
    plan = FaultPlan().lose_answers(1.0, services=["sqs"], stall_seconds=0.2)
    started = time.monotonic()
    status, _, body = _call(
        plan.wsgi(backend), _request("SendMessage", {"QueueUrl": "q"}, service="AmazonSQS")
    )
    assert time.monotonic() - started >= 0.2
    assert (status, body, len(backend.applied)) == ("200 OK", b"{}", 1)
    assert plan.injected() == {"stalled answer sqs.SendMessage": 1}


def test_answers_of_services_not_chosen_are_never_lost() -> None:
    backend = Backend()
    plan = FaultPlan().lose_answers(1.0)  # DynamoDB only, by default
    status, _, _ = _call(
        plan.wsgi(backend), _request("SendMessage", {"QueueUrl": "q"}, service="AmazonSQS")
    )
    assert status == "200 OK"


def test_the_same_seed_draws_the_same_faults_at_the_rate_asked() -> None:
    def draws(seed: int) -> list[str]:
        plan = FaultPlan(seed=seed).throttle(0.3)
        app = plan.wsgi(Backend())
        return [_call(app, _request("GetItem", {"TableName": REFUNDS}))[0] for _ in range(1000)]

    first = draws(7)
    assert first == draws(7)
    assert first != draws(8)
    throttled = sum(status.startswith("400") for status in first)
    assert 240 <= throttled <= 360


def test_clear_stops_every_fault_but_keeps_the_counts() -> None:
    backend = Backend()
    plan = FaultPlan().throttle(1.0)
    app = plan.wsgi(backend)
    _call(app, _request("GetItem", {"TableName": REFUNDS}))
    plan.clear()
    assert _call(app, _request("GetItem", {"TableName": REFUNDS}))[0] == "200 OK"
    assert plan.injected() == {"throttle dynamodb.GetItem": 1}


@pytest.mark.parametrize(
    "configure",
    [
        lambda plan: plan.throttle(1.5),
        lambda plan: plan.throttle(0.1, code="SlowDown"),
        lambda plan: plan.lose_answers(0.1, services=["s3"]),
        lambda plan: plan.sqs_deliveries(kill_rate=-0.1),
        lambda plan: plan.sqs_deliveries(kill_writes=0),
    ],
)
def test_a_plan_that_makes_no_sense_is_refused(configure: Any) -> None:
    with pytest.raises(ValueError, match=r"must|no such"):
        configure(FaultPlan())


# ---------------------------------------------------------------------- from the environment


def test_make_run_reads_a_plan_from_the_environment() -> None:
    text = json.dumps(
        {
            "seed": 7,
            "throttle": [{"rate": 1, "operations": ["UpdateItem"], "tables": [REFUNDS]}],
            "lose_answers": [{"rate": 0.02}, {"rate": 0.01, "stall_seconds": 2}],
            "sqs": {"duplicate_rate": 1, "reorder_rate": 0.3, "kill_rate": 0.05},
            "channels": {"alipay": {"fail_rate": 0.2, "timeout_rate": 0.1}},
        }
    )
    plan = FaultPlan.from_environ({ENVIRONMENT_VARIABLE: text})
    assert plan.seed == 7
    status, _, _ = _call(plan.wsgi(Backend()), _request("UpdateItem", {"TableName": REFUNDS}))
    assert status.startswith("400 ")
    assert plan.deliver("q", [{"MessageId": "1"}]).again == [{"MessageId": "1"}]


def test_no_plan_in_the_environment_is_no_faults() -> None:
    plan = FaultPlan.from_environ({})
    status, _, _ = _call(plan.wsgi(Backend()), _request("GetItem", {"TableName": REFUNDS}))
    assert status == "200 OK"


@pytest.mark.parametrize(
    "text", ["not json", "[1]", '{"throttles": []}', '{"throttle": [{"rate": 2}]}']
)
def test_a_bad_plan_in_the_environment_stops_the_start(text: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        FaultPlan.from_environ({ENVIRONMENT_VARIABLE: text})


# ---------------------------------------------------------------------- workers killed


def _dynamodb() -> Any:
    return boto3.client(
        "dynamodb",
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


def test_a_worker_dies_right_after_its_nth_write_and_makes_no_call_after() -> None:
    # GIVEN an invocation drawn to die after its 2nd AWS write
    plan = FaultPlan()
    client = _dynamodb()
    plan.watch(client)
    stubber = Stubber(client)
    stubber.add_response("get_item", {})
    stubber.add_response("put_item", {})
    stubber.add_response("update_item", {})
    stubber.activate()

    def step() -> None:
        with plan.invocation(2):
            client.get_item(TableName=REFUNDS, Key={"pk": {"S": "a"}})  # a read does not count
            client.put_item(TableName=REFUNDS, Item={"pk": {"S": "a"}})
            client.update_item(TableName=REFUNDS, Key={"pk": {"S": "a"}})
            client.delete_item(TableName=REFUNDS, Key={"pk": {"S": "a"}})

    # WHEN it reads, then writes three times THEN it dies right after its second write
    with pytest.raises(WorkerKilled, match="UpdateItem"):
        step()
    # a death is nothing the code under test can catch with ``except Exception``
    assert not issubclass(WorkerKilled, Exception)

    # AND both writes went out, nothing after them, and the death was counted
    stubber.assert_no_pending_responses()
    assert plan.injected() == {"worker killed mid-step": 1}
    # AND the thread lives on normally afterwards (the next invocation is a new one)
    stubber.add_response("get_item", {})
    client.get_item(TableName=REFUNDS, Key={"pk": {"S": "a"}})


def test_a_killed_worker_makes_no_more_calls_not_even_in_a_finally_block() -> None:
    plan = FaultPlan()
    client = _dynamodb()
    plan.watch(client)
    stubber = Stubber(client)
    stubber.add_response("put_item", {})  # and nothing else: another call would be unstubbed
    stubber.activate()

    def step() -> None:
        with plan.invocation(1):
            try:
                client.put_item(TableName=REFUNDS, Item={"pk": {"S": "a"}})
            finally:
                client.delete_item(TableName=REFUNDS, Key={"pk": {"S": "a"}})

    with pytest.raises(WorkerKilled, match="no more calls"):
        step()
    stubber.assert_no_pending_responses()


def test_a_worker_making_fewer_writes_dies_before_its_delete() -> None:
    plan = FaultPlan()
    with pytest.raises(WorkerKilled), plan.invocation(3):
        pass
    assert plan.injected() == {"worker killed before its delete": 1}
    with plan.invocation(None):
        pass  # not drawn: it lives


# ---------------------------------------------------------------------- SQS deliveries


class FakeSqs:
    """One queue: a batch to receive once, and what the poller did with it."""

    url = "http://sqs/123456789012/refunds-payout"

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.pending = messages
        self.deleted: list[str] = []
        self.hidden: dict[str, int] = {}

    def get_queue_url(self, QueueName: str) -> dict[str, str]:
        return {"QueueUrl": self.url}

    def get_queue_attributes(self, **_: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:refunds-payout"}}

    def receive_message(self, **_: Any) -> dict[str, Any]:
        batch, self.pending = self.pending, []
        return {"Messages": batch}

    def delete_message_batch(self, QueueUrl: str, Entries: list[dict[str, str]]) -> None:
        self.deleted += [entry["ReceiptHandle"] for entry in Entries]

    def change_message_visibility_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> None:
        self.hidden.update({e["ReceiptHandle"]: e["VisibilityTimeout"] for e in Entries})


class Worker:
    """A worker function: records what it was handed, invocation by invocation."""

    def __init__(self, fail: frozenset[str] = frozenset()) -> None:
        self.invocations: list[list[str]] = []
        self.fail = fail

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        ids = [record["messageId"] for record in event["Records"]]
        self.invocations.append(ids)
        return {"batchItemFailures": [{"itemIdentifier": i} for i in ids if i in self.fail]}


def _poller(worker: Worker, sqs: FakeSqs, plan: FaultPlan) -> SqsPoller:
    app = SimpleNamespace(handler_map={"payout_worker": worker})

    source = SQSEventConfig(
        "payout_worker", "app.payout_worker", "refunds-payout", None, 5, 0, None
    )
    return SqsPoller(app, source, sqs, Wakeup(), plan)


def _messages(*ids: str) -> list[dict[str, Any]]:
    return [{"MessageId": i, "ReceiptHandle": f"rh-{i}", "Body": "{}"} for i in ids]


def test_a_poller_hands_a_duplicate_to_a_second_invocation_and_deletes_once() -> None:
    worker, sqs = Worker(), FakeSqs(_messages("a", "b"))
    plan = FaultPlan().sqs_deliveries(duplicate_rate=1.0)

    assert _poller(worker, sqs, plan).poll_once() == 2

    assert sorted(worker.invocations) == [["a", "b"], ["a", "b"]]
    assert sqs.deleted == ["rh-a", "rh-b"]
    assert plan.injected() == {"sqs message handed twice": 2}


def test_a_poller_hands_a_reversed_batch_and_deletes_what_succeeded() -> None:
    worker, sqs = Worker(fail=frozenset({"b"})), FakeSqs(_messages("a", "b", "c"))
    plan = FaultPlan().sqs_deliveries(reorder_rate=1.0)

    _poller(worker, sqs, plan).poll_once()

    assert worker.invocations == [["c", "b", "a"]]
    assert sorted(sqs.deleted) == ["rh-a", "rh-c"]


def test_a_killed_invocation_deletes_nothing_and_its_batch_shows_again() -> None:
    # GIVEN every invocation killed, its messages hidden 2 s (the queue's timeout, shortened)
    worker, sqs = Worker(), FakeSqs(_messages("a", "b"))
    plan = FaultPlan().sqs_deliveries(kill_rate=1.0, kill_visible_after=2)

    # WHEN the poller hands the batch over THEN the function ran, but nothing was deleted
    _poller(worker, sqs, plan).poll_once()
    assert worker.invocations == [["a", "b"]]
    assert sqs.deleted == []
    assert sqs.hidden == {"rh-a": 2, "rh-b": 2}
    assert plan.injected() == {"worker killed before its delete": 1}


def test_a_poller_of_a_queue_not_chosen_is_left_alone() -> None:
    worker, sqs = Worker(), FakeSqs(_messages("a", "b"))
    plan = FaultPlan().sqs_deliveries(
        duplicate_rate=1, reorder_rate=1, kill_rate=1, queues=["refunds-auto-review"]
    )
    _poller(worker, sqs, plan).poll_once()
    assert worker.invocations == [["a", "b"]]
    assert sqs.deleted == ["rh-a", "rh-b"]
