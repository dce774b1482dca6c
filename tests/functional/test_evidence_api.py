"""Evidence slots (presigned S3 POST), the server-side check of uploads, and submit (F2, O2).

moto in-process does not take the real multipart POST here, so an upload is the object put
at the slot's key with the S3 client; the e2e suite does the real POST.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.functional.conftest import JPEG, MAGIC, PDF, PNG, USER, Api, Shop

MIB = 1024 * 1024


def _evidence_of(refund: dict[str, Any], evidence_id: str) -> dict[str, Any]:
    [item] = [e for e in refund["evidence"] if e["evidence_id"] == evidence_id]
    return item


def _post_evidence(api: Api, refund_id: str, headers: dict[str, str], body: Any) -> Any:
    return api.post(f"/refunds/{refund_id}/evidence", body, headers)


# ---------------------------------------------------------------- POST /refunds/{id}/evidence


def test_slot_is_a_presigned_post_limited_to_type_size_and_key(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    # GIVEN u-1's draft refund
    refund_id = draft["refund_id"]
    # WHEN u-1 opens a slot for a 48213-byte PNG order screenshot
    answer = _post_evidence(
        api,
        refund_id,
        user_headers,
        {"kind": "order_screenshot", "content_type": "image/png", "size": 48213},
    )
    # THEN 201 with an S3 presigned POST (SigV4) whose fields carry the Content-Type
    assert answer.status == 201
    slot = answer.json
    assert set(slot) == {"evidence_id", "upload", "expires_at"}
    fields = slot["upload"]["fields"]
    assert slot["upload"]["url"].startswith("https://")
    assert fields["Content-Type"] == "image/png"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert fields["x-amz-signature"]
    key = fields["key"]
    assert refund_id in key
    assert slot["evidence_id"] in key
    # AND the signed policy allows only that type, 1 byte up to the size, and that one key
    policy = json.loads(base64.b64decode(fields["policy"]))
    conditions = policy["conditions"]
    assert {"Content-Type": "image/png"} in conditions
    assert ["content-length-range", 1, 48213] in conditions
    assert {"key": key} in conditions
    assert {"bucket": shop.aws.settings.evidence_bucket} in conditions
    assert not [c for c in conditions if isinstance(c, list) and c[0] == "starts-with"]
    # AND it expires when expires_at says, in the near future (wall clock)
    expires_at = datetime.fromisoformat(slot["expires_at"].replace("Z", "+00:00"))
    expiration = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    now = datetime.now(UTC)
    assert slot["expires_at"].endswith("Z")
    assert now < expires_at <= now + timedelta(hours=1)
    assert abs((expiration - expires_at).total_seconds()) <= 2
    # AND the refund lists the slot, not yet uploaded
    assert _evidence_of(shop.get(refund_id), slot["evidence_id"]) == {
        "evidence_id": slot["evidence_id"],
        "kind": "order_screenshot",
        "content_type": "image/png",
        "size": 48213,
        "uploaded": False,
        "problem": None,
    }


def test_eleventh_slot_is_409(shop: Shop, draft: dict[str, Any], api: Api, user_headers) -> None:
    # GIVEN a refund with 10 slots, none uploaded (every created slot counts)
    refund_id = draft["refund_id"]
    for _ in range(10):
        shop.slot(refund_id, "other", "application/pdf", 1000)
    # WHEN u-1 opens an 11th
    answer = _post_evidence(
        api, refund_id, user_headers, {"kind": "other", "content_type": "image/png", "size": 9}
    )
    # THEN 409 conflict, and the refund still has 10
    assert (answer.status, answer.code) == (409, "conflict")
    assert len(shop.get(refund_id)["evidence"]) == 10


def _slot_body(**overrides: Any) -> dict[str, Any]:
    return {"kind": "order_screenshot", "content_type": "image/png", "size": 100, **overrides}


INVALID_SLOTS: dict[str, tuple[dict[str, Any], str]] = {
    "gif": (_slot_body(content_type="image/gif"), "content_type"),
    "html": (_slot_body(content_type="text/html"), "content_type"),
    "png-with-parameters": (_slot_body(content_type="image/png; charset=x"), "content_type"),
    "size-0": (_slot_body(size=0), "size"),
    "size-negative": (_slot_body(size=-1), "size"),
    "size-over-10-MiB": (_slot_body(size=10 * MIB + 1), "size"),
    "size-as-string": (_slot_body(size="100"), "size"),
    "size-fractional": (_slot_body(size=100.5), "size"),
    "unknown-kind": (_slot_body(kind="video"), "kind"),
    "kind-missing": ({"content_type": "image/png", "size": 100}, "kind"),
    "unknown-field": (_slot_body(name="a.png"), "name"),
}


def test_invalid_slot_request_is_400(
    api: Api,
    shop: Shop,
    draft: dict[str, Any],
    user_headers: dict[str, str],
    subtests: pytest.Subtests,
) -> None:
    for name, (body, field) in INVALID_SLOTS.items():
        with subtests.test(msg=name):
            # GIVEN a slot request outside the allowed types, 1 byte to 10 MiB, or the fields
            # WHEN u-1 sends it
            answer = _post_evidence(api, draft["refund_id"], user_headers, body)
            # THEN 400 invalid_request naming the field
            assert (answer.status, answer.code) == (400, "invalid_request")
            assert field in answer.fields()
    # AND no slot was opened
    assert shop.get(draft["refund_id"])["evidence"] == []


def test_every_allowed_type_and_the_size_bounds_open_a_slot(
    api: Api, draft: dict[str, Any], user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for content_type, size in [
        ("image/jpeg", 1),
        ("image/webp", 10 * MIB),
        ("application/pdf", 5000),
        ("image/png", 48213),
    ]:
        with subtests.test(msg=f"{content_type} {size}"):
            # GIVEN an allowed type, and a size of 1 byte up to exactly 10 MiB
            body = {"kind": "other", "content_type": content_type, "size": size}
            # WHEN u-1 opens a slot
            answer = _post_evidence(api, draft["refund_id"], user_headers, body)
            # THEN 201, the policy limited to that type and size
            assert answer.status == 201
            policy = json.loads(base64.b64decode(answer.json["upload"]["fields"]["policy"]))
            assert {"Content-Type": content_type} in policy["conditions"]
            assert ["content-length-range", 1, size] in policy["conditions"]


def test_no_slot_once_the_refund_is_submitted_or_cancelled(
    api: Api, shop: Shop, user_headers: dict[str, str]
) -> None:
    # GIVEN a submitted (fast-track) refund and a cancelled one
    shop.order(platform_fault="duplicate_charge")
    submitted = shop.refund(reason="duplicate_charge")["refund_id"]
    assert shop.submit(submitted).status == 200
    shop.order(order_id="o-2")
    cancelled = shop.refund("o-2")["refund_id"]
    shop.cancel(cancelled)
    # WHEN u-1 opens a slot on either (only draft, needs_info and rejected take evidence)
    body = {"kind": "other", "content_type": "image/png", "size": 100}
    # THEN 409 conflict
    for refund_id in (submitted, cancelled):
        answer = _post_evidence(api, refund_id, user_headers, body)
        assert (answer.status, answer.code) == (409, "conflict"), refund_id


# ---------------------------------------------------------------- uploads and their check


def test_real_file_of_the_declared_type_counts_as_uploaded(
    shop: Shop, draft: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for content_type, data in MAGIC.items():
        with subtests.test(msg=content_type):
            # GIVEN a slot for a file of the declared type
            slot = shop.slot(draft["refund_id"], "order_screenshot", content_type, 4096)
            # WHEN a real file of that type (its magic bytes) is uploaded at the slot's key
            shop.upload(slot, data)
            # THEN the refund counts it: uploaded, no problem
            item = _evidence_of(shop.get(draft["refund_id"]), slot["evidence_id"])
            assert (item["uploaded"], item["problem"]) == (True, None)
    with subtests.test(msg="exactly the declared size"):
        # GIVEN a slot declared at exactly the file's size
        slot = shop.slot(draft["refund_id"], "other", "image/png", len(PNG))
        shop.upload(slot, PNG)
        # THEN it counts too: the check allows 1 byte up to the declared size
        item = _evidence_of(shop.get(draft["refund_id"]), slot["evidence_id"])
        assert (item["uploaded"], item["problem"]) == (True, None)


FAILED_CHECKS: dict[str, tuple[str, int, bytes]] = {
    "jpeg-declared-png": ("image/png", 4096, JPEG),
    "gif-declared-png": ("image/png", 4096, b"GIF89a" + bytes(32)),
    "html-declared-jpeg": ("image/jpeg", 4096, b"<html><script>alert(1)</script></html>"),
    "png-declared-pdf": ("application/pdf", 4096, PNG),
    "pdf-declared-webp": ("image/webp", 4096, PDF),
    "larger-than-declared": ("image/png", 40, PNG + bytes(64)),
    "empty": ("image/png", 4096, b""),
}
"""Uploads at a slot's key that fail the check: declared type, declared size, the bytes."""


