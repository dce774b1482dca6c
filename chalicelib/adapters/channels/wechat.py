"""WeChat Pay API v3 refunds: the refund request, its query, and REFUND.* notifications.

What WeChat Pay's documents say, and what follows here (DESIGN.md, "Payment channels"):

- ``POST /v3/refund/domestic/refunds`` takes the refund id as ``out_refund_no``: after
  ``SYSTEM_ERROR`` or a timeout the refund may have happened, and only a query or the
  identical request with the same number settles it (P2).
- HTTP 200 only means accepted: the answer's ``status`` says whether the money moved.
- Requests carry a ``WECHATPAY2-SHA256-RSA2048`` Authorization signed with the merchant key;
  answers and notifications are signed with the platform key over
  ``timestamp\\nnonce\\nbody\\n``, the body's raw bytes. An answer that does not verify is no
  answer at all.
- Notifications are refused when their timestamp is over 300 s from now (several SDKs forget
  this), and their ``resource`` is AEAD_AES_256_GCM-encrypted with the APIv3 key. WeChat
  retries them for about 24 hours, so duplicates are normal: the caller handles them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from chalicelib.adapters.channels.bills import BillUnreadable, wechat_refunds
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
    "AUTH_SCHEME",
    "NOTIFICATION_MAX_AGE_SECONDS",
    "REFUNDS_PATH",
    "WECHATPAY_BASE_URL",
    "WeChatPayGateway",
    "new_nonce",
]

WECHATPAY_BASE_URL = "https://api.mch.weixin.qq.com"
REFUNDS_PATH = "/v3/refund/domestic/refunds"
BILL_PATH = "/v3/bill/tradebill"
AUTH_SCHEME = "WECHATPAY2-SHA256-RSA2048"
NOTIFICATION_MAX_AGE_SECONDS = 300
APIV3_KEY_BYTES = 32
MAX_REFUND_NO_LENGTH = 64
MAX_REASON_LENGTH = 80
CURRENCY = "CNY"
AEAD_ALGORITHM = "AEAD_AES_256_GCM"

TIMESTAMP_HEADER = "Wechatpay-Timestamp"
NONCE_HEADER = "Wechatpay-Nonce"
SIGNATURE_HEADER = "Wechatpay-Signature"
SERIAL_HEADER = "Wechatpay-Serial"
SIGNATURE_TYPE_HEADER = "Wechatpay-Signature-Type"

_STATES = {
    "SUCCESS": PayoutState.SUCCESS,
    "PROCESSING": PayoutState.PROCESSING,
    "CLOSED": PayoutState.FAILED,
    "ABNORMAL": PayoutState.FAILED,
}
_SYSTEM_ERRORS = frozenset({"SYSTEM_ERROR", "SYSTEMERROR"})
"""The v3 documents spell it SYSTEM_ERROR, v2 and some answers SYSTEMERROR."""
_FREQUENCY_LIMITED = "FREQUENCY_LIMITED"
_RESOURCE_NOT_EXISTS = "RESOURCE_NOT_EXISTS"
_NO_STATEMENT = "NO_STATEMENT_EXIST"
"""No bill for a day without a single trade or refund: an empty statement."""
_RETRY_LATER_STATUSES = frozenset({429, 503})
"""HTTP statuses that say the request was turned away unprocessed; any other 5xx may come
after WeChat or a proxy in front of it had started on it."""


def new_nonce() -> str:
    """32 random hex characters: the longest ``nonce_str`` WeChat Pay accepts."""
    return secrets.token_hex(16)


class WeChatPayGateway:
    """Refunds through WeChat Pay API v3 for one merchant (``mchid``), as a PaymentGateway.

    Answers and notifications are checked against one platform public key, the one whose id
    (``platform_serial_no``: a ``PUB_KEY_ID_...`` or a platform certificate's serial) they
    name in ``Wechatpay-Serial``. Keys are parsed on first use, so building the gateway costs
    nothing on a cold start.
    """

    def __init__(
        self,
        *,
        mchid: str,
        merchant_serial_no: str,
        merchant_private_key: str,
        platform_serial_no: str,
        platform_public_key: str,
        apiv3_key: str,
        wall_clock: Callable[[], datetime],
        transport: Transport | None = None,
        nonce: Callable[[], str] = new_nonce,
        base_url: str = WECHATPAY_BASE_URL,
        notify_url: str | None = None,
        timeout_seconds: float = 10.0,
        user_agent: str = "refunds-backend",
    ) -> None:
        self._apiv3_key = apiv3_key.encode("utf-8")
        if len(self._apiv3_key) != APIV3_KEY_BYTES:
            raise ValueError(f"the WeChat Pay APIv3 key must be {APIV3_KEY_BYTES} bytes")
        self._mchid = mchid
        self._merchant_serial_no = merchant_serial_no
        self._merchant_private_key_pem = merchant_private_key
        self._platform_serial_no = platform_serial_no
        self._platform_public_key_pem = platform_public_key
        self._wall_clock = wall_clock
        self._transport: Transport = transport if transport is not None else Urllib3Transport()
        self._nonce = nonce
        self._base_url = base_url.rstrip("/")
        self._notify_url = notify_url
        self._timeout_seconds = timeout_seconds
        self._user_agent = user_agent

    @cached_property
    def _merchant_private_key(self) -> RSAPrivateKey:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self._merchant_private_key_pem.encode("ascii"), password=None)
        if not isinstance(key, RSAPrivateKey):
            raise ValueError("the WeChat Pay merchant private key must be an RSA key")
        return key

    @cached_property
    def _platform_public_key(self) -> RSAPublicKey:
        from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        key = load_pem_public_key(self._platform_public_key_pem.encode("ascii"))
        if not isinstance(key, RSAPublicKey):
            raise ValueError("the WeChat Pay platform public key must be an RSA key")
        return key

    def pay(self, request: PayoutRequest) -> PayoutResult:
        """One refund request, its ``out_refund_no`` the refund id (P2)."""
        _check_refund_no(request.refund_id)
        if request.amount <= 0 or request.amount > request.order_total:
            raise ValueError("a refund amount must be positive and at most the order's total")
        body: dict[str, Any] = {"out_refund_no": request.refund_id}
        if request.channel_trade_no:
            body["transaction_id"] = request.channel_trade_no
        else:
            body["out_trade_no"] = request.order_id
        if request.reason:
            body["reason"] = request.reason[:MAX_REASON_LENGTH]
        if self._notify_url:
            body["notify_url"] = self._notify_url
        body["amount"] = {
            "refund": request.amount,
            "total": request.order_total,
            "currency": CURRENCY,
        }
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        answer = self._call("POST", REFUNDS_PATH, raw)
        if answer.status == 200:
            return self._refund_result(answer, request.refund_id)
        code, message = _error(answer)
        self._refuse_retryable(answer, code, f"refund {request.refund_id}")
        if 400 <= answer.status < 500 and code:
            return PayoutResult(
                refund_id=request.refund_id,
                state=PayoutState.FAILED,
                detail=f"{code} {message}".strip(),
            )
        raise ChannelOutcomeUnknown(
            f"wechat: refund {request.refund_id}: HTTP {answer.status} {code}".strip()
        )

    def query(self, refund_id: str) -> PayoutResult | None:
        """``GET /v3/refund/domestic/refunds/{out_refund_no}``; None when WeChat has no such
        refund (404 ``RESOURCE_NOT_EXISTS``), so that the same request may be sent again."""
        _check_refund_no(refund_id)
        answer = self._call("GET", f"{REFUNDS_PATH}/{quote(refund_id, safe='')}", b"")
        if answer.status == 200:
            return self._refund_result(answer, refund_id)
        code, _message = _error(answer)
        if answer.status == 404 and code == _RESOURCE_NOT_EXISTS:
            return None
        self._refuse_retryable(answer, code, f"refund query of {refund_id}")
        raise ChannelOutcomeUnknown(
            f"wechat: refund query of {refund_id}: HTTP {answer.status} {code}".strip()
        )

    def statement(self, day: date) -> list[StatementEntry]:
        """The refunds of the day's refund bill (``GET /v3/bill/tradebill``, ``REFUND``):
        the bill's answer is signed and names the file's SHA1; the file itself comes
        unsigned from its download URL, so its hash is what vouches for it."""
        what = f"the refund bill of {day.isoformat()}"
        query = urlencode({"bill_date": day.isoformat(), "bill_type": "REFUND"})
        answer = self._call("GET", f"{BILL_PATH}?{query}", b"")
        if answer.status != 200:
            code, message = _error(answer)
            # "No bill" says no money moved that day: taken only from WeChat itself (_call
            # has verified any signature), since an empty statement would hide a refund
            # paid twice.
            if code == _NO_STATEMENT and answer.header(SIGNATURE_HEADER) is not None:
                return []
            raise ChannelUnavailable(f"wechat: {what}: HTTP {answer.status} {code} {message}")
        bill = _json_object(answer.body, "wechat bill answer", unknown=True)
        url, hash_type, hash_value = (
            str(bill.get(name, "")) for name in ("download_url", "hash_type", "hash_value")
        )
        parts = urlsplit(url)
        if hash_type != "SHA1" or not hash_value or parts.scheme != "https":
            raise ChannelUnavailable(f"wechat: {what}: no download URL and SHA1 in the answer")
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        download = self._send("GET", f"{parts.scheme}://{parts.netloc}", path, b"")
        if download.status != 200:
            raise ChannelUnavailable(f"wechat: downloading {what}: HTTP {download.status}")
        if not hmac.compare_digest(
            hashlib.sha1(download.body, usedforsecurity=False).hexdigest(), hash_value.lower()
        ):
            raise ChannelUnavailable(f"wechat: {what} does not match its SHA1")
        try:
            return wechat_refunds(download.body.decode("utf-8"))
        except (UnicodeDecodeError, BillUnreadable) as error:
            raise ChannelUnavailable(f"wechat: {what}: {error}") from error

    def read_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> PayoutResult | None:
        """A REFUND.* notification, once its signature, age and encryption are checked.

        None for a verified notification about something else (a payment's on a shared URL).
        """
        named = {key.lower(): value for key, value in headers.items()}
        timestamp = named.get(TIMESTAMP_HEADER.lower(), "")
        nonce = named.get(NONCE_HEADER.lower(), "")
        signature = named.get(SIGNATURE_HEADER.lower(), "")
        serial = named.get(SERIAL_HEADER.lower(), "")
        signature_type = named.get(SIGNATURE_TYPE_HEADER.lower(), AUTH_SCHEME)
        if not (timestamp and nonce and signature and serial):
            raise InvalidNotification("wechat notification without its signature headers")
        if signature_type != AUTH_SCHEME or serial.upper() != self._platform_serial_no.upper():
            raise InvalidNotification("wechat notification signed with an unknown key")
        if not self._verify(timestamp, nonce, body, signature):
            raise InvalidNotification("wechat notification signature does not verify")
        try:
            sent_at = int(timestamp)
        except ValueError as error:
            raise InvalidNotification("wechat notification timestamp is not a number") from error
        if abs(_aware(now).timestamp() - sent_at) > NOTIFICATION_MAX_AGE_SECONDS:
            raise InvalidNotification("wechat notification is stale")
        envelope = _json_object(body, "wechat notification")
        event_type = str(envelope.get("event_type", ""))
        if not event_type.startswith("REFUND."):
            return None
        refund = self._decrypt(envelope.get("resource"))
        if refund.get("mchid", self._mchid) != self._mchid:
            raise InvalidNotification("wechat notification for another merchant")
        refund_no = refund.get("out_refund_no")
        state = _STATES.get(str(refund.get("refund_status", "")))
        amount = _refund_amount(refund)
        if not isinstance(refund_no, str) or not refund_no or state is None or amount is None:
            raise InvalidNotification("wechat notification without a refund's number or state")
        channel_refund_no = refund.get("refund_id")
        return PayoutResult(
            refund_id=refund_no,
            state=state,
            amount=amount,
            channel_refund_no=str(channel_refund_no) if channel_refund_no else None,
            detail=f"{event_type} {refund.get('refund_status')}",
        )

    def _call(self, method: str, path: str, body: bytes) -> HttpAnswer:
        """One signed request; every answer that carries a signature has it checked here."""
        answer = self._send(method, self._base_url, path, body)
        answer_signature = answer.header(SIGNATURE_HEADER)
        if answer_signature is None:
            if answer.status < 300:
                # Only an answer that says what happened to money needs to be WeChat's own;
                # WeChat leaves unsigned the errors of a request it could not authenticate.
                raise ChannelOutcomeUnknown(f"wechat: unsigned answer to {method} {path}")
            return answer
        if (answer.header(SERIAL_HEADER) or "").upper() != self._platform_serial_no.upper() or (
            not self._verify(
                answer.header(TIMESTAMP_HEADER) or "",
                answer.header(NONCE_HEADER) or "",
                answer.body,
                answer_signature,
            )
        ):
            raise ChannelOutcomeUnknown(f"wechat: answer to {method} {path} fails its signature")
        return answer

    def _send(self, method: str, base_url: str, path: str, body: bytes) -> HttpAnswer:
        """One request signed with the merchant key, its answer as received."""
        timestamp = str(int(_aware(self._wall_clock()).timestamp()))
        nonce = self._nonce()
        message = f"{method}\n{path}\n{timestamp}\n{nonce}\n".encode() + body + b"\n"
        signature = _sign(self._merchant_private_key, message)
        headers = {
            "Authorization": (
                f'{AUTH_SCHEME} mchid="{self._mchid}",nonce_str="{nonce}",'
                f'signature="{signature}",timestamp="{timestamp}",'
                f'serial_no="{self._merchant_serial_no}"'
            ),
            "Accept": "application/json",
            "User-Agent": self._user_agent,
            # Asks WeChat to sign its answer with the platform key this gateway holds.
            SERIAL_HEADER: self._platform_serial_no,
        }
        if body:
            headers["Content-Type"] = "application/json"
        try:
            return self._transport(
                method, base_url + path, headers, body or None, self._timeout_seconds
            )
        except TransportUnreachable as error:
            raise ChannelUnavailable(f"wechat: {error}") from error
        except TransportTimeout as error:
            raise ChannelOutcomeUnknown(
                f"wechat: {method} {path} got no answer: {error}"
            ) from error

    def _refund_result(self, answer: HttpAnswer, refund_id: str) -> PayoutResult:
        refund = _json_object(answer.body, "wechat answer", unknown=True)
        if refund.get("out_refund_no") != refund_id:
            raise ChannelOutcomeUnknown(f"wechat: answer for {refund_id} names another refund")
        status = str(refund.get("status", ""))
        state = _STATES.get(status)
        if state is None:
            raise ChannelOutcomeUnknown(f"wechat: refund {refund_id} in status {status!r}")
        channel_refund_no = refund.get("refund_id")
        return PayoutResult(
            refund_id=refund_id,
            state=state,
            amount=_refund_amount(refund),
            channel_refund_no=str(channel_refund_no) if channel_refund_no else None,
            detail=status,
        )

    @staticmethod
    def _refuse_retryable(answer: HttpAnswer, code: str, what: str) -> None:
        if code in _SYSTEM_ERRORS:
            raise ChannelOutcomeUnknown(f"wechat: {what}: {code}")
        if code == _FREQUENCY_LIMITED or answer.status in _RETRY_LATER_STATUSES:
            raise ChannelUnavailable(f"wechat: {what}: HTTP {answer.status} {code}".strip())

    def _verify(self, timestamp: str, nonce: str, body: bytes, signature: str) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from cryptography.hazmat.primitives.hashes import SHA256

        message = f"{timestamp}\n{nonce}\n".encode() + body + b"\n"
        try:
            self._platform_public_key.verify(
                base64.b64decode(signature, validate=True), message, PKCS1v15(), SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _decrypt(self, resource: object) -> dict[str, Any]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not isinstance(resource, dict) or resource.get("algorithm") != AEAD_ALGORITHM:
            raise InvalidNotification("wechat notification without an AEAD_AES_256_GCM resource")
        try:
            plaintext = AESGCM(self._apiv3_key).decrypt(
                str(resource["nonce"]).encode("utf-8"),
                base64.b64decode(str(resource["ciphertext"]), validate=True),
                str(resource.get("associated_data") or "").encode("utf-8"),
            )
        except (KeyError, ValueError, InvalidTag) as error:
            raise InvalidNotification("wechat notification resource does not decrypt") from error
        return _json_object(plaintext, "wechat notification resource")


def _check_refund_no(refund_id: str) -> None:
    if not refund_id or len(refund_id) > MAX_REFUND_NO_LENGTH:
        raise ValueError(f"out_refund_no must be 1..{MAX_REFUND_NO_LENGTH} characters")


def _json_object(raw: bytes, what: str, *, unknown: bool = False) -> dict[str, Any]:
    """``raw`` as a JSON object; unreadable is an unknown outcome for an answer (``unknown``),
    an invalid notification otherwise."""
    try:
        document = json.loads(raw.decode("utf-8"))
    except ValueError:
        document = None
    if isinstance(document, dict):
        return document
    if unknown:
        raise ChannelOutcomeUnknown(f"{what} is not a JSON object")
    raise InvalidNotification(f"{what} is not a JSON object")


def _error(answer: HttpAnswer) -> tuple[str, str]:
    """The error answer's ``code`` and ``message``; empty when it has none (a proxy's page)."""
    try:
        document = json.loads(answer.body.decode("utf-8"))
    except ValueError:
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    return str(document.get("code") or ""), str(document.get("message") or "")


def _refund_amount(refund: Mapping[str, Any]) -> int | None:
    amount = refund.get("amount")
    refunded = amount.get("refund") if isinstance(amount, dict) else None
    if isinstance(refunded, bool) or not isinstance(refunded, int):
        return None
    return refunded


def _aware(moment: datetime) -> datetime:
    """The clocks give UTC; a naive time is taken as UTC rather than the host's zone."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _sign(key: RSAPrivateKey, message: bytes) -> str:
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA256

    return base64.b64encode(key.sign(message, PKCS1v15(), SHA256())).decode("ascii")
