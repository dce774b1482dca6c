"""Helpers for tests at every level: tokens, order payloads, JSON bodies."""

from __future__ import annotations

import json
from typing import Any

JWT_SECRET = "local-dev-secret-0123456789abcdef"


def bearer(sub: str, *groups: str, ttl_seconds: int = 3600) -> dict[str, str]:
    from infra.local.tokens import mint_token

    token = mint_token(JWT_SECRET, sub, groups, ttl_seconds=ttl_seconds)
    return {"Authorization": f"Bearer {token}"}


def order_payload(**overrides: Any) -> dict[str, Any]:
    """An order as the order system sends it: a paid, delivered game card by default."""
    payload: dict[str, Any] = {
        "order_id": "o-1001",
        "user_id": "u-1",
        "kind": "virtual",
        "sku": "steam-100",
        "title": "Steam 100",
        "category": "game-card",
        "list_price": 10000,
        "paid_amount": 8800,
        "payment_channel": "alipay",
        "channel_trade_no": "2026112022001",
        "paid_at": "2026-11-20T08:00:00Z",
        "refund_deadline": "2099-12-20T08:00:00Z",
        "status": "delivered",
    }
    payload.update(overrides)
    return payload


def as_json(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False).encode()
