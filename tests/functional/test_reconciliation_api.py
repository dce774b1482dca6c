"""``reconcile`` and ``GET /admin/reconciliation`` through the app on moto (API.md): refunds
stored in DynamoDB (the "paid that day" index included), Alipay and WeChat as fakes whose
statements carry planted mistakes, the balance the moto-backed ledger."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from chalicelib.domain.days import SHANGHAI
from chalicelib.domain.model import PaymentChannel
from chalicelib.domain.reconciliation import StatementEntry
from chalicelib.service.ports import PayoutRequest
from tests.fakes import FakeGateway
from tests.functional.conftest import Api
from tests.support import bearer
from tests.unit.test_reconciliation import paid

AGENT = bearer("agent-1", "cs-agent")
SENIOR = bearer("senior-1", "cs-senior")
PAID_AT = datetime(2026, 11, 30, 10, 0, tzinfo=SHANGHAI)


@pytest.fixture
def channels(aws: Any) -> Iterator[dict[PaymentChannel, FakeGateway]]:
    from chalicelib import bootstrap

    fakes = {
        PaymentChannel.ALIPAY: FakeGateway("alipay"),
        PaymentChannel.WECHAT: FakeGateway("wechat"),
    }
    bootstrap.install(
        replace(aws.ports, gateways={**aws.ports.gateways, **fakes}), bootstrap.get_verifier()
    )
    yield fakes
    bootstrap.install(aws.ports, bootstrap.get_verifier())


def _line(refund_id: str, amount: int = 8800) -> StatementEntry:
    return StatementEntry(refund_id, amount, "SUCCESS", PAID_AT)


def test_a_run_reports_each_planted_mismatch_and_a_senior_reads_it(
    api: Api, aws: Any, channels: dict[PaymentChannel, FakeGateway]
) -> None:
    refunds = aws.ports.refunds
    for refund in (
        paid("rf_A"),
        paid("rf_B"),
        paid("rf_C"),
        paid("rf_W", 300, PaymentChannel.WECHAT),
        paid("rf_L", 50, PaymentChannel.BALANCE),
    ):
        refunds.add(refund)
    channels[PaymentChannel.ALIPAY].lines += [_line("rf_A"), _line("rf_C", 8000), _line("rf_Z")]
    channels[PaymentChannel.WECHAT].lines += [_line("rf_W", 300), _line("rf_W", 300)]
    aws.ports.clock.set(PAID_AT)
    aws.ports.gateways[PaymentChannel.BALANCE].pay(
        PayoutRequest("rf_L", "o-1001", None, 50, 10000, "invalid_code", user_id="u-1")
    )
    assert api.post("/_local/clock", {"now": "2026-12-01T02:00:00Z"}).status == 200

    ran = api.post("/_local/schedules/reconcile/run")
    assert ran.status == 200, ran.json
    assert ran.json["result"] == {
        "day": "2026-11-30",
        "mismatches": {"alipay": 3, "wechat": 1, "balance": 0},
    }

    answer = api.get("/admin/reconciliation?day=2026-11-30", SENIOR)
    assert answer.status == 200, answer.json
    alipay = answer.json["channels"]["alipay"]
    assert (alipay["entries"], alipay["amount"], alipay["matched"]) == (3, 8800 + 8000 + 8800, 1)
    assert sorted((m["kind"], m["refund_id"]) for m in alipay["mismatches"]) == [
        ("amount_differs", "rf_C"),
        ("missing_at_channel", "rf_B"),
        ("unknown_refund", "rf_Z"),
    ]
    assert answer.json["channels"]["wechat"]["mismatches"] == [
        {
            "kind": "paid_twice",
            "refund_id": "rf_W",
            "channel_amount": 600,
            "platform_amount": 300,
            "platform_status": "paid",
        }
    ]
    balance = answer.json["channels"]["balance"]
    assert (balance["entries"], balance["matched"], balance["mismatches"]) == (1, 1, [])
    assert answer.json["day"] == "2026-11-30"
    assert answer.json["ran_at"].startswith("2026-12-01T02:00")


def test_the_reconciliation_is_for_seniors_and_names_one_day(api: Api, aws: Any) -> None:
    assert api.get("/admin/reconciliation?day=2026-11-30").status == 401
    assert api.get("/admin/reconciliation?day=2026-11-30", AGENT).status == 403
    assert api.get("/admin/reconciliation?day=2026-11-30", bearer("u-1")).status == 403
    missing = api.get("/admin/reconciliation", SENIOR)
    assert (missing.status, missing.fields()) == (400, ["day"])
    bad = api.get("/admin/reconciliation?day=30-11-2026", SENIOR)
    assert (bad.status, bad.fields()) == (400, ["day"])
    unknown = api.get("/admin/reconciliation?day=2026-11-30&channel=alipay", SENIOR)
    assert unknown.status == 400
    never_ran = api.get("/admin/reconciliation?day=2026-11-30", SENIOR)
    assert (never_ran.status, never_ran.json["error"]["code"]) == (404, "not_found")


def test_the_deployed_schedule_reconciles_the_day_before_its_event(
    client: Any, aws: Any, channels: dict[PaymentChannel, FakeGateway]
) -> None:
    aws.ports.refunds.add(paid("rf_A"))
    channels[PaymentChannel.ALIPAY].lines.append(_line("rf_A"))
    event = client.events.generate_cw_event(
        source="aws.events",
        detail_type="Scheduled Event",
        detail={},
        resources=[],
        region="us-east-1",
    )
    event["time"] = "2026-12-01T02:00:00Z"
    payload = client.lambda_.invoke("reconcile", event).payload
    assert payload == {"alipay": 0, "wechat": 0, "balance": 0}
    assert aws.ports.reconciliations.get(PAID_AT.date()).channels["alipay"].matched == 1