def test_upload_that_fails_the_check_stays_not_uploaded_with_a_problem(
    shop: Shop, draft: dict[str, Any], subtests: pytest.Subtests
) -> None:
    for name, (declared, size, data) in FAILED_CHECKS.items():
        with subtests.test(msg=name):
            # GIVEN a slot, and an object at its key whose real type or size is not the
            # declared one
            slot = shop.slot(draft["refund_id"], "order_screenshot", declared, size)
            shop.upload(slot, data)
            # WHEN the refund is read
            item = _evidence_of(shop.get(draft["refund_id"]), slot["evidence_id"])
            # THEN it keeps uploaded false, with a problem saying why
            assert item["uploaded"] is False
            assert isinstance(item["problem"], str)
            assert item["problem"]
            if name.endswith(("declared-png", "declared-jpeg", "declared-pdf", "declared-webp")):
                assert declared in item["problem"]
    # AND none of them counts for submit (F2)
    assert shop.submit(draft["refund_id"]).code == "missing_evidence"


def test_object_under_any_other_key_never_counts(
    shop: Shop, draft: dict[str, Any], seeded_order: Any
) -> None:
    # GIVEN two slots of u-1's refund, and a second refund of another order
    refund_id = draft["refund_id"]
    slot = shop.slot(refund_id, "order_screenshot")
    other_slot = shop.slot(refund_id, "problem_screenshot")
    shop.order(order_id="o-2")
    elsewhere = shop.refund("o-2")["refund_id"]
    key = slot["upload"]["fields"]["key"]
    # WHEN real PNGs are put beside the slot's key, under a prefix of it, in another refund's
    # folder, and with the slot's name in another folder, but never at the key itself
    for stray in (
        key + ".png",
        key + "/x",
        key.rsplit("/", 1)[0] + "/ev_not_a_slot",
        key.replace(refund_id, elsewhere),
        "uploads/" + key,
    ):
        shop.upload(slot, PNG, key=stray)
    shop.upload(other_slot, PNG, key=other_slot["upload"]["fields"]["key"] + "-copy")
    # THEN no slot counts as uploaded and submit still misses both kinds
    refund = shop.get(refund_id)
    assert [(e["uploaded"], e["problem"]) for e in refund["evidence"]] == [(False, None)] * 2
    answer = shop.submit(refund_id)
    assert [d["kind"] for d in answer.error["details"]] == [
        "order_screenshot",
        "problem_screenshot",
    ]


