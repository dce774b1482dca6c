"""The Alipay gateway against Alipay's protocol as its documents describe it (P1, P2).

A fake gateway stands in for ``openapi.alipay.com``: it checks every request's RSA2 signature
with the app's public key (the check is written here, apart from the adapter's code) and
answers with what each test queues, signed with a test "Alipay" key. The maintained client
``python-alipay-sdk`` is the second opinion: it computes the same request signature, sends
the same refund, accepts the fake's signed answers, and signs the notifications the adapter
reads, so the adapter is tested against what another implementation produces too.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import alipay as alipay_sdk
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256

from chalicelib.adapters.channels.alipay import (
    ALIPAY_GATEWAY_URL,
    AlipayGateway,
    AlipayTrade,
    fen_to_yuan,
    yuan_to_fen,
)
from chalicelib.adapters.channels.http import HttpAnswer, TransportTimeout, TransportUnreachable
from chalicelib.adapters.exceptions import InvalidNotification
from chalicelib.service.exceptions import ChannelOutcomeUnknown, ChannelUnavailable
from chalicelib.service.ports import PayoutRequest, PayoutState
from tests.integration.test_channel_bills import ALIPAY_REFUNDS, PAYMENT, alipay_bill

APP_ID = "2021004112345678"
ORDER_ID = "o-1001"
TRADE_NO = "2026112022001404550500012345"
REFUND_ID = "rf_01JD5Z8Q4K7T9M2X3V6B8N0P1R"
NOW = datetime(2026, 11, 20, 8, 0, 0, tzinfo=UTC)
NOW_IN_BEIJING = "2026-11-20 16:00:00"
REFUND_MEMBER = "alipay_trade_refund_response"
QUERY_MEMBER = "alipay_trade_fastpay_refund_query_response"


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
        return (
            self.public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
            .strip()
        )

    def sign(self, content: str | bytes) -> str:
        data = content.encode("utf-8") if isinstance(content, str) else content
        return base64.b64encode(self.private.sign(data, padding.PKCS1v15(), SHA256())).decode()


@dataclass(frozen=True)
class Keys:
    app: KeyPair
    """The merchant app's key pair: the app signs requests, Alipay holds the public half."""
    alipay: KeyPair
    """Alipay's key pair: Alipay signs answers and notifications, the app holds the public."""
    stranger: KeyPair
    """A key that is neither."""


def _new_key() -> KeyPair:
    return KeyPair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(app=_new_key(), alipay=_new_key(), stranger=_new_key())


# ---------------------------------------------------------------- the fake Alipay gateway


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    signature: str

    @property
    def biz(self) -> dict[str, Any]:
        return dict(json.loads(self.params["biz_content"]))


@dataclass
class FakeAlipay:
    """Alipay's gateway: refuses (by failing the test) a request whose RSA2 signature does not
    verify with the app's public key, and answers with what the test queued."""

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
        assert method == "POST"
        assert url == ALIPAY_GATEWAY_URL
        assert headers["Content-Type"] == "application/x-www-form-urlencoded;charset=utf-8"
        assert body is not None
        assert 0 < timeout <= 30
        pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        params = dict(pairs)
        assert len(params) == len(pairs), "a parameter sent twice"
        signature = params.pop("sign")
        # Alipay's rule: every parameter but sign, sorted by name, empty ones left out.
        content = "&".join(f"{key}={params[key]}" for key in sorted(params) if params[key])
        self.keys.app.public.verify(
            base64.b64decode(signature), content.encode("utf-8"), padding.PKCS1v15(), SHA256()
        )
        self.sent.append(Sent(method, url, dict(headers), params, signature))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def answer(self, *answers: HttpAnswer | Exception) -> None:
        self.answers.extend(answers)

    @property
    def last(self) -> Sent:
        return self.sent[-1]


def _raw_answer(member: str, fields: dict[str, Any], signer: KeyPair | None) -> str:
    """An answer's text as Alipay writes it: the member's JSON, and a sign over that text."""
    member_text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if signer is None:
        return f'{{"{member}":{member_text}}}'
    return f'{{"{member}":{member_text},"sign":"{signer.sign(member_text)}"}}'


def _answer(raw: str, status: int = 200) -> HttpAnswer:
    return HttpAnswer(
        status=status,
        headers={"Content-Type": "text/html;charset=utf-8"},
        body=raw.encode("utf-8"),
    )


def refund_answer(keys: Keys, signer: KeyPair | None = None, **fields: str) -> HttpAnswer:
    return _answer(_raw_answer(REFUND_MEMBER, fields, signer or keys.alipay))


def accepted(keys: Keys, fund_change: str = "Y", refund_fee: str = "88.00") -> HttpAnswer:
    """Alipay's documented success answer to ``alipay.trade.refund``."""
    return refund_answer(
        keys,
        code="10000",
        msg="Success",
        trade_no=TRADE_NO,
        out_trade_no=ORDER_ID,
        buyer_logon_id="159****5620",
        fund_change=fund_change,
        refund_fee=refund_fee,
        gmt_refund_pay="2026-11-20 15:59:58",
        buyer_user_id="2088101117955611",
    )


