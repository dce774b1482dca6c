"""The WeChat Pay gateway against WeChat Pay API v3 as its documents describe it (P1, P2).

A fake WeChat Pay checks every request's ``WECHATPAY2-SHA256-RSA2048`` Authorization with the
merchant's public key (the check is written here, apart from the adapter's code) and answers
with what each test queues, signed with a test platform key. The maintained client
``wechatpayv3`` is the second opinion: it computes the same Authorization, sends the same
refund, accepts the fake's signed answers, signs the notifications the gateway reads and
decrypts them as the gateway does. The last tests run the gateway through the real urllib3
transport against a stand-in WeChat Pay on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import wechatpayv3.core
import wechatpayv3.utils
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from requests.structures import CaseInsensitiveDict
from wechatpayv3 import WeChatPay, WeChatPayType

from chalicelib.adapters.channels.http import (
    HttpAnswer,
    TransportTimeout,
    TransportUnreachable,
    Urllib3Transport,
)
from chalicelib.adapters.channels.wechat import WECHATPAY_BASE_URL, WeChatPayGateway
from chalicelib.adapters.exceptions import InvalidNotification
from chalicelib.service.exceptions import ChannelOutcomeUnknown, ChannelUnavailable
from chalicelib.service.ports import PayoutRequest, PayoutState
from tests.integration.test_channel_bills import EXPECTED_WECHAT, WECHAT_REFUNDS, wechat_bill

MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
MERCHANT_SERIAL = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
PLATFORM_SERIAL = "PUB_KEY_ID_0119000001092026112000000000000001"
APIV3_KEY = "a12d3924fd499edac8a5efc2b1c4d7e9"
OTHER_APIV3_KEY = "0123456789abcdef0123456789abcdef"
ORDER_ID = "o-1001"
TRANSACTION_ID = "4200001234202611200123456789"
REFUND_ID = "rf_01JD5Z8Q4K7T9M2X3V6B8N0P1R"
WECHAT_REFUND_ID = "50000000382026112009732678859"
NOW = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
NOW_SECONDS = str(int(NOW.timestamp()))
NONCE = "593BEC0C930BF1AFEB40B4A08C8FB242"
SCHEME = "WECHATPAY2-SHA256-RSA2048"
REFUNDS_PATH = "/v3/refund/domestic/refunds"


# ---------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyPair:
    private: rsa.RSAPrivateKey

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    @property
    def private_pem(self) -> str:
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self.private.sign(message, padding.PKCS1v15(), SHA256())).decode()


@dataclass(frozen=True)
class Keys:
    merchant: KeyPair
    """The merchant's API key pair: the merchant signs requests, WeChat holds the public half."""
    platform: KeyPair
    """WeChat Pay's platform key pair: it signs answers and notifications."""
    stranger: KeyPair


def _new_key() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(merchant=_new_key(), platform=_new_key(), stranger=_new_key())


# ---------------------------------------------------------------- the fake WeChat Pay


@dataclass
class Sent:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    authorization: dict[str, str]


def check_request(
    keys: Keys,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    *,
    timestamp: str | None = NOW_SECONDS,
    nonce: str | None = NONCE,
    base_url: str = WECHATPAY_BASE_URL,
) -> Sent:
    """What WeChat Pay checks of a request, written from its documents: the Authorization
    scheme and fields, and the signature over METHOD, path, timestamp, nonce and body."""
    split = urlsplit(url)
    assert f"{split.scheme}://{split.netloc}" == base_url
    path = split.path + (f"?{split.query}" if split.query else "")
    named = {key.lower(): value for key, value in headers.items()}
    scheme, _, parameters = named["authorization"].partition(" ")
    assert scheme == SCHEME
    authorization = dict(re.findall(r'(\w+)="([^"]*)"', parameters))
    assert set(authorization) == {"mchid", "nonce_str", "signature", "timestamp", "serial_no"}
    assert authorization["mchid"] == MCHID
    assert authorization["serial_no"] == MERCHANT_SERIAL
    if timestamp is not None:
        assert authorization["timestamp"] == timestamp
    if nonce is not None:
        assert authorization["nonce_str"] == nonce
    message = (
        f"{method}\n{path}\n{authorization['timestamp']}\n{authorization['nonce_str']}\n".encode()
        + (body or b"")
        + b"\n"
    )
    keys.merchant.public.verify(
        base64.b64decode(authorization["signature"]), message, padding.PKCS1v15(), SHA256()
    )
    assert named["accept"] == "application/json"
    assert named["user-agent"]
    if body:
        assert named["content-type"] == "application/json"
    return Sent(method, path, dict(headers), json.loads(body) if body else None, authorization)


def signed_answer(
    keys: Keys,
    status: int,
    document: Mapping[str, Any] | None,
    *,
    signer: KeyPair | None = None,
    serial: str = PLATFORM_SERIAL,
    signed: bool = True,
) -> HttpAnswer:
    """An answer as WeChat Pay writes it, signed over ``timestamp\\nnonce\\nbody\\n``."""
    body = b"" if document is None else json.dumps(document, ensure_ascii=False).encode()
    headers = {"Content-Type": "application/json; charset=utf-8", "Request-ID": "08F0F6C6E1"}
    if signed:
        nonce = "answer-nonce-0001"
        signature = (signer or keys.platform).sign(
            f"{NOW_SECONDS}\n{nonce}\n".encode() + body + b"\n"
        )
        headers |= {
            "Wechatpay-Timestamp": NOW_SECONDS,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": signature,
            "Wechatpay-Serial": serial,
            "Wechatpay-Signature-Type": SCHEME,
        }
    return HttpAnswer(status=status, headers=headers, body=body)


