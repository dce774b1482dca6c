"""Payment channels' asynchronous results (API.md, "Payment channels").

The channel's own signature stands in for a token, and it is checked before anything of the
body is read; an unsigned, wrongly signed or stale notification changes nothing (401).
Accepted, duplicate and unknown-refund notifications all answer 200, so that the channel
stops sending them.
"""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.http import Access, Call, Router
from chalicelib.api.models import WebhookAckOut
from chalicelib.bootstrap import get_ports, get_verifier
from chalicelib.domain.model import PaymentChannel
from chalicelib.service import payout
from chalicelib.service.exceptions import NotFound

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)
api = Router(blueprint, get_verifier)

NOTIFYING_CHANNELS = frozenset({PaymentChannel.ALIPAY.value, PaymentChannel.WECHAT.value})


@api.route(
    "/webhooks/payouts/{channel}",
    "POST",
    access=Access.CHANNEL,
    raw_body=True,
    response=WebhookAckOut,
    errors=(401,),
    summary="A payment channel's asynchronous payout result, signed by the channel",
)
def payout_notification(call: Call, channel: str) -> WebhookAckOut:
    if channel not in NOTIFYING_CHANNELS:
        raise NotFound("payment channel", channel)
    ports = get_ports()
    gateway = ports.gateways[PaymentChannel(channel)]
    result = gateway.read_notification(call.headers, call.raw_body, ports.clock.wall_now())
    if result is not None:
        payout.accept_notification(ports, result)
    return WebhookAckOut(received=True)