def refused(keys: Keys, sub_code: str, sub_msg: str, code: str = "40004") -> HttpAnswer:
    return refund_answer(keys, code=code, msg="Business Failed", sub_code=sub_code, sub_msg=sub_msg)


def query_answer(keys: Keys, **fields: str) -> HttpAnswer:
    return _answer(_raw_answer(QUERY_MEMBER, fields, keys.alipay))


# ---------------------------------------------------------------- the gateway under test


@dataclass
class Trades:
    """The refunds' trades, as the bootstrap would find them in each refund's order."""

    known: dict[str, AlipayTrade] = field(default_factory=dict)

    def __call__(self, refund_id: str) -> AlipayTrade:
        return self.known[refund_id]


@pytest.fixture
def channel(keys: Keys) -> Iterator[FakeAlipay]:
    fake = FakeAlipay(keys)
    yield fake
    assert not fake.answers, "an answer was queued and never asked for"


@pytest.fixture
def trades() -> Trades:
    return Trades({REFUND_ID: AlipayTrade(ORDER_ID, TRADE_NO)})


@pytest.fixture
def gateway(keys: Keys, channel: FakeAlipay, trades: Trades) -> AlipayGateway:
    return AlipayGateway(
        app_id=APP_ID,
        app_private_key=keys.app.private_pem,
        alipay_public_key=keys.alipay.public_pem,
        trade_reference=trades,
        wall_clock=lambda: NOW,
        transport=channel,
    )


def payout(
    amount: int = 8800, trade_no: str | None = TRADE_NO, refund_id: str = REFUND_ID
) -> PayoutRequest:
    return PayoutRequest(
        refund_id=refund_id,
        order_id=ORDER_ID,
        channel_trade_no=trade_no,
        amount=amount,
        order_total=10000,
        reason="兑换码无效 invalid code",
    )


# ---------------------------------------------------------------- pay: the request


