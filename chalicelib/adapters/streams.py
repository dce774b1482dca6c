"""DynamoDB stream records of the orders and refunds tables, as the changes they were."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.model import Order, Refund
from chalicelib.service.ports import StoredChange

from .codec import load_order, load_refund

__all__ = ["stored_change"]


def stored_change(record: dict[str, Any]) -> StoredChange | None:
    """The change a stream record describes (NEW_AND_OLD_IMAGES); None for one of another
    table, or for a refund id's fence (an item with no document)."""
    stream = record["dynamodb"]
    keys = stream.get("Keys", {})
    if "refund_id" in keys:
        source = f"refunds#{keys['refund_id']['S']}"
        before: Order | Refund | None = _refund(stream.get("OldImage"))
        after: Order | Refund | None = _refund(stream.get("NewImage"))
    elif "order_id" in keys:
        source = f"orders#{keys['order_id']['S']}"
        before, after = _order(stream.get("OldImage")), _order(stream.get("NewImage"))
    else:
        return None
    if before is None and after is None:
        return None
    return StoredChange(source, stream["SequenceNumber"], before, after)


def _refund(image: dict[str, Any] | None) -> Refund | None:
    if not image or "doc" not in image:
        return None
    return load_refund(image["doc"]["S"], int(image.get("version", {}).get("N", "0")))


def _order(image: dict[str, Any] | None) -> Order | None:
    if not image or "doc" not in image:
        return None
    return load_order(image["doc"]["S"])
