"""Chaos: the whole refund lifecycle under every fault at once, over HTTP, on the local stack.

Fifty refunds at once, each driven by its own client from the order fed in to the money paid
back, while DynamoDB throttles; DynamoDB, SQS and EventBridge lose answers (the request
applied, the connection dropped or the answer late); SQS hands messages twice and batches in
reverse; workers die in the middle of their steps; and the payment channels refuse payouts,
or make them and lose their answers (infra/local/faults.py).
Then the channels' statements must show each approved refund paid exactly once, for its
approved amount, through its channel, and nothing else paid (P2); and no refund may be stuck.

The clients behave as careful apps do: a 5xx or a dropped connection is sent again (the same
request, the same Idempotency-Key), and a decision that answers 409 after such a resend is
accepted only if the refund shows it was made. A 409 to a first attempt fails the test.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from chalicelib.domain.days import shanghai_day
from chalicelib.service.ports import ServiceConfig
from infra.local.faults import FaultPlan
from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import JPEG, ORDER_SYSTEM, PNG, Api, Who, utc, wait_until

pytestmark = pytest.mark.e2e

SEED = 20261111
REFUNDS = 50
STEP_GRACE_SECONDS = ServiceConfig().step_grace_seconds
"""How long a step's message may be late before ``resume-steps`` sends it again (the
service's ``step_grace_seconds``): a worker killed between a change and the message it owes
leaves the next step waiting this long, by design."""
STEP_DEADLINE = STEP_GRACE_SECONDS + 30.0
"""Seconds a refund may wait in one status for the system to move it on: the grace, then a
run of the schedule and the step itself, slowed by the faults and by fifty clients sharing
this process with the whole stack."""
FLOW_DEADLINE = STEP_DEADLINE + 60.0
"""Seconds for every refund to go from its order to paid, faults and all."""
POLL_SECONDS = 1.0
RESENDS = 6
RESUME_EVERY = 3.0
"""How often the test runs the ``resume-steps`` schedule (deployed: every minute)."""
SPECIFIC = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
FAULT_DESCRIPTION = "同一笔订单被扣款两次，银行流水显示重复扣款 88 元"
PARTIAL = 8000
PAID_AT = utc(datetime.now(UTC) - timedelta(days=5))
"""When this run's orders were paid: a day no other order of the module was paid on, so
that the analytics of that day count exactly this run's orders."""
AGENT = Who("agent-chaos-stats", ("cs-agent",))
CHANNELS = ("alipay", "wechat", "balance")


@dataclass
class Stack:
    api: Api
    aws_endpoint: str
    faults: FaultPlan


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with started_stack(faults=FaultPlan(seed=SEED)) as local:
        yield Stack(Api(local.api_url), local.aws_endpoint, local.faults)


@pytest.fixture
def faults(stack: Stack) -> Iterator[FaultPlan]:
    """The stack's fault plan, for one test; no faults afterwards."""
    yield stack.faults
    stack.faults.clear()


# ---------------------------------------------------------------------- the SDK under faults


def test_the_apps_dynamodb_calls_outlast_throttling(stack: Stack, faults: FaultPlan) -> None:
    # GIVEN a refund, then DynamoDB throttling its next reads and order writes three times
    # each (the fourth attempt of the SDK's standard retry mode is let through)
    api = stack.api.as_user(Who(f"u-chaos-sdk-{uuid.uuid4().hex[:8]}"))
    order = api.order("sdk")
    api.put_order(order)
    refund = api.create_refund(order["order_id"], "invalid_code", SPECIFIC)
    faults.throttle(1.0, operations=["GetItem"], tables=["refunds-local-refunds"], limit=3)
    faults.throttle(
        1.0,
        operations=["UpdateItem"],
        tables=["refunds-local-orders"],
        code="ThrottlingException",
        limit=3,
    )

    # WHEN the user reads the refund, and the order system updates the order
    read = api.call("GET", f"/refunds/{refund['refund_id']}", api.user)
    updated = api.call(
        "PUT", f"/internal/orders/{order['order_id']}", ORDER_SYSTEM, {**order, "title": "改"}
    )

    # THEN both succeed: the app's clients retried each throttle, as AWS SDKs do
    assert read.status_code == 200, read.text
    assert updated.status_code == 200, updated.text
    assert updated.json()["title"] == "改"
    assert faults.injected() == {
        "throttle dynamodb.GetItem": 3,
        "throttle dynamodb.UpdateItem": 3,
    }


