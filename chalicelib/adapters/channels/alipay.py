"""Alipay refunds: ``alipay.trade.refund``, its query, and refunds on the payment notify URL.

What Alipay's documents say, and what follows here (DESIGN.md, "Payment channels"):

- The refund id is ``out_request_no``: resending it refunds nothing twice and answers
  ``fund_change=N`` (P2). So ``code=10000`` only means accepted, and only ``fund_change=Y``
  says the money moved; anything short of that is an unknown outcome, settled by a query.
- Requests and answers are signed RSA2 (SHA256withRSA, PKCS#1 v1.5). An answer is signed over
  the raw JSON text of its ``..._response`` member, so that text is cut from the body exactly
  as received, never re-serialised.
- The refund query needs the trade as well as the refund number, and the port's
  ``query(refund_id)`` has only the refund number: the adapter is given a ``trade_reference``
  that finds the trade of a refund id (the refund's order snapshot holds it).
- There is no refund notification: a refund arrives on the payment notify URL as a trade
  notification carrying ``refund_fee`` and ``out_biz_no`` (our ``out_request_no``). A
  handler reading only ``trade_status`` would take it for a payment.
- Amounts are yuan with exactly two decimals; here they are integer fen, converted through
  text and Decimal, never a float.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from chalicelib.adapters.channels.bills import BillUnreadable, alipay_refunds
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

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "ALIPAY_GATEWAY_URL",
    "BEIJING",
    "NOTIFICATION_MAX_AGE_SECONDS",
    "AlipayGateway",
    "AlipayTrade",
    "fen_to_yuan",
    "yuan_to_fen",
]

ALIPAY_GATEWAY_URL = "https://openapi.alipay.com/gateway.do"
BEIJING = timezone(timedelta(hours=8), "Asia/Shanghai")
"""Alipay's times are Beijing time; China keeps no daylight saving, so a fixed offset is exact
and needs no time zone database in the Lambda zip."""
NOTIFICATION_MAX_AGE_SECONDS = 300
MAX_REFUND_NO_LENGTH = 64
MAX_REASON_LENGTH = 256

REFUND_METHOD = "alipay.trade.refund"
REFUND_QUERY_METHOD = "alipay.trade.fastpay.refund.query"
BILL_METHOD = "alipay.data.dataservice.bill.downloadurl.query"
BILL_TYPE = "trade"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

ACCEPTED = "10000"
SERVICE_UNAVAILABLE = "20000"
BUSINESS_FAILED = "40004"
REFUSED_BEFORE_PROCESSING = frozenset({"20001", "40001", "40002", "40003", "40006"})
"""Gateway refusals (bad or missing parameters, bad signature or app id, no permission):
nothing was processed and the same request would be refused again."""
SYSTEM_ERROR = "ACQ.SYSTEM_ERROR"
TRADE_NOT_EXIST = "ACQ.TRADE_NOT_EXIST"
REFUND_SUCCESS = "REFUND_SUCCESS"
RETRY_LATER_STATUSES = frozenset({429, 503})
"""HTTP statuses that say the request was turned away unprocessed; any other non-200 may
come from a proxy that gave up on an Alipay still processing it."""

_FEN_PER_YUAN = 100
_TWO_PLACES = Decimal("0.01")
_DECODER = json.JSONDecoder()


@dataclass(frozen=True)
class AlipayTrade:
    """The Alipay trade a refund gives money back from.

    Alipay's own ``trade_no`` (the order's ``channel_trade_no``) when the order has it, else
    the platform's order id, which was the payment's ``out_trade_no``.
    """

    order_id: str
    channel_trade_no: str | None = None

    def biz_fields(self) -> dict[str, str]:
        """The ``biz_content`` fields naming the trade; Alipay takes one or the other."""
        if self.channel_trade_no:
            return {"trade_no": self.channel_trade_no}
        return {"out_trade_no": self.order_id}


@dataclass(frozen=True)
class _Answer:
    """The ``..._response`` member of an answer, and whether its signature was there to check."""

    fields: dict[str, Any]
    signed: bool

    def text(self, name: str) -> str:
        value = self.fields.get(name)
        return "" if value is None else str(value)

    @property
    def code(self) -> str:
        return self.text("code")

    @property
    def sub_code(self) -> str:
        return self.text("sub_code")

    @property
    def detail(self) -> str:
        if self.sub_code:
            return f"{self.sub_code} {self.text('sub_msg')}".strip()
        return f"{self.code} {self.text('msg')}".strip()


class AlipayGateway:
    """Refunds through Alipay's open API, in public-key mode (RSA2), as a PaymentGateway.

    Keys are PEM text or the bare base64 that Alipay's console and key tool hand out; they are
    parsed on first use, so building the gateway costs nothing on a cold start.

    ``trade_reference`` finds the trade of a refund id for ``query``: the refund's order
    snapshot holds it, as ``AlipayTrade(order.order_id, order.channel_trade_no)``. It may raise
    for a refund id it does not know; nothing is sent then.
    """

    def __init__(
        self,
        *,
        app_id: str,
        app_private_key: str,
        alipay_public_key: str,
        trade_reference: Callable[[str], AlipayTrade],
        wall_clock: Callable[[], datetime],
        transport: Transport | None = None,
        gateway_url: str = ALIPAY_GATEWAY_URL,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._app_id = app_id
        self._app_private_key_text = app_private_key
        self._alipay_public_key_text = alipay_public_key
        self._trade_reference = trade_reference
        self._transport: Transport = transport if transport is not None else Urllib3Transport()
        self._wall_clock = wall_clock
        self._gateway_url = gateway_url
        self._timeout_seconds = timeout_seconds

    @cached_property
    def _app_private_key(self) -> RSAPrivateKey:
        return _load_private_key(self._app_private_key_text)

    @cached_property
    def _alipay_public_key(self) -> RSAPublicKey:
        return _load_public_key(self._alipay_public_key_text)

    def pay(self, request: PayoutRequest) -> PayoutResult:
        """One ``alipay.trade.refund``, its ``out_request_no`` the refund id (P2)."""
        _check_refund_no(request.refund_id)
        trade = AlipayTrade(request.order_id, request.channel_trade_no)
        biz: dict[str, str] = {
            **trade.biz_fields(),
            "refund_amount": fen_to_yuan(request.amount),
            "out_request_no": request.refund_id,
        }
        if request.reason:
            biz["refund_reason"] = request.reason[:MAX_REASON_LENGTH]
        answer = self._call(REFUND_METHOD, biz)
        if answer.code == ACCEPTED:
            if not answer.signed:
                raise ChannelOutcomeUnknown(f"alipay: unsigned acceptance of {request.refund_id}")
            if answer.text("fund_change") != "Y":
                # Either a resend of a refund already made or one still being processed:
                # only the query can tell.
                raise ChannelOutcomeUnknown(
                    f"alipay: {request.refund_id} accepted with"
                    f" fund_change={answer.text('fund_change') or '(none)'}"
                )
            # ``refund_fee`` is the trade's refunded total, not this refund's: with
            # ``fund_change=Y`` Alipay moved exactly the ``refund_amount`` asked for.
            return PayoutResult(
                refund_id=request.refund_id,
                state=PayoutState.SUCCESS,
                amount=request.amount,
                detail=f"{ACCEPTED} fund_change=Y",
            )
        if _system_error(answer):
            raise ChannelOutcomeUnknown(f"alipay: {answer.detail}")
        if answer.code == BUSINESS_FAILED or answer.code in REFUSED_BEFORE_PROCESSING:
            return PayoutResult(
                refund_id=request.refund_id, state=PayoutState.FAILED, detail=answer.detail
            )
        raise ChannelOutcomeUnknown(f"alipay: unexpected answer {answer.detail}")

    def query(self, refund_id: str) -> PayoutResult | None:
        """``alipay.trade.fastpay.refund.query`` by the refund id and its trade.

        Alipay answers a refund it never received, or did not make, with no ``refund_status``:
        that is None, and the same request may be sent again.
        """
        _check_refund_no(refund_id)
        trade = self._trade_reference(refund_id)
        answer = self._call(
            REFUND_QUERY_METHOD, {**trade.biz_fields(), "out_request_no": refund_id}
        )
        if answer.code == BUSINESS_FAILED and answer.sub_code == TRADE_NOT_EXIST:
            return None
        if answer.code != ACCEPTED:
            raise ChannelOutcomeUnknown(f"alipay: refund query of {refund_id}: {answer.detail}")
        if not answer.signed:
            raise ChannelOutcomeUnknown(f"alipay: unsigned refund query answer for {refund_id}")
        echoed = answer.text("out_request_no")
        if echoed and echoed != refund_id:
            raise ChannelOutcomeUnknown(f"alipay: query for {refund_id} answered for {echoed}")
        status = answer.text("refund_status")
        refunded = answer.text("refund_amount")
        if status == REFUND_SUCCESS:
            return PayoutResult(
                refund_id=refund_id,
                state=PayoutState.SUCCESS,
                amount=_answer_fen(refunded),
                detail=REFUND_SUCCESS,
            )
        if not status and not refunded:
            return None
        # An amount without a status, or a status Alipay does not document: older versions
        # of the API meant success by the first, so neither is taken for "nothing".
        raise ChannelOutcomeUnknown(
            f"alipay: refund query of {refund_id}: refund_status={status or '(none)'}"
            f" refund_amount={refunded or '(none)'}"
        )

    def statement(self, day: date) -> list[StatementEntry]:
        """The refunds of the day's trade bill (Beijing day), from the download URL that
        ``alipay.data.dataservice.bill.downloadurl.query`` gives (ready T+1 after about
        09:00; before that Alipay answers ``isp.bill_not_exist``, and the run is retried)."""
        what = f"the bill of {day.isoformat()}"
        answer = self._call(BILL_METHOD, {"bill_type": BILL_TYPE, "bill_date": day.isoformat()})
        url = answer.text("bill_download_url")
        if answer.code != ACCEPTED or not answer.signed or not url:
            raise ChannelUnavailable(f"alipay: {what} is not available: {answer.detail}")
        try:
            download = self._transport("GET", url, {}, None, self._timeout_seconds)
        except (TransportUnreachable, TransportTimeout) as error:
            raise ChannelUnavailable(f"alipay: downloading {what}: {error}") from error
        if download.status != 200:
            raise ChannelUnavailable(f"alipay: downloading {what}: HTTP {download.status}")
        try:
            return alipay_refunds(download.body)
        except BillUnreadable as error:
            raise ChannelUnavailable(f"alipay: {what}: {error}") from error

    def read_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> PayoutResult | None:
        """A refund from a trade notification, once its RSA2 signature and age are checked.

        None for a notification about no refund (a payment, a trade closed unpaid). The
        trade's ``refund_fee`` is its refunded total over every refund so far, not this
        refund's amount, so the result carries no amount: the refund knows its own.
        """
        params = _form_params(body)
        signature = params.pop("sign", "")
        sign_type = params.pop("sign_type", "")
        if not signature:
            raise InvalidNotification("alipay notification without sign")
        if sign_type != "RSA2":
            raise InvalidNotification(f"alipay notification signed {sign_type or '(none)'}")
        # Notifications are signed over every parameter but sign and sign_type, empty or not.
        content = "&".join(f"{key}={params[key]}" for key in sorted(params))
        signed_bytes = content.encode(params.get("charset") or "utf-8")
        if not _verify(self._alipay_public_key, signed_bytes, signature):
            raise InvalidNotification("alipay notification signature does not verify")
        if params.get("app_id") != self._app_id:
            raise InvalidNotification("alipay notification for another app")
        notified_at = _beijing_time(params.get("notify_time", ""))
        if abs((_aware(now) - notified_at).total_seconds()) > NOTIFICATION_MAX_AGE_SECONDS:
            raise InvalidNotification("alipay notification is stale")
        refund_no = params.get("out_biz_no", "")
        refund_fee = params.get("refund_fee", "")
        if not refund_no or not refund_fee:
            return None
        try:
            yuan_to_fen(refund_fee)
        except ValueError as error:
            raise InvalidNotification(f"alipay notification refund_fee {refund_fee!r}") from error
        return PayoutResult(
            refund_id=refund_no,
            state=PayoutState.SUCCESS,
            detail=(
                f"{params.get('trade_status', '')} trade refunded total {refund_fee}"
                f" at {params.get('gmt_refund', '')}"
            ).strip(),
        )

    def _call(self, method: str, biz: dict[str, str]) -> _Answer:
        params = {
            "app_id": self._app_id,
            "method": method,
            "format": "JSON",
            "charset": "utf-8",
            "sign_type": "RSA2",
            "timestamp": _aware(self._wall_clock()).astimezone(BEIJING).strftime(TIME_FORMAT),
            "version": "1.0",
            "biz_content": json.dumps(biz, ensure_ascii=False, separators=(",", ":")),
        }
        params["sign"] = _sign(self._app_private_key, _request_sign_content(params))
        try:
            answer = self._transport(
                "POST",
                self._gateway_url,
                {
                    "Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
                    "Accept": "application/json",
                },
                urlencode(params).encode("ascii"),
                self._timeout_seconds,
            )
        except TransportUnreachable as error:
            raise ChannelUnavailable(f"alipay: {error}") from error
        except TransportTimeout as error:
            raise ChannelOutcomeUnknown(f"alipay: {method} got no answer: {error}") from error
        return self._read_answer(method, answer)

    def _read_answer(self, method: str, answer: HttpAnswer) -> _Answer:
        if answer.status in RETRY_LATER_STATUSES:
            raise ChannelUnavailable(f"alipay: HTTP {answer.status}")
        if answer.status != 200:
            raise ChannelOutcomeUnknown(f"alipay: HTTP {answer.status} to {method}")
        try:
            raw = answer.body.decode("utf-8")
            document = json.loads(raw)
        except ValueError as error:
            raise ChannelOutcomeUnknown(f"alipay: unreadable answer to {method}") from error
        if not isinstance(document, dict):
            raise ChannelOutcomeUnknown(f"alipay: unreadable answer to {method}")
        member = method.replace(".", "_") + "_response"
        if member not in document:
            member = "error_response"
        fields = document.get(member)
        if not isinstance(fields, dict):
            raise ChannelOutcomeUnknown(f"alipay: answer to {method} has no {member}")
        signature = document.get("sign")
        if not signature:
            # Alipay leaves unsigned only the answers it gives a request it could not
            # authenticate; such an answer is never taken as money moved.
            return _Answer(fields, signed=False)
        signed_text = _member_text(raw, member, fields)
        if signed_text is None or not _verify(
            self._alipay_public_key, signed_text.encode("utf-8"), str(signature)
        ):
            # An answer that does not verify is no answer: the money may have moved.
            raise ChannelOutcomeUnknown(f"alipay: answer to {method} fails its signature")
        return _Answer(fields, signed=True)


def fen_to_yuan(fen: int) -> str:
    """Integer fen as Alipay's yuan text with exactly two decimals: 8800 -> "88.00"."""
    if isinstance(fen, bool) or not isinstance(fen, int) or fen <= 0:
        raise ValueError(f"a refund amount must be a positive integer of fen, not {fen!r}")
    yuan, cents = divmod(fen, _FEN_PER_YUAN)
    return f"{yuan}.{cents:02d}"


