"""A client of the refund API written from API.md alone: plain HTTP, tokens minted the way the
local stage accepts them, uploads posted to the presigned URLs, and polling with a deadline
for what the workflow does asynchronously."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import requests

from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token

__all__ = [
    "CHANNEL_SECRET",
    "JPEG",
    "PDF",
    "PNG",
    "Api",
    "Who",
    "new_order",
    "sign",
    "wait_until",
]

CHANNEL_SECRET = "local-channel-secret-0123456789abcdef"  # API.md, "Payment channels"
TIMEOUT = 10
DEADLINE = 10.0

T = TypeVar("T")


def _png() -> bytes:
    """A real 8x8 grey PNG: signature, IHDR, one IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)  # 8x8, 8-bit greyscale
    rows = b"".join(b"\x00" + bytes([0x80] * 8) for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _jpeg() -> bytes:
    """A real baseline JPEG: one 8x8 grey block (DC difference 0, then end of block)."""

    def segment(marker: int, data: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(data) + 2) + data

    one_code = bytes([1] + [0] * 15) + b"\x00"  # a Huffman table with one 1-bit code for 0
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + bytes([1] * 64))
        + segment(0xC0, struct.pack(">BHHB", 8, 8, 8, 1) + b"\x01\x11\x00")
        + segment(0xC4, b"\x00" + one_code)
        + segment(0xC4, b"\x10" + one_code)
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x3f"
        + b"\xff\xd9"
    )


PNG = _png()
JPEG = _jpeg()
PDF = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_order(name: str, user_id: str = "u-1", **fields: Any) -> dict[str, Any]:
    """An order as the order system sends it (API.md, Orders), under a fresh id: a delivered
    game card paid with Alipay, refundable for 30 more days, unless ``fields`` say otherwise."""
    now = datetime.now(UTC)
    order: dict[str, Any] = {
        "order_id": f"o-wf-{name}-{uuid.uuid4().hex[:10]}",
        "user_id": user_id,
        "kind": "virtual",
        "sku": "steam-100",
        "title": "Steam 100 点卡",
        "category": "game-card",
        "list_price": 10000,
        "paid_amount": 8800,
        "payment_channel": "alipay",
        "channel_trade_no": f"2026{uuid.uuid4().int % 10**12:012d}",
        "paid_at": utc(now - timedelta(days=2)),
        "refund_deadline": utc(now + timedelta(days=30)),
        "status": "delivered",
    }
    order.update(fields)
    return order


