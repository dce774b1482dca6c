"""The refund workflow end to end, over HTTP, on the local stack: review, payout to every
channel, returns, appeals, the fast track, the order-events queue and the payment channels'
faults. Every test works on its own fresh order; asynchronous steps are awaited by polling
with a deadline; every payout is checked against the channel's statement (P2: at most once).
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
import requests

from chalicelib.adapters.sqs import dead_letter_queue_name, queue_name
from chalicelib.domain.days import SHANGHAI, shanghai_day
from chalicelib.domain.workflow import Step
from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import (
    AGENT_1,
    AGENT_2,
    JPEG,
    PDF,
    PNG,
    SENIOR,
    Api,
    Who,
    sign,
    utc,
    wait_until,
)

pytestmark = pytest.mark.e2e

PAYOUT_MAX_ATTEMPTS = 6
"""The payout step's retry policy: 6 attempts in all, then payout_failed (P2)."""

SPECIFIC = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
"""A description that passes F3: fact, evidence, claim."""


@dataclass
class Stack:
    api: Api
    aws_endpoint: str

    def sqs(self) -> Any:
        return boto3.client(
            "sqs",
            endpoint_url=self.aws_endpoint,
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with started_stack() as local:
        yield Stack(Api(local.api_url), local.aws_endpoint)


@pytest.fixture
def api(stack: Stack) -> Api:
    """The API, used by a user of the test's own: nothing one test does (how many refunds a
    user asked for, say) shows in another."""
    return stack.api.as_user(Who(f"u-wf-{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def channels(api: Api) -> Iterator[Api]:
    """Fault injection for one test; every rate and delay back to 0 afterwards."""
    yield api
    for channel in ("alipay", "wechat"):
        api.configure_channel(channel, fail_rate=0, timeout_rate=0, latency_ms=0)


# ---------------------------------------------------------------------- helpers


def _refund_in_review(
    api: Api,
    order: dict[str, Any],
    reason: str,
    evidence: tuple[str, ...],
    description: str = SPECIFIC,
    **fields: Any,
) -> dict[str, Any]:
    """Feed ``order``, open a refund, upload one real file per evidence kind, submit, and wait
    for the automatic check to hand it to a person (R1)."""
    api.put_order(order)
    refund = api.create_refund(order["order_id"], reason, description, **fields)
    assert refund["status"] == "draft"
    files = [(PNG, "image/png"), (JPEG, "image/jpeg")]
    for i, kind in enumerate(evidence):
        content, content_type = files[i % 2]
        api.upload(refund["refund_id"], kind, content, content_type)
    submitted = api.submit(refund["refund_id"])
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "submitted"
    in_review = api.wait_status(refund["refund_id"], "pending_review")
    assert all(item["uploaded"] for item in in_review["evidence"])
    return in_review


def _claim(api: Api, refund_id: str, who: Who = AGENT_1) -> None:
    claimed = api.decide(refund_id, "claim", who)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["assignee"] == who.sub


def _approve(api: Api, refund_id: str, who: Who = AGENT_1, **body: Any) -> dict[str, Any]:
    approved = api.decide(refund_id, "approve", who, body)
    assert approved.status_code == 200, approved.text
    refund: dict[str, Any] = approved.json()
    return refund


def _actions(refund: dict[str, Any]) -> list[str]:
    return [entry["action"] for entry in refund["history"]]


def _payout_steps(detail: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for step in detail["steps"] if step["step"] == "payout"]


def _error(answer: requests.Response) -> dict[str, Any]:
    error: dict[str, Any] = answer.json()["error"]
    return error


# ---------------------------------------------------------------------- 1, 2: V1, P1, P2


def test_unused_virtual_good_is_paid_back_to_the_balance(api: Api) -> None:
    # GIVEN a game card delivered and unused (V1), the user choosing the balance (P1)
    order = api.order("v1-balance")
    api.put_order(order)
    quote = api.quote(order["order_id"], reason="invalid_code").json()
    assert quote["amount"] == 8800
    assert quote["required_evidence"] == ["order_screenshot", "problem_screenshot"]  # F2
    assert "balance" in quote["payout_channels"]

    # WHEN the user uploads both screenshots and submits THEN the automatic check passes it
    # to a person (R1)
    refund = _refund_in_review(
        api,
        order,
        "invalid_code",
        ("order_screenshot", "problem_screenshot"),
        payout_channel="balance",
    )
    refund_id = refund["refund_id"]
    assert refund["amount"] == 8800
    assert refund["channel"] == "balance"
    assert _actions(refund) == ["create", "submit", "auto_review"]
    assert [e["kind"] for e in refund["evidence"]] == ["order_screenshot", "problem_screenshot"]

    # AND the agent sees the order as it was and can read back each file uploaded (O1)
    detail = api.detail(refund_id)
    assert detail["order"]["paid_amount"] == 8800
    downloads = [requests.get(e["download_url"], timeout=10) for e in detail["evidence"]]
    assert [d.content for d in downloads] == [PNG, JPEG]

    # WHEN an agent claims and approves the computed amount (R4)
    _claim(api, refund_id)
    approved = _approve(api, refund_id)
    assert approved["approved_amount"] == 8800

    # THEN the balance pays at once (P1) and its ledger holds the refund exactly once (P2)
    paid = api.wait_status(refund_id, "paid")
    assert paid["approved_amount"] == 8800
    assert _actions(paid)[-4:] == ["claim", "approve", "payout", "paid"]
    claim = paid["history"][_actions(paid).index("claim")]
    assert claim["actor"] == "agent-1"
    assert (claim["from"], claim["to"]) == (None, None)
    entries = api.statement("balance", refund_id)
    assert [(e["amount"], e["status"]) for e in entries] == [(8800, "SUCCESS")]
    assert api.statement("alipay", refund_id) == []


def test_unused_virtual_good_is_paid_back_to_alipay(api: Api) -> None:
    # GIVEN a game card paid with Alipay and a refund to the original path (P1)
    order = api.order("v1-alipay")
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]
    assert refund["channel"] == "alipay"

    # WHEN an agent approves
    _claim(api, refund_id)
    assert _approve(api, refund_id)["status"] == "approved"

    # THEN Alipay's statement has exactly one entry for the refund number (P2)
    paid = api.wait_status(refund_id, "paid")
    assert paid["approved_amount"] == 8800
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]
    assert api.statement("balance", refund_id) == []
    assert _payout_steps(api.detail(refund_id))[-1]["status"] == "succeeded"


# ---------------------------------------------------------------------- 3: V2


def test_partly_used_virtual_good_is_refunded_by_remaining_value(api: Api) -> None:
    # GIVEN a top-up of 100 units, 30 used, paid 8899 fen (V2)
    order = api.order(
        "v2",
        sku="topup-100",
        category="top-up",
        list_price=9900,
        paid_amount=8899,
        usage={"total_units": 100, "used_units": 30},
    )
    api.put_order(order)
    order_id = order["order_id"]

    # WHEN the user asks for a quote THEN 8899 x 70 / 100 = 6229.3, rounded down to 6229 fen,
    # and a usage record is required (V2, F2)
    quote = api.quote(order_id, reason="invalid_code").json()
    assert quote["refundable"] is True
    assert quote["amount"] == 6229
    assert sum(item["amount"] for item in quote["breakdown"]) == 6229
    assert {"item": "paid_amount", "amount": 8899} in quote["breakdown"]
    assert [i["item"] for i in quote["breakdown"]] == ["paid_amount", "used_units"]
    assert set(quote["required_evidence"]) == {
        "order_screenshot",
        "problem_screenshot",
        "usage_record",
    }

    # WHEN the user submits without the usage record THEN 422 missing_evidence names it (F2)
    refund = api.create_refund(order_id, "invalid_code", SPECIFIC)
    refund_id = refund["refund_id"]
    assert refund["amount"] == 6229
    api.upload(refund_id, "order_screenshot", PNG, "image/png")
    api.upload(refund_id, "problem_screenshot", JPEG, "image/jpeg")
    missing = api.submit(refund_id)
    assert missing.status_code == 422, missing.text
    assert _error(missing)["code"] == "missing_evidence"
    details = json.dumps(_error(missing)["details"])
    assert "usage_record" in details
    assert "order_screenshot" not in details
    assert api.refund(refund_id)["status"] == "draft"

    # WHEN the usage record is added and the refund submitted and approved
    api.upload(refund_id, "usage_record", PNG, "image/png")
    assert api.submit(refund_id).status_code == 200
    api.wait_status(refund_id, "pending_review")
    _claim(api, refund_id)
    _approve(api, refund_id)

    # THEN the remaining value is paid, once
    paid = api.wait_status(refund_id, "paid")
    assert paid["approved_amount"] == 6229
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [6229]


# ---------------------------------------------------------------------- 4: PH1, PR1


def _shipped_headset(api: Api, name: str) -> dict[str, Any]:
    return api.order(
        name,
        kind="physical",
        sku="headset-x1",
        title="游戏耳机（促销，送收纳包）",
        category="peripheral",
        list_price=29900,
        shipping_fee=1000,
        paid_amount=30900,
        gifts=[{"sku": "bag-01", "title": "收纳包", "value": 500}],
        status="shipped",
    )


def test_shipped_goods_come_back_and_a_kept_gift_is_deducted(api: Api) -> None:
    # GIVEN shipped goods with a 5.00 gift, paid 309.00 of which 10.00 shipping (PH1, PR1)
    order = _shipped_headset(api, "ph1-gift")
    api.put_order(order)
    kept = api.quote(order["order_id"], gifts_returned="false").json()
    # THEN a change of mind keeps shipping, and a kept gift's value is deducted
    assert kept["amount"] == 30900 - 1000 - 500
    assert kept["needs_return"] is True
    assert {"item": "shipping_not_refunded", "amount": -1000} in kept["breakdown"]
    assert {"item": "gift_not_returned", "amount": -500} in kept["breakdown"]
    assert kept["required_evidence"] == ["order_screenshot"]  # F2: physical, not quality
    # (a quality reason would refund the shipping too, PH1)
    quality = api.quote(order["order_id"], reason="defective").json()
    assert quality["amount"] == 30900
    assert quality["required_evidence"] == ["order_screenshot", "defect_photo"]

    # WHEN the user applies saying the gift will come back
    refund = _refund_in_review(
        api,
        order,
        "changed_mind",
        ("order_screenshot",),
        description="耳机已发货但我不需要了，包装未拆，愿意承担运费退回",
    )
    refund_id = refund["refund_id"]
    assert refund["amount"] == 29900
    assert refund["needs_return"] is True

    # THEN approval waits for the goods (PH1)
    _claim(api, refund_id)
    approved = _approve(api, refund_id)
    assert approved["status"] == "awaiting_return"
    assert approved["approved_amount"] == 29900

    # WHEN the user sends them back and the agent receives them intact, without the gift
    shipped = api.call(
        "POST",
        f"/refunds/{refund_id}/return-shipment",
        api.user,
        {"carrier": "SF", "tracking_number": "SF1234567890"},
    )
    assert shipped.status_code == 200, shipped.text
    assert _actions(shipped.json())[-1] == "return_shipment"
    received = api.decide(
        refund_id, "return-received", body={"intact": True, "gifts_returned": False}
    )
    assert received.status_code == 200, received.text

    # THEN the amount is recomputed: paid - shipping - the gift's value (PH1, PR1)
    paid = api.wait_status(refund_id, "paid")
    assert paid["approved_amount"] == 29400
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [29400]


def test_goods_returned_damaged_for_a_change_of_mind_are_rejected(api: Api) -> None:
    # GIVEN shipped goods returned for a reason that is not a quality problem (PH1)
    order = _shipped_headset(api, "ph1-damaged")
    refund = _refund_in_review(
        api,
        order,
        "changed_mind",
        ("order_screenshot",),
        description="耳机已发货但我不需要了，包装未拆，愿意承担运费退回",
    )
    refund_id = refund["refund_id"]
    _claim(api, refund_id)
    assert _approve(api, refund_id)["status"] == "awaiting_return"
    assert (
        api.call(
            "POST",
            f"/refunds/{refund_id}/return-shipment",
            api.user,
            {"carrier": "YTO", "tracking_number": "YT9876543210"},
        ).status_code
        == 200
    )

    # WHEN they arrive opened or damaged
    received = api.decide(
        refund_id, "return-received", body={"intact": False, "gifts_returned": True}
    )

    # THEN the refund is rejected with rule PH1, and nothing is paid
    assert received.status_code == 200, received.text
    rejected = api.refund(refund_id)
    assert rejected["status"] == "rejected"
    assert rejected["history"][-1]["rule"] == "PH1"
    assert rejected["history"][-1]["to"] == "rejected"
    time.sleep(0.3)
    assert api.statement("alipay", refund_id) == []
    assert api.statement("balance", refund_id) == []


# ---------------------------------------------------------------------- R4: who may claim


def test_drafts_never_count_as_abuse_signals_and_an_agent_claims_R1(api: Api) -> None:
    # GIVEN a user who opened four refunds this month and left them as drafts (only submitted
    # refunds count toward the check's abuse signal, R1)
    for n in range(4):
        earlier = api.order(f"earlier-{n}")
        api.put_order(earlier)
        api.create_refund(earlier["order_id"], "changed_mind", "买错了面值，想退款后重新购买")
    # AND a fifth refund that passed the automatic check
    refund = _refund_in_review(
        api, api.order("fifth"), "invalid_code", ("order_screenshot", "problem_screenshot")
    )

    # WHEN a cs-agent claims it (neither appealed nor claimed by anyone)
    claimed = api.decide(refund["refund_id"], "claim", AGENT_1)

    # THEN it is theirs: /admin/... is for cs-agent or cs-senior; only appeals and taking
    # over another agent's claim are a cs-senior's (API.md, roles; R4)
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["assignee"] == "agent-1"


# ---------------------------------------------------------------------- 5: S1, A1


def test_half_done_service_refunds_half_and_an_agent_may_settle_lower(api: Api) -> None:
    # GIVEN a service paid 200.01 and half done (S1)
    order = api.order(
        "s1",
        kind="service",
        sku="rank-boost",
        title="代练上分",
        category="game-service",
        list_price=20001,
        paid_amount=20001,
        service_completion=0.5,
    )
    api.put_order(order)

    # THEN the ceiling is 20001 x 0.5 = 10000.5, rounded down to 10000 fen
    quote = api.quote(order["order_id"], reason="service_not_delivered").json()
    assert quote["amount"] == 10000
    assert {"item": "service_completed", "amount": -10001} in quote["breakdown"]
    assert quote["required_evidence"] == ["order_screenshot", "chat_record"]

    refund = _refund_in_review(
        api,
        order,
        "service_not_delivered",
        ("order_screenshot", "chat_record"),
        description="代练只完成了一半就停止，聊天记录为证，要求退还未完成部分",
    )
    refund_id = refund["refund_id"]
    assert refund["amount"] == 10000
    _claim(api, refund_id)

    # WHEN the agent approves more than computed THEN 422 with rule A1
    above = api.decide(refund_id, "approve", body={"amount": 10001, "note": "多退一分"})
    assert above.status_code == 422, above.text
    assert (_error(above)["code"], _error(above)["rule"]) == ("not_refundable", "A1")

    # WHEN lower without a written reason THEN 400 (A1)
    unexplained = api.decide(refund_id, "approve", body={"amount": 9000})
    assert unexplained.status_code == 400, unexplained.text
    assert _error(unexplained)["code"] == "invalid_request"
    assert api.refund(refund_id)["status"] == "pending_review"

    # WHEN lower with a note THEN that amount is paid, and the note is on record (R4)
    note = "双方协商：服务已完成一半以上，按 90 元结算"
    approved = _approve(api, refund_id, amount=9000, note=note)
    assert approved["approved_amount"] == 9000
    paid = api.wait_status(refund_id, "paid")
    approval = paid["history"][_actions(paid).index("approve")]
    assert (approval["actor"], approval["note"]) == ("agent-1", note)
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [9000]


# ---------------------------------------------------------------------- 6: X3


def test_a_rejected_refund_is_appealed_once_to_a_senior(api: Api) -> None:
    # GIVEN a refund an agent rejected with rule E2
    order = api.order("x3")
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]
    _claim(api, refund_id)
    rejected = api.decide(
        refund_id, "reject", body={"rule": "E2", "message": "点卡已全部充值到账，无法退款"}
    )
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert rejected.json()["history"][-1]["rule"] == "E2"

    # WHEN the user appeals in writing with new evidence (X3)
    extra = api.upload(refund_id, "chat_record", PNG, "image/png")
    appealed = api.call(
        "POST",
        f"/refunds/{refund_id}/appeal",
        api.user,
        {"statement": "充值记录显示点数从未到账，附客服聊天记录", "evidence_ids": [extra]},
    )
    assert appealed.status_code == 200, appealed.text
    assert appealed.json()["status"] == "appealed"

    # THEN a cs-agent may not take it (403), a senior may, and the senior's approval pays
    refused = api.decide(refund_id, "claim", AGENT_1)
    assert refused.status_code == 403, refused.text
    assert _error(refused)["code"] == "forbidden"
    _claim(api, refund_id, SENIOR)
    _approve(api, refund_id, SENIOR)
    paid = api.wait_status(refund_id, "paid")
    approval = paid["history"][_actions(paid).index("approve")]
    assert approval["actor"] == "senior-1"
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]

    # WHEN the user appeals a second time THEN 409
    again = api.call(
        "POST",
        f"/refunds/{refund_id}/appeal",
        api.user,
        {"statement": "再次申诉", "evidence_ids": []},
    )
    assert again.status_code == 409, again.text
    assert _error(again)["code"] == "conflict"