def yuan_to_fen(text: str) -> int:
    """Alipay's yuan text as integer fen: "88.00" -> 8800; more than two decimals is refused."""
    try:
        amount = Decimal(text.strip())
        exact = amount.is_finite() and amount >= 0 and amount == amount.quantize(_TWO_PLACES)
    except InvalidOperation as error:
        raise ValueError(f"not an amount of yuan: {text!r}") from error
    if not exact:
        raise ValueError(f"not an amount of yuan with at most two decimals: {text!r}")
    return int(amount * _FEN_PER_YUAN)


def _answer_fen(text: str) -> int:
    try:
        return yuan_to_fen(text)
    except ValueError as error:
        raise ChannelOutcomeUnknown(f"alipay: unreadable amount {text!r}") from error


def _system_error(answer: _Answer) -> bool:
    # Alipay prefixes some sub codes with the gateway's name ("aop.ACQ.SYSTEM_ERROR").
    return answer.code == SERVICE_UNAVAILABLE or answer.sub_code.endswith(SYSTEM_ERROR)


def _check_refund_no(refund_id: str) -> None:
    if not refund_id or len(refund_id) > MAX_REFUND_NO_LENGTH:
        raise ValueError(f"out_request_no must be 1..{MAX_REFUND_NO_LENGTH} characters")