def sign(body: bytes, timestamp: int, secret: str = CHANNEL_SECRET) -> dict[str, str]:
    """The simulator's notification headers: hex HMAC-SHA256 of ``timestamp + "." + body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return {
        "Content-Type": "application/json",
        "X-Channel-Timestamp": str(timestamp),
        "X-Channel-Signature": digest.hexdigest(),
    }


def wait_until(
    read: Callable[[], T],
    done: Callable[[T], bool],
    what: str,
    deadline: float = DEADLINE,
    interval: float = 0.05,
) -> T:
    """Read until ``done`` holds, or fail after ``deadline`` seconds showing the last read."""
    end = time.monotonic() + deadline
    value = read()
    while not done(value):
        if time.monotonic() > end:
            raise AssertionError(f"after {deadline} s, still not {what}: {value!r}")
        time.sleep(interval)
        value = read()
    return value


@dataclass(frozen=True)
class Who:
    """A caller: a ``sub`` and its groups, with a bearer token minted for it."""

    sub: str
    groups: tuple[str, ...] = ()
    secret: str = LOCAL_DEFAULT_SECRET

    @property
    def headers(self) -> dict[str, str]:
        token = mint_token(self.secret, self.sub, self.groups, ttl_seconds=3600)
        return {"Authorization": f"Bearer {token}"}


USER_1 = Who("u-1")
USER_2 = Who("u-2")
AGENT_1 = Who("agent-1", ("cs-agent",))
AGENT_2 = Who("agent-2", ("cs-agent",))
SENIOR = Who("senior-1", ("cs-senior",))
ORDER_SYSTEM = Who("order-system", ("order-service",))


@dataclass
class Api:
    """The API at ``base``, used by ``user`` unless a call says otherwise; one HTTP session
    per thread."""

    base: str
    user: Who = USER_1
    _local: threading.local = field(default_factory=threading.local)

    def as_user(self, user: Who) -> Api:
        return Api(self.base, user)

    def order(self, name: str, **fields: Any) -> dict[str, Any]:
        """A fresh order of this client's user (see ``new_order``)."""
        return new_order(name, self.user.sub, **fields)

    @property
    def http(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def call(
        self,
        method: str,
        path: str,
        who: Who | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        **options: Any,
    ) -> requests.Response:
        sent = {**(who.headers if who else {}), **(headers or {})}
        if body is not None:
            options["data"] = json.dumps(body, ensure_ascii=False).encode()
            sent.setdefault("Content-Type", "application/json")
        return self.http.request(
            method, f"{self.base}{path}", headers=sent, timeout=TIMEOUT, **options
        )

    def ok(
        self, method: str, path: str, who: Who | None = None, body: Any = None, status: int = 200
    ) -> Any:
        answer = self.call(method, path, who, body)
        assert answer.status_code == status, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    # ------------------------------------------------------------------ orders

    def put_order(self, order: dict[str, Any]) -> dict[str, Any]:
        stored: dict[str, Any] = self.ok(
            "PUT", f"/internal/orders/{order['order_id']}", ORDER_SYSTEM, order
        )
        return stored

    def quote(self, order_id: str, who: Who | None = None, **params: str) -> requests.Response:
        return self.call("GET", f"/orders/{order_id}/refund-quote", who or self.user, params=params)

    # ------------------------------------------------------------------ refunds (app)

    def create_refund(
        self, order_id: str, reason: str, description: str, who: Who | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"order_id": order_id, "reason": reason, "description": description, **fields}
        answer = self.call(
            "POST",
            "/refunds",
            who or self.user,
            body,
            headers={"Idempotency-Key": uuid.uuid4().hex},
        )
        assert answer.status_code == 201, answer.text
        refund: dict[str, Any] = answer.json()
        return refund

    def slot(
        self, refund_id: str, kind: str, content_type: str, size: int, who: Who | None = None
    ) -> requests.Response:
        return self.call(
            "POST",
            f"/refunds/{refund_id}/evidence",
            who or self.user,
            {"kind": kind, "content_type": content_type, "size": size},
        )

    def upload(
        self,
        refund_id: str,
        kind: str,
        content: bytes,
        content_type: str,
        declared_size: int | None = None,
        who: Who | None = None,
    ) -> str:
        """Open a slot and post ``content`` to its presigned URL; the evidence id."""
        size = len(content) if declared_size is None else declared_size
        slot = self.slot(refund_id, kind, content_type, size, who)
        assert slot.status_code == 201, slot.text
        upload = slot.json()["upload"]
        posted = requests.post(
            upload["url"],
            data=upload["fields"],
            files={"file": ("evidence", content, content_type)},
            timeout=TIMEOUT,
        )
        assert posted.status_code in (200, 201, 204), posted.text
        evidence_id: str = slot.json()["evidence_id"]
        return evidence_id

    def refund(self, refund_id: str, who: Who | None = None) -> dict[str, Any]:
        refund: dict[str, Any] = self.ok("GET", f"/refunds/{refund_id}", who or self.user)
        return refund

    def submit(self, refund_id: str, who: Who | None = None) -> requests.Response:
        return self.call("POST", f"/refunds/{refund_id}/submit", who or self.user)

    def wait_status(
        self, refund_id: str, status: str, who: Who | None = None, deadline: float = DEADLINE
    ) -> dict[str, Any]:
        return wait_until(
            lambda: self.refund(refund_id, who),
            lambda refund: refund["status"] == status,
            f"{status} ({refund_id})",
            deadline,
        )

    # ------------------------------------------------------------------ console

    def detail(self, refund_id: str, who: Who = AGENT_1) -> dict[str, Any]:
        detail: dict[str, Any] = self.ok("GET", f"/admin/refunds/{refund_id}", who)
        return detail

    def decide(
        self, refund_id: str, action: str, who: Who = AGENT_1, body: Any = None
    ) -> requests.Response:
        return self.call("POST", f"/admin/refunds/{refund_id}/{action}", who, body)

    # ------------------------------------------------------------------ local stage

    def configure_channel(self, channel: str, **settings: float) -> dict[str, Any]:
        answer: dict[str, Any] = self.ok("PUT", f"/_local/channels/{channel}", body=settings)
        return answer

    def statement(self, channel: str, refund_id: str) -> list[dict[str, Any]]:
        """The entries of ``channel``'s statement for ``refund_id`` (its refund number)."""
        entries = self.ok("GET", f"/_local/channels/{channel}/statement")["entries"]
        return [entry for entry in entries if entry["refund_no"] == refund_id]
