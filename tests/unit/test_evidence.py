"""Evidence: the server-side check of an upload (R1, API.md evidence) and the F4 rule texts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from chalicelib.domain.evidence import (
    ALLOWED_CONTENT_TYPES,
    HEAD_BYTES,
    MAX_EVIDENCE_BYTES,
    MAX_SLOTS,
    inspect_upload,
    sniff_content_type,
)
from chalicelib.domain.model import Evidence, EvidenceKind, OrderKind
from chalicelib.domain.rules import rules_for

UPLOADED_AT = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0"


def make_slot(content_type: str = "image/png", size: int = 48213) -> Evidence:
    return Evidence(
        evidence_id="ev-1",
        kind=EvidenceKind.ORDER_SCREENSHOT,
        content_type=content_type,
        size=size,
        created_at=UPLOADED_AT,
    )


def test_r1_evidence_limits_are_the_ones_api_md_states():
    """R1: allowed types, 1 byte to 10 MiB, at most 10 slots; the type check reads 12+ bytes."""
    assert set(ALLOWED_CONTENT_TYPES) == {
        "image/jpeg",
        "image/png",
        "image/webp",
        "application/pdf",
    }
    assert MAX_EVIDENCE_BYTES == 10 * 1024 * 1024
    assert MAX_SLOTS == 10
    assert HEAD_BYTES >= 12  # a WebP signature ends at byte 12


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (WEBP, "image/webp"),
        (PDF, "application/pdf"),
    ],
)
def test_r1_sniff_recognises_the_allowed_signatures(head, expected):
    """R1: GIVEN the first bytes of an allowed file WHEN sniffed THEN its real type is found."""
    assert sniff_content_type(head[:HEAD_BYTES]) == expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x00",  # GIF: not allowed
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",  # zip
        b"<html><body>hi</body>",
        b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF but audio, not WebP
        b"\x89PNG\r\n",  # truncated PNG signature
        b"%PDF",  # no dash
        b"MZ\x90\x00\x03\x00\x00\x00",  # an executable
    ],
)
def test_r1_sniff_rejects_other_content(head):
    """R1: GIVEN bytes of a type that is not allowed WHEN sniffed THEN there is no type."""
    assert sniff_content_type(head) is None


def test_r1_inspect_upload_accepts_a_matching_object():
    """R1: GIVEN a PNG slot WHEN a real PNG within the declared size arrives THEN it counts."""
    slot = make_slot("image/png", size=48213)

    assert inspect_upload(slot, 48213, PNG) is None
    assert inspect_upload(slot, 1, PNG) is None  # smaller than declared is fine


def test_r1_inspect_upload_rejects_an_empty_object():
    """R1: GIVEN a slot WHEN a 0-byte object arrives THEN it does not count (empty)."""
    problem = inspect_upload(make_slot(), 0, b"")

    assert problem is not None
    assert "empty" in problem


def test_r1_inspect_upload_rejects_an_object_larger_than_declared():
    """R1: GIVEN a slot declared at 100 bytes WHEN 101 bytes arrive THEN it does not count."""
    problem = inspect_upload(make_slot(size=100), 101, PNG)

    assert problem is not None
    assert "101" in problem
    assert "100" in problem


@pytest.mark.parametrize(
    ("declared", "head", "found"),
    [
        ("image/png", JPEG, "image/jpeg"),
        ("application/pdf", PNG, "image/png"),
        ("image/webp", b"GIF89a\x01\x00\x01\x00\x00\x00", "not an allowed type"),
        ("image/jpeg", b"#!/bin/sh\nrm -rf /", "not an allowed type"),
    ],
)
def test_r1_inspect_upload_rejects_a_wrong_real_type(declared, head, found):
    """R1: GIVEN a slot of one type WHEN the object's first bytes say another THEN it does
    not count, and the problem names the real type and the declared one."""
    problem = inspect_upload(make_slot(declared, size=1000), 500, head)

    assert problem is not None
    assert found in problem
    assert declared in problem


@pytest.mark.parametrize("kind", list(OrderKind))
def test_f4_rules_for_each_kind_include_its_own_and_the_common_rules(kind):
    """F4: GIVEN a kind of goods WHEN its product-page rules are asked THEN they hold the
    kind's own rules, the common ones (E1, PR1, F2, R2, P1) and the not-refundable cases."""
    own = {
        OrderKind.VIRTUAL: {"V1", "V2"},
        OrderKind.PHYSICAL: {"PH1"},
        OrderKind.SERVICE: {"S1"},
    }[kind]
    not_refundable = {
        OrderKind.VIRTUAL: {"E2", "X1"},
        OrderKind.PHYSICAL: {"E3", "E2", "X1"},
        OrderKind.SERVICE: {"S1", "E2", "X1"},
    }[kind]

    rules = rules_for(kind)

    rule_ids = [text.rule for text in rules.rules]
    assert own | {"E1", "PR1", "F2", "R2", "P1"} == set(rule_ids)
    assert len(rule_ids) == len(set(rule_ids))
    assert {text.rule for text in rules.not_refundable} == not_refundable
    for text in rules.rules + rules.not_refundable:
        assert text.zh.strip()
        assert text.en.strip()


def test_f4_rules_of_one_kind_do_not_leak_into_another():
    """F4: GIVEN the three kinds WHEN their rules are shown THEN V2 is only for virtual goods,
    PH1 and E3 only for physical ones."""
    virtual = {t.rule for t in rules_for(OrderKind.VIRTUAL).rules}
    physical = rules_for(OrderKind.PHYSICAL)
    service = {t.rule for t in rules_for(OrderKind.SERVICE).rules}

    assert "V2" in virtual
    assert "V2" not in service
    assert "PH1" not in virtual | service
    assert "E3" in {t.rule for t in physical.not_refundable}
    assert "E3" not in {t.rule for t in rules_for(OrderKind.VIRTUAL).not_refundable}
