"""Edges found in review: inputs that once reached a 500, ids as sent, O2's return, O5's
archive, the methods every known path answers (API.md conventions; POLICY O2, O5, E1)."""

from __future__ import annotations

from typing import Any

from tests.functional.conftest import Api, Shop
from tests.support import bearer


def test_times_with_no_utc_form_are_400_not_500(shop: Shop, api: Api) -> None:
    # GIVEN an order whose deadline, in UTC, would fall after the year 9999
    payload = shop.order()
    payload["refund_deadline"] = "9999-12-31T23:59:59-14:00"
    # WHEN the order system sends it THEN it is an out-of-range value: 400, naming the field
    answer = api.put(f"/internal/orders/{payload['order_id']}", payload, shop.service_headers)
    assert answer.status == 400
    assert answer.fields() == ["refund_deadline"]


def test_amounts_above_a_billion_cny_are_400(shop: Shop, api: Api) -> None:
    payload = shop.order()
    payload.update(list_price=10**40 + 1, paid_amount=10**40 + 1)
    answer = api.put(f"/internal/orders/{payload['order_id']}", payload, shop.service_headers)
    assert answer.status == 400
    assert set(answer.fields()) == {"list_price", "paid_amount"}


def test_a_token_whose_sub_could_not_key_an_item_is_401(api: Api, seeded_order: Any) -> None:
    answer = api.get("/orders/o-1001/refund-quote", bearer("u" * 3000))
    assert answer.status == 401
    assert answer.code == "unauthenticated"


def test_ids_are_matched_as_sent_once_percent_decoded(shop: Shop, api: Api) -> None:
    # GIVEN an order id with non-ASCII characters and a space
    order = shop.order(order_id="订单 1")
    # WHEN it is quoted through its percent-encoded path THEN it is found
    answer = api.get("/orders/%E8%AE%A2%E5%8D%95%201/refund-quote", shop.user_headers)
    assert answer.status == 200
    assert answer.json["order_id"] == order["order_id"]


def test_a_fast_tracked_refund_of_shipped_goods_needs_no_return(shop: Shop) -> None:
    """O2: the platform's own fault is paid first, with no human step: no return first."""
    shop.order(
        order_id="o-2001",
        kind="physical",
        status="shipped",
        list_price=9000,
        paid_amount=9000,
        platform_fault="wrong_item_issued",
    )
    refund = shop.refund("o-2001", "wrong_item_issued")
    assert refund["fast_track"] is True
    assert refund["needs_return"] is False


def test_an_order_with_nothing_paid_is_refused_with_e1(shop: Shop, api: Api) -> None:
    shop.order(order_id="o-free", list_price=0, paid_amount=0)
    answer = api.get("/orders/o-free/refund-quote", shop.user_headers)
    assert (answer.json["refundable"], answer.json["rule"]) == (False, "E1")


def test_every_message_appears_in_the_refund_however_many(shop: Shop, api: Api, draft: Any) -> None:
    """O5: long threads stay whole: 60 messages of 2,000 characters each all read back."""
    path = f"/refunds/{draft['refund_id']}/messages"
    bodies = [f"{n:02d}" + "长" * 1998 for n in range(60)]
    for body in bodies:
        assert api.post(path, {"body": body}, shop.user_headers).status == 201
    assert [m["body"] for m in shop.get(draft["refund_id"])["messages"]] == bodies


def test_options_on_a_known_path_is_405_in_the_envelope(public_api: Api) -> None:
    answer = public_api.call("OPTIONS", "/health")
    assert answer.status == 405
    assert answer.code == "method_not_allowed"
    assert answer.header("Allow") == "GET"


def test_a_counted_upload_keeps_the_version_that_passed_the_check(shop: Shop, draft: Any) -> None:
    """GIVEN a PNG counted as evidence WHEN the still-valid presigned POST is used again to
    put something else there THEN the refund keeps the version that passed the check, and
    S3 still serves exactly those bytes (the bucket is versioned)."""
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    slot = shop.slot(draft["refund_id"], size=len(png))
    shop.upload(slot, png)
    assert shop.get(draft["refund_id"])["evidence"][0]["uploaded"] is True
    shop.upload(slot, b"<html>swapped</html>")
    assert shop.get(draft["refund_id"])["evidence"][0]["uploaded"] is True
    refund = shop.aws.ports.refunds.get(draft["refund_id"])
    checked = refund.evidence[0].checked_version
    assert checked
    kept = shop.aws.s3.get_object(
        Bucket=shop.aws.settings.evidence_bucket,
        Key=slot["upload"]["fields"]["key"],
        VersionId=checked,
    )
    assert kept["Body"].read() == png