def refund_document(status: str = "SUCCESS", refund: int = 8800, **changes: Any) -> dict[str, Any]:
    """WeChat Pay's documented answer to a refund or its query."""
    document: dict[str, Any] = {
        "refund_id": WECHAT_REFUND_ID,
        "out_refund_no": REFUND_ID,
        "transaction_id": TRANSACTION_ID,
        "out_trade_no": ORDER_ID,
        "channel": "ORIGINAL",
        "user_received_account": "招商银行信用卡0403",
        "success_time": "2026-11-20T16:00:01+08:00",
        "create_time": "2026-11-20T16:00:00+08:00",
        "status": status,
        "funds_account": "AVAILABLE",
        "amount": {
            "total": 10000,
            "refund": refund,
            "payer_total": 10000,
            "payer_refund": refund,
            "settlement_refund": refund,
            "settlement_total": 10000,
            "discount_refund": 0,
            "currency": "CNY",
        },
    }
    document.update(changes)
    return document


def error_document(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


@dataclass
class FakeWeChatPay:
    keys: Keys
    answers: list[HttpAnswer | Exception] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)

    def __call__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpAnswer:
        assert 0 < timeout <= 30
        self.sent.append(check_request(self.keys, method, url, headers, body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def answer(self, *answers: HttpAnswer | Exception) -> None:
        self.answers.extend(answers)

    @property
    def last(self) -> Sent:
        return self.sent[-1]


# ---------------------------------------------------------------- the gateway under test


@pytest.fixture
def channel(keys: Keys) -> Iterator[FakeWeChatPay]:
    fake = FakeWeChatPay(keys)
    yield fake
    assert not fake.answers, "an answer was queued and never asked for"


def build_gateway(keys: Keys, transport: Any, **changes: Any) -> WeChatPayGateway:
    settings: dict[str, Any] = {
        "mchid": MCHID,
        "merchant_serial_no": MERCHANT_SERIAL,
        "merchant_private_key": keys.merchant.private_pem,
        "platform_serial_no": PLATFORM_SERIAL,
        "platform_public_key": keys.platform.public_pem,
        "apiv3_key": APIV3_KEY,
        "wall_clock": lambda: NOW,
        "transport": transport,
        "nonce": lambda: NONCE,
    }
    settings.update(changes)
    return WeChatPayGateway(**settings)


@pytest.fixture
def gateway(keys: Keys, channel: FakeWeChatPay) -> WeChatPayGateway:
    return build_gateway(keys, channel)


def payout(
    amount: int = 8800, trade_no: str | None = TRANSACTION_ID, refund_id: str = REFUND_ID
) -> PayoutRequest:
    return PayoutRequest(
        refund_id=refund_id,
        order_id=ORDER_ID,
        channel_trade_no=trade_no,
        amount=amount,
        order_total=123456789,
        reason="兑换码无效",
    )


# ---------------------------------------------------------------- pay: the request


def test_a_refund_is_one_signed_post_keyed_by_the_refund_id(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN an order paid with WeChat Pay, and WeChat moving the money at once
    channel.answer(signed_answer(channel.keys, 200, refund_document("SUCCESS")))
    # WHEN 88.00 yuan (8800 fen) of it is paid back
    result = gateway.pay(payout(8800))
    # THEN one signed POST went out, its out_refund_no the refund id (P2), amounts in fen
    sent = channel.last
    assert (sent.method, sent.path) == ("POST", REFUNDS_PATH)
    assert sent.body == {
        "out_refund_no": REFUND_ID,
        "transaction_id": TRANSACTION_ID,
        "reason": "兑换码无效",
        "amount": {"refund": 8800, "total": 123456789, "currency": "CNY"},
    }
    # AND it asked for answers signed with the platform key it holds
    assert sent.headers["Wechatpay-Serial"] == PLATFORM_SERIAL
    # AND SUCCESS is the money moved
    assert result.state is PayoutState.SUCCESS
    assert result.refund_id == REFUND_ID
    assert result.amount == 8800
    assert result.channel_refund_no == WECHAT_REFUND_ID


def test_an_order_without_transaction_id_is_named_by_the_order_id(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    channel.answer(signed_answer(channel.keys, 200, refund_document("PROCESSING")))
    gateway.pay(payout(trade_no=None))
    assert channel.last.body is not None
    assert channel.last.body["out_trade_no"] == ORDER_ID
    assert "transaction_id" not in channel.last.body


@pytest.mark.parametrize("fen", [1, 8800, 123456789])
def test_amounts_are_sent_and_read_as_integer_fen(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, fen: int
) -> None:
    # GIVEN amounts from one fen to over a million yuan
    channel.answer(signed_answer(channel.keys, 200, refund_document("SUCCESS", refund=fen)))
    # WHEN paid back
    result = gateway.pay(payout(fen))
    # THEN WeChat gets them as the same integers, and the answer's amount is read back exactly
    assert channel.last.body is not None
    assert channel.last.body["amount"]["refund"] == fen
    assert result.amount == fen


def test_the_authorization_is_the_one_wechatpayv3_computes(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the refund request the gateway sent
    channel.answer(signed_answer(keys, 200, refund_document()))
    gateway.pay(payout())
    # WHEN the maintained client signs the same body, at the same time, with the same nonce
    monkeypatch.setattr(wechatpayv3.utils, "time", SimpleNamespace(time=lambda: NOW.timestamp()))
    sdk_authorization = wechatpayv3.utils.build_authorization(
        REFUNDS_PATH,
        "POST",
        MCHID,
        MERCHANT_SERIAL,
        wechatpayv3.utils.load_private_key(keys.merchant.private_pem),
        data=json.dumps(channel.last.body, ensure_ascii=False, separators=(",", ":")),
        nonce_str=NONCE,
    )
    # THEN its Authorization is the gateway's, byte for byte
    assert sdk_authorization == channel.last.headers["Authorization"]


def test_the_refund_is_the_one_wechatpayv3_sends_and_its_answer_one_it_accepts(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the maintained client sending the same refund to the same fake WeChat Pay, whose
    # independent check of the Authorization its request must pass too
    monkeypatch.setattr(wechatpayv3.utils, "time", SimpleNamespace(time=lambda: NOW.timestamp()))
    sdk_sent: list[Sent] = []

    def sdk_post(url: str, json: Any, headers: dict[str, str], **_: Any) -> SimpleNamespace:
        body = _json_dumps(json).encode()
        sdk_sent.append(check_request(keys, "POST", url, headers, body, nonce=None))
        answer = signed_answer(keys, 200, refund_document("SUCCESS"))
        return SimpleNamespace(
            status_code=answer.status,
            headers=CaseInsensitiveDict(answer.headers),
            text=answer.body.decode(),
        )

    monkeypatch.setattr(wechatpayv3.core, "requests", SimpleNamespace(post=sdk_post))
    sdk = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=MCHID,
        private_key=keys.merchant.private_pem,
        cert_serial_no=MERCHANT_SERIAL,
        appid=APPID,
        apiv3_key=APIV3_KEY,
        public_key=keys.platform.public_pem,
        public_key_id=PLATFORM_SERIAL,
    )
    sdk_status, sdk_text = sdk.refund(
        out_refund_no=REFUND_ID,
        amount={"refund": 8800, "total": 123456789, "currency": "CNY"},
        transaction_id=TRANSACTION_ID,
        reason="兑换码无效",
    )
    # WHEN the gateway sends it
    channel.answer(signed_answer(keys, 200, refund_document("SUCCESS")))
    result = gateway.pay(payout())
    # THEN both sent the same refund to the same place, and both named the platform key
    assert sdk_sent[0].path == channel.last.path
    assert sdk_sent[0].body == channel.last.body
    assert sdk_sent[0].headers["Wechatpay-Serial"] == channel.last.headers["Wechatpay-Serial"]
    # AND the client verified the fake's signed answer and read the same outcome from it
    assert sdk_status == 200
    assert json.loads(sdk_text)["status"] == "SUCCESS"
    assert result.state is PayoutState.SUCCESS


def _json_dumps(document: Any) -> str:
    # What requests does with ``json=``: the standard library's default separators.
    return json.dumps(document)


def test_a_refund_id_longer_than_64_characters_never_reaches_wechat(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    with pytest.raises(ValueError, match="64"):
        gateway.pay(payout(refund_id="r" * 65))
    assert channel.sent == []


# ---------------------------------------------------------------- pay: the outcomes


@pytest.mark.parametrize(
    ("status", "state"),
    [
        ("SUCCESS", PayoutState.SUCCESS),
        ("PROCESSING", PayoutState.PROCESSING),
        ("CLOSED", PayoutState.FAILED),
        ("ABNORMAL", PayoutState.FAILED),
    ],
)
def test_the_answer_status_says_where_the_refund_is(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, status: str, state: PayoutState
) -> None:
    # GIVEN WeChat accepting the refund (HTTP 200) in one of its statuses
    channel.answer(signed_answer(channel.keys, 200, refund_document(status)))
    # WHEN it is paid
    result = gateway.pay(payout())
    # THEN 200 alone says nothing: the status does (P1)
    assert result.state is state
    assert result.detail == status


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda keys: signed_answer(keys, 500, error_document("SYSTEM_ERROR", "系统错误")),
            id="SYSTEM_ERROR",
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 500, error_document("SYSTEMERROR", "系统超时")),
            id="SYSTEMERROR",
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 502, None, signed=False),
            id="502-from-a-proxy",
        ),
        pytest.param(lambda keys: TransportTimeout("read timed out"), id="timeout"),
        pytest.param(
            lambda keys: signed_answer(keys, 200, refund_document("SOMETHING_NEW")),
            id="unknown-status",
        ),
    ],
)
def test_a_system_error_or_no_answer_is_an_unknown_outcome(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answer: Any
) -> None:
    # GIVEN an answer after which the refund may have happened
    channel.answer(answer(channel.keys))
    # WHEN it is paid
    # THEN the outcome is unknown: query, or resend the same number, never a new one (P2)
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.pay(payout())


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda keys: signed_answer(keys, 429, error_document("FREQUENCY_LIMITED", "频率超限")),
            id="FREQUENCY_LIMITED",
        ),
        pytest.param(lambda keys: signed_answer(keys, 429, None, signed=False), id="429"),
        pytest.param(lambda keys: signed_answer(keys, 503, None, signed=False), id="503"),
        pytest.param(lambda keys: TransportUnreachable("connection refused"), id="refused"),
    ],
)
def test_a_refusal_before_anything_was_done_is_unavailable(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answer: Any
) -> None:
    channel.answer(answer(channel.keys))
    with pytest.raises(ChannelUnavailable):
        gateway.pay(payout())


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (403, "NOT_ENOUGH", "基本账户余额不足"),
        (400, "INVALID_REQUEST", "订单已全额退款"),
        (400, "PARAM_ERROR", "退款金额超过订单金额"),
        (403, "USER_ACCOUNT_ABNORMAL", "用户账户异常"),
        (404, "RESOURCE_NOT_EXISTS", "订单不存在"),
    ],
)
def test_a_business_error_is_a_failed_payout_saying_why(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, status: int, code: str, message: str
) -> None:
    # GIVEN WeChat refusing the refund for good
    channel.answer(signed_answer(channel.keys, status, error_document(code, message)))
    # WHEN it is paid
    result = gateway.pay(payout())
    # THEN it failed, with WeChat's code and message for the history and CS (P2)
    assert result.state is PayoutState.FAILED
    assert result.detail == f"{code} {message}"


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda keys: signed_answer(keys, 200, refund_document(), signer=keys.stranger),
            id="another-key",
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 200, refund_document(), serial="PUB_KEY_ID_OTHER"),
            id="another-serial",
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 200, refund_document(), signed=False),
            id="unsigned",
        ),
        pytest.param(
            lambda keys: HttpAnswer(
                200,
                signed_answer(keys, 200, refund_document("PROCESSING")).headers,
                json.dumps(refund_document("SUCCESS"), ensure_ascii=False).encode(),
            ),
            id="changed-after-signing",
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 404, error_document("X", "y"), signer=keys.stranger),
            id="wrongly-signed-error",
        ),
    ],
)
def test_an_answer_that_does_not_verify_is_no_answer(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answer: Any
) -> None:
    # GIVEN an answer not signed by the platform key it names, or changed on the way
    channel.answer(answer(channel.keys))
    # WHEN the refund is paid
    # THEN it is no answer at all: the outcome is unknown, never a success
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.pay(payout())