# ---------------------------------------------------------------------- 7: O2


def test_a_platform_fault_is_paid_without_proof_or_a_person(api: Api) -> None:
    # GIVEN an order the platform charged twice (O2)
    order = api.order("o2", platform_fault="duplicate_charge")
    api.put_order(order)
    quote = api.quote(order["order_id"], reason="duplicate_charge").json()
    assert quote["required_evidence"] == []  # F2: platform fault, matching reason

    # WHEN the user applies with the matching reason and no evidence at all
    refund = api.create_refund(
        order["order_id"], "duplicate_charge", "同一笔订单被扣款两次，银行流水显示重复扣款 88 元"
    )
    refund_id = refund["refund_id"]
    submitted = api.submit(refund_id)
    assert submitted.status_code == 200, submitted.text

    # THEN it is approved by the system in full and paid, with no human step (O2)
    paid = api.wait_status(refund_id, "paid")
    assert paid["fast_track"] is True
    assert paid["approved_amount"] == 8800
    assert paid["evidence"] == []
    review = [entry for entry in paid["history"] if entry["action"] == "auto_review"]
    assert [entry["actor"] for entry in review] == ["system"]
    assert {entry["actor"] for entry in paid["history"]} == {api.user.sub, "system"}
    assert "claim" not in _actions(paid)
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]