@pytest.mark.parametrize("stall_seconds", [0.0, 1.5], ids=["dropped", "after-read-timeout"])
def test_a_lost_answer_is_a_write_applied_that_the_sdk_sends_again(
    stack: Stack, faults: FaultPlan, stall_seconds: float
) -> None:
    # GIVEN a counter, and a client that waits 0.5 s for an answer
    client = boto3.client(
        "dynamodb",
        endpoint_url=stack.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 3}),
    )
    table = f"chaos-counter-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    key = {"pk": {"S": "n"}}

    # WHEN the answer of one increment is lost: dropped, or sent after the read timeout
    faults.lose_answers(1.0, tables=[table], stall_seconds=stall_seconds, limit=1)
    client.update_item(
        TableName=table,
        Key=key,
        UpdateExpression="ADD n :one",
        ExpressionAttributeValues={":one": {"N": "1"}},
    )

    # THEN the call succeeded for the caller, but the increment was applied twice: the first
    # attempt was applied, and the SDK sent it again (why every conditional write of the app
    # must know its own earlier attempt, DESIGN.md "Lost answers")
    stored = client.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]
    assert stored["n"] == {"N": "2"}
    kind = "stalled answer" if stall_seconds else "dropped answer"
    assert faults.injected()[f"{kind} dynamodb.UpdateItem"] == 1


# ---------------------------------------------------------------------- fifty refunds


@dataclass
class Plan:
    """What one refund of the run is."""

    index: int
    channel: str
    """Where the money should go: alipay, wechat or balance."""
    fast_track: bool
    approve_amount: int | None

    @property
    def paid_with(self) -> str:
        return "alipay" if self.channel == "balance" else self.channel

    @property
    def expected_amount(self) -> int:
        return self.approve_amount or 8800


def _plans() -> list[Plan]:
    """A mix: every channel, a fifth fast-tracked (O2), a quarter approved lower (A1)."""
    return [
        Plan(
            index=i,
            channel=CHANNELS[i % 3],
            fast_track=i % 5 == 0,
            approve_amount=PARTIAL if i % 4 == 1 and i % 5 else None,
        )
        for i in range(REFUNDS)
    ]


