"""The console, the channels' webhooks and the workflow's workers, through Chalice's test client.

Step messages go to moto's SQS queues (created as the local stack creates them); ``drain``
plays Lambda's event source mapping with ``client.lambda_.invoke``: it receives each queue's
messages, hands the handler the records Lambda would (each with its own messageId), deletes
what succeeded and leaves the ``batchItemFailures``. Payment channels are fakes that keep what
they paid; the balance is the ledger on moto.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.adapters.channels.simulator import sign
from chalicelib.adapters.sqs import dead_letter_queue_name, queue_name
from chalicelib.domain.model import PaymentChannel
from chalicelib.domain.workflow import Step
from chalicelib.settings import DEFAULT_LOCAL_CHANNEL_SECRET
from infra.local.stack import notify_uploads
from tests.fakes import FakeGateway
from tests.functional.conftest import Api, Shop
from tests.support import bearer, order_payload

AGENT = bearer("agent-1", "cs-agent")
OTHER_AGENT = bearer("agent-2", "cs-agent")
SENIOR = bearer("senior-1", "cs-senior")
WORKERS = {
    Step.AUTO_REVIEW: "auto_review_worker",
    Step.PAYOUT: "payout_worker",
    Step.CONFIRM_PAYOUT: "confirm_payout_worker",
    Step.VERIFY_EVIDENCE: "verify_evidence_worker",
    Step.ORDER_EVENTS: "order_events_worker",
}


@pytest.fixture
def channels(aws: Any, sqs: Any) -> Iterator[dict[PaymentChannel, FakeGateway]]:
    """Alipay and WeChat as fakes; the balance stays the moto-backed ledger."""
    from chalicelib import bootstrap

    fakes = {
        PaymentChannel.ALIPAY: FakeGateway("alipay"),
        PaymentChannel.WECHAT: FakeGateway("wechat"),
    }
    gateways = {**aws.ports.gateways, **fakes}
    bootstrap.install(replace(aws.ports, gateways=gateways), bootstrap.get_verifier())
    yield fakes
    bootstrap.install(aws.ports, bootstrap.get_verifier())


@pytest.fixture
def drain(client: Any, sqs: Any) -> Any:
    def run(steps: tuple[Step, ...] = tuple(WORKERS), rounds: int = 30) -> dict[str, Any]:
        """Hand every waiting message to its worker until the queues are quiet."""
        last: dict[str, Any] = {}
        for _ in range(rounds):
            handled = 0
            for step in steps:
                url = sqs.get_queue_url(QueueName=queue_name(step))["QueueUrl"]
                messages = sqs.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
                ).get("Messages", [])
                if not messages:
                    continue
                handled += len(messages)
                last = invoke(client, sqs, step, messages)
            if not handled:
                return last
        raise AssertionError("the step queues never went quiet")

    return run


def invoke(client: Any, sqs: Any, step: Step, messages: list[dict[str, Any]]) -> dict[str, Any]:
    url = sqs.get_queue_url(QueueName=queue_name(step))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m.get("Attributes", {"ApproximateReceiveCount": "1"}),
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": arn,
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }
    payload: dict[str, Any] = client.lambda_.invoke(WORKERS[step], event).payload
    failed = {item["itemIdentifier"] for item in payload.get("batchItemFailures", [])}
    done = [m for m in messages if m["MessageId"] not in failed]
    for message in done:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return payload


def pending_review(shop: Shop, drain: Any, **order: Any) -> str:
    """A refund of a fresh order, evidenced, submitted, and checked: pending review."""
    shop.order(**order)
    refund = shop.refund(order.get("order_id", "o-1001"))
    shop.evidence(refund["refund_id"], "order_screenshot", "problem_screenshot")
    assert shop.submit(refund["refund_id"]).status == 200
    drain()
    assert shop.get(refund["refund_id"])["status"] == "pending_review"
    return str(refund["refund_id"])


def decide(api: Api, refund_id: str, action: str, body: Any = None, who: Any = AGENT) -> Any:
    return api.post(f"/admin/refunds/{refund_id}/{action}", body, who)


# --- the whole way, through HTTP and the workers -------------------------------------------


def test_a_refund_travels_from_submit_to_paid_with_one_approval_P1_P2(
    api: Api, shop: Shop, drain: Any, channels: dict[PaymentChannel, FakeGateway]
) -> None:
    # GIVEN a submitted refund that the automatic check passed
    refund_id = pending_review(shop, drain)
    # THEN it is in the agents' queue, with its detail: the order as it was, evidence to see,
    # and the check's execution
    queue = api.get("/admin/refunds?status=pending_review", AGENT)
    assert [item["refund_id"] for item in queue.json["items"]] == [refund_id]
    assert queue.json["items"][0]["assignee"] is None
    detail = api.get(f"/admin/refunds/{refund_id}", AGENT).json
    assert detail["order"]["order_id"] == "o-1001"
    assert all(e["download_url"] for e in detail["evidence"])
    assert [(s["step"], s["status"]) for s in detail["steps"]] == [("auto-review", "succeeded")]
    # WHEN an agent claims and approves it
    assert decide(api, refund_id, "claim").json["assignee"] == "agent-1"
    approved = decide(api, refund_id, "approve")
    assert approved.json["status"] == "approved"
    drain()
    # THEN it is paid along the original path, once
    refund = shop.get(refund_id)
    assert (refund["status"], refund["approved_amount"]) == ("paid", 8800)
    assert [p.refund_id for p in channels[PaymentChannel.ALIPAY].payouts] == [refund_id]
    assert [h["action"] for h in refund["history"]][-3:] == ["approve", "payout", "paid"]


def test_two_agents_deciding_get_one_claim_R4(
    api: Api, shop: Shop, drain: Any, channels: Any
) -> None:
    refund_id = pending_review(shop, drain)
    assert decide(api, refund_id, "claim").status == 200
    taken = decide(api, refund_id, "claim", who=OTHER_AGENT)
    assert (taken.status, taken.code) == (409, "conflict")
    approving = decide(api, refund_id, "approve", who=OTHER_AGENT)
    assert (approving.status, approving.code) == (409, "conflict")
    assert decide(api, refund_id, "claim", who=SENIOR).json["assignee"] == "senior-1"


def test_an_approval_above_the_computed_amount_is_A1_and_a_lower_one_needs_a_note(
    api: Api, shop: Shop, drain: Any, channels: Any
) -> None:
    refund_id = pending_review(shop, drain)
    decide(api, refund_id, "claim")
    above = decide(api, refund_id, "approve", {"amount": 8801})
    assert (above.status, above.code, above.error["rule"]) == (422, "not_refundable", "A1")
    unexplained = decide(api, refund_id, "approve", {"amount": 8000})
    assert (unexplained.status, unexplained.fields()) == (400, ["note"])
    lower = decide(api, refund_id, "approve", {"amount": 8000, "note": "部分卡密已使用"})
    assert (lower.json["status"], lower.json["approved_amount"]) == ("approved", 8000)


def test_a_rejection_names_a_policy_rule(api: Api, shop: Shop, drain: Any, channels: Any) -> None:
    refund_id = pending_review(shop, drain)
    decide(api, refund_id, "claim")
    unknown = decide(api, refund_id, "reject", {"rule": "Z9", "message": "no"})
    assert (unknown.status, unknown.fields()) == (400, ["rule"])
    rejected = decide(api, refund_id, "reject", {"rule": "E2", "message": "已过退款期限"})
    assert (rejected.json["status"], rejected.json["history"][-1]["rule"]) == ("rejected", "E2")


def test_only_customer_service_reads_the_console(api: Api, shop: Shop, drain: Any) -> None:
    assert api.get("/admin/refunds?status=pending_review", None).status == 401
    as_user = api.get("/admin/refunds?status=pending_review", bearer("u-1"))
    assert (as_user.status, as_user.code) == (403, "forbidden")
    missing = api.get("/admin/refunds", AGENT)
    assert (missing.status, missing.fields()) == (400, ["status"])
    bad_cursor = api.get("/admin/refunds?status=pending_review&cursor=%23bad", AGENT)
    assert bad_cursor.status == 400


def test_an_appealed_refund_is_a_seniors_X3(
    api: Api, shop: Shop, drain: Any, channels: Any
) -> None:
    refund_id = pending_review(shop, drain)
    decide(api, refund_id, "claim")
    decide(api, refund_id, "reject", {"rule": "E2", "message": "过期"})
    appealed = api.post(
        f"/refunds/{refund_id}/appeal",
        {"statement": "订单仍在退款期内，见订单页截图"},
        shop.user_headers,
    )
    assert appealed.json["status"] == "appealed"
    refused = decide(api, refund_id, "claim")
    assert (refused.status, refused.code) == (403, "forbidden")
    decide(api, refund_id, "claim", who=SENIOR)
    decide(api, refund_id, "approve", who=SENIOR)
    drain()
    assert shop.get(refund_id)["status"] == "paid"
    again = api.post(f"/refunds/{refund_id}/appeal", {"statement": "再次申诉"}, shop.user_headers)
    assert again.status == 409


def test_a_correction_of_the_order_status_is_noted_on_its_open_refund_X1(
    api: Api, shop: Shop, drain: Any
) -> None:
    refund_id = pending_review(shop, drain, version=2)
    corrected = api.put(
        "/admin/orders/o-1001/status", {"status": "delivered", "note": "卡密实际未发放"}, AGENT
    )
    assert (corrected.status, corrected.json["version"]) == (200, 3)
    entry = shop.get(refund_id)["history"][-1]
    assert (entry["action"], entry["rule"]) == ("order_corrected", "X1")


# --- payment channels' webhooks ------------------------------------------------------------


def _notification(
    refund_id: str, at: float | None = None, secret: str = DEFAULT_LOCAL_CHANNEL_SECRET
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {"refund_id": refund_id, "channel_refund_no": "ch-1", "status": "SUCCESS", "amount": 8800}
    ).encode()
    timestamp = str(int(at if at is not None else time.time()))
    headers = {
        "X-Channel-Timestamp": timestamp,
        "X-Channel-Signature": sign(secret, timestamp, body),
        "Content-Type": "text/plain",
    }
    return body, headers


def test_a_webhook_with_a_bad_signature_or_an_old_timestamp_is_401_and_changes_nothing(
    api: Api, shop: Shop, drain: Any, channels: dict[PaymentChannel, FakeGateway]
) -> None:
    # GIVEN a refund being paid through a channel that accepted the payout
    from chalicelib.service.ports import PayoutState

    channels[PaymentChannel.ALIPAY].answers = [PayoutState.PROCESSING]
    refund_id = pending_review(shop, drain)
    decide(api, refund_id, "claim")
    decide(api, refund_id, "approve")
    drain((Step.PAYOUT,))
    assert shop.get(refund_id)["status"] == "paying"
    # WHEN notifications arrive wrongly signed, or too old
    forged, headers = _notification(refund_id, secret="not-the-secret-0123456789abcdef01")
    stale, stale_headers = _notification(refund_id, at=time.time() - 301)
    for body, sent in ((forged, headers), (stale, stale_headers)):
        answer = api.post("/webhooks/payouts/alipay", body, sent)
        # THEN 401, and the refund is still paying
        assert (answer.status, answer.code) == (401, "unauthenticated")
    assert shop.get(refund_id)["status"] == "paying"
    # AND a good one, sent twice, pays it once
    body, headers = _notification(refund_id)
    for _ in range(2):
        assert api.post("/webhooks/payouts/alipay", body, headers).json == {"received": True}
    refund = shop.get(refund_id)
    assert refund["status"] == "paid"
    assert [h["action"] for h in refund["history"]].count("paid") == 1


def test_webhooks_of_unknown_refunds_are_acknowledged_and_unknown_channels_are_404(
    api: Api, aws: Any
) -> None:
    body, headers = _notification("rf_01KBZ000000000000000000099")
    assert api.post("/webhooks/payouts/wechat", body, headers).status == 200
    assert api.post("/webhooks/payouts/balance", body, headers).status == 404
    assert api.post("/webhooks/payouts/paypal", body, headers).status == 404


# --- media types and evidence slots --------------------------------------------------------


def test_a_body_that_is_not_json_is_415(api: Api, shop: Shop, seeded_order: Any) -> None:
    answer = api.post(
        "/refunds",
        json.dumps(
            {"order_id": "o-1001", "reason": "invalid_code", "description": "x" * 20}
        ).encode(),
        {**shop.user_headers, "Idempotency-Key": "k-415", "Content-Type": "text/plain"},
    )
    assert (answer.status, answer.code) == (415, "unsupported_media_type")
    charset = {
        **shop.user_headers,
        "Idempotency-Key": "k-json",
        "Content-Type": "application/json; charset=utf-8",
    }
    body = json.dumps(
        {
            "order_id": "o-1001",
            "reason": "invalid_code",
            "description": "序列号无效，截图为证，要求退款",
        }
    )
    assert api.post("/refunds", body.encode(), charset).status == 201


def test_an_evidence_slot_can_be_removed_until_it_counted_toward_a_submission(
    api: Api, shop: Shop, draft: dict[str, Any], drain: Any
) -> None:
    refund_id = draft["refund_id"]
    failed = shop.slot(refund_id, "order_screenshot")
    shop.upload(failed, b"not an image at all")
    path = f"/refunds/{refund_id}/evidence/{failed['evidence_id']}"
    assert api.call("DELETE", path, None, shop.user_headers).status == 204
    assert api.call("DELETE", path, None, shop.user_headers).status == 404
    refund = shop.get(refund_id)
    assert refund["evidence"] == []
    assert refund["history"][-1]["action"] == "remove_evidence"
    # A slot that counted toward a submission stays.
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    assert shop.submit(refund_id).status == 200
    counted = shop.get(refund_id)["evidence"][0]["evidence_id"]
    kept = api.call("DELETE", f"/refunds/{refund_id}/evidence/{counted}", None, shop.user_headers)
    assert kept.status == 409


# --- the workers, as Lambda calls them -----------------------------------------------------


def test_a_bad_message_fails_alone_in_its_batch(
    client: Any, sqs: Any, shop: Shop, drain: Any, channels: Any
) -> None:
    # GIVEN a batch of a malformed step message and one for a refund awaiting its check
    shop.order()
    refund_id = shop.refund()["refund_id"]
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    shop.submit(refund_id)
    url = sqs.get_queue_url(QueueName=queue_name(Step.AUTO_REVIEW))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="{not json")
    messages: list[dict[str, Any]] = []
    while len(messages) < 2:
        messages += sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]
        ).get("Messages", [])
    # WHEN the worker gets the batch
    result = invoke(client, sqs, Step.AUTO_REVIEW, messages)
    # THEN only the malformed one is reported failed; the other step ran
    bad = next(m["MessageId"] for m in messages if m["Body"] == "{not json")
    assert result == {"batchItemFailures": [{"itemIdentifier": bad}]}
    assert shop.get(refund_id)["status"] == "pending_review"


def test_a_message_that_keeps_failing_ends_in_the_dead_letter_queue(client: Any, sqs: Any) -> None:
    url = sqs.get_queue_url(QueueName=queue_name(Step.ORDER_EVENTS))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"order_id": "missing fields"}))
    dead = sqs.get_queue_url(QueueName=dead_letter_queue_name(Step.ORDER_EVENTS))["QueueUrl"]
    for _ in range(10):
        messages = sqs.receive_message(QueueUrl=url, AttributeNames=["All"]).get("Messages", [])
        if messages:
            invoke(client, sqs, Step.ORDER_EVENTS, messages)
    landed = sqs.receive_message(QueueUrl=dead).get("Messages", [])
    assert [json.loads(m["Body"]) for m in landed] == [{"order_id": "missing fields"}]


def test_orders_arrive_on_their_queue(
    client: Any, sqs: Any, api: Api, shop: Shop, drain: Any
) -> None:
    url = sqs.get_queue_url(QueueName=queue_name(Step.ORDER_EVENTS))["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(order_payload(order_id="o-q", version=2)))
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(order_payload(order_id="o-q", version=1, status="completed")),
    )
    drain((Step.ORDER_EVENTS,))
    quote = api.get("/orders/o-q/refund-quote", shop.user_headers)
    assert (quote.status, quote.json["refundable"]) == (200, True)


def test_uploads_are_checked_when_s3_tells(
    client: Any, sqs: Any, aws: Any, shop: Shop, draft: dict[str, Any], drain: Any
) -> None:
    # GIVEN the bucket tells the verify-evidence queue of new objects (its test event first)
    notify_uploads(aws.s3, sqs, aws.settings.evidence_bucket)
    refund_id = draft["refund_id"]
    good, mistyped = shop.slot(refund_id), shop.slot(refund_id, "problem_screenshot")
    # WHEN a real PNG and a PDF declared as PNG land, and something under another key
    shop.upload(good, b"\x89PNG\r\n\x1a\n" + bytes(64))
    shop.upload(mistyped, b"%PDF-1.7\n" + bytes(64))
    shop.upload(good, b"\x89PNG\r\n\x1a\n" + bytes(8), key=f"evidence/{refund_id}/ev_forged")
    drain((Step.VERIFY_EVIDENCE,))
    # THEN the stored refund shows the checks without a read having to make them
    from chalicelib import bootstrap

    stored = bootstrap.get_ports().refunds.get(refund_id)
    assert stored is not None
    assert [(e.uploaded, e.problem is None) for e in stored.evidence] == [
        (True, True),
        (False, False),
    ]


def test_the_sweep_resends_a_lost_step_message(
    api: Api, shop: Shop, sqs: Any, drain: Any, channels: Any
) -> None:
    from chalicelib import bootstrap

    # GIVEN steps count as overdue at once (no grace), and a submitted refund whose
    # auto-review message was lost
    ports = bootstrap.get_ports()
    bootstrap.install(
        replace(ports, config=replace(ports.config, step_grace_seconds=0)),
        bootstrap.get_verifier(),
    )
    shop.order()
    refund_id = shop.refund()["refund_id"]
    shop.evidence(refund_id, "order_screenshot", "problem_screenshot")
    shop.submit(refund_id)
    url = sqs.get_queue_url(QueueName=queue_name(Step.AUTO_REVIEW))["QueueUrl"]
    sqs.purge_queue(QueueUrl=url)
    drain()
    assert shop.get(refund_id)["status"] == "submitted"
    # WHEN the sweep runs
    ran = api.post("/_local/schedules/resume-steps/run", None, {})
    assert (ran.status, ran.json["result"]) == (200, {"resent": 1})
    drain()
    # THEN the check ran after all
    assert shop.get(refund_id)["status"] == "pending_review"


def test_local_routes_show_the_balance_statement_and_refuse_unknown_names(
    api: Api, shop: Shop, drain: Any, channels: Any
) -> None:
    refund_id = pending_review(shop, drain)
    decide(api, refund_id, "claim")
    api.post(f"/admin/refunds/{refund_id}/approve", None, AGENT)
    drain()
    # (the refund was paid through alipay: the balance moved nothing)
    statement = api.get("/_local/channels/balance/statement", None)
    assert statement.json == {"channel": "balance", "entries": []}
    assert api.post("/_local/schedules/no-such-schedule/run", None, {}).status == 404
    assert api.get("/_local/channels/paypal/statement", None).status == 404