# ---------------------------------------------------------------------- 8: order events


def test_an_order_arriving_on_the_queue_is_not_undone_by_an_older_version(
    stack: Stack, api: Api
) -> None:
    # GIVEN the order system puts version 2 of an order on the order-events queue
    sqs = stack.sqs()
    queue = sqs.get_queue_url(QueueName=queue_name(Step.ORDER_EVENTS))["QueueUrl"]
    order = api.order("queue", paid_amount=7700, version=2)
    order_id = order["order_id"]
    assert api.quote(order_id).status_code == 404
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(order, ensure_ascii=False))

    # THEN the quote sees it within the deadline
    seen = wait_until(
        lambda: api.quote(order_id), lambda a: a.status_code == 200, "quotable"
    ).json()
    assert seen["amount"] == 7700

    # WHEN an older version arrives later (a replayed or re-ordered event)
    older = {**order, "paid_amount": 9900, "list_price": 9900, "version": 1}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(older, ensure_ascii=False))
    counts = (
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    )
    wait_until(
        lambda: sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=list(counts))["Attributes"],
        lambda attributes: all(attributes[name] == "0" for name in counts),
        "drained",
    )

    # THEN it is ignored: the stored order is still version 2
    assert api.quote(order_id).json()["amount"] == 7700
    stored = api.put_order({**older})
    assert (stored["version"], stored["paid_amount"]) == (2, 7700)