def _request_sign_content(params: Mapping[str, str]) -> str:
    """Requests are signed over the sorted non-empty parameters, ``sign`` excluded."""
    return "&".join(
        f"{key}={value}" for key, value in sorted(params.items()) if value and key != "sign"
    )


def _member_text(raw: str, member: str, fields: dict[str, Any]) -> str | None:
    """The exact text of the answer's ``member`` value, which is what Alipay signed."""
    for match in re.finditer(rf'"{re.escape(member)}"\s*:\s*', raw):
        try:
            value, end = _DECODER.raw_decode(raw, match.end())
        except ValueError:
            continue
        if value == fields:
            return raw[match.end() : end]
    return None


def _form_params(body: bytes) -> dict[str, str]:
    """A form-encoded notification's parameters, decoded in the charset it declares."""
    try:
        text = body.decode("ascii")
        declared = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1"))
        charset = declared.get("charset") or "utf-8"
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=True, encoding=charset, errors="strict"
        )
    except (UnicodeError, ValueError, LookupError) as error:
        raise InvalidNotification("alipay notification is not a form") from error
    params = dict(pairs)
    if len(params) != len(pairs):
        raise InvalidNotification("alipay notification repeats a parameter")
    return params


def _beijing_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=BEIJING)
    except ValueError as error:
        raise InvalidNotification(f"alipay notification notify_time {text!r}") from error