def test_a_refund_is_one_signed_alipay_trade_refund_keyed_by_the_refund_id(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN an order paid through Alipay (its trade_no known) and Alipay moving the money
    channel.answer(accepted(channel.keys))
    # WHEN 88.00 yuan of it is paid back
    result = gateway.pay(payout(8800))
    # THEN one RSA2-signed alipay.trade.refund went out, its out_request_no the refund id (P2)
    sent = channel.last
    assert len(channel.sent) == 1
    assert sent.params["method"] == "alipay.trade.refund"
    assert sent.params["app_id"] == APP_ID
    assert sent.params["format"] == "JSON"
    assert sent.params["charset"] == "utf-8"
    assert sent.params["sign_type"] == "RSA2"
    assert sent.params["version"] == "1.0"
    assert sent.params["timestamp"] == NOW_IN_BEIJING
    assert sent.biz == {
        "trade_no": TRADE_NO,
        "refund_amount": "88.00",
        "out_request_no": REFUND_ID,
        "refund_reason": "兑换码无效 invalid code",
    }
    # AND fund_change=Y is the money moved, for the amount asked
    assert result.state is PayoutState.SUCCESS
    assert result.refund_id == REFUND_ID
    assert result.amount == 8800


def test_an_order_without_alipay_trade_no_is_named_by_the_order_id(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN an order whose Alipay trade_no the order system never sent
    channel.answer(accepted(channel.keys))
    # WHEN it is refunded
    gateway.pay(payout(trade_no=None))
    # THEN the trade is named by the order id, the payment's out_trade_no
    assert channel.last.biz["out_trade_no"] == ORDER_ID
    assert "trade_no" not in channel.last.biz


@pytest.mark.parametrize(
    ("fen", "yuan"),
    [(1, "0.01"), (10, "0.10"), (100, "1.00"), (8800, "88.00"), (123456789, "1234567.89")],
)
def test_refund_amount_is_yuan_with_exactly_two_decimals(
    gateway: AlipayGateway, channel: FakeAlipay, fen: int, yuan: str
) -> None:
    # GIVEN an amount in integer fen
    channel.answer(accepted(channel.keys, refund_fee=yuan))
    # WHEN it is paid back
    result = gateway.pay(payout(fen))
    # THEN Alipay is asked for that many yuan, written exactly
    assert channel.last.biz["refund_amount"] == yuan
    assert fen_to_yuan(fen) == yuan
    assert yuan_to_fen(yuan) == fen
    assert result.amount == fen


@pytest.mark.parametrize("text", ["1.001", "abc", "NaN", "-1.00", "Infinity", "1e400", ""])
def test_yuan_text_that_is_not_an_exact_amount_is_refused(text: str) -> None:
    # GIVEN yuan text with a third decimal, no number, a negative or an infinite one
    # WHEN it is read as fen
    # THEN it is refused rather than rounded
    with pytest.raises(ValueError, match="yuan"):
        yuan_to_fen(text)


@pytest.mark.parametrize("fen", [0, -1, True])
def test_only_a_positive_number_of_fen_is_paid(fen: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        fen_to_yuan(fen)


def test_a_refund_id_longer_than_64_characters_never_reaches_alipay(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN a refund id Alipay could not keep as out_request_no
    # WHEN it is paid
    # THEN nothing is sent
    with pytest.raises(ValueError, match="64"):
        gateway.pay(payout(refund_id="r" * 65))
    assert channel.sent == []


def test_the_request_signature_is_the_one_python_alipay_sdk_computes(
    gateway: AlipayGateway, channel: FakeAlipay, keys: Keys
) -> None:
    # GIVEN the refund request the gateway sent
    channel.answer(accepted(keys))
    gateway.pay(payout())
    # WHEN the maintained client signs the same parameters with the same app key
    sdk = alipay_sdk.AliPay(
        appid=APP_ID,
        app_private_key_string=keys.app.private_pem,
        alipay_public_key_string=keys.alipay.public_pem,
    )
    signed = dict(parse_qsl(sdk.sign_data(dict(channel.last.params))))
    # THEN its signature is the gateway's, byte for byte (PKCS#1 v1.5 is deterministic)
    assert signed["sign"] == channel.last.signature


def test_the_refund_is_the_one_python_alipay_sdk_sends_and_its_answer_one_it_accepts(
    gateway: AlipayGateway, channel: FakeAlipay, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the maintained client sending the same refund to the same fake Alipay
    sdk_urls: list[str] = []

    def sdk_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        sdk_urls.append(url)
        return io.BytesIO(accepted(keys).body)

    monkeypatch.setattr(alipay_sdk, "urlopen", sdk_urlopen)
    sdk = alipay_sdk.AliPay(
        appid=APP_ID,
        app_private_key_string=keys.app.private_pem,
        alipay_public_key_string=keys.alipay.public_pem,
    )
    sdk_answer = sdk.api_alipay_trade_refund(
        refund_amount="88.00",
        trade_no=TRADE_NO,
        out_request_no=REFUND_ID,
        refund_reason="兑换码无效 invalid code",
    )
    # WHEN the gateway sends it
    channel.answer(accepted(keys))
    result = gateway.pay(payout(8800))
    # THEN both send the same method, app, signing scheme and business content
    sdk_params = dict(parse_qsl(urlsplit(sdk_urls[0]).query))
    for name in ("app_id", "method", "charset", "sign_type", "version"):
        assert channel.last.params[name] == sdk_params[name], name
    assert channel.last.biz == json.loads(sdk_params["biz_content"])
    # AND the client verified the fake's signed answer and read the same outcome from it
    assert sdk_answer["fund_change"] == "Y"
    assert result.state is PayoutState.SUCCESS


# ---------------------------------------------------------------- pay: the outcomes


def test_accepted_without_fund_change_is_an_unknown_outcome(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN Alipay answering code=10000 with fund_change=N (a resent out_request_no, or a
    # refund it has not made yet)
    channel.answer(accepted(channel.keys, fund_change="N"))
    # WHEN the refund is paid
    # THEN the outcome is unknown: only the query can tell, and paying again is not it (P2)
    with pytest.raises(ChannelOutcomeUnknown, match="fund_change=N"):
        gateway.pay(payout())


@pytest.mark.parametrize(
    ("code", "sub_code"),
    [
        ("20000", "isp.unknow-error"),
        ("40004", "ACQ.SYSTEM_ERROR"),
        ("40004", "aop.ACQ.SYSTEM_ERROR"),
    ],
)
def test_a_system_error_is_an_unknown_outcome(
    gateway: AlipayGateway, channel: FakeAlipay, code: str, sub_code: str
) -> None:
    # GIVEN Alipay answering a service or system error
    channel.answer(refused(channel.keys, sub_code, "系统繁忙", code=code))
    # WHEN the refund is paid
    # THEN the money may have moved: unknown, to be settled by a query (P2)
    with pytest.raises(ChannelOutcomeUnknown, match=sub_code):
        gateway.pay(payout())


def test_no_answer_in_time_is_an_unknown_outcome(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN a request that reached Alipay and whose answer never came
    channel.answer(TransportTimeout("read timed out"))
    # WHEN the refund is paid
    # THEN the outcome is unknown (P2)
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.pay(payout())


def test_an_unreachable_alipay_is_unavailable(gateway: AlipayGateway, channel: FakeAlipay) -> None:
    # GIVEN a connection Alipay refused: nothing was sent
    channel.answer(TransportUnreachable("connection refused"))
    # WHEN the refund is paid
    # THEN the channel is unavailable, and a retry is safe
    with pytest.raises(ChannelUnavailable):
        gateway.pay(payout())


@pytest.mark.parametrize(
    ("status", "error"), [(503, ChannelUnavailable), (502, ChannelOutcomeUnknown)]
)
def test_an_http_error_is_unavailable_only_when_it_says_nothing_was_processed(
    gateway: AlipayGateway, channel: FakeAlipay, status: int, error: type[Exception]
) -> None:
    # GIVEN a 503 (turned away) or a 502 (a proxy that may have given up on a processed call)
    channel.answer(_answer("<html>error</html>", status=status))
    # WHEN the refund is paid
    # THEN only the first is safe to retry blind
    with pytest.raises(error):
        gateway.pay(payout())


@pytest.mark.parametrize(
    ("sub_code", "sub_msg"),
    [
        ("ACQ.TRADE_NOT_EXIST", "交易不存在"),
        ("ACQ.TRADE_STATUS_ERROR", "交易状态不合法"),
        ("ACQ.TRADE_HAS_FINISHED", "交易已完结"),
        ("ACQ.REASON_TRADE_REFUND_FEE_ERR", "退款金额无效"),
        ("ACQ.SELLER_BALANCE_NOT_ENOUGH", "卖家余额不足"),
    ],
)
def test_a_final_refusal_is_a_failed_payout_saying_why(
    gateway: AlipayGateway, channel: FakeAlipay, sub_code: str, sub_msg: str
) -> None:
    # GIVEN Alipay refusing the refund for good
    channel.answer(refused(channel.keys, sub_code, sub_msg))
    # WHEN the refund is paid
    result = gateway.pay(payout())
    # THEN it failed, with Alipay's own code and message for the history and CS (P2)
    assert result.state is PayoutState.FAILED
    assert result.refund_id == REFUND_ID
    assert result.detail == f"{sub_code} {sub_msg}"
    assert result.amount is None


def test_an_answer_signed_with_another_key_is_no_answer(
    gateway: AlipayGateway, channel: FakeAlipay, keys: Keys
) -> None:
    # GIVEN a "success" signed by a key that is not Alipay's
    forged = refund_answer(keys, signer=keys.stranger, code="10000", msg="Success", fund_change="Y")
    channel.answer(forged)
    # WHEN the refund is paid
    # THEN it is taken for no answer at all: the outcome is unknown, never a success
    with pytest.raises(ChannelOutcomeUnknown, match="signature"):
        gateway.pay(payout())


def test_an_answer_changed_after_signing_is_no_answer(
    gateway: AlipayGateway, channel: FakeAlipay, keys: Keys
) -> None:
    # GIVEN Alipay's fund_change=N, turned into Y on the way
    genuine = accepted(keys, fund_change="N").body.decode()
    channel.answer(_answer(genuine.replace('"fund_change":"N"', '"fund_change":"Y"')))
    # WHEN the refund is paid
    # THEN the signature no longer verifies, and nothing is taken from it
    with pytest.raises(ChannelOutcomeUnknown, match="signature"):
        gateway.pay(payout())


def test_an_unsigned_acceptance_is_no_answer(gateway: AlipayGateway, channel: FakeAlipay) -> None:
    # GIVEN a code=10000, fund_change=Y answer without a sign
    fields = {"code": "10000", "msg": "Success", "fund_change": "Y"}
    channel.answer(_answer(_raw_answer(REFUND_MEMBER, fields, signer=None)))
    # WHEN the refund is paid
    # THEN an answer that says money moved must be Alipay's own: unknown
    with pytest.raises(ChannelOutcomeUnknown, match="unsigned"):
        gateway.pay(payout())


def test_an_unsigned_gateway_refusal_is_a_failed_payout(
    gateway: AlipayGateway, channel: FakeAlipay
) -> None:
    # GIVEN Alipay's gateway refusing a request it could not authenticate (it signs nothing
    # then): nothing was processed, and the same request would be refused again
    fields = {
        "code": "40002",
        "msg": "Invalid Arguments",
        "sub_code": "isv.invalid-signature",
        "sub_msg": "验签出错",
    }
    channel.answer(_answer(_raw_answer("error_response", fields, signer=None)))
    # WHEN the refund is paid
    result = gateway.pay(payout())
    # THEN it failed, saying why, for CS to see
    assert result.state is PayoutState.FAILED
    assert result.detail == "isv.invalid-signature 验签出错"


def test_the_signed_text_is_cut_from_the_answer_exactly_as_received(
    gateway: AlipayGateway, channel: FakeAlipay, keys: Keys
) -> None:
    # GIVEN an answer with its sign first, spaces Alipay may add, and text with braces and
    # escaped quotes inside the signed member
    member_text = (
        '{ "code": "10000", "msg": "Success {\\"ok\\"}", "fund_change": "Y",\n'
        '  "refund_fee": "88.00", "trade_no": "' + TRADE_NO + '" }'
    )
    raw = f'{{"sign": "{keys.alipay.sign(member_text)}", "{REFUND_MEMBER}" : {member_text}}}'
    channel.answer(_answer(raw))
    # WHEN the refund is paid
    result = gateway.pay(payout())
    # THEN the signature is checked over the member's text as it came, and verifies
    assert result.state is PayoutState.SUCCESS


# ---------------------------------------------------------------- query


def test_a_query_finds_a_refund_alipay_made(
    gateway: AlipayGateway, channel: FakeAlipay, trades: Trades
) -> None:
    # GIVEN a refund whose outcome was unknown, and Alipay having made it
    channel.answer(
        query_answer(
            channel.keys,
            code="10000",
            msg="Success",
            trade_no=TRADE_NO,
            out_trade_no=ORDER_ID,
            out_request_no=REFUND_ID,
            total_amount="100.00",
            refund_amount="88.00",
            refund_status="REFUND_SUCCESS",
        )
    )
    # WHEN it is queried by the refund id alone, as the port does
    result = gateway.query(REFUND_ID)
    # THEN the query names the refund and its trade (found through trade_reference)
    assert channel.last.params["method"] == "alipay.trade.fastpay.refund.query"
    assert channel.last.biz == {"trade_no": TRADE_NO, "out_request_no": REFUND_ID}
    # AND the refund is paid, for this refund's own amount
    assert result is not None
    assert result.state is PayoutState.SUCCESS
    assert result.amount == 8800


def test_a_query_of_an_order_without_trade_no_names_the_order(
    gateway: AlipayGateway, channel: FakeAlipay, trades: Trades
) -> None:
    # GIVEN a refund of an order known to Alipay only by our order id
    trades.known["rf_2"] = AlipayTrade(ORDER_ID, None)
    channel.answer(query_answer(channel.keys, code="10000", msg="Success", out_trade_no=ORDER_ID))
    # WHEN it is queried
    gateway.query("rf_2")
    # THEN the trade is named by out_trade_no
    assert channel.last.biz == {"out_trade_no": ORDER_ID, "out_request_no": "rf_2"}


@pytest.mark.parametrize(
    "fields",
    [
        {"code": "10000", "msg": "Success", "trade_no": TRADE_NO, "out_trade_no": ORDER_ID},
        {
            "code": "10000",
            "msg": "Success",
            "trade_no": TRADE_NO,
            "refund_amount": "",
            "out_request_no": REFUND_ID,
        },
        {
            "code": "40004",
            "msg": "Business Failed",
            "sub_code": "ACQ.TRADE_NOT_EXIST",
            "sub_msg": "交易不存在",
        },
    ],
    ids=["no-refund-status", "empty-refund-amount", "trade-not-exist"],
)
def test_a_query_that_finds_no_refund_is_none(
    gateway: AlipayGateway, channel: FakeAlipay, fields: dict[str, str]
) -> None:
    # GIVEN Alipay knowing no refund by this number
    channel.answer(query_answer(channel.keys, **fields))
    # WHEN it is queried
    # THEN nothing is known of it: the same request may be sent again (P2)
    assert gateway.query(REFUND_ID) is None


@pytest.mark.parametrize(
    "fields",
    [
        {"code": "40004", "msg": "Business Failed", "sub_code": "ACQ.SYSTEM_ERROR"},
        {"code": "20000", "msg": "Service Currently Unavailable", "sub_code": "isp.unknow-error"},
        {"code": "10000", "msg": "Success", "refund_amount": "88.00"},
        {"code": "10000", "msg": "Success", "out_request_no": "rf_other", "refund_status": "X"},
    ],
    ids=["system-error", "unavailable", "amount-without-status", "another-refund"],
)
def test_a_query_that_says_nothing_final_is_an_unknown_outcome(
    gateway: AlipayGateway, channel: FakeAlipay, fields: dict[str, str]
) -> None:
    # GIVEN a query answer that neither finds the refund nor says there is none
    channel.answer(query_answer(channel.keys, **fields))
    # WHEN it is queried
    # THEN the outcome stays unknown: never taken for "nothing", which would pay again
    with pytest.raises(ChannelOutcomeUnknown):
        gateway.query(REFUND_ID)


# ---------------------------------------------------------------- notifications


def notification_params(**changes: str | None) -> dict[str, str]:
    """A partial refund's trade notification, with the parameters Alipay documents."""
    params: dict[str, str | None] = {
        "gmt_create": "2026-11-20 15:00:00",
        "charset": "utf-8",
        "seller_email": "shop@example.com",
        "subject": "Steam 充值卡 100",
        "buyer_id": "2088102177846880",
        "invoice_amount": "100.00",
        "notify_id": "2026112000222160000017141234567890",
        "fund_bill_list": '[{"amount":"100.00","fundChannel":"ALIPAYACCOUNT"}]',
        "notify_type": "trade_status_sync",
        "trade_status": "TRADE_SUCCESS",
        "receipt_amount": "100.00",
        "app_id": APP_ID,
        "buyer_pay_amount": "100.00",
        "seller_id": "2088102119685838",
        "gmt_payment": "2026-11-20 15:00:05",
        "notify_time": NOW_IN_BEIJING,
        "gmt_refund": "2026-11-20 15:59:58.123",
        "version": "1.0",
        "out_trade_no": ORDER_ID,
        "total_amount": "100.00",
        "trade_no": TRADE_NO,
        "auth_app_id": APP_ID,
        "buyer_logon_id": "159****5620",
        "point_amount": "0.00",
        "refund_fee": "88.00",
        "out_biz_no": REFUND_ID,
    }
    params.update(changes)
    return {key: value for key, value in params.items() if value is not None}


def sdk_signed_notification(keys: Keys, params: dict[str, str], signer: KeyPair) -> bytes:
    """The notification as form-encoded, signed by python-alipay-sdk holding ``signer``'s key
    (Alipay's, for a genuine one): every parameter signed, then sign_type added unsigned."""
    channel_side = alipay_sdk.AliPay(
        appid=APP_ID,
        app_private_key_string=signer.private_pem,
        alipay_public_key_string=keys.app.public_pem,
    )
    return (channel_side.sign_data(dict(params)) + "&sign_type=RSA2").encode("ascii")


def test_a_refund_notification_is_read_once_its_signature_verifies(
    gateway: AlipayGateway, keys: Keys
) -> None:
    # GIVEN a partial refund's notification, signed with Alipay's key by the maintained client
    params = notification_params()
    body = sdk_signed_notification(keys, params, keys.alipay)
    # AND the client itself, on the app's side, verifying it
    merchant_side = alipay_sdk.AliPay(
        appid=APP_ID,
        app_private_key_string=keys.app.private_pem,
        alipay_public_key_string=keys.alipay.public_pem,
    )
    received = dict(parse_qsl(body.decode("ascii")))
    signature = received.pop("sign")
    assert merchant_side.verify(received, signature)
    # WHEN the gateway reads it
    result = gateway.read_notification(
        {"Content-Type": "application/x-www-form-urlencoded"}, body, NOW
    )
    # THEN it is the refund's success, named by out_biz_no (our out_request_no)
    assert result is not None
    assert result.refund_id == REFUND_ID
    assert result.state is PayoutState.SUCCESS
    # AND it carries no amount: refund_fee is the trade's refunded total, over every refund
    assert result.amount is None
    assert "88.00" in result.detail


def test_a_full_refund_closing_the_trade_is_read_too(gateway: AlipayGateway, keys: Keys) -> None:
    # GIVEN the notification of a refund of everything, which closes the trade
    params = notification_params(trade_status="TRADE_CLOSED", refund_fee="100.00")
    body = sdk_signed_notification(keys, params, keys.alipay)
    # WHEN the gateway reads it
    result = gateway.read_notification({}, body, NOW)
    # THEN it is the refund's success all the same
    assert result is not None
    assert result.state is PayoutState.SUCCESS


def test_a_payment_notification_is_about_no_refund(gateway: AlipayGateway, keys: Keys) -> None:
    # GIVEN a payment's TRADE_SUCCESS notification, with no refund_fee nor out_biz_no
    params = notification_params(refund_fee=None, out_biz_no=None, gmt_refund=None)
    body = sdk_signed_notification(keys, params, keys.alipay)
    # WHEN the gateway reads it
    # THEN it is about no refund (a handler reading only trade_status would be fooled)
    assert gateway.read_notification({}, body, NOW) is None


def test_a_notification_signed_with_another_key_is_refused(
    gateway: AlipayGateway, keys: Keys
) -> None:
    # GIVEN a notification signed by a key that is not Alipay's
    body = sdk_signed_notification(keys, notification_params(), keys.stranger)
    # WHEN it is read
    # THEN it is refused (401)
    with pytest.raises(InvalidNotification, match="signature"):
        gateway.read_notification({}, body, NOW)


def test_a_notification_changed_after_signing_is_refused(
    gateway: AlipayGateway, keys: Keys
) -> None:
    # GIVEN a genuine notification whose out_biz_no was changed on the way
    body = sdk_signed_notification(keys, notification_params(), keys.alipay)
    tampered = body.replace(REFUND_ID.encode(), b"rf_someone_elses")
    # WHEN it is read
    # THEN it is refused
    with pytest.raises(InvalidNotification, match="signature"):
        gateway.read_notification({}, tampered, NOW)


@pytest.mark.parametrize("body", [b"", b"trade_status=TRADE_SUCCESS&out_biz_no=rf_1", b"\xff\xfe"])
def test_an_unsigned_or_unreadable_notification_is_refused(
    gateway: AlipayGateway, body: bytes
) -> None:
    with pytest.raises(InvalidNotification):
        gateway.read_notification({}, body, NOW)


@pytest.mark.parametrize("offset", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_a_notification_over_300_seconds_from_now_is_refused(
    gateway: AlipayGateway, keys: Keys, offset: timedelta
) -> None:
    # GIVEN a genuine notification sent 301 s before (a replay) or after now
    sent_at = (NOW - offset).astimezone(UTC) + timedelta(hours=8)
    params = notification_params(notify_time=sent_at.strftime("%Y-%m-%d %H:%M:%S"))
    body = sdk_signed_notification(keys, params, keys.alipay)
    # WHEN it is read
    # THEN it is stale, and refused
    with pytest.raises(InvalidNotification, match="stale"):
        gateway.read_notification({}, body, NOW)


def test_a_notification_300_seconds_old_is_still_read(gateway: AlipayGateway, keys: Keys) -> None:
    # GIVEN a genuine notification sent exactly 300 s ago, Beijing time
    params = notification_params(notify_time="2026-11-20 15:55:00")
    body = sdk_signed_notification(keys, params, keys.alipay)
    # WHEN it is read
    # THEN it is on time
    assert gateway.read_notification({}, body, NOW) is not None


def test_a_notification_for_another_app_is_refused(gateway: AlipayGateway, keys: Keys) -> None:
    body = sdk_signed_notification(
        keys, notification_params(app_id="2021000000000000"), keys.alipay
    )
    with pytest.raises(InvalidNotification, match="another app"):
        gateway.read_notification({}, body, NOW)


# ---------------------------------------------------------------- construction and keys


def test_building_the_gateway_touches_neither_keys_nor_network() -> None:
    # GIVEN keys that would not even parse, and a transport that must not be called
    def no_network(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpAnswer:
        raise AssertionError("network used")

    # WHEN the gateway is built (as a cold start would)
    AlipayGateway(
        app_id=APP_ID,
        app_private_key="not a key",
        alipay_public_key="not a key",
        trade_reference=Trades(),
        wall_clock=lambda: NOW,
        transport=no_network,
    )
    # THEN nothing failed and nothing was sent: keys are read on first use


def test_keys_as_the_bare_base64_alipay_hands_out_are_accepted(
    keys: Keys, channel: FakeAlipay, trades: Trades
) -> None:
    # GIVEN the app key as bare PKCS#1 base64 (Alipay's key tool) and Alipay's public key as
    # the bare base64 its console shows
    bare_private = base64.b64encode(
        keys.app.private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    ).decode()
    bare_public = "".join(keys.alipay.public_pem.splitlines()[1:-1])
    gateway = AlipayGateway(
        app_id=APP_ID,
        app_private_key=bare_private,
        alipay_public_key=bare_public,
        trade_reference=trades,
        wall_clock=lambda: NOW,
        transport=channel,
    )
    channel.answer(accepted(keys))
    # WHEN a refund is paid
    # THEN requests are signed and answers verified as with PEM keys
    assert gateway.pay(payout()).state is PayoutState.SUCCESS


# ---------------------------------------------------------------- the daily bill (statement)

BILL_MEMBER = "alipay_data_dataservice_bill_downloadurl_query_response"
BILL_DAY = date(2026, 11, 30)
BILL_URL = (
    "http://dwbillcenter.alipay.com/downloadBillFile.resource?bizType=trade"
    "&userId=20881234567890120156&fileType=csv.zip&bizDates=20261130"
    "&downloadFileName=20881234567890120156_20261130.csv.zip&fileId=%2Ftrade%2F20261130.csv.zip"
    "&timestamp=1764551554&token=5ab2a5d0b3b3a7e1c3f1"
)


@dataclass
class BillServer:
    """Alipay's gateway for the signed calls, and the file server behind
    ``bill_download_url``: the download is a plain GET, unsigned, valid for a short while."""

    gateway: FakeAlipay
    files: dict[str, HttpAnswer | Exception] = field(default_factory=dict)
    downloads: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def __call__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        timeout: float,
    ) -> HttpAnswer:
        if method != "GET":
            return self.gateway(method, url, headers, body, timeout)
        assert body is None
        assert 0 < timeout <= 30
        self.downloads.append((url, dict(headers)))
        answer = self.files.pop(url)
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def bill_server(channel: FakeAlipay) -> Iterator[BillServer]:
    server = BillServer(channel)
    yield server
    assert not server.files, "a bill was put up and never downloaded"


@pytest.fixture
def bill_gateway(keys: Keys, bill_server: BillServer, trades: Trades) -> AlipayGateway:
    return AlipayGateway(
        app_id=APP_ID,
        app_private_key=keys.app.private_pem,
        alipay_public_key=keys.alipay.public_pem,
        trade_reference=trades,
        wall_clock=lambda: NOW,
        transport=bill_server,
    )


def bill_answer(keys: Keys, signer: KeyPair | None = None, **fields: str) -> HttpAnswer:
    return _answer(_raw_answer(BILL_MEMBER, fields, signer))


def bill_ready(keys: Keys) -> HttpAnswer:
    """Alipay's documented answer: the URL to download the day's bill from."""
    return bill_answer(keys, keys.alipay, code="10000", msg="Success", bill_download_url=BILL_URL)


def bill_file(content: bytes, status: int = 200) -> HttpAnswer:
    return HttpAnswer(
        status=status,
        headers={
            "Content-Type": "application/oct-stream",
            "Content-Disposition": "attachment;filename=20881234567890120156_20261130.csv.zip",
        },
        body=content,
    )


def test_a_statement_is_the_refunds_of_the_bill_alipay_gives_to_download(
    bill_gateway: AlipayGateway, channel: FakeAlipay, bill_server: BillServer
) -> None:
    # GIVEN Alipay's trade bill of the day, with a payment and three refunds
    channel.answer(bill_ready(channel.keys))
    bill_server.files[BILL_URL] = bill_file(alipay_bill([PAYMENT, *ALIPAY_REFUNDS]))
    # WHEN the day's statement is read
    entries = bill_gateway.statement(BILL_DAY)
    # THEN one RSA2-signed bill query went out (the fake checked its signature), for the
    # trade bill of that day
    assert len(channel.sent) == 1
    sent = channel.last
    assert sent.params["method"] == "alipay.data.dataservice.bill.downloadurl.query"
    assert sent.params["app_id"] == APP_ID
    assert sent.params["sign_type"] == "RSA2"
    assert sent.params["timestamp"] == NOW_IN_BEIJING
    assert sent.biz == {"bill_type": "trade", "bill_date": "2026-11-30"}
    # AND the file was fetched with a plain GET of the URL Alipay gave, unsigned
    assert bill_server.downloads == [(BILL_URL, {})]
    # AND the statement is the bill's refunds, by our out_request_no, oldest first
    assert [(entry.refund_no, entry.amount, entry.status) for entry in entries] == [
        ("rf_02A", 1, "SUCCESS"),
        ("rf_01A", 8800, "SUCCESS"),
        ("rf_03A", 1199, "SUCCESS"),
    ]
    assert entries[0].at == datetime(2026, 11, 30, 1, 30, tzinfo=UTC)


def test_the_bill_query_is_the_one_python_alipay_sdk_sends_and_its_answer_one_it_accepts(
    bill_gateway: AlipayGateway,
    channel: FakeAlipay,
    bill_server: BillServer,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN the maintained client asking the same fake Alipay for the same bill (it has no
    # method of its own for it: its generic signed call)
    sdk_urls: list[str] = []

    def sdk_urlopen(url: str, timeout: float | None = None) -> io.BytesIO:
        sdk_urls.append(url)
        return io.BytesIO(bill_ready(keys).body)

    monkeypatch.setattr(alipay_sdk, "urlopen", sdk_urlopen)
    sdk = alipay_sdk.AliPay(
        appid=APP_ID,
        app_private_key_string=keys.app.private_pem,
        alipay_public_key_string=keys.alipay.public_pem,
    )
    sdk_answer = sdk.verified_sync_response(
        sdk.build_body(
            "alipay.data.dataservice.bill.downloadurl.query",
            {"bill_type": "trade", "bill_date": "2026-11-30"},
        ),
        BILL_MEMBER,
    )
    # WHEN the gateway reads the day's statement
    channel.answer(bill_ready(keys))
    bill_server.files[BILL_URL] = bill_file(alipay_bill([PAYMENT]))
    bill_gateway.statement(BILL_DAY)
    # THEN both sent the same method, app, signing scheme and business content
    sdk_params = dict(parse_qsl(urlsplit(sdk_urls[0]).query))
    for name in ("app_id", "method", "charset", "sign_type", "version"):
        assert channel.last.params[name] == sdk_params[name], name
    assert channel.last.biz == json.loads(sdk_params["biz_content"])
    # AND the client verified the fake's signed answer and found the same URL in it
    assert sdk_answer["bill_download_url"] == BILL_URL
    assert bill_server.downloads[0][0] == BILL_URL


@pytest.mark.parametrize(
    ("answer", "download"),
    [
        pytest.param(
            lambda keys: bill_answer(
                keys,
                keys.alipay,
                code="40004",
                msg="Business Failed",
                sub_code="isp.bill_not_exist",
                sub_msg="账单不存在",
            ),
            None,
            id="not ready yet",
        ),
        pytest.param(
            lambda keys: bill_answer(
                keys, None, code="10000", msg="Success", bill_download_url=BILL_URL
            ),
            None,
            id="unsigned answer",
        ),
        pytest.param(
            lambda keys: bill_answer(keys, keys.alipay, code="10000", msg="Success"),
            None,
            id="no download URL",
        ),
        pytest.param(lambda keys: TransportUnreachable("connection refused"), None, id="refused"),
        pytest.param(bill_ready, bill_file(b"<html>Not Found</html>", 404), id="HTTP 404"),
        pytest.param(bill_ready, bill_file(b"<html>expired</html>"), id="not a zip"),
        pytest.param(bill_ready, TransportTimeout("read timed out"), id="download timed out"),
        pytest.param(bill_ready, TransportUnreachable("no route"), id="download unreachable"),
    ],
)
def test_a_bill_that_cannot_be_had_or_read_leaves_the_statement_unavailable(
    bill_gateway: AlipayGateway,
    channel: FakeAlipay,
    bill_server: BillServer,
    answer: Any,
    download: HttpAnswer | Exception | None,
) -> None:
    # GIVEN a bill Alipay has not made yet, an answer nobody vouches for, or a download that
    # fails or is no bill
    channel.answer(answer(channel.keys))
    if download is not None:
        bill_server.files[BILL_URL] = download
    # WHEN the day's statement is read
    # THEN it is unavailable (the run is retried), never read as a day without refunds
    with pytest.raises(ChannelUnavailable):
        bill_gateway.statement(BILL_DAY)
    # AND nothing is downloaded from a URL that was not Alipay's signed word
    assert len(bill_server.downloads) == (download is not None)
