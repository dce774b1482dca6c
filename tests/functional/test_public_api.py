"""Public routes (API.md, Public): /health, /refund-policy (F4); no token needed.

These routes never touch storage, so they run on ``public_api`` (no moto set-up).
"""

from __future__ import annotations

import re

import pytest

from tests.functional.conftest import Api

CHINESE = re.compile(r"[\u4e00-\u9fff]")


def test_health_answers_ok_without_a_token(public_api: Api) -> None:
    # GIVEN no token at all
    # WHEN GET /health
    answer = public_api.get("/health")
    # THEN 200 {"status": "ok"} with a generated X-Request-Id
    assert answer.status == 200
    assert answer.json == {"status": "ok"}
    assert answer.header("X-Request-Id")


def test_each_answer_without_a_caller_request_id_gets_a_new_one(public_api: Api) -> None:
    # GIVEN two requests that send no X-Request-Id
    # WHEN they are answered
    first, second = public_api.get("/health"), public_api.get("/health")
    # THEN each carries its own generated id
    assert first.header("X-Request-Id") != second.header("X-Request-Id")


@pytest.mark.parametrize(
    ("kind", "own_rules", "not_refundable"),
    [
        ("virtual", {"V1", "V2"}, {"E2", "X1"}),
        ("physical", {"PH1"}, {"E3", "E2", "X1"}),
        ("service", {"S1"}, {"S1", "E2", "X1"}),
    ],
)
def test_refund_policy_lists_the_rules_of_a_kind_in_chinese_and_english(
    public_api: Api, kind: str, own_rules: set[str], not_refundable: set[str]
) -> None:
    # GIVEN a product page of a kind of goods, and no token
    # WHEN it asks GET /refund-policy?kind=... (F4)
    answer = public_api.get(f"/refund-policy?kind={kind}")
    # THEN each rule has its id and a short text in Chinese and in English, with the
    # not-refundable situations listed apart
    assert answer.status == 200
    body = answer.json
    assert body["kind"] == kind
    for item in body["rules"] + body["not_refundable"]:
        assert set(item) == {"rule", "zh", "en"}
        assert re.fullmatch(r"[A-Z]{1,2}\d", item["rule"])
        assert CHINESE.search(item["zh"]), item
        assert item["en"], item
        assert not CHINESE.search(item["en"]), item
    assert own_rules <= {item["rule"] for item in body["rules"]}
    assert {item["rule"] for item in body["not_refundable"]} == not_refundable
    # AND the Chinese text arrives as UTF-8, not as \\u escapes
    assert body["rules"][0]["zh"].encode() in answer.raw


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "kind"),
        ("?kind=food", "kind"),
        ("?kind=Virtual", "kind"),
        ("?kind=virtual&lang=zh", "lang"),
    ],
    ids=["missing-kind", "unknown-kind", "wrong-case", "unknown-parameter"],
)
def test_refund_policy_without_a_known_kind_is_400(public_api: Api, query: str, field: str) -> None:
    # GIVEN no kind, a kind that does not exist, or an extra parameter
    # WHEN GET /refund-policy
    answer = public_api.get(f"/refund-policy{query}")
    # THEN 400 invalid_request naming the parameter
    assert answer.status == 400
    assert answer.code == "invalid_request"
    assert field in answer.fields()


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/refund-policy?kind=virtual"])
def test_public_routes_need_no_token(public_api: Api, path: str) -> None:
    # GIVEN no Authorization header
    # WHEN a public route is called
    # THEN it answers 200
    assert public_api.get(path).status == 200