def test_a_failed_upload_can_be_replaced_at_the_same_key(shop: Shop, draft: dict[str, Any]) -> None:
    # GIVEN a slot whose first upload failed the check
    slot = shop.slot(draft["refund_id"], "order_screenshot")
    shop.upload(slot, JPEG)
    assert _evidence_of(shop.get(draft["refund_id"]), slot["evidence_id"])["problem"]
    # WHEN the right file is uploaded at the same key
    shop.upload(slot, PNG)
    # THEN the slot now counts, with no problem
    item = _evidence_of(shop.get(draft["refund_id"]), slot["evidence_id"])
    assert (item["uploaded"], item["problem"]) == (True, None)


# ---------------------------------------------------------------- POST /refunds/{id}/submit


def test_submit_without_the_f2_evidence_is_422_listing_the_missing_kinds(
    shop: Shop, draft: dict[str, Any]
) -> None:
    # GIVEN a draft for an invalid code (F2: order screenshot and problem screenshot)
    # WHEN u-1 submits it with no evidence
    answer = shop.submit(draft["refund_id"])
    # THEN 422 missing_evidence, details listing both kinds
    assert (answer.status, answer.code) == (422, "missing_evidence")
    assert [d["kind"] for d in answer.error["details"]] == [
        "order_screenshot",
        "problem_screenshot",
    ]
    # WHEN only the order screenshot is uploaded
    shop.evidence(draft["refund_id"], "order_screenshot")
    answer = shop.submit(draft["refund_id"])
    # THEN only the problem screenshot is missing, and the refund is still a draft
    assert [d["kind"] for d in answer.error["details"]] == ["problem_screenshot"]
    assert shop.get(draft["refund_id"])["status"] == "draft"


def test_submit_with_the_f2_evidence_is_200_submitted(
    api: Api, shop: Shop, draft: dict[str, Any], user_headers: dict[str, str]
) -> None:
    # GIVEN both F2 kinds uploaded, as real PNG and JPEG files
    refund_id = draft["refund_id"]
    shop.evidence(refund_id, "order_screenshot")
    shop.evidence(refund_id, "problem_screenshot", content_type="image/jpeg")
    # WHEN u-1 submits, with a new Chinese description
    text = "序列号 ABCD-1234 提示无效，截图已上传，要求全额退款 88 元"
    answer = api.post(f"/refunds/{refund_id}/submit", {"description": text}, user_headers)
    # THEN 200 with the whole refund: submitted, the description replaced, a submit entry
    assert answer.status == 200
    refund = answer.json
    assert refund["status"] == "submitted"
    assert refund["description"] == text
    assert [e["uploaded"] for e in refund["evidence"]] == [True, True]
    assert [h["action"] for h in refund["history"]] == ["create", "submit"]
    submit = refund["history"][-1]
    assert submit == {**submit, "actor": USER, "from": "draft", "to": "submitted"}
    assert (submit["note"], submit["rule"]) == (None, None)
    assert refund["fast_track"] is False
    # AND a second submit is 409 conflict
    again = shop.submit(refund_id)
    assert (again.status, again.code) == (409, "conflict")


