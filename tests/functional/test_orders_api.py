"""Orders (API.md, Orders): PUT /internal/orders/{order_id} and the refund quote (F4)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.functional.conftest import Api, Shop
from tests.support import order_payload

REQUIRED = [
    "order_id",
    "user_id",
    "kind",
    "sku",
    "category",
    "list_price",
    "paid_amount",
    "payment_channel",
    "paid_at",
    "refund_deadline",
    "status",
]
PAST = "2020-01-01T00:00:00Z"


def _put(api: Api, headers: dict[str, str], payload: dict[str, Any], path_id: str | None = None):
    return api.put(f"/internal/orders/{path_id or payload['order_id']}", payload, headers)


# ---------------------------------------------------------------- PUT /internal/orders


def test_upsert_with_only_required_fields_stores_the_order_with_its_defaults(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN the order system sends only the required fields
    payload = {name: order_payload()[name] for name in REQUIRED}
    # WHEN it PUTs the order
    answer = _put(api, service_headers, payload)
    # THEN 200 with the stored order: what was sent, and every documented default filled in
    assert answer.status == 200
    assert answer.json == {
        **payload,
        "title": "",
        "currency": "CNY",
        "shipping_fee": 0,
        "channel_trade_no": None,
        "usage": None,
        "service_completion": 0,
        "customized": False,
        "gifts": [],
        "platform_fault": None,
        "version": None,
    }


def test_upsert_keeps_every_optional_field_and_chinese_text(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN a full order: Chinese title and gift, usage, shipping, a platform fault, a version
    payload = order_payload(
        title="王者荣耀 点券 100（限时促销）",
        shipping_fee=0,
        usage={"total_units": 100, "used_units": 30},
        customized=False,
        gifts=[{"sku": "gift-1", "title": "赠品：皮肤兑换券", "value": 500}],
        platform_fault="duplicate_charge",
        version=3,
    )
    # WHEN it is PUT
    answer = _put(api, service_headers, payload)
    # THEN the stored order is what was sent, Chinese text unchanged and sent as UTF-8
    assert answer.status == 200
    assert answer.json == {**payload, "currency": "CNY", "service_completion": 0}
    assert "王者荣耀 点券 100（限时促销）".encode() in answer.raw


def test_times_are_answered_in_utc_with_a_z(api: Api, service_headers: dict[str, str]) -> None:
    # GIVEN times sent with a +08:00 offset (Asia/Shanghai)
    payload = order_payload(paid_at="2026-11-20T16:00:00+08:00")
    # WHEN the order is PUT
    answer = _put(api, service_headers, payload)
    # THEN the answer gives the same instant in UTC with a Z (API.md, Conventions)
    assert answer.json["paid_at"] == "2026-11-20T08:00:00Z"


def test_service_order_with_a_completion_ratio(api: Api, service_headers: dict[str, str]) -> None:
    for ratio in (0, 0.375, 1):
        # GIVEN a service order with its completion (0 to 1, at most 4 decimal places) as a
        # JSON number
        payload = order_payload(
            order_id="o-svc",
            kind="service",
            sku="boost",
            category="service",
            service_completion=ratio,
        )
        # WHEN it is PUT
        answer = _put(api, service_headers, payload)
        # THEN it is stored as given
        assert answer.status == 200, (ratio, answer.json)
        assert answer.json["service_completion"] == ratio


def test_paid_amount_may_equal_list_price_plus_shipping(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN a physical order paid at exactly list price plus shipping
    payload = order_payload(kind="physical", list_price=10000, shipping_fee=800, paid_amount=10800)
    # WHEN it is PUT
    # THEN it is accepted (only above that is 400)
    assert _put(api, service_headers, payload).status == 200


def test_order_id_other_than_the_path_is_400(api: Api, service_headers: dict[str, str]) -> None:
    # GIVEN a body for o-1001 sent to /internal/orders/o-2002
    # WHEN it is PUT
    answer = _put(api, service_headers, order_payload(), path_id="o-2002")
    # THEN 400 invalid_request on order_id, and nothing is stored under either id
    assert answer.status == 400
    assert answer.code == "invalid_request"
    assert answer.fields() == ["order_id"]


INVALID_ORDERS: dict[str, tuple[dict[str, Any], str | None]] = {
    "unknown-field": ({"colour": "red"}, "colour"),
    "negative-list-price": ({"list_price": -1}, "list_price"),
    "negative-paid-amount": ({"paid_amount": -100}, "paid_amount"),
    "negative-shipping": ({"shipping_fee": -1}, "shipping_fee"),
    "negative-gift-value": ({"gifts": [{"sku": "g", "title": "", "value": -5}]}, "gifts.0.value"),
    "paid-above-list-price": ({"paid_amount": 10001}, None),
    "paid-above-list-price-plus-shipping": (
        {"kind": "physical", "shipping_fee": 500, "paid_amount": 10501},
        None,
    ),
    "used-above-total-units": ({"usage": {"total_units": 100, "used_units": 101}}, None),
    "unknown-kind": ({"kind": "digital"}, "kind"),
    "unknown-status": ({"status": "refunded"}, "status"),
    "other-currency": ({"currency": "USD"}, "currency"),
    "amount-as-string": ({"paid_amount": "8800"}, "paid_amount"),
    "bool-as-string": ({"customized": "false"}, "customized"),
    "completion-above-1": ({"service_completion": 1.5}, "service_completion"),
    "completion-5-decimals": ({"service_completion": 0.12345}, "service_completion"),
    "time-not-iso": ({"paid_at": "2026-11-20 08:00"}, "paid_at"),
    "time-without-zone": ({"refund_deadline": "2099-12-20T08:00:00"}, "refund_deadline"),
}
"""Order payload changes the contract refuses, and the field named (None: the whole body)."""


def test_invalid_order_is_400(
    api: Api, service_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (overrides, field) in INVALID_ORDERS.items():
        with subtests.test(msg=name):
            # GIVEN an order payload the contract refuses
            # WHEN it is PUT
            answer = _put(api, service_headers, order_payload(**overrides))
            # THEN 400 invalid_request, naming the field where there is one
            assert answer.status == 400
            assert answer.code == "invalid_request"
            assert answer.error["details"]
            if field is not None:
                assert field in answer.fields()


def test_order_missing_every_field_lists_each_required_field(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN an empty JSON object
    # WHEN it is PUT
    answer = api.put("/internal/orders/o-1001", {}, service_headers)
    # THEN 400, and details list each required field
    assert answer.status == 400
    assert sorted(answer.fields()) == sorted(REQUIRED)
    assert all(d["problem"] for d in answer.error["details"])


def test_lower_version_is_ignored_and_answers_the_stored_order(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN the stored order is at version 3
    stored = _put(api, service_headers, order_payload(version=3, title="v3")).json
    # WHEN a replayed version 2 arrives
    answer = _put(api, service_headers, order_payload(version=2, title="v2", status="completed"))
    # THEN 200 with the stored order, unchanged
    assert answer.status == 200
    assert answer.json == stored
    # WHEN the same version arrives again, then a higher one
    same = _put(api, service_headers, order_payload(version=3, title="v3 again"))
    higher = _put(api, service_headers, order_payload(version=4, title="v4"))
    # THEN both apply (only a lower version is ignored)
    assert same.json["title"] == "v3 again"
    assert (higher.json["title"], higher.json["version"]) == ("v4", 4)


def test_unversioned_update_applies_only_while_the_stored_order_has_no_version(
    api: Api, service_headers: dict[str, str]
) -> None:
    # GIVEN an unversioned order
    _put(api, service_headers, order_payload(title="first", status="paid"))
    # WHEN an unversioned update arrives
    second = _put(api, service_headers, order_payload(title="第二版", status="delivered")).json
    # THEN it applies: the stored order is the new one
    assert (second["title"], second["status"]) == ("第二版", "delivered")
    # AND then given a version
    versioned = _put(api, service_headers, order_payload(title="third", version=1)).json
    # WHEN an unversioned update arrives
    answer = _put(api, service_headers, order_payload(title="fourth", status="completed"))
    # THEN it is ignored: 200 with the stored, versioned order
    assert answer.status == 200
    assert answer.json == versioned


# ---------------------------------------------------------------- GET /orders/{id}/refund-quote


def _quote(api: Api, headers: dict[str, str], query: str = "", order_id: str = "o-1001"):
    return api.get(f"/orders/{order_id}/refund-quote{query}", headers)


def _sums_up(quote: dict[str, Any]) -> None:
    assert sum(item["amount"] for item in quote["breakdown"]) == quote["amount"]


@pytest.mark.usefixtures("seeded_order")
def test_quote_defaults_to_changed_mind_and_says_so(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN u-1's unused game card, 8800 fen paid
    # WHEN u-1 asks for a quote without a reason
    answer = _quote(api, user_headers)
    # THEN V1: the full amount paid, quoted for changed_mind, and the message says so
    assert answer.status == 200
    quote = answer.json
    assert quote == {
        "order_id": "o-1001",
        "refundable": True,
        "rule": None,
        "message": quote["message"],
        "amount": 8800,
        "currency": "CNY",
        "breakdown": [{"item": "paid_amount", "amount": 8800}],
        "required_evidence": ["order_screenshot"],
        "needs_return": False,
        "payout_channels": ["original", "balance"],
    }
    assert "changed_mind" in quote["message"]
    # WHEN u-1 asks for a quote for an invalid code
    quote = _quote(api, user_headers, "?reason=invalid_code").json
    # THEN F2: order and problem screenshots, and no word of a default reason
    assert quote["required_evidence"] == ["order_screenshot", "problem_screenshot"]
    assert quote["amount"] == 8800
    assert "changed_mind" not in quote["message"]


GIFT = {"sku": "g-1", "title": "赠品", "value": 500}
SHIPPED = {"kind": "physical", "status": "shipped", "shipping_fee": 800, "paid_amount": 9800}
SCREENSHOTS = ["order_screenshot", "problem_screenshot"]

QUOTES: dict[str, tuple[dict[str, Any], str, int, list[tuple[str, int]], list[str], bool]] = {
    "V2-partly-used": (
        {"usage": {"total_units": 100, "used_units": 30}},
        "?reason=invalid_code",
        6160,
        [("paid_amount", 8800), ("used_units", -2640)],
        [*SCREENSHOTS, "usage_record"],
        False,
    ),
    "V2-rounds-down": (
        {"usage": {"total_units": 3, "used_units": 1}, "paid_amount": 10000},
        "?reason=other",
        6666,
        [("paid_amount", 10000), ("used_units", -3334)],
        [*SCREENSHOTS, "usage_record"],
        False,
    ),
    "PR1-gift-kept": (
        {"gifts": [GIFT]},
        "?gifts_returned=false",
        8300,
        [("paid_amount", 8800), ("gift_not_returned", -500)],
        ["order_screenshot"],
        False,
    ),
    "PR1-gift-returned": (
        {"gifts": [GIFT]},
        "?gifts_returned=true",
        8800,
        [("paid_amount", 8800)],
        ["order_screenshot"],
        False,
    ),
    "PH1-shipped-not-quality": (
        SHIPPED,
        "?reason=changed_mind",
        9000,
        [("paid_amount", 9800), ("shipping_not_refunded", -800)],
        ["order_screenshot"],
        True,
    ),
    "PH1-shipped-quality": (
        SHIPPED,
        "?reason=defective",
        9800,
        [("paid_amount", 9800)],
        ["order_screenshot", "defect_photo"],
        True,
    ),
    "PH1-not-shipped": (
        {**SHIPPED, "status": "paid"},
        "?reason=changed_mind",
        9800,
        [("paid_amount", 9800)],
        ["order_screenshot"],
        False,
    ),
    "S1-not-started": (
        {"kind": "service"},
        "?reason=service_not_delivered",
        8800,
        [("paid_amount", 8800)],
        ["order_screenshot", "chat_record"],
        False,
    ),
    "O2-fast-track": (
        {"platform_fault": "duplicate_charge", "usage": {"total_units": 10, "used_units": 5}},
        "?reason=duplicate_charge",
        8800,
        [("paid_amount", 8800)],
        [],
        False,
    ),
}
"""Orders whose refund differs from what was paid: order changes, query, amount, breakdown,
required evidence, needs_return."""


def test_quote_breakdown_adds_up_to_the_amount(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (order, query, amount, breakdown, evidence, needs_return) in QUOTES.items():
        with subtests.test(msg=name):
            # GIVEN an order whose policy amount differs from what was paid (V2, PR1, PH1, S1,
            # O2)
            shop.order(order_id=f"o-{name}", **order)
            # WHEN u-1 asks for a quote
            answer = _quote(api, user_headers, query, order_id=f"o-{name}")
            # THEN the breakdown names each deduction and adds up to the amount
            quote = answer.json
            assert answer.status == 200
            assert (quote["refundable"], quote["rule"], quote["amount"]) == (True, None, amount)
            assert [(b["item"], b["amount"]) for b in quote["breakdown"]] == breakdown
            _sums_up(quote)
            assert quote["required_evidence"] == evidence
            assert quote["needs_return"] is needs_return


def test_quote_of_a_service_half_done_and_fully_done(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN a service 50% done (S1)
    shop.order(kind="service", service_completion=0.5)
    # WHEN u-1 asks for a quote
    quote = _quote(api, user_headers, "?reason=service_not_delivered").json
    # THEN half the amount paid comes back
    assert quote["amount"] == 4400
    assert quote["breakdown"] == [
        {"item": "paid_amount", "amount": 8800},
        {"item": "service_completed", "amount": -4400},
    ]
    # AND a service 100% done is S1: not refundable, the evidence still listed
    shop.order(order_id="o-done", kind="service", service_completion=1)
    done = _quote(api, user_headers, order_id="o-done").json
    assert (done["refundable"], done["amount"], done["rule"]) == (False, 0, "S1")
    assert done["required_evidence"] == ["order_screenshot", "chat_record"]


REFUSALS: dict[str, tuple[dict[str, Any], str, str, list[str]]] = {
    "X1-completed": ({"status": "completed"}, "", "X1", ["order_screenshot"]),
    "X1-before-E2": (
        {"status": "completed", "refund_deadline": PAST},
        "",
        "X1",
        ["order_screenshot"],
    ),
    "E1-cancelled": ({"status": "cancelled"}, "?reason=invalid_code", "E1", SCREENSHOTS),
    "E2-expired": ({"refund_deadline": PAST}, "?reason=invalid_code", "E2", SCREENSHOTS),
    "E2-consumed": (
        {"usage": {"total_units": 100, "used_units": 100}},
        "?reason=other",
        "E2",
        SCREENSHOTS,
    ),
    "E3-customised": (
        {"kind": "physical", "customized": True},
        "?reason=changed_mind",
        "E3",
        ["order_screenshot"],
    ),
    "PR1-gifts-worth-it-all": (
        {"gifts": [{"sku": "g", "title": "大礼包", "value": 9000}]},
        "?gifts_returned=false",
        "PR1",
        ["order_screenshot"],
    ),
}
"""Orders the policy refuses: order changes, query, the rule named, the evidence listed."""


def test_refusal_is_a_200_quote_naming_the_rule(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (order, query, rule, evidence) in REFUSALS.items():
        with subtests.test(msg=name):
            # GIVEN an order the policy refuses
            shop.order(order_id=f"o-{name}", **order)
            # WHEN u-1 asks for a quote
            answer = _quote(api, user_headers, query, order_id=f"o-{name}")
            # THEN a quote is an answer, not an error: 200, not refundable, amount 0, the first
            # rule that applies, a message, and the required evidence still listed (F2)
            assert answer.status == 200
            quote = answer.json
            assert (quote["refundable"], quote["amount"], quote["rule"]) == (False, 0, rule)
            assert quote["message"]
            assert quote["required_evidence"] == evidence
            _sums_up(quote)


@pytest.mark.usefixtures("seeded_order")
def test_quote_is_e4_once_a_refund_is_open(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN u-1 opened a refund of the order
    shop.refund()
    # WHEN u-1 asks for another quote
    quote = _quote(api, user_headers, "?reason=invalid_code").json
    # THEN E4: not refundable while one is open, evidence still listed
    assert (quote["refundable"], quote["amount"], quote["rule"]) == (False, 0, "E4")
    assert quote["required_evidence"] == ["order_screenshot", "problem_screenshot"]


@pytest.mark.usefixtures("seeded_order")
def test_another_users_order_quote_is_404(api: Api, other_headers: dict[str, str]) -> None:
    # GIVEN o-1001 belongs to u-1
    # WHEN u-2 asks for its quote
    answer = _quote(api, other_headers)
    # THEN 404 not_found (never 403), like an order that does not exist
    assert answer.status == 404
    assert answer.code == "not_found"
    assert _quote(api, other_headers, order_id="o-nope").code == "not_found"


@pytest.mark.usefixtures("seeded_order")
def test_quote_with_a_bad_query_is_400(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for query, field in [
        ("?reason=bored", "reason"),
        ("?gifts_returned=perhaps", "gifts_returned"),
        ("?reason=other&amount=1", "amount"),
    ]:
        with subtests.test(msg=query):
            # GIVEN a query parameter the contract refuses
            # WHEN u-1 asks for a quote
            answer = _quote(api, user_headers, query)
            # THEN 400 invalid_request naming it
            assert answer.status == 400
            assert field in answer.fields()
