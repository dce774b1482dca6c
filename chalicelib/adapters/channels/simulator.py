"""The PaymentGateway of the local stage: the channel simulator's simplified protocol (API.md).

Both directions are signed alike: ``X-Channel-Timestamp`` (Unix seconds, wall clock) and
``X-Channel-Signature``, the lowercase hex HMAC-SHA256 of ``timestamp + "." + raw body``
with the shared secret. The outcomes map onto the port's contract (P1, P2): a refusal before
anything was done is ChannelUnavailable, anything after which the money may have moved is
ChannelOutcomeUnknown, to be resolved by ``query`` with the same refund id.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from chalicelib.adapters.channels.http import (
    HttpAnswer,
    Transport,
    TransportTimeout,
    TransportUnreachable,
    Urllib3Transport,
)
from chalicelib.adapters.exceptions import InvalidNotification
from chalicelib.service.exceptions import ChannelOutcomeUnknown, ChannelUnavailable
from chalicelib.service.ports import PayoutRequest, PayoutResult, PayoutState, StatementEntry

__all__ = ["MAX_SKEW_SECONDS", "SimulatorControl", "SimulatorGateway", "sign"]

logger = logging.getLogger(__name__)

MAX_SKEW_SECONDS = 300
"""How far a signed timestamp may be from the receiver's wall clock (API.md)."""

TIMESTAMP_HEADER = "X-Channel-Timestamp"
SIGNATURE_HEADER = "X-Channel-Signature"