def test_submit_with_an_empty_body_and_any_content_type(
    api: Api, shop: Shop, user_headers: dict[str, str], subtests: pytest.Subtests
) -> None:
    for content_type in ("application/json", "text/plain", "application/octet-stream", None):
        with subtests.test(msg=str(content_type)):
            # GIVEN a changed_mind refund with its one F2 kind (order screenshot) uploaded
            order_id = f"o-{content_type}".replace("/", "-")
            shop.order(order_id=order_id)
            refund_id = shop.refund(order_id, reason="changed_mind")["refund_id"]
            shop.evidence(refund_id, "order_screenshot")
            headers = dict(user_headers)
            if content_type:
                headers["Content-Type"] = content_type
            # WHEN u-1 submits with an empty body (the body is optional)
            answer = api.post(f"/refunds/{refund_id}/submit", b"", headers)
            # THEN it counts as no body: 200 submitted, the description kept
            assert answer.status == 200
            assert answer.json["status"] == "submitted"
            assert answer.json["description"].startswith("订单 o-1001")


def test_fast_track_order_submits_without_evidence(api: Api, shop: Shop, user_headers) -> None:
    # GIVEN the order system reported its own fault: a duplicate charge (O2)
    shop.order(platform_fault="duplicate_charge")
    quote = api.get("/orders/o-1001/refund-quote?reason=duplicate_charge", user_headers).json
    assert (quote["required_evidence"], quote["amount"]) == ([], 8800)
    # WHEN u-1 opens a refund for exactly that reason and submits it with no evidence
    refund = shop.refund(reason="duplicate_charge")
    assert refund["fast_track"] is True
    answer = shop.submit(refund["refund_id"])
    # THEN 200 submitted, fast_track true
    assert answer.status == 200
    assert (answer.json["status"], answer.json["fast_track"]) == ("submitted", True)


def test_platform_fault_of_another_reason_is_no_fast_track(shop: Shop) -> None:
    # GIVEN an order with a duplicate charge, refunded for a wrong item instead
    shop.order(platform_fault="duplicate_charge")
    refund = shop.refund(reason="wrong_item_issued")
    # WHEN u-1 submits with no evidence
    answer = shop.submit(refund["refund_id"])
    # THEN no fast track: F2 evidence is required
    assert refund["fast_track"] is False
    assert (answer.status, answer.code) == (422, "missing_evidence")


def test_partly_used_virtual_goods_need_a_usage_record(shop: Shop) -> None:
    # GIVEN a partly used top-up (V2), refunded for an invalid code
    shop.order(usage={"total_units": 100, "used_units": 30})
    refund = shop.refund()
    assert refund["amount"] == 6160
    shop.evidence(refund["refund_id"], "order_screenshot", "problem_screenshot")
    # WHEN u-1 submits without a usage record
    answer = shop.submit(refund["refund_id"])
    # THEN 422 missing_evidence lists usage_record; with it uploaded (a PDF), submit works
    assert [d["kind"] for d in answer.error["details"]] == ["usage_record"]
    shop.evidence(refund["refund_id"], "usage_record", content_type="application/pdf")
    assert shop.submit(refund["refund_id"]).status == 200


def test_invalid_submit_body_is_400(
    api: Api,
    shop: Shop,
    draft: dict[str, Any],
    user_headers: dict[str, str],
    subtests: pytest.Subtests,
) -> None:
    for name, body, field in [
        ("unknown-field", {"status": "approved"}, "status"),
        ("empty-description", {"description": ""}, "description"),
        ("description-2001", {"description": "长" * 2001}, "description"),
        ("description-not-text", {"description": 42}, "description"),
    ]:
        with subtests.test(msg=name):
            # GIVEN a submit body outside the contract
            # WHEN u-1 submits
            answer = api.post(f"/refunds/{draft['refund_id']}/submit", body, user_headers)
            # THEN 400 invalid_request naming the field (before the 422 for missing evidence)
            assert (answer.status, answer.code) == (400, "invalid_request")
            assert answer.fields() == [field]
    # AND the refund is still a draft with its description
    assert shop.get(draft["refund_id"])["description"] == draft["description"]