# ---------------------------------------------------------------------- 9: P2 faults


def _approved_alipay_refund(api: Api, name: str) -> str:
    order = api.order(name)
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id: str = refund["refund_id"]
    _claim(api, refund_id)
    return refund_id


def _failed_alipay_payout(api: Api, name: str) -> str:
    """A refund whose payout Alipay refused at every attempt (P2): ``payout_failed``."""
    refund_id = _approved_alipay_refund(api, name)
    api.configure_channel("alipay", fail_rate=1)
    _approve(api, refund_id)
    failed = api.wait_status(refund_id, "payout_failed", deadline=20)
    assert _actions(failed)[-1] == "payout_failed"
    return refund_id


def test_a_channel_that_always_fails_surfaces_to_cs_who_switch_to_the_balance(
    stack: Stack, channels: Api
) -> None:
    api = channels
    # GIVEN Alipay refuses every payout WHEN the agent approves
    refund_id = _failed_alipay_payout(api, "p2-fail")

    # THEN the payout was tried up to its last attempt and surfaced to CS (P2)
    step = _payout_steps(api.detail(refund_id))[-1]
    assert step["status"] == "failed"
    assert step["attempts"] == PAYOUT_MAX_ATTEMPTS
    assert step["last_error"]
    assert step["ended_at"] is not None
    assert api.statement("alipay", refund_id) == []

    # AND the step's message rests in the payout dead-letter queue
    sqs = stack.sqs()
    dlq = sqs.get_queue_url(QueueName=dead_letter_queue_name(Step.PAYOUT))["QueueUrl"]

    def dead_letters() -> list[Any]:
        got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, VisibilityTimeout=0)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    wait_until(
        dead_letters,
        lambda bodies: {"step": "payout", "refund_id": refund_id} in bodies,
        "dead-lettered",
    )

    # WHEN the agent switches it to the balance while Alipay still refuses everything (P2:
    # CS can retry or switch to the balance)
    retried = api.decide(refund_id, "retry-payout", body={"payout_channel": "balance"})
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] in ("paying", "paid")
    assert retried.json()["channel"] == "balance"

    # THEN the balance pays it once and Alipay never did
    paid = api.wait_status(refund_id, "paid")
    assert paid["channel"] == "balance"
    assert _actions(paid).count("retry_payout") == 1
    assert [e["amount"] for e in api.statement("balance", refund_id)] == [8800]
    assert api.statement("alipay", refund_id) == []