@dataclass
class Tally:
    """What the clients met, for the report and the verdicts."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    resent: Counter[str] = field(default_factory=Counter)
    """Requests sent again, by why: a 5xx status, or a broken connection."""
    resend_causes: list[str] = field(default_factory=list)
    payout_retries: int = 0
    resumed: int = 0
    """Step messages that ``resume-steps`` sent again."""

    def note_resend(self, why: str, detail: str) -> None:
        with self.lock:
            self.resent[why] += 1
            self.resend_causes.append(detail)


class Driver:
    """One refund's client: the app's user, then an agent, then the user waiting for money."""

    def __init__(self, api: Api, plan: Plan, tally: Tally, deadline: float) -> None:
        self.plan = plan
        self.user = Who(f"u-chaos-{plan.index}-{uuid.uuid4().hex[:8]}")
        self.agent = Who(f"agent-chaos-{plan.index % 3}", ("cs-agent",))
        self.api = api.as_user(self.user)
        self.tally = tally
        self.deadline = deadline
        self.refund_id = ""
        self.resends = 0

    def run(self) -> dict[str, Any]:
        order = self._order()
        self._send("PUT", f"/internal/orders/{order['order_id']}", ORDER_SYSTEM, order, ok=200)
        self.refund_id = self._create(order)
        if not self.plan.fast_track:
            self._upload("order_screenshot", PNG, "image/png")
            self._upload("problem_screenshot", JPEG, "image/jpeg")
        after_submit = {"submitted", "pending_review", "approved", "paying", "paid"}
        self._decide("submit", self.user, None, reached=after_submit)
        if not self.plan.fast_track:
            self._wait({"pending_review"}, passing={"submitted"})
            self._decide("claim", self.agent, None, reached=set())
            body: dict[str, Any] = {}
            if self.plan.approve_amount is not None:
                body = {"amount": self.plan.approve_amount, "note": "部分已使用，协商退款"}
            self._decide("approve", self.agent, body, reached={"approved", "paying", "paid"})
        return self._until_paid()

    def _order(self) -> dict[str, Any]:
        fields: dict[str, Any] = {"payment_channel": self.plan.paid_with, "paid_at": PAID_AT}
        if self.plan.fast_track:
            fields["platform_fault"] = "duplicate_charge"
        return self.api.order(f"chaos-{self.plan.index}", **fields)

    def _create(self, order: dict[str, Any]) -> str:
        reason, description = (
            ("duplicate_charge", FAULT_DESCRIPTION)
            if self.plan.fast_track
            else ("invalid_code", SPECIFIC)
        )
        body = {
            "order_id": order["order_id"],
            "reason": reason,
            "description": description,
            "payout_channel": "balance" if self.plan.channel == "balance" else "original",
        }
        key = {"Idempotency-Key": uuid.uuid4().hex}
        created = self._send("POST", "/refunds", self.user, body, key, ok=201)
        refund_id: str = created.json()["refund_id"]
        return refund_id

    def _upload(self, kind: str, content: bytes, content_type: str) -> None:
        slot = self._send(
            "POST",
            f"/refunds/{self.refund_id}/evidence",
            self.user,
            {"kind": kind, "content_type": content_type, "size": len(content)},
            ok=201,
        ).json()
        posted = requests.post(
            slot["upload"]["url"],
            data=slot["upload"]["fields"],
            files={"file": ("evidence", content, content_type)},
            timeout=10,
        )
        assert posted.status_code in (200, 201, 204), posted.text

    def _send(
        self,
        method: str,
        path: str,
        who: Who,
        body: Any = None,
        headers: dict[str, str] | None = None,
        ok: int | None = None,
    ) -> requests.Response:
        """Send, and send again after a 5xx or a broken connection; the first other answer."""
        for attempt in range(RESENDS):
            if attempt:
                self.resends += 1
                time.sleep(random.uniform(0.2, 0.5) * attempt)
            try:
                answer = self.api.call(method, path, who, body, headers)
            except requests.RequestException as error:
                self.tally.note_resend("connection", f"{method} {path}: {error}")
                continue
            if answer.status_code < 500:
                if ok is not None:
                    assert answer.status_code == ok, f"{method} {path}: {answer.text}"
                return answer
            self.tally.note_resend(
                str(answer.status_code), f"{method} {path}: {answer.status_code} {answer.text}"
            )
        raise AssertionError(f"{method} {path}: no answer but 5xx after {RESENDS} tries")

    def _decide(self, action: str, who: Who, body: Any, reached: set[str]) -> None:
        """A decision; a 409 is accepted only after a resend, and only if the refund shows
        that the first attempt was applied (its status one of ``reached``)."""
        path = (
            f"/refunds/{self.refund_id}/{action}"
            if action == "submit"
            else f"/admin/refunds/{self.refund_id}/{action}"
        )
        before = self.resends
        answer = self._send("POST", path, who, body)
        if answer.status_code == 200:
            return
        resent = self.resends > before
        status = self._read()["status"]
        what = f"{action} {self.refund_id}: {answer.status_code} {answer.text} (now {status})"
        assert answer.status_code == 409, what
        assert resent, what
        assert status in reached, what

    def _read(self) -> dict[str, Any]:
        refund: dict[str, Any] = self._send(
            "GET", f"/refunds/{self.refund_id}", self.user, ok=200
        ).json()
        return refund

    def _steps(self) -> list[dict[str, Any]]:
        """The refund's step executions, as the console shows them (for a stuck refund)."""
        detail = self._send("GET", f"/admin/refunds/{self.refund_id}", self.agent, ok=200)
        steps: list[dict[str, Any]] = detail.json()["steps"]
        return steps

    def _wait(self, until: set[str], passing: set[str]) -> dict[str, Any]:
        """Poll until the refund is in ``until``; any status but ``passing`` is a fault."""
        since, seen = time.monotonic(), ""
        while True:
            refund = self._read()
            status = refund["status"]
            if status in until:
                return refund
            assert status in passing, f"{self.refund_id} is {status}, awaited {until}"
            if status != seen:
                since, seen = time.monotonic(), status
            now = time.monotonic()
            if now - since > STEP_DEADLINE or now > self.deadline:
                raise AssertionError(f"{self.refund_id} stuck in {status}: {self._steps()}")
            time.sleep(POLL_SECONDS * random.uniform(0.5, 1.5))

    def _until_paid(self) -> dict[str, Any]:
        """Wait for the money; a payout that failed for good goes back to the channel, by
        the agent, as customer service would (P2)."""
        passing = {"submitted", "approved", "paying"}
        while True:
            refund = self._wait({"paid", "payout_failed"}, passing)
            if refund["status"] == "paid":
                return refund
            with self.tally.lock:
                self.tally.payout_retries += 1
            self._decide("claim", self.agent, None, reached=set())
            choice = {"payout_channel": "balance" if self.plan.channel == "balance" else "original"}
            self._decide("retry-payout", self.agent, choice, reached={"paying", "paid"})