def _aware(moment: datetime) -> datetime:
    """The clocks give UTC; a naive time is taken as UTC rather than the host's zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sign(key: RSAPrivateKey, content: str) -> str:
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    return base64.b64encode(key.sign(content.encode("utf-8"), PKCS1v15(), SHA256())).decode()


def _verify(key: RSAPublicKey, content: bytes, signature: str) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    try:
        key.verify(base64.b64decode(signature, validate=True), content, PKCS1v15(), SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _key_der(text: str) -> bytes:
    return base64.b64decode("".join(text.split()), validate=True)


def _load_private_key(text: str) -> RSAPrivateKey:
    """An RSA private key from PEM, or from the bare base64 (PKCS#8 or PKCS#1) Alipay's tool
    writes."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import (
        load_der_private_key,
        load_pem_private_key,
    )

    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = load_pem_private_key(stripped.encode("ascii"), password=None)
    else:
        key = load_der_private_key(_key_der(stripped), password=None)
    if not isinstance(key, RSAPrivateKey):
        raise ValueError("the Alipay app private key must be an RSA key")
    return key


def _load_public_key(text: str) -> RSAPublicKey:
    """Alipay's RSA public key from PEM, or from the bare base64 its console shows."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import (
        load_der_public_key,
        load_pem_public_key,
    )

    stripped = text.strip()
    if stripped.startswith("-----BEGIN"):
        key = load_pem_public_key(stripped.encode("ascii"))
    else:
        key = load_der_public_key(_key_der(stripped))
    if not isinstance(key, RSAPublicKey):
        raise ValueError("the Alipay public key must be an RSA key")
    return key