def test_a_payout_whose_answer_was_lost_is_resolved_without_paying_twice(
    channels: Api,
) -> None:
    api = channels
    # GIVEN Alipay makes every payout but its answer never arrives (P2's unknown outcome)
    refund_id = _approved_alipay_refund(api, "p2-timeout")
    api.configure_channel("alipay", timeout_rate=1)

    # WHEN the agent approves, the money moves, and the channel answers again afterwards
    _approve(api, refund_id)
    wait_until(lambda: api.statement("alipay", refund_id), bool, "moved at Alipay")
    api.configure_channel("alipay", timeout_rate=0)

    # THEN the outcome is learnt (the channel's notification, or a query) and the refund is
    # paid, the money having moved exactly once
    paid = api.wait_status(refund_id, "paid")
    assert paid["approved_amount"] == 8800
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]
    assert _actions(paid).count("paid") == 1


def test_a_payout_that_fails_a_few_times_then_succeeds_pays_once(channels: Api) -> None:
    api = channels
    # GIVEN Alipay refuses payouts for a while (P2)
    refund_id = _approved_alipay_refund(api, "p2-retry")
    api.configure_channel("alipay", fail_rate=1)

    # WHEN the agent approves and the step is seen retrying after two refusals
    _approve(api, refund_id)
    wait_until(
        lambda: _payout_steps(api.detail(refund_id)),
        lambda steps: (
            bool(steps) and steps[-1]["status"] == "retrying" and steps[-1]["attempts"] >= 2
        ),
        "retrying",
        interval=0.02,
    )
    retrying = _payout_steps(api.detail(refund_id))[-1]
    assert retrying["last_error"]
    api.configure_channel("alipay", fail_rate=0)

    # THEN the next attempt pays, once
    paid = api.wait_status(refund_id, "paid")
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]
    assert _actions(paid).count("payout_failed") == 0
    step = _payout_steps(api.detail(refund_id))[-1]
    assert step["status"] == "succeeded"
    assert step["attempts"] > 1


# ---------------------------------------------------------------------- 10: R4, P2