def _resume_steps(api: Api, tally: Tally, stop: threading.Event) -> None:
    """The ``resume-steps`` schedule, run every few seconds as EventBridge would each minute."""
    while not stop.wait(RESUME_EVERY):
        try:
            answer = api.call("POST", "/_local/schedules/resume-steps/run")
        except requests.RequestException:
            continue  # it runs again at its next tick
        if answer.status_code == 200:
            tally.resumed += int(answer.json()["result"]["resent"])


def _run_all(api: Api, plans: list[Plan]) -> tuple[list[dict[str, Any]], Tally, float]:
    tally = Tally()
    started = time.monotonic()
    drivers = [Driver(api, plan, tally, started + FLOW_DEADLINE) for plan in plans]
    results: list[dict[str, Any] | None] = [None] * len(plans)
    failures: list[str] = []
    go = threading.Barrier(len(plans))

    def drive(i: int) -> None:
        go.wait()
        try:
            results[i] = drivers[i].run()
        except (AssertionError, requests.RequestException, KeyError, ValueError) as error:
            failures.append(f"refund {i} ({drivers[i].refund_id or 'not created'}): {error}")

    stop = threading.Event()
    schedule = threading.Thread(target=_resume_steps, args=(api, tally, stop), daemon=True)
    schedule.start()
    threads = [threading.Thread(target=drive, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stop.set()
    schedule.join()
    assert not failures, f"{len(failures)} refunds failed:\n" + "\n".join(failures[:10])
    return [result for result in results if result is not None], tally, time.monotonic() - started


def _distinct_events(api: Api, refund_id: str, expected: int) -> list[dict[str, Any]]:
    """The refund's events at the bus's consumer, once each (by event id), by version, once
    ``expected`` of them have arrived."""

    def received() -> dict[str, dict[str, Any]]:
        items = api.ok("GET", f"/_local/events?refund_id={refund_id}")["items"]
        return {event["detail"]["event_id"]: event for event in items}

    distinct = wait_until(received, lambda got: len(got) >= expected, f"events of {refund_id}")
    return sorted(distinct.values(), key=lambda event: event["detail"]["version"])


def test_fifty_refunds_under_every_fault_at_once_are_each_paid_exactly_once(
    stack: Stack, faults: FaultPlan
) -> None:
    api = stack.api
    # GIVEN every fault at once, at moderate rates
    faults.throttle(0.04)
    faults.throttle(0.01, code="ThrottlingException")
    faults.lose_answers(0.03)
    faults.lose_answers(0.01, stall_seconds=0.3)
    faults.lose_answers(
        0.03,
        services=["sqs"],
        operations=["SendMessage", "ChangeMessageVisibility", "DeleteMessageBatch"],
    )
    faults.lose_answers(0.03, services=["events"])
    faults.sqs_deliveries(duplicate_rate=0.2, reorder_rate=0.5, kill_rate=0.2, kill_visible_after=1)
    for channel, latency in (("alipay", 20), ("wechat", 50)):
        faults.channel(channel, fail_rate=0.2, timeout_rate=0.15, latency_ms=latency, seed=SEED)
    plans = _plans()

    # WHEN fifty refunds go through their whole lifecycle at once
    refunds, tally, seconds = _run_all(api, plans)
    injected = faults.injected()
    faults.clear()  # the statements are read as they are, not through more faults
    report = (
        f"{len(refunds)} refunds in {seconds:.0f} s; injected {injected}; clients resent "
        f"{dict(tally.resent)}; step messages resent by resume-steps: {tally.resumed}; "
        f"payouts retried by an agent: {tally.payout_retries}; first resends: "
        f"{tally.resend_causes[:3]}"
    )
    print(report)

    # THEN every refund was paid, its approved amount, by the channel planned, each of its
    # steps having happened once (a retry that failed for good shows as payout_failed, then
    # retry_payout, in pairs)
    assert len(refunds) == REFUNDS, report
    for plan, refund in zip(plans, refunds, strict=True):
        assert refund["status"] == "paid", refund
        assert refund["channel"] == plan.channel, refund
        assert refund["approved_amount"] == plan.expected_amount, refund
        assert refund["fast_track"] is plan.fast_track, refund
        actions = Counter(entry["action"] for entry in refund["history"])
        retried = actions.pop("retry_payout", 0)
        assert actions.pop("payout_failed", 0) == retried, refund["history"]
        once = ["create", "submit", "auto_review", "payout", "paid"]
        if not plan.fast_track:
            once += ["claim", "approve"]
        elif retried:
            once += ["claim"]  # an agent took the failed payout in hand
        assert actions == Counter(once), refund["history"]

    # AND the channels' statements show each approved refund paid exactly once, for its
    # approved amount, through its channel, and nothing else paid (P2)
    moved: defaultdict[str, list[tuple[str, int, str]]] = defaultdict(list)
    for channel in CHANNELS:
        statement = api.ok("GET", f"/_local/channels/{channel}/statement")
        for entry in statement["entries"]:
            moved[entry["refund_no"]].append((channel, entry["amount"], entry["status"]))
    expected = {
        refund["refund_id"]: [(plan.channel, plan.expected_amount, "SUCCESS")]
        for plan, refund in zip(plans, refunds, strict=True)
    }
    assert dict(moved) == expected, report

    # AND each order keeps what was not refunded, its booking settled once (E4)
    for plan, refund in zip(plans, refunds, strict=True):
        quote = api.quote(refund["order_id"], Who(refund["user_id"])).json()
        assert quote["amount"] == 8800 - plan.expected_amount, (refund["refund_id"], quote)

    # AND the analytics counted each order and each refund once (O4), whatever the stream
    # redelivered
    today = shanghai_day(datetime.now(UTC))
    paid_day = shanghai_day(datetime.fromisoformat(PAID_AT.replace("Z", "+00:00")))

    def stats(first: date, last: date) -> dict[str, Any]:
        figures: dict[str, Any] = api.ok("GET", f"/admin/stats?from={first}&to={last}", AGENT)
        return figures

    orders = wait_until(
        lambda: stats(paid_day, paid_day), lambda f: f["orders"] >= REFUNDS, "orders", 30
    )
    counted = wait_until(
        lambda: stats(today - timedelta(days=1), today + timedelta(days=1)),
        lambda f: f["by_status"].get("paid", 0) >= REFUNDS,
        "refunds counted as paid",
        deadline=30,
    )
    assert orders["orders"] == REFUNDS, orders
    assert (counted["refunds"], counted["by_status"]) == (REFUNDS, {"paid": REFUNDS}), counted

    # AND a consumer of the bus received every change of every refund (an outbox: a change
    # is never lost, however often it is delivered)
    for refund in refunds:
        changes = [f"refund.{entry['to']}" for entry in refund["history"] if entry["to"]]
        received = _distinct_events(api, refund["refund_id"], len(changes))
        assert [event["detail-type"] for event in received] == changes, refund["refund_id"]

    # AND the faults did happen: each kind at least once
    for kind in (
        "throttle dynamodb.",
        "dropped answer dynamodb.",
        "dropped answer sqs.",
        "dropped answer events.",
        "stalled answer dynamodb.",
        "sqs message handed twice",
        "sqs batch reversed",
        "worker killed",
    ):
        assert any(name.startswith(kind) for name in injected), (kind, report)