def test_an_unsigned_refusal_of_an_unauthenticated_request_is_a_failed_payout(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN WeChat refusing a request whose signature it could not check (it signs nothing
    # then): nothing was done, and the same request would be refused again
    channel.answer(
        signed_answer(channel.keys, 401, error_document("SIGN_ERROR", "签名错误"), signed=False)
    )
    # WHEN the refund is paid
    result = gateway.pay(payout())
    # THEN it failed, saying why
    assert result.state is PayoutState.FAILED
    assert result.detail == "SIGN_ERROR 签名错误"


def test_an_answer_about_another_refund_is_no_answer(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    channel.answer(signed_answer(channel.keys, 200, refund_document(out_refund_no="rf_other")))
    with pytest.raises(ChannelOutcomeUnknown, match="another refund"):
        gateway.pay(payout())


# ---------------------------------------------------------------- query


def test_a_query_asks_for_the_refund_by_its_number(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN a refund whose outcome was unknown, and WeChat having made it
    channel.answer(signed_answer(channel.keys, 200, refund_document("SUCCESS")))
    # WHEN it is queried
    result = gateway.query(REFUND_ID)
    # THEN one signed GET (its signature over an empty body) named the refund number
    assert (channel.last.method, channel.last.path) == ("GET", f"{REFUNDS_PATH}/{REFUND_ID}")
    assert channel.last.body is None
    # AND the refund is paid
    assert result is not None
    assert result.state is PayoutState.SUCCESS
    assert result.amount == 8800


def test_a_query_wechat_answers_resource_not_exists_is_none(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN WeChat knowing no refund by this number
    channel.answer(
        signed_answer(channel.keys, 404, error_document("RESOURCE_NOT_EXISTS", "退款单不存在"))
    )
    # WHEN it is queried
    # THEN nothing is known of it: the same request may be sent again (P2)
    assert gateway.query(REFUND_ID) is None


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            lambda keys: signed_answer(keys, 500, error_document("SYSTEM_ERROR", "系统错误")),
            ChannelOutcomeUnknown,
        ),
        (lambda keys: TransportTimeout("read timed out"), ChannelOutcomeUnknown),
        (
            lambda keys: signed_answer(keys, 400, error_document("PARAM_ERROR", "参数错误")),
            ChannelOutcomeUnknown,
        ),
        (
            lambda keys: signed_answer(keys, 429, error_document("FREQUENCY_LIMITED", "频率")),
            ChannelUnavailable,
        ),
    ],
)
def test_a_query_that_says_nothing_final_raises(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answer: Any, error: type[Exception]
) -> None:
    # GIVEN a query answer that neither finds the refund nor says there is none
    channel.answer(answer(channel.keys))
    # WHEN it is queried
    # THEN it is never taken for "nothing", which would pay again
    with pytest.raises(error):
        gateway.query(REFUND_ID)


# ---------------------------------------------------------------- notifications


def refund_resource(status: str = "SUCCESS", **changes: Any) -> dict[str, Any]:
    """The decrypted ``resource`` of a REFUND.* notification, as WeChat documents it."""
    resource: dict[str, Any] = {
        "mchid": MCHID,
        "transaction_id": TRANSACTION_ID,
        "out_trade_no": ORDER_ID,
        "refund_id": WECHAT_REFUND_ID,
        "out_refund_no": REFUND_ID,
        "refund_status": status,
        "success_time": "2026-11-20T16:00:01+08:00",
        "user_received_account": "招商银行信用卡0403",
        "amount": {"total": 10000, "refund": 8800, "payer_total": 10000, "payer_refund": 8800},
    }
    resource.update(changes)
    return resource


@dataclass(frozen=True)
class Notification:
    headers: dict[str, str]
    body: bytes


def notification(
    keys: Keys,
    resource: Mapping[str, Any] | None = None,
    *,
    event_type: str = "REFUND.SUCCESS",
    sent_at: datetime = NOW,
    signer: KeyPair | None = None,
    apiv3_key: str = APIV3_KEY,
) -> Notification:
    """A notification as WeChat Pay sends it: the resource encrypted with the APIv3 key, the
    raw body (pretty-printed, so that only its exact bytes verify) signed by wechatpayv3
    holding the platform key."""
    nonce = "fdasflkja484"
    associated_data = "refund"
    ciphertext = AESGCM(apiv3_key.encode()).encrypt(
        nonce.encode(),
        json.dumps(resource or refund_resource(), ensure_ascii=False).encode(),
        associated_data.encode(),
    )
    envelope = {
        "id": "EV-2026112016000001",
        "create_time": "2026-11-20T16:00:02+08:00",
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": "退款成功",
        "resource": {
            "original_type": "refund",
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(ciphertext).decode(),
            "associated_data": associated_data,
            "nonce": nonce,
        },
    }
    body = json.dumps(envelope, ensure_ascii=False, indent=2)
    timestamp = str(int(sent_at.timestamp()))
    header_nonce = "b8cbcd2e8d3147e09d7e8d2a4c1e5f60"
    platform_side = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=MCHID,
        private_key=(signer or keys.platform).private_pem,
        cert_serial_no=PLATFORM_SERIAL,
        appid=APPID,
        apiv3_key=apiv3_key,
        public_key=keys.merchant.public_pem,
        public_key_id=MERCHANT_SERIAL,
    )
    headers = {
        "Wechatpay-Timestamp": timestamp,
        "Wechatpay-Nonce": header_nonce,
        "Wechatpay-Signature": platform_side.sign([timestamp, header_nonce, body]),
        "Wechatpay-Serial": PLATFORM_SERIAL,
        "Wechatpay-Signature-Type": SCHEME,
        "Content-Type": "application/json",
    }
    return Notification(headers, body.encode())


def merchant_sdk(keys: Keys) -> WeChatPay:
    return WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=MCHID,
        private_key=keys.merchant.private_pem,
        cert_serial_no=MERCHANT_SERIAL,
        appid=APPID,
        apiv3_key=APIV3_KEY,
        public_key=keys.platform.public_pem,
        public_key_id=PLATFORM_SERIAL,
    )