def test_two_agents_at_once_one_wins_and_it_pays_once(api: Api) -> None:
    # GIVEN a refund awaiting review
    order = api.order("r4")
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]

    def race(calls: list[tuple[str, Who, Any]]) -> list[int]:
        barrier = threading.Barrier(len(calls))
        codes: list[int] = [0] * len(calls)

        def run(i: int, action: str, who: Who, body: Any) -> None:
            barrier.wait()
            codes[i] = api.decide(refund_id, action, who, body).status_code

        threads = [threading.Thread(target=run, args=(i, *call)) for i, call in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return codes

    # WHEN two agents claim it at the same moment THEN one holds it (R4)
    claims = race([("claim", AGENT_1, None), ("claim", AGENT_2, None)])
    assert sorted(claims) == [200, 409]
    holder, other = (AGENT_1, AGENT_2) if claims[0] == 200 else (AGENT_2, AGENT_1)

    # WHEN the holder (twice, a double click) and the other agent approve at the same moment
    approvals = race([("approve", holder, {}), ("approve", holder, {}), ("approve", other, {})])

    # THEN exactly one approval wins, and one payout is made (P2)
    assert sorted(approvals) == [200, 409, 409]
    paid = api.wait_status(refund_id, "paid")
    assert _actions(paid).count("approve") == 1
    assert _actions(paid).count("claim") == 1
    assert paid["history"][_actions(paid).index("approve")]["actor"] == holder.sub
    time.sleep(0.3)
    assert [e["amount"] for e in api.statement("alipay", refund_id)] == [8800]


# ---------------------------------------------------------------------- 11: WeChat


def test_wechat_pays_asynchronously_after_its_notification(channels: Api) -> None:
    api = channels
    # GIVEN an order paid with WeChat, whose channel takes a moment to settle (P1)
    api.configure_channel("wechat", latency_ms=500)
    order = api.order("wechat", payment_channel="wechat")
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]
    assert refund["channel"] == "wechat"

    # WHEN an agent approves
    _claim(api, refund_id)
    _approve(api, refund_id)

    # THEN the refund waits in paying for the channel, then is paid on its notification
    api.wait_status(refund_id, "paying")
    paid = api.wait_status(refund_id, "paid")
    payout = paid["history"][_actions(paid).index("payout")]
    settled = paid["history"][_actions(paid).index("paid")]
    assert (payout["from"], payout["to"]) == ("approved", "paying")
    assert (settled["from"], settled["to"]) == ("paying", "paid")
    assert _actions(paid).count("paid") == 1
    assert [e["amount"] for e in api.statement("wechat", refund_id)] == [8800]


# ---------------------------------------------------------------------- 12: webhooks


