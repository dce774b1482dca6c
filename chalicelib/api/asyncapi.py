"""The AsyncAPI 3 document of the refund events, its schemas built from the same pydantic
model that the tests validate every delivered event against.

AsyncAPI rather than a section of the OpenAPI document: the events are not answers to a
request but messages on a bus, with a channel, a publisher and subscribers; AsyncAPI says
that in its own terms, and event tooling (catalogues, code generators) reads it.
"""

from __future__ import annotations

from typing import Any

from chalicelib.domain.model import RefundStatus

from .models import RefundEventOut

__all__ = ["build_asyncapi"]


def build_asyncapi(bus: str) -> dict[str, Any]:
    schema = RefundEventOut.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    definitions = schema.pop("$defs", {})
    kinds = [f"refund.{status.value}" for status in RefundStatus] + ["refund.escalated"]
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Refund events",
            "version": "1.0.0",
            "description": (
                "Every creation, status change and escalation of a refund, published from the "
                "stored change itself (an outbox: the refunds table's stream). Delivery is at "
                "least once; detail.event_id (refund id and version) is the same on every "
                "redelivery, so consumers drop duplicates by it; the events of one refund "
                "carry increasing versions."
            ),
        },
        "channels": {
            "refundEvents": {
                "address": bus,
                "description": "The EventBridge bus refunds-<stage>, source `refunds`.",
                "messages": {"refundEvent": {"$ref": "#/components/messages/refundEvent"}},
            }
        },
        "operations": {
            "publishRefundEvent": {
                "action": "send",
                "channel": {"$ref": "#/channels/refundEvents"},
                "messages": [{"$ref": "#/channels/refundEvents/messages/refundEvent"}],
            }
        },
        "components": {
            "messages": {
                "refundEvent": {
                    "name": "refundEvent",
                    "title": "A refund changed",
                    "summary": "detail-type is one of: " + ", ".join(kinds),
                    "contentType": "application/json",
                    "payload": {"$ref": "#/components/schemas/RefundEventOut"},
                }
            },
            "schemas": {**definitions, "RefundEventOut": schema},
        },
    }