def test_a_refund_notification_is_read_once_verified_and_decrypted(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    # GIVEN a REFUND.SUCCESS notification, which the maintained client verifies and decrypts
    sent = notification(keys)
    assert merchant_sdk(keys).callback(sent.headers, sent.body)["resource"] == refund_resource()
    # WHEN the gateway reads it
    result = gateway.read_notification(sent.headers, sent.body, NOW)
    # THEN it is the refund's success, with WeChat's refund number and amount
    assert result is not None
    assert result.refund_id == REFUND_ID
    assert result.state is PayoutState.SUCCESS
    assert result.amount == 8800
    assert result.channel_refund_no == WECHAT_REFUND_ID
    # AND reading the same notification again (WeChat retries for 24 h) reads the same
    assert gateway.read_notification(sent.headers, sent.body, NOW) == result


@pytest.mark.parametrize("case", [str.lower, str.upper, lambda name: name])
def test_notification_headers_are_found_whatever_their_case(
    gateway: WeChatPayGateway, keys: Keys, case: Any
) -> None:
    # GIVEN a notification whose header names a proxy or framework lower- or upper-cased
    sent = notification(keys)
    headers = {case(name): value for name, value in sent.headers.items()}
    # WHEN it is read
    # THEN it is read all the same
    assert gateway.read_notification(headers, sent.body, NOW) is not None


@pytest.mark.parametrize(
    ("event_type", "status"),
    [("REFUND.ABNORMAL", "ABNORMAL"), ("REFUND.CLOSED", "CLOSED")],
)
def test_an_abnormal_or_closed_refund_notification_is_a_failed_payout(
    gateway: WeChatPayGateway, keys: Keys, event_type: str, status: str
) -> None:
    sent = notification(keys, refund_resource(status), event_type=event_type)
    result = gateway.read_notification(sent.headers, sent.body, NOW)
    assert result is not None
    assert result.state is PayoutState.FAILED
    assert result.detail == f"{event_type} {status}"


def test_a_notification_about_no_refund_is_none(gateway: WeChatPayGateway, keys: Keys) -> None:
    # GIVEN a genuine payment notification on the same URL
    sent = notification(keys, {"out_trade_no": ORDER_ID}, event_type="TRANSACTION.SUCCESS")
    # WHEN it is read
    # THEN it is about no refund
    assert gateway.read_notification(sent.headers, sent.body, NOW) is None


def test_a_notification_signed_with_another_key_is_refused(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    sent = notification(keys, signer=keys.stranger)
    with pytest.raises(InvalidNotification, match="signature"):
        gateway.read_notification(sent.headers, sent.body, NOW)


def test_a_notification_whose_body_was_reserialised_is_refused(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    # GIVEN a genuine notification whose body was parsed and written again (same JSON, other
    # bytes), as a framework reading it as JSON would
    sent = notification(keys)
    rewritten = json.dumps(json.loads(sent.body), ensure_ascii=False).encode()
    # WHEN it is read
    # THEN the signature covers the raw bytes, and no longer verifies
    with pytest.raises(InvalidNotification, match="signature"):
        gateway.read_notification(sent.headers, rewritten, NOW)


@pytest.mark.parametrize("offset", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_notification_over_300_seconds_from_now_is_refused(
    gateway: WeChatPayGateway, keys: Keys, offset: timedelta
) -> None:
    # GIVEN a genuine notification signed 301 s before (a replay) or after now
    sent = notification(keys, sent_at=NOW - offset)
    # WHEN it is read
    # THEN it is stale, and refused (several SDKs forget this check)
    with pytest.raises(InvalidNotification, match="stale"):
        gateway.read_notification(sent.headers, sent.body, NOW)


def test_a_notification_300_seconds_old_is_still_read(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    sent = notification(keys, sent_at=NOW - timedelta(seconds=300))
    assert gateway.read_notification(sent.headers, sent.body, NOW) is not None


def test_a_notification_encrypted_with_another_apiv3_key_is_refused(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    # GIVEN a correctly signed notification whose resource does not decrypt with our key
    sent = notification(keys, apiv3_key=OTHER_APIV3_KEY)
    # WHEN it is read
    # THEN AES-GCM's tag fails, and it is refused
    with pytest.raises(InvalidNotification, match="decrypt"):
        gateway.read_notification(sent.headers, sent.body, NOW)


@pytest.mark.parametrize(
    "drop", ["Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Signature", "Wechatpay-Serial"]
)
def test_a_notification_missing_a_signature_header_is_refused(
    gateway: WeChatPayGateway, keys: Keys, drop: str
) -> None:
    sent = notification(keys)
    headers = {name: value for name, value in sent.headers.items() if name != drop}
    with pytest.raises(InvalidNotification):
        gateway.read_notification(headers, sent.body, NOW)


def test_a_notification_naming_another_platform_key_is_refused(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    sent = notification(keys)
    headers = sent.headers | {"Wechatpay-Serial": "PUB_KEY_ID_SOMEONE_ELSE"}
    with pytest.raises(InvalidNotification, match="unknown key"):
        gateway.read_notification(headers, sent.body, NOW)


def test_a_notification_for_another_merchant_is_refused(
    gateway: WeChatPayGateway, keys: Keys
) -> None:
    sent = notification(keys, refund_resource(mchid="1900000999"))
    with pytest.raises(InvalidNotification, match="another merchant"):
        gateway.read_notification(sent.headers, sent.body, NOW)


# ---------------------------------------------------------------- construction


def test_building_the_gateway_touches_neither_keys_nor_network() -> None:
    # GIVEN keys that would not even parse, and a transport that must not be called
    def no_network(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpAnswer:
        raise AssertionError("network used")

    # WHEN the gateway is built (as a cold start would)
    # THEN nothing failed and nothing was sent: keys are read on first use
    WeChatPayGateway(
        mchid=MCHID,
        merchant_serial_no=MERCHANT_SERIAL,
        merchant_private_key="not a key",
        platform_serial_no=PLATFORM_SERIAL,
        platform_public_key="not a key",
        apiv3_key=APIV3_KEY,
        wall_clock=lambda: NOW,
        transport=no_network,
    )


def test_an_apiv3_key_that_is_not_32_bytes_is_refused_at_once(keys: Keys) -> None:
    with pytest.raises(ValueError, match="32"):
        build_gateway(keys, None, apiv3_key="too-short")


def test_the_default_nonce_is_32_fresh_hex_characters(keys: Keys) -> None:
    # GIVEN the gateway's own nonces, as WeChat's nonce_str takes at most 32 characters
    seen: list[str] = []

    def record(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpAnswer:
        sent = check_request(keys, method, url, headers, None, nonce=None)
        seen.append(sent.authorization["nonce_str"])
        return signed_answer(keys, 200, refund_document())

    gateway = WeChatPayGateway(
        mchid=MCHID,
        merchant_serial_no=MERCHANT_SERIAL,
        merchant_private_key=keys.merchant.private_pem,
        platform_serial_no=PLATFORM_SERIAL,
        platform_public_key=keys.platform.public_pem,
        apiv3_key=APIV3_KEY,
        wall_clock=lambda: NOW,
        transport=record,
    )
    # WHEN two queries are signed
    gateway.query(REFUND_ID)
    gateway.query(REFUND_ID)
    # THEN each nonce is 32 hex characters, and no two are alike
    assert all(re.fullmatch(r"[0-9a-f]{32}", nonce) for nonce in seen)
    assert seen[0] != seen[1]


# ---------------------------------------------------------------- over real HTTP


@dataclass
class StandIn:
    """A stand-in WeChat Pay on 127.0.0.1, answering each request with the queued behaviour."""

    keys: Keys
    behaviour: str = "answer"
    received: list[Sent] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    port: int = 0


@pytest.fixture
def stand_in(keys: Keys) -> Iterator[StandIn]:
    state = StandIn(keys)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            base = f"http://127.0.0.1:{state.port}"
            state.received.append(
                check_request(
                    keys, self.command, base + self.path, dict(self.headers), body, base_url=base
                )
            )
            if state.behaviour == "hang":
                state.release.wait(5)
                return
            if state.behaviour == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            answer = signed_answer(keys, 200, refund_document("SUCCESS"))
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        do_GET = _serve
        do_POST = _serve

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def real_gateway(keys: Keys, port: int) -> WeChatPayGateway:
    return build_gateway(
        keys,
        Urllib3Transport(),
        base_url=f"http://127.0.0.1:{port}",
        timeout_seconds=0.5,
    )


def test_over_real_http_a_refund_is_sent_and_its_answer_verified(
    keys: Keys, stand_in: StandIn
) -> None:
    # GIVEN WeChat Pay answering over HTTP
    gateway = real_gateway(keys, stand_in.port)
    # WHEN a refund is paid through the urllib3 transport
    result = gateway.pay(payout())
    # THEN the request arrived signed, its body intact, and the signed answer was read
    assert stand_in.received[0].body is not None
    assert stand_in.received[0].body["out_refund_no"] == REFUND_ID
    assert result.state is PayoutState.SUCCESS


def test_over_real_http_an_answer_that_never_comes_is_an_unknown_outcome(
    keys: Keys, stand_in: StandIn
) -> None:
    # GIVEN WeChat Pay that received the refund and does not answer in time
    stand_in.behaviour = "hang"
    gateway = real_gateway(keys, stand_in.port)
    # WHEN a refund is paid
    # THEN the money may have moved: unknown, never unavailable (P2)
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.pay(payout())
    assert len(stand_in.received) == 1


def test_over_real_http_a_connection_dropped_after_the_request_is_an_unknown_outcome(
    keys: Keys, stand_in: StandIn
) -> None:
    # GIVEN WeChat Pay that read the refund and dropped the connection without answering
    stand_in.behaviour = "drop"
    gateway = real_gateway(keys, stand_in.port)
    # WHEN a refund is paid
    # THEN the outcome is unknown, and the transport did not resend it on its own
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.pay(payout())
    assert len(stand_in.received) == 1


def test_over_real_http_a_refused_connection_is_unavailable(keys: Keys) -> None:
    # GIVEN a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gateway = real_gateway(keys, port)
    # WHEN a refund is paid
    # THEN nothing reached WeChat: unavailable, and a retry is safe
    with pytest.raises(ChannelUnavailable):
        gateway.pay(payout())


# ---------------------------------------------------------------- the daily refund bill (statement)

BILL_DAY = date(2026, 11, 30)
BILL_REQUEST_PATH = "/v3/bill/tradebill?bill_date=2026-11-30&bill_type=REFUND"
DOWNLOAD_PATH = "/v3/billdownload/file?token=6XIv5TUPto7pByrTQKhd6kwvyKLG2uY2wMMR8cNXqaA_Cv_isgaU"
DOWNLOAD_URL = WECHATPAY_BASE_URL + DOWNLOAD_PATH
BILL = ("\ufeff" + wechat_bill(WECHAT_REFUNDS)).encode("utf-8")


def bill_document(content: bytes = BILL, **changes: str) -> dict[str, str]:
    """WeChat Pay's answer to ``GET /v3/bill/tradebill``: where the file is, and its SHA1."""
    document = {
        "hash_type": "SHA1",
        "hash_value": hashlib.sha1(content, usedforsecurity=False).hexdigest(),
        "download_url": DOWNLOAD_URL,
    }
    document.update(changes)
    return document


def bill_file(content: bytes = BILL, status: int = 200) -> HttpAnswer:
    """The file from its download URL, which WeChat Pay does not sign: its hash vouches."""
    return HttpAnswer(
        status=status, headers={"Content-Type": "application/octet-stream"}, body=content
    )


def test_a_statement_is_the_refund_bill_downloaded_and_checked_against_its_sha1(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN WeChat's refund bill of the day, and its signed answer naming the file and hash
    channel.answer(signed_answer(channel.keys, 200, bill_document()), bill_file())
    # WHEN the day's statement is read
    entries = gateway.statement(BILL_DAY)
    # THEN two signed GETs went out (the fake checked each signature over path and query):
    # the refund bill of that day, then the file at the download URL's path and query
    assert [(sent.method, sent.path, sent.body) for sent in channel.sent] == [
        ("GET", BILL_REQUEST_PATH, None),
        ("GET", DOWNLOAD_PATH, None),
    ]
    # AND the statement is the bill's refunds, the one not yet paid with its status
    assert entries == EXPECTED_WECHAT


def test_the_bill_requests_are_the_ones_wechatpayv3_sends(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the maintained client asking the same fake WeChat Pay for the same bill and file,
    # its requests passing the same independent check
    monkeypatch.setattr(wechatpayv3.utils, "time", SimpleNamespace(time=lambda: NOW.timestamp()))
    sdk_sent: list[Sent] = []
    answers = [signed_answer(keys, 200, bill_document()), bill_file()]

    def sdk_get(url: str, headers: dict[str, str], **_: Any) -> SimpleNamespace:
        sdk_sent.append(check_request(keys, "GET", url, headers, None, nonce=None))
        answer = answers.pop(0)
        return SimpleNamespace(
            status_code=answer.status,
            headers=CaseInsensitiveDict(answer.headers),
            text=answer.body.decode(),
            content=answer.body,
        )

    monkeypatch.setattr(wechatpayv3.core, "requests", SimpleNamespace(get=sdk_get))
    sdk = merchant_sdk(keys)
    sdk_status, sdk_text = sdk.trade_bill("2026-11-30", bill_type="REFUND")
    sdk_file_status, sdk_file = sdk.download_bill(json.loads(sdk_text)["download_url"])
    # WHEN the gateway reads the day's statement
    channel.answer(signed_answer(keys, 200, bill_document()), bill_file())
    gateway.statement(BILL_DAY)
    # THEN both asked for the same bill: the client adds tar_type=GZIP by default, where the
    # gateway asks for the plain file it hashes and reads
    sdk_bill, bill = urlsplit(sdk_sent[0].path), urlsplit(channel.sent[0].path)
    assert sdk_bill.path == bill.path
    assert dict(parse_qsl(sdk_bill.query)) == dict(parse_qsl(bill.query)) | {"tar_type": "GZIP"}
    # AND both downloaded the same file, signed over the same path and query
    assert sdk_sent[1].path == channel.sent[1].path == DOWNLOAD_PATH
    # AND the client verified the fake's signed bill answer, and got the file the gateway read
    assert (sdk_status, sdk_file_status, sdk_file) == (200, 200, BILL)


def test_a_day_without_a_bill_is_an_empty_statement(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN a day without a single trade or refund, for which WeChat makes no bill
    channel.answer(
        signed_answer(channel.keys, 400, error_document("NO_STATEMENT_EXIST", "账单文件不存在"))
    )
    # WHEN the day's statement is read
    # THEN it is empty, and nothing is downloaded
    assert gateway.statement(BILL_DAY) == []
    assert len(channel.sent) == 1


def test_an_unsigned_no_bill_answer_is_no_empty_statement(
    gateway: WeChatPayGateway, channel: FakeWeChatPay
) -> None:
    # GIVEN a "no bill" answer without WeChat's signature (WeChat signs every answer to a
    # request it authenticated): it would say no money moved, and hide a refund paid twice
    channel.answer(
        signed_answer(
            channel.keys,
            400,
            error_document("NO_STATEMENT_EXIST", "账单文件不存在"),
            signed=False,
        )
    )
    # WHEN the day's statement is read
    # THEN it is unavailable, not an empty day
    with pytest.raises(ChannelUnavailable, match="NO_STATEMENT_EXIST"):
        gateway.statement(BILL_DAY)


@pytest.mark.parametrize(
    "answers",
    [
        pytest.param(
            lambda keys: [
                signed_answer(keys, 400, error_document("STATEMENT_CREATING", "账单生成中"))
            ],
            id="being made",
        ),
        pytest.param(
            lambda keys: [signed_answer(keys, 429, error_document("FREQUENCY_LIMITED", "频率"))],
            id="frequency limited",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(keys, 200, bill_document(b"another file")),
                bill_file(),
            ],
            id="wrong SHA1",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(keys, 200, bill_document()),
                bill_file(BILL.replace(b"`88.00", b"`8.00")),
            ],
            id="file changed on the way",
        ),
        pytest.param(
            lambda keys: [signed_answer(keys, 200, bill_document(hash_type="MD5"))],
            id="no SHA1",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(
                    keys, 200, bill_document(download_url="http://api.mch.weixin.qq.com/x")
                )
            ],
            id="download URL not https",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(keys, 200, bill_document()),
                bill_file(b'{"code":"RESOURCE_NOT_EXISTS"}', status=404),
            ],
            id="download HTTP 404",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(keys, 200, bill_document(wechat_bill(WECHAT_REFUNDS).encode("gbk"))),
                bill_file(wechat_bill(WECHAT_REFUNDS).encode("gbk")),
            ],
            id="file not UTF-8",
        ),
        pytest.param(
            lambda keys: [
                signed_answer(keys, 200, bill_document(b"<html>maintenance</html>")),
                bill_file(b"<html>maintenance</html>"),
            ],
            id="file not a bill",
        ),
    ],
)
def test_a_bill_that_cannot_be_had_or_trusted_leaves_the_statement_unavailable(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answers: Any
) -> None:
    # GIVEN a bill WeChat is still making, a file that does not match its signed hash, or
    # one that cannot be fetched or read
    channel.answer(*answers(channel.keys))
    # WHEN the day's statement is read
    # THEN it is unavailable (the run is retried), never read as fewer refunds
    with pytest.raises(ChannelUnavailable):
        gateway.statement(BILL_DAY)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(
            lambda keys: signed_answer(keys, 200, bill_document(), signed=False), id="unsigned"
        ),
        pytest.param(
            lambda keys: signed_answer(keys, 200, bill_document(), signer=keys.stranger),
            id="another key",
        ),
    ],
)
def test_a_bill_answer_that_does_not_verify_is_no_answer(
    gateway: WeChatPayGateway, channel: FakeWeChatPay, answer: Any
) -> None:
    # GIVEN a bill answer WeChat did not sign: its hash and URL vouch for nothing
    channel.answer(answer(channel.keys))
    # WHEN the day's statement is read
    # THEN it is refused like any answer that does not verify, and nothing is downloaded
    with pytest.raises(ChannelOutcomeUnknown, match=r"unsigned|signature"):
        gateway.statement(BILL_DAY)
    assert len(channel.sent) == 1