def test_a_forged_or_stale_notification_changes_nothing(channels: Api) -> None:
    api = channels
    # GIVEN a WeChat payout the channel is still processing
    api.configure_channel("wechat", latency_ms=800)
    order = api.order("webhook", payment_channel="wechat")
    refund = _refund_in_review(
        api, order, "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]
    _claim(api, refund_id)
    _approve(api, refund_id)
    paying = api.wait_status(refund_id, "paying")
    body = json.dumps(
        {
            "refund_id": refund_id,
            "channel_refund_no": "5030999999999999",
            "status": "SUCCESS",
            "amount": 8800,
        }
    ).encode()
    now = int(time.time())

    def notify(headers: dict[str, str]) -> requests.Response:
        return api.call("POST", "/webhooks/payouts/wechat", data=body, headers=headers)

    # WHEN a SUCCESS arrives wrongly signed, unsigned, or signed over 300 s ago
    forged = notify(sign(body, now, secret="not-the-channel-secret-0123456789ab"))
    unsigned = notify({"Content-Type": "application/json"})
    stale = notify(sign(body, now - 330))

    # THEN each is 401 unauthenticated, and the refund is still paying, unchanged
    for answer in (forged, unsigned, stale):
        assert answer.status_code == 401, answer.text
        assert _error(answer)["code"] == "unauthenticated"
    after = api.refund(refund_id)
    assert after["status"] == "paying"
    assert after["history"] == paying["history"]

    # AND a correctly signed, fresh notification for an unknown refund is accepted (200)
    unknown = json.dumps(
        {
            "refund_id": f"rf_{uuid.uuid4().hex}",
            "channel_refund_no": "5030000000000001",
            "status": "SUCCESS",
            "amount": 100,
        }
    ).encode()
    accepted = api.call(
        "POST", "/webhooks/payouts/wechat", data=unknown, headers=sign(unknown, int(time.time()))
    )
    assert accepted.status_code == 200, accepted.text

    # AND the real payout still completes, once
    api.wait_status(refund_id, "paid")
    assert [e["amount"] for e in api.statement("wechat", refund_id)] == [8800]


# ---------------------------------------------------------------------- 13: evidence


def test_uploads_that_lie_never_count_and_a_removed_slot_frees_its_place(api: Api) -> None:
    # GIVEN a draft refund that needs an order and a problem screenshot (F2)
    order = api.order("evidence")
    api.put_order(order)
    refund = api.create_refund(order["order_id"], "invalid_code", SPECIFIC)
    refund_id = refund["refund_id"]

    # WHEN one upload is bigger than its slot declared and another is a PDF declared as PNG
    slot = api.slot(refund_id, "order_screenshot", "image/png", len(PNG) - 10)
    assert slot.status_code == 201, slot.text
    oversized = slot.json()["evidence_id"]
    upload = slot.json()["upload"]
    refused = requests.post(
        upload["url"],
        data=upload["fields"],
        files={"file": ("evidence", PNG, "image/png")},
        timeout=10,
    )
    mistyped = api.upload(refund_id, "problem_screenshot", PDF, "image/png")

    # THEN the store refuses the first as S3 does (its policy's content-length-range), and
    # the second is stored but never counts: uploaded false, with a problem saying why
    assert refused.status_code == 400, refused.text
    assert b"<Code>EntityTooLarge</Code>" in refused.content
    checked = wait_until(
        lambda: api.refund(refund_id),
        lambda r: any(e["problem"] for e in r["evidence"]),
        "checked",
    )
    evidence = {e["evidence_id"]: e for e in checked["evidence"]}
    assert (evidence[oversized]["uploaded"], evidence[oversized]["problem"]) == (False, None)
    assert evidence[mistyped]["uploaded"] is False
    assert "application/pdf" in evidence[mistyped]["problem"]

    # AND submit says what is missing
    missing = api.submit(refund_id)
    assert missing.status_code == 422, missing.text
    assert _error(missing)["code"] == "missing_evidence"
    details = json.dumps(_error(missing)["details"])
    assert "order_screenshot" in details
    assert "problem_screenshot" in details

    # WHEN the refund has 10 slots THEN the 11th is 409
    for _ in range(8):
        assert api.slot(refund_id, "other", "image/png", 100).status_code == 201
    eleventh = api.slot(refund_id, "other", "image/png", 100)
    assert eleventh.status_code == 409, eleventh.text
    assert _error(eleventh)["code"] == "conflict"

    # WHEN a slot is removed THEN it is gone, recorded, and its place is free again
    removed = api.call("DELETE", f"/refunds/{refund_id}/evidence/{oversized}", api.user)
    assert removed.status_code == 204, removed.text
    after = api.refund(refund_id)
    assert oversized not in [e["evidence_id"] for e in after["evidence"]]
    assert len(after["evidence"]) == 9
    assert _actions(after)[-1] == "remove_evidence"
    unknown = api.call("DELETE", f"/refunds/{refund_id}/evidence/ev-no-such-slot", api.user)
    assert unknown.status_code == 404, unknown.text
    fixed = api.upload(refund_id, "order_screenshot", PNG, "image/png")
    assert api.slot(refund_id, "other", "image/png", 100).status_code == 409

    # WHEN the mistyped file is replaced by a real screenshot THEN the refund can be submitted
    assert (
        api.call("DELETE", f"/refunds/{refund_id}/evidence/{mistyped}", api.user).status_code == 204
    )
    api.upload(refund_id, "problem_screenshot", JPEG, "image/jpeg")
    submitted = api.submit(refund_id)
    assert submitted.status_code == 200, submitted.text
    counted = {e["evidence_id"]: e for e in submitted.json()["evidence"]}
    assert counted[fixed]["uploaded"] is True


# ---------------------------------------------------------------------- promised times: X2


@pytest.fixture
def business_clock(api: Api) -> Iterator[Api]:
    """The local stage's business clock, given back to real time after the test."""
    yield api
    api.ok("POST", "/_local/clock", None, {"reset": True})


def test_an_overdue_review_escalates_when_the_clock_moves_on_X2(business_clock: Api) -> None:
    api = business_clock
    # GIVEN a refund in review, due in 3 working days, and a nudge that says so
    refund = _refund_in_review(
        api, api.order("x2"), "invalid_code", ("order_screenshot", "problem_screenshot")
    )
    refund_id = refund["refund_id"]
    due = api.refund(refund_id)["review_due_at"]
    assert due is not None
    early = api.ok("POST", f"/refunds/{refund_id}/nudge", api.user)
    assert early["escalated"] is False
    assert early["review_due_at"] == due
    again = api.call("POST", f"/refunds/{refund_id}/nudge", api.user)
    assert (again.status_code, again.json()["error"]["code"]) == (429, "too_many_requests")
    # WHEN the business clock moves past the promise and the schedule runs
    past_due = datetime.fromisoformat(due.replace("Z", "+00:00")) + timedelta(hours=1)
    api.ok("POST", "/_local/clock", None, {"now": utc(past_due)})
    ran = api.ok("POST", "/_local/schedules/escalate-overdue/run", None)
    assert ran["result"]["escalated"] >= 1
    # THEN the refund shows it: level 1, an escalate entry, a message to the user
    escalated = api.refund(refund_id)
    assert escalated["escalation_level"] == 1
    entry = escalated["history"][-1]
    assert (entry["action"], entry["actor"], entry["rule"], entry["from"]) == (
        "escalate",
        "system",
        "X2",
        None,
    )
    assert escalated["messages"][-1]["author_role"] == "system"
    # AND it is in the queue of escalated refunds (with others of this stack's tests, which
    # the moved clock made overdue too), before every refund that is not escalated
    escalated_ids = api.ok(
        "GET", "/admin/refunds?status=pending_review&escalated=true&limit=100", AGENT_1
    )["items"]
    assert refund_id in [item["refund_id"] for item in escalated_ids]
    whole = api.ok("GET", "/admin/refunds?status=pending_review&limit=100", AGENT_1)["items"]
    levels = [item["escalation_level"] for item in whole]
    assert levels == sorted(levels, reverse=True)
    # AND running the schedule again raises nothing twice
    api.ok("POST", "/_local/schedules/escalate-overdue/run", None)
    assert api.refund(refund_id)["escalation_level"] == 1


# ---------------------------------------------------------------------- analytics: O4


def test_a_sku_drawing_abnormally_many_refunds_shows_as_an_anomaly_O4(api: Api) -> None:
    # GIVEN a category of 90 orders paid today: 30 of one SKU, 15 of which are refunded, and
    # 60 of other SKUs with 2 refunds (rates 0.5 against 2/60)
    run = uuid.uuid4().hex[:8]
    category, bad_sku = f"cat-{run}", f"sku-bad-{run}"
    paid_at = utc(datetime.now(UTC) - timedelta(minutes=5))
    orders = [
        api.order(
            f"o4-{n}",
            sku=bad_sku if n < 30 else f"sku-ok-{n % 3}-{run}",
            category=category,
            paid_at=paid_at,
        )
        for n in range(90)
    ]
    for order in orders:
        api.put_order(order)
    refunded = orders[:15] + orders[30:32]
    for order in refunded:
        refund = api.create_refund(order["order_id"], "changed_mind", SPECIFIC)
        api.upload(refund["refund_id"], "order_screenshot", PNG, "image/png")
        assert api.submit(refund["refund_id"]).status_code == 200
    # WHEN customer service reads the stats of the days around today
    today = datetime.now(UTC).date()
    period = f"from={today - timedelta(days=1)}&to={today + timedelta(days=1)}"

    def anomalies() -> list[dict[str, Any]]:
        figures = api.ok("GET", f"/admin/stats?{period}", AGENT_1)
        return [a for a in figures["anomalies"] if a["key"] == bad_sku]

    found = wait_until(anomalies, lambda seen: bool(seen), "an anomaly of the SKU", 20)
    # THEN the SKU is flagged against the rest of its category, with the figures behind it
    assert found == [
        {
            "scope": "sku",
            "key": bad_sku,
            "orders": 30,
            "refunds": 15,
            "rate": 0.5,
            "baseline_rate": 0.0333,
        }
    ]


# ---------------------------------------------------------------------- events


def test_a_fast_tracked_refunds_events_reach_a_consumer_once_each_in_order(api: Api) -> None:
    from jsonschema import Draft202012Validator

    # GIVEN the events' schema as the API publishes it
    document = api.ok("GET", "/asyncapi.json", None)
    schema = {
        "$ref": "#/components/schemas/RefundEventOut",
        "components": {"schemas": document["components"]["schemas"]},
    }
    validator = Draft202012Validator(schema)
    # WHEN a platform-fault refund is created, submitted, and paid with no person (O2)
    order = api.order("ev", platform_fault="duplicate_charge")
    api.put_order(order)
    refund = api.create_refund(order["order_id"], "duplicate_charge", SPECIFIC)
    refund_id = refund["refund_id"]
    assert api.submit(refund_id).status_code == 200
    api.wait_status(refund_id, "paid")
    expected = [
        "refund.draft",
        "refund.submitted",
        "refund.approved",
        "refund.paying",
        "refund.paid",
    ]

    def received() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = api.ok("GET", f"/_local/events?refund_id={refund_id}", None)[
            "items"
        ]
        return items

    events = wait_until(
        received, lambda got: len({e["detail"]["event_id"] for e in got}) >= 5, "five events"
    )
    # THEN the consumer has each change once by event_id, in order of version, valid by schema
    distinct = {e["detail"]["event_id"]: e for e in events}
    ordered = sorted(distinct.values(), key=lambda e: e["detail"]["version"])
    assert [e["detail-type"] for e in ordered] == expected
    assert [e["detail"]["previous_status"] for e in ordered] == [
        None,
        "draft",
        "submitted",
        "approved",
        "paying",
    ]
    for event in events:
        assert event["source"] == "refunds"
        assert not list(validator.iter_errors(event)), event
    # AND none is missing: one per status the refund's history went through
    history = api.refund(refund_id)["history"]
    assert [f"refund.{h['to']}" for h in history if h["to"]] == expected


# ---------------------------------------------------------------------- reconciliation


def test_the_days_statements_reconcile_and_money_moved_for_no_refund_is_reported(
    business_clock: Api,
) -> None:
    api = business_clock
    # GIVEN a refund paid through Alipay today (by the business clock)
    refund_id = _approved_alipay_refund(api, "rc-paid")
    _approve(api, refund_id)
    paid = api.wait_status(refund_id, "paid")
    today = shanghai_day(datetime.fromisoformat(paid["updated_at"].replace("Z", "+00:00")))
    # AND money Alipay moved for a refund number the platform never sent
    stranger = f"rf_UNKNOWN{uuid.uuid4().hex[:16].upper()}"
    body = json.dumps({"refund_id": stranger, "order_id": "o-none", "amount": 1234}).encode()
    planted = requests.post(
        f"{os.environ['REFUNDS_CHANNEL_SIMULATOR_URL']}/alipay/refunds",
        data=body,
        headers=sign(body, int(time.time())),
        timeout=10,
    )
    assert planted.status_code == 200, planted.text
    # WHEN the next day's reconcile runs
    next_day = datetime.combine(today + timedelta(days=1), datetime.min.time(), SHANGHAI)
    api.ok("POST", "/_local/clock", None, {"now": utc(next_day + timedelta(hours=10))})
    ran = api.ok("POST", "/_local/schedules/reconcile/run", None)
    assert ran["result"]["day"] == today.isoformat()
    # THEN a senior sees the paid refund matched and the stranger reported
    run = api.ok("GET", f"/admin/reconciliation?day={today.isoformat()}", SENIOR)
    alipay = run["channels"]["alipay"]
    reported = {m["refund_id"]: m for m in alipay["mismatches"]}
    assert refund_id not in reported
    assert reported[stranger] == {
        "kind": "unknown_refund",
        "refund_id": stranger,
        "channel_amount": 1234,
        "platform_amount": None,
        "platform_status": None,
    }
    assert alipay["matched"] >= 1
    assert set(run["channels"]) == {"alipay", "wechat", "balance"}
    assert (
        api.call("GET", f"/admin/reconciliation?day={today.isoformat()}", AGENT_1).status_code
        == 403
    )