_ANSWER_STATES = {state.value: state for state in PayoutState}
_NOTIFIED_STATES = {PayoutState.SUCCESS.value, PayoutState.FAILED.value}


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature of ``body`` sent at ``timestamp``: lowercase hex HMAC-SHA256."""
    message = timestamp.encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def _wall_now() -> datetime:
    return datetime.now(UTC)


class SimulatorGateway:
    """One channel (``alipay`` or ``wechat``) of the simulator at ``base_url``.

    The transport is injectable so tests can drive every failure without a network; by
    default it is the urllib3 one, which never retries on its own (only the caller knows
    whether resending is safe).
    """

    def __init__(
        self,
        channel: str,
        base_url: str,
        secret: str,
        transport: Transport | None = None,
        wall_clock: Callable[[], datetime] = _wall_now,
        timeout_seconds: float = 2.0,
    ) -> None:
        self.channel = channel
        self._base_url = base_url.rstrip("/")
        self._secret = secret
        self._transport: Transport = transport if transport is not None else Urllib3Transport()
        self._wall_clock = wall_clock
        self._timeout = timeout_seconds

    # ------------------------------------------------------------------ calls

    def pay(self, request: PayoutRequest) -> PayoutResult:
        body = json.dumps(
            {
                "refund_id": request.refund_id,
                "order_id": request.order_id,
                "amount": request.amount,
                "channel_trade_no": request.channel_trade_no,
            },
            separators=(",", ":"),
        ).encode("utf-8")
        answer = self._call("POST", f"/{self.channel}/refunds", body, request.refund_id)
        if answer.status == 200:
            return self._result(answer, request.refund_id)
        if answer.status == 400:
            # The channel refused this request as it stands: resending it cannot succeed,
            # and nothing was paid.
            return PayoutResult(
                refund_id=request.refund_id,
                state=PayoutState.FAILED,
                detail=_detail(answer),
            )
        raise self._unexpected(answer, request.refund_id)

    def query(self, refund_id: str) -> PayoutResult | None:
        path = f"/{self.channel}/refunds/{quote(refund_id, safe='')}"
        answer = self._call("GET", path, b"", refund_id)
        if answer.status == 200:
            return self._result(answer, refund_id)
        if answer.status == 404:
            return None
        raise self._unexpected(answer, refund_id)

    def statement(self, day: date) -> list[StatementEntry]:
        """The channel's statement of one Beijing day (its daily bill), signed like a call."""
        path = f"/{self.channel}/statements/{day.isoformat()}"
        answer = self._call("GET", path, b"", f"statement {day.isoformat()}")
        if answer.status != 200:
            raise self._unexpected(answer, f"statement {day.isoformat()}")
        return _entries(json.loads(answer.body)["entries"])

    def _call(self, method: str, path: str, body: bytes, refund_id: str) -> HttpAnswer:
        timestamp = str(int(self._wall_clock().timestamp()))
        headers = {
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        if body:
            headers["Content-Type"] = "application/json"
        url = self._base_url + path
        try:
            return self._transport(method, url, headers, body or None, self._timeout)
        except TransportUnreachable as error:
            raise ChannelUnavailable(
                f"{self.channel} unreachable for refund {refund_id}: {error}"
            ) from error
        except TransportTimeout as error:
            # Sent, and no answer: the channel may have acted on it (P2).
            raise ChannelOutcomeUnknown(
                f"{self.channel} did not answer for refund {refund_id}: {error}"
            ) from error

    def _unexpected(self, answer: HttpAnswer, refund_id: str) -> Exception:
        """The error for an answer that is neither a result nor an expected refusal."""
        detail = _detail(answer)
        if answer.status == 503:
            return ChannelUnavailable(f"{self.channel} busy for refund {refund_id}: {detail}")
        if answer.status >= 500:
            return ChannelOutcomeUnknown(
                f"{self.channel} failed for refund {refund_id}: {answer.status} {detail}"
            )
        if answer.status == 401:
            # The channel's answer to our own credentials: a fault to fix, not an outcome to
            # retry or record.
            return RuntimeError(
                f"{self.channel} refused our signature (wrong secret or clock): {detail}"
            )
        return RuntimeError(
            f"{self.channel} answered {answer.status} for refund {refund_id}: {detail}"
        )

    def _result(self, answer: HttpAnswer, refund_id: str) -> PayoutResult:
        """A 200's refund state; an unreadable one says nothing final, so the outcome is open."""
        try:
            data = json.loads(answer.body)
            state = _ANSWER_STATES[data["status"]]
            amount = _amount(data.get("amount"))
            refund_no = data.get("channel_refund_no")
            if data["refund_id"] != refund_id or not isinstance(refund_no, str | None):
                raise ValueError("an answer about another refund")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ChannelOutcomeUnknown(
                f"{self.channel} answered 200 without a readable result for {refund_id}"
            ) from error
        return PayoutResult(
            refund_id=refund_id,
            state=state,
            amount=amount,
            channel_refund_no=refund_no,
            detail=f"{self.channel} {state.value}",
        )

    # ------------------------------------------------------------------ notifications

    def read_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> PayoutResult | None:
        """The simulator's notification, once its signature and age are checked.

        The signature is checked before the body is parsed: an unsigned body is never read.
        """
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
        signature = lowered.get(SIGNATURE_HEADER.lower(), "")
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise InvalidNotification("missing or malformed timestamp")
        if not signature.isascii() or not hmac.compare_digest(
            sign(self._secret, timestamp, body), signature.lower()
        ):
            raise InvalidNotification("missing or wrong signature")
        if abs(now.timestamp() - int(timestamp)) > MAX_SKEW_SECONDS:
            # A replay of a genuine notification is as signed as the original.
            raise InvalidNotification("stale notification")
        try:
            data = json.loads(body)
            refund_id = data["refund_id"]
            status = data["status"]
            refund_no = data.get("channel_refund_no")
            amount = _amount(data.get("amount"))
            if (
                not isinstance(refund_id, str)
                or not refund_id
                or status not in _NOTIFIED_STATES
                or not isinstance(refund_no, str | None)
            ):
                raise ValueError("not a payout notification")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InvalidNotification("malformed notification") from error
        return PayoutResult(
            refund_id=refund_id,
            state=PayoutState(status),
            amount=amount,
            channel_refund_no=refund_no,
            detail=f"{self.channel} notified {status}",
        )


def _amount(value: Any) -> int | None:
    """Fen as the channel wrote them; a bool or a fraction is no amount."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("amount is not a number")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError("amount is not whole fen")
    return int(value)


def _entries(entries: list[dict[str, Any]]) -> list[StatementEntry]:
    return [
        StatementEntry(
            refund_no=entry["refund_no"],
            amount=int(entry["amount"]),
            status=entry["status"],
            at=datetime.fromisoformat(entry["at"].replace("Z", "+00:00")),
        )
        for entry in entries
    ]


def _detail(answer: HttpAnswer) -> str:
    """The channel's own code and message, for the refund's history and CS."""
    try:
        data = json.loads(answer.body)
        return f"{data.get('code', '')}: {data.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return answer.body[:200].decode("utf-8", "replace")


class SimulatorControl:
    """The local stage's hold on the simulator: its fault settings and its statements
    (API.md, ``/_local/channels``). Unsigned: it speaks only to the same machine."""

    def __init__(
        self, base_url: str, transport: Transport | None = None, timeout_seconds: float = 5.0
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._transport = transport or Urllib3Transport()
        self._timeout = timeout_seconds

    def configure(self, channel: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """Change the given settings of ``channel``; the others keep their value."""
        body = json.dumps(dict(settings)).encode()
        return self._json("PUT", f"/_control/{quote(channel, safe='')}", body)

    def statement(self, channel: str) -> list[StatementEntry]:
        """The money ``channel`` moved, oldest first."""
        data = self._json("GET", f"/_control/{quote(channel, safe='')}/statement", b"")
        return _entries(data["entries"])

    def _json(self, method: str, path: str, body: bytes) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"} if body else {}
        answer = self._transport(method, self._base_url + path, headers, body, self._timeout)
        if answer.status != 200:
            raise RuntimeError(f"the channel simulator answered {answer.status} to {method} {path}")
        data: dict[str, Any] = json.loads(answer.body)
        return data
