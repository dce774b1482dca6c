"""Refunds (API.md, Refunds): create (idempotent), read, list, cancel, messages."""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
import pytest

from tests.functional.conftest import DESCRIPTION, USER, Api, Shop
from tests.support import as_json, bearer

REFUND_ID = re.compile(r"^rf_[0-9A-Za-z]{26}$")
UTC_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
CURSOR = re.compile(r"^[A-Za-z0-9\-_.~]+$")


def _create(api: Api, headers: dict[str, str], key: str | None, body: Any) -> Any:
    sent = dict(headers)
    if key is not None:
        sent["Idempotency-Key"] = key
    return api.post("/refunds", body, sent)


def _body(**overrides: Any) -> dict[str, Any]:
    return {"order_id": "o-1001", "reason": "invalid_code", "description": DESCRIPTION, **overrides}


def _ids(answer: Any) -> list[str]:
    return [item["refund_id"] for item in answer.json["items"]]


# ---------------------------------------------------------------- POST /refunds


@pytest.mark.usefixtures("seeded_order")
def test_create_answers_201_with_a_draft_refund(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN u-1's paid game card (8800 fen, paid with Alipay)
    # WHEN u-1 opens a refund with a Chinese description
    answer = _create(api, user_headers, "k-1", _body())
    # THEN 201: a draft of the quoted amount, the description unchanged, one create entry
    assert answer.status == 201
    refund = answer.json
    assert REFUND_ID.match(refund["refund_id"])
    assert refund == {
        **refund,
        "order_id": "o-1001",
        "user_id": USER,
        "status": "draft",
        "reason": "invalid_code",
        "description": DESCRIPTION,
        "amount": 8800,
        "approved_amount": None,
        "currency": "CNY",
        "payout_channel": "original",
        "channel": "alipay",
        "fast_track": False,
        "needs_return": False,
        "escalation_level": 0,
        "evidence": [],
        "messages": [],
        "review_due_at": None,
        "payout_due_at": None,
    }
    assert DESCRIPTION.encode() in answer.raw
    [entry] = refund["history"]
    assert entry == {
        "at": entry["at"],
        "actor": USER,
        "action": "create",
        "from": None,
        "to": "draft",
        "note": None,
        "rule": None,
    }
    for at in (entry["at"], refund["created_at"], refund["updated_at"]):
        assert UTC_Z.match(at), at
    # AND GET /refunds/{id} answers the same refund
    again = api.get(f"/refunds/{refund['refund_id']}", user_headers)
    assert again.status == 200
    assert again.json == refund


AT_CREATION: dict[str, tuple[dict[str, Any], dict[str, Any], int, bool]] = {
    "PR1-gift-kept": (
        {"gifts": [{"sku": "g-1", "title": "赠品", "value": 500}]},
        {"gifts_returned": False},
        8300,
        False,
    ),
    "V2-partly-used": ({"usage": {"total_units": 100, "used_units": 30}}, {}, 6160, False),
    "PH1-shipped": (
        {"kind": "physical", "status": "shipped", "shipping_fee": 800, "paid_amount": 9800},
        {"reason": "changed_mind"},
        9000,
        True,
    ),
}
"""Orders, create-body changes, the refund's amount (the quote's) and needs_return."""


def test_refund_amount_is_the_quotes_amount_at_creation(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (order, body, amount, needs_return) in AT_CREATION.items():
        with subtests.test(msg=name):
            # GIVEN an order whose refund is less than what was paid
            shop.order(order_id=f"o-{name}", **order)
            request = _body(order_id=f"o-{name}", **body)
            gifts = str(request.get("gifts_returned", True)).lower()
            query = f"?reason={request['reason']}&gifts_returned={gifts}"
            quote = api.get(f"/orders/o-{name}/refund-quote{query}", user_headers).json
            # WHEN u-1 opens the refund
            refund = _create(api, user_headers, f"k-{name}", request).json
            # THEN its amount is the quote's, and so is needs_return
            assert refund["amount"] == quote["amount"] == amount
            assert refund["needs_return"] is quote["needs_return"] is needs_return


@pytest.mark.usefixtures("seeded_order")
def test_refund_keeps_the_order_as_it_was_at_creation(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN a refund for an invalid code of the unused card (F2: order + problem screenshot)
    refund = shop.refund()
    # AND the order system then reports the card partly used and a lower amount paid
    shop.order(usage={"total_units": 100, "used_units": 50}, paid_amount=5000)
    # WHEN u-1 uploads the two screenshots and submits
    shop.evidence(refund["refund_id"], "order_screenshot", "problem_screenshot")
    answer = shop.submit(refund["refund_id"])
    # THEN the refund works from the order as it was: no usage record needed, amount 8800
    assert answer.status == 200, answer.json
    assert answer.json["amount"] == 8800


@pytest.mark.usefixtures("seeded_order")
def test_refunds_are_time_ordered(api: Api, shop: Shop, user_headers: dict[str, str]) -> None:
    # GIVEN a refund opened and cancelled, then another opened
    first = shop.refund()
    shop.cancel(first["refund_id"])
    second = shop.refund()
    # THEN the later refund has the greater id (ULID-like)
    assert second["refund_id"] > first["refund_id"]


@pytest.mark.usefixtures("seeded_order")
def test_create_without_a_valid_idempotency_key_is_400(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for key in (None, ""):
        with subtests.test(msg=f"key={key!r}"):
            # GIVEN no Idempotency-Key (or an empty one)
            # WHEN u-1 opens a refund
            answer = _create(api, user_headers, key, _body())
            # THEN 400 idempotency_key_missing
            assert answer.status == 400
            assert answer.code == "idempotency_key_missing"
    # AND a 256-character key (1..255 allowed) is 400 invalid_request on the header
    too_long = _create(api, user_headers, "k" * 256, _body())
    assert (too_long.status, too_long.code) == (400, "invalid_request")
    assert too_long.fields() == ["Idempotency-Key"]
    # AND nothing was created
    assert api.get("/refunds", user_headers).json["items"] == []


REORDERED = (
    '{\n  "description" : "' + DESCRIPTION + '",\n'
    '  "reason": "invalid_code",   "order_id": "o-1001"\n}'
).encode()


@pytest.mark.usefixtures("seeded_order")
def test_same_key_and_same_body_replays_the_first_answer(
    api: Api, user_headers: dict[str, str]
) -> None:
    # GIVEN u-1 opened a refund with key k-1
    first = _create(api, user_headers, "k-1", _body())
    # WHEN the same body is sent again with k-1, keys reordered and with whitespace, and
    # once more with its Chinese written as \u escapes
    again = _create(api, user_headers, "k-1", REORDERED)
    escaped = _create(api, user_headers, "k-1", json.dumps(_body(), ensure_ascii=True).encode())
    # THEN the first answer comes back, status and body, and no second refund exists
    assert again.status == escaped.status == first.status == 201
    assert again.json == escaped.json == first.json
    assert _ids(api.get("/refunds", user_headers)) == [first.json["refund_id"]]


def test_replay_answers_the_first_answer_after_the_refund_changed(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for change in ("evidence", "message", "cancel"):
        with subtests.test(msg=change):
            # GIVEN u-1 opened a refund with a key, and the refund has changed since
            shop.order(order_id=f"o-{change}")
            body = _body(order_id=f"o-{change}")
            first = _create(api, user_headers, f"k-{change}", body)
            refund_id = first.json["refund_id"]
            if change == "evidence":
                shop.slot(refund_id)
            elif change == "message":
                api.post(f"/refunds/{refund_id}/messages", {"body": "在吗？"}, user_headers)
            else:
                shop.cancel(refund_id)
            # WHEN the create is retried with the key and the same body (a client that lost
            # the answer)
            again = _create(api, user_headers, f"k-{change}", body)
            # THEN the first answer comes back: 201 and the refund as it was created, not as
            # it is now
            assert (again.status, again.json) == (201, first.json), again.json


@pytest.mark.usefixtures("seeded_order")
def test_same_key_with_another_body_is_422_reused(api: Api, user_headers: dict[str, str]) -> None:
    # GIVEN u-1 opened a refund with key k-1
    _create(api, user_headers, "k-1", _body())
    # WHEN k-1 comes again with another body
    answer = _create(api, user_headers, "k-1", _body(description="另一个描述，内容不同"))
    # THEN 422 idempotency_key_reused
    assert answer.status == 422
    assert answer.code == "idempotency_key_reused"


def test_idempotency_keys_are_scoped_to_the_caller(api: Api, shop: Shop) -> None:
    # GIVEN u-1 and u-2 each have an order, and u-1 used key k-1
    shop.order()
    shop.order(order_id="o-2002", user_id="u-2")
    mine = _create(api, bearer("u-1"), "k-1", _body())
    # WHEN u-2 uses the same key for its own order
    theirs = _create(api, bearer("u-2"), "k-1", _body(order_id="o-2002"))
    # THEN it is a new refund of u-2's, not a replay nor a reuse
    assert theirs.status == 201
    assert theirs.json["user_id"] == "u-2"
    assert theirs.json["refund_id"] != mine.json["refund_id"]


@pytest.mark.usefixtures("seeded_order")
def test_400_and_413_are_not_stored_so_the_key_can_be_retried(
    api: Api, user_headers: dict[str, str]
) -> None:
    # GIVEN first attempts with key k-1 refused as invalid (empty description), then as too
    # large (over 64 KiB)
    assert _create(api, user_headers, "k-1", _body(description="")).status == 400
    assert _create(api, user_headers, "k-1", as_json(_body()) + b" " * 65536).status == 413
    # WHEN the caller retries k-1 with a valid body
    answer = _create(api, user_headers, "k-1", _body())
    # THEN it is created (400 and 413 answers are not stored)
    assert answer.status == 201


def test_a_5xx_is_not_stored_so_the_key_completes_the_create(
    api: Api, shop: Shop, aws: Any, user_headers: dict[str, str], seeded_order: Any
) -> None:
    from chalicelib.adapters.dynamodb import create_tables

    # GIVEN the refunds table is gone, so the create with key k-1 fails half-way (the order is
    # booked, the refund cannot be stored)
    dynamodb = boto3.client("dynamodb", region_name=aws.settings.region)
    dynamodb.delete_table(TableName=aws.settings.refunds_table)
    failed = _create(api, user_headers, "k-1", _body())
    assert (failed.status, failed.code) == (500, "internal_error")
    # WHEN the table is back and the caller retries k-1 with the same body
    create_tables()
    answer = _create(api, user_headers, "k-1", _body())
    # THEN the create completes: 201, one refund, and the order is booked by it (E4)
    assert answer.status == 201
    assert _ids(api.get("/refunds", user_headers)) == [answer.json["refund_id"]]
    assert shop.create(reason="changed_mind").error["rule"] == "E4"


@pytest.mark.usefixtures("seeded_order")
def test_a_409_is_stored_for_its_key(api: Api, shop: Shop, user_headers: dict[str, str]) -> None:
    # GIVEN k-2 was refused with 409 E4 while another refund of the order was open
    open_refund = shop.refund()
    first = _create(api, user_headers, "k-2", _body(reason="changed_mind"))
    assert (first.status, first.error["rule"]) == (409, "E4")
    # AND the open refund was cancelled since
    shop.cancel(open_refund["refund_id"])
    # WHEN k-2 is retried with the same body
    again = _create(api, user_headers, "k-2", _body(reason="changed_mind"))
    # THEN the stored first answer comes back (only 400, 401, 403, 413 and 5xx are not kept)
    assert (again.status, again.json) == (409, first.json)


@pytest.mark.usefixtures("seeded_order")
def test_open_refund_on_the_order_is_409_e4(api: Api, shop: Shop) -> None:
    # GIVEN u-1 has an open (draft) refund of o-1001
    shop.refund()
    # WHEN u-1 opens another one with a new key
    answer = shop.create(reason="changed_mind")
    # THEN 409 conflict with rule E4
    assert answer.status == 409
    assert (answer.code, answer.error["rule"]) == ("conflict", "E4")


POLICY_REFUSALS = {
    "E2-expired": ({"refund_deadline": "2020-01-01T00:00:00Z"}, "E2"),
    "X1-completed": ({"status": "completed"}, "X1"),
    "E1-cancelled": ({"status": "cancelled"}, "E1"),
    "E2-consumed": ({"usage": {"total_units": 10, "used_units": 10}}, "E2"),
}


def test_policy_refusal_is_422_not_refundable_with_its_rule(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (order, rule) in POLICY_REFUSALS.items():
        with subtests.test(msg=name):
            # GIVEN an order the policy refuses
            shop.order(order_id=f"o-{name}", **order)
            # WHEN u-1 opens a refund
            answer = _create(api, user_headers, f"k-{name}", _body(order_id=f"o-{name}"))
            # THEN 422 not_refundable naming the rule
            assert answer.status == 422
            assert (answer.code, answer.error["rule"]) == ("not_refundable", rule)
            assert answer.error["message"]
    # AND no refund exists
    assert api.get("/refunds", user_headers).json["items"] == []


def test_a_refusal_replays_for_the_same_key_even_after_the_order_is_fixed(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN u-1 was refused with key k-1 because the order was marked completed (X1)
    shop.order(status="completed")
    first = _create(api, user_headers, "k-1", _body())
    assert (first.status, first.error["rule"]) == (422, "X1")
    # AND the order system then reports the order delivered
    shop.order(status="delivered")
    # WHEN u-1 retries with k-1 and the same body
    again = _create(api, user_headers, "k-1", _body())
    # THEN the first answer comes back
    assert (again.status, again.json) == (first.status, first.json)
    # AND a new key creates the refund
    assert _create(api, user_headers, "k-2", _body()).status == 201


def test_unknown_order_is_404_and_the_answer_is_kept_for_its_key(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN no order o-1001 yet
    # WHEN u-1 opens a refund of it with key k-1
    first = _create(api, user_headers, "k-1", _body())
    # THEN 404 not_found
    assert (first.status, first.code) == (404, "not_found")
    # AND once the order arrives, k-1 with the same body still answers the stored 404
    # (every first answer is stored but 400, 401, 403, 413 and 5xx)
    shop.order()
    again = _create(api, user_headers, "k-1", _body())
    assert (again.status, again.json) == (404, first.json)


@pytest.mark.usefixtures("seeded_order")
def test_another_users_order_is_404(api: Api, other_headers: dict[str, str]) -> None:
    # GIVEN o-1001 belongs to u-1
    # WHEN u-2 opens a refund of it
    answer = _create(api, other_headers, "k-1", _body())
    # THEN 404 not_found, never 403
    assert (answer.status, answer.code) == (404, "not_found")


INVALID_CREATES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "all-missing": ({}, ["order_id", "reason", "description"]),
    "empty-description": (_body(description=""), ["description"]),
    "description-2001": (_body(description="字" * 2001), ["description"]),
    "unknown-reason": (_body(reason="bored"), ["reason"]),
    "unknown-payout-channel": (_body(payout_channel="bank"), ["payout_channel"]),
    "bool-as-string": (_body(gifts_returned="yes"), ["gifts_returned"]),
    "order-id-as-number": (_body(order_id=1001), ["order_id"]),
    "unknown-field": (_body(amount=100), ["amount"]),
}


@pytest.mark.usefixtures("seeded_order")
def test_invalid_create_body_is_400(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (body, fields) in INVALID_CREATES.items():
        with subtests.test(msg=name):
            # GIVEN a create body the contract refuses
            # WHEN u-1 sends it
            answer = _create(api, user_headers, f"k-{name}", body)
            # THEN 400 invalid_request, details listing each field
            assert answer.status == 400
            assert answer.code == "invalid_request"
            assert sorted(answer.fields()) == sorted(fields)


@pytest.mark.usefixtures("seeded_order")
def test_create_with_every_optional_field_and_the_longest_description(
    api: Api, user_headers: dict[str, str]
) -> None:
    # GIVEN a description of exactly 2000 Chinese characters (1..2000 allowed), the payout to
    # the platform balance (P1), gifts kept, and a 255-character key
    body = _body(description="退" * 2000, payout_channel="balance", gifts_returned=False)
    # WHEN u-1 opens the refund
    answer = _create(api, user_headers, "k" * 255, body)
    # THEN it is created, the text unchanged, the money going to the balance
    assert answer.status == 201
    refund = answer.json
    assert refund["description"] == "退" * 2000
    assert (refund["payout_channel"], refund["channel"]) == ("balance", "balance")


# ---------------------------------------------------------------- GET /refunds


@pytest.fixture
def three_refunds(shop: Shop) -> list[str]:
    """GIVEN u-1 opened refunds of three orders, in this order."""
    ids = []
    for n in (1, 2, 3):
        shop.order(order_id=f"o-{n}")
        ids.append(shop.refund(f"o-{n}")["refund_id"])
    return ids


def test_list_is_newest_first_only_the_callers_and_paged(
    api: Api, three_refunds: list[str], user_headers: dict[str, str], other_headers: dict[str, str]
) -> None:
    # WHEN u-1 lists its refunds
    answer = api.get("/refunds", user_headers)
    # THEN all three, newest first, and nothing follows
    assert answer.status == 200
    assert _ids(answer) == three_refunds[::-1]
    assert answer.json["next_cursor"] is None
    # AND u-2 sees none of them
    assert api.get("/refunds", other_headers).json == {"items": [], "next_cursor": None}
    newest_first = three_refunds[::-1]
    # WHEN u-1 lists two at a time
    first = api.get("/refunds?limit=2", user_headers).json
    # THEN the two newest, and a URL-safe cursor since one follows
    assert [r["refund_id"] for r in first["items"]] == newest_first[:2]
    assert CURSOR.match(first["next_cursor"])
    # WHEN the cursor is followed
    second = api.get(f"/refunds?limit=2&cursor={first['next_cursor']}", user_headers).json
    # THEN the last one, and next_cursor null: nothing follows
    assert [r["refund_id"] for r in second["items"]] == newest_first[2:]
    assert second["next_cursor"] is None
    # AND a page that ends exactly at the last refund has next_cursor null too
    exact = api.get("/refunds?limit=3", user_headers).json
    assert len(exact["items"]) == 3
    assert exact["next_cursor"] is None


def test_list_pages_by_20_by_default(api: Api, shop: Shop, user_headers: dict[str, str]) -> None:
    # GIVEN u-1 has 21 refunds
    for n in range(21):
        shop.order(order_id=f"o-{n}")
        shop.refund(f"o-{n}")
    # WHEN u-1 lists without a limit
    first = api.get("/refunds", user_headers).json
    # THEN 20 come back and one follows
    assert len(first["items"]) == 20
    rest = api.get(f"/refunds?cursor={first['next_cursor']}", user_headers).json
    assert (len(rest["items"]), rest["next_cursor"]) == (1, None)


def test_list_filters_by_status(
    api: Api, shop: Shop, three_refunds: list[str], user_headers: dict[str, str]
) -> None:
    # GIVEN u-1 cancelled the middle refund
    shop.cancel(three_refunds[1])
    # WHEN u-1 lists by status
    cancelled = api.get("/refunds?status=cancelled", user_headers)
    drafts = api.get("/refunds?status=draft", user_headers)
    submitted = api.get("/refunds?status=submitted", user_headers)
    # THEN each list holds only refunds in that status, newest first
    assert _ids(cancelled) == [three_refunds[1]]
    assert _ids(drafts) == [three_refunds[2], three_refunds[0]]
    assert _ids(submitted) == []
    assert {r["status"] for r in cancelled.json["items"]} == {"cancelled"}
    # AND a filtered list pages like the full one
    page = api.get("/refunds?status=draft&limit=1", user_headers).json
    assert [r["refund_id"] for r in page["items"]] == [three_refunds[2]]
    rest = api.get(f"/refunds?status=draft&limit=1&cursor={page['next_cursor']}", user_headers)
    assert (_ids(rest), rest.json["next_cursor"]) == ([three_refunds[0]], None)


BAD_LIST_QUERIES = {
    "limit-0": ("?limit=0", "limit"),
    "limit-101": ("?limit=101", "limit"),
    "limit-not-a-number": ("?limit=ten", "limit"),
    "cursor-with-spaces": ("?cursor=not%20a%20cursor", "cursor"),
    "cursor-truncated": ("?cursor=rf_", "cursor"),
    "cursor-with-slashes": ("?cursor=%2F%2F..%2F", "cursor"),
    "unknown-status": ("?status=refunded", "status"),
    "unknown-parameter": ("?sort=asc", "sort"),
}


def test_list_with_a_bad_query_is_400(
    api: Api, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for name, (query, field) in BAD_LIST_QUERIES.items():
        with subtests.test(msg=name):
            # GIVEN a query outside the contract
            # WHEN u-1 lists its refunds
            answer = api.get(f"/refunds{query}", user_headers)
            # THEN 400 invalid_request naming the parameter
            assert answer.status == 400
            assert answer.code == "invalid_request"
            assert field in answer.fields()
    # AND the limits at either end of 1..100 are accepted
    assert [api.get(f"/refunds?limit={n}", user_headers).status for n in (1, 100)] == [200, 200]


# ---------------------------------------------------------------- POST /refunds/{id}/cancel


def test_cancel_a_draft_frees_the_order_and_cannot_be_repeated(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    # GIVEN u-1's draft refund
    # WHEN u-1 cancels it (an empty body with a JSON Content-Type counts as none)
    answer = api.post(
        f"/refunds/{draft['refund_id']}/cancel",
        b"",
        {**user_headers, "Content-Type": "application/json"},
    )
    # THEN 200 with the whole refund, cancelled, with a cancel entry after the create
    assert answer.status == 200
    refund = answer.json
    assert refund["status"] == "cancelled"
    assert [h["action"] for h in refund["history"]] == ["create", "cancel"]
    cancel = refund["history"][-1]
    assert (cancel["actor"], cancel["from"], cancel["to"]) == (USER, "draft", "cancelled")
    # AND the order is free: the quote is refundable again and a new refund can be opened
    quote = api.get("/orders/o-1001/refund-quote", user_headers).json
    assert (quote["refundable"], quote["amount"]) == (True, 8800)
    assert shop.create().status == 201
    # WHEN u-1 cancels the cancelled refund again
    again = shop.cancel(draft["refund_id"])
    # THEN 409 conflict, and the refund is unchanged
    assert (again.status, again.code) == (409, "conflict")
    assert [h["action"] for h in shop.get(draft["refund_id"])["history"]] == ["create", "cancel"]


def test_cancel_a_submitted_refund(shop: Shop) -> None:
    # GIVEN a fast-track (O2) refund, submitted without evidence
    shop.order(platform_fault="duplicate_charge")
    refund = shop.refund(reason="duplicate_charge")
    assert shop.submit(refund["refund_id"]).json["status"] == "submitted"
    # WHEN u-1 cancels it
    answer = shop.cancel(refund["refund_id"])
    # THEN 200 cancelled, from submitted
    assert answer.status == 200
    assert (answer.json["history"][-1]["from"], answer.json["status"]) == (
        "submitted",
        "cancelled",
    )


# ---------------------------------------------------------------- POST /refunds/{id}/messages


def test_message_is_201_and_appears_in_the_refund(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    # GIVEN u-1's draft refund
    text = "请尽快处理，序列号截图已上传。"
    # WHEN u-1 posts a message (O5)
    answer = api.post(f"/refunds/{draft['refund_id']}/messages", {"body": text}, user_headers)
    # THEN 201 with the message, written by the user
    assert answer.status == 201
    assert answer.json == {"at": answer.json["at"], "author_role": "user", "body": text}
    assert UTC_Z.match(answer.json["at"])
    assert text.encode() in answer.raw
    # AND it appears in the refund, which gets no history entry for it
    refund = shop.get(draft["refund_id"])
    assert refund["messages"] == [answer.json]
    assert [h["action"] for h in refund["history"]] == ["create"]
    # WHEN a second message of the longest length allowed follows
    longest = api.post(
        f"/refunds/{draft['refund_id']}/messages", {"body": "长" * 2000}, user_headers
    )
    # THEN both are read back in the order posted
    assert longest.status == 201
    assert [m["body"] for m in shop.get(draft["refund_id"])["messages"]] == [text, "长" * 2000]


def test_invalid_message_is_400(
    api: Api, draft: dict[str, Any], user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    cases = {
        "2001-characters": ({"body": "x" * 2001}, "body"),
        "empty": ({"body": ""}, "body"),
        "missing": ({}, "body"),
        "not-text": ({"body": ["hi"]}, "body"),
        "unknown-field": ({"body": "hi", "author_role": "agent"}, "author_role"),
    }
    for name, (body, field) in cases.items():
        with subtests.test(msg=name):
            # GIVEN a message body outside 1..2000 characters, or with extra fields
            # WHEN u-1 posts it
            answer = api.post(f"/refunds/{draft['refund_id']}/messages", body, user_headers)
            # THEN 400 invalid_request naming the field
            assert (answer.status, answer.code) == (400, "invalid_request")
            assert field in answer.fields()
    # AND no message was kept
    assert api.get(f"/refunds/{draft['refund_id']}", user_headers).json["messages"] == []
