"""The local payment-channel simulator and its gateway, over real HTTP (API.md, payment channels).

A real ChannelSimulator listens on a free port; a small stdlib server stands in for the app's
``/webhooks/payouts/{channel}`` and records what it receives; the gateway talks to the
simulator through the real urllib3 transport. What is checked is P1/P2 as a channel shows
them: the refund id is the channel's idempotency key, so nothing is ever paid twice; a lost
answer leaves the money moved and is resolved by a query, never by paying again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chalicelib.adapters.channels.http import HttpAnswer, Urllib3Transport
from chalicelib.adapters.channels.simulator import SimulatorGateway
from chalicelib.adapters.exceptions import InvalidNotification
from chalicelib.service.exceptions import (
    ChannelOutcomeUnknown,
    ChannelUnavailable,
    ServiceError,
)
from chalicelib.service.ports import (
    PaymentGateway,
    PayoutRequest,
    PayoutState,
    StatementEntry,
)
from infra.local.channel_simulator import ChannelSimulator

SECRET = "local-channel-secret-0123456789abcdef"
WAIT_SECONDS = 5.0


def _signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """Headers as a channel signs them, computed here independently of the code under test."""
    timestamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Channel-Timestamp": timestamp, "X-Channel-Signature": digest}


# ---------------------------------------------------------------- fixtures


@dataclass
class Delivery:
    channel: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Webhook:
    """The app's webhook endpoint, reduced to recording; answers 500 ``fail_first`` times."""

    fail_first: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, count: int) -> list[Delivery]:
        with self.changed:
            arrived = self.changed.wait_for(
                lambda: len(self.deliveries) >= count, timeout=WAIT_SECONDS
            )
            assert arrived, f"{len(self.deliveries)} deliveries, expected {count}"
            return list(self.deliveries)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    recorder = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with recorder.changed:
                status = 500 if recorder.fail_first > 0 else 200
                recorder.fail_first -= status == 500
                recorder.deliveries.append(
                    Delivery(self.path.rsplit("/", 1)[-1], dict(self.headers), body, status)
                )
                recorder.changed.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield recorder
    server.shutdown()
    server.server_close()
    thread.join()


@dataclass
class BusinessClock:
    """The local stage's settable business clock."""

    now: datetime = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> BusinessClock:
    return BusinessClock()


@pytest.fixture
def simulator(webhook: Webhook, clock: BusinessClock) -> Iterator[ChannelSimulator]:
    sim = ChannelSimulator(SECRET, webhook_base_url=lambda: webhook.url, business_clock=clock)
    sim.start()
    yield sim
    sim.stop()


def gateway(sim: ChannelSimulator, channel: str = "alipay", **options: Any) -> PaymentGateway:
    """The adapter as the app sees it: through the port (so mypy checks it implements it)."""
    return SimulatorGateway(channel, sim.url, options.pop("secret", SECRET), **options)


def payout(refund_id: str, amount: int = 8800) -> PayoutRequest:
    return PayoutRequest(
        refund_id=refund_id,
        order_id="o-1001",
        channel_trade_no="2026113022001400001",
        amount=amount,
        order_total=9900,
        reason="not as described",
    )


def control(
    sim: ChannelSimulator, method: str, path: str, body: Any = None
) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    url = f"{sim.url}/_control/{path}"
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - local http
    try:
        with urllib.request.urlopen(request, timeout=WAIT_SECONDS) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def configure(sim: ChannelSimulator, channel: str, **settings: Any) -> dict[str, Any]:
    status, answer = control(sim, "PUT", channel, settings)
    assert status == 200, answer
    return answer


def statement(sim: ChannelSimulator, channel: str = "alipay") -> list[dict[str, Any]]:
    status, answer = control(sim, "GET", f"{channel}/statement")
    assert status == 200
    assert answer["channel"] == channel
    return list(answer["entries"])


# ---------------------------------------------------------------- payouts


def test_alipay_pays_at_once_and_the_statement_shows_it(
    simulator: ChannelSimulator, webhook: Webhook
) -> None:
    # GIVEN a healthy Alipay
    alipay = gateway(simulator)

    # WHEN a refund is paid through it
    result = alipay.pay(payout("rf_01A"))

    # THEN the money moved at once (Alipay refunds synchronously), once on the statement
    assert result.state is PayoutState.SUCCESS
    assert result.refund_id == "rf_01A"
    assert result.amount == 8800
    assert result.channel_refund_no
    assert statement(simulator) == [
        {"refund_no": "rf_01A", "amount": 8800, "status": "SUCCESS", "at": "2026-11-30T09:00:00Z"}
    ]
    # AND the success is notified to the app's webhook too, signed so that the gateway reads it
    [delivery] = webhook.wait_for(1)
    assert delivery.channel == "alipay"
    notified = alipay.read_notification(delivery.headers, delivery.body, datetime.now(UTC))
    assert notified is not None
    assert (notified.refund_id, notified.state, notified.amount) == (
        "rf_01A",
        PayoutState.SUCCESS,
        8800,
    )
    assert notified.channel_refund_no == result.channel_refund_no


def test_wechat_accepts_then_notifies_success_and_the_query_shows_it(
    simulator: ChannelSimulator, webhook: Webhook
) -> None:
    # GIVEN WeChat Pay, which accepts a refund and settles it later
    wechat = gateway(simulator, "wechat")

    # WHEN a refund is paid through it
    accepted = wechat.pay(payout("rf_02W", amount=1200))

    # THEN it is PROCESSING at first
    assert accepted.state is PayoutState.PROCESSING
    # AND a signed SUCCESS notification follows, which the gateway accepts
    [delivery] = webhook.wait_for(1)
    assert delivery.channel == "wechat"
    notified = wechat.read_notification(delivery.headers, delivery.body, datetime.now(UTC))
    assert notified is not None
    assert notified.state is PayoutState.SUCCESS
    assert notified.refund_id == "rf_02W"
    assert notified.amount == 1200
    assert notified.channel_refund_no == accepted.channel_refund_no
    # AND the channel now answers SUCCESS to a query, and its statement has the money
    queried = wechat.query("rf_02W")
    assert queried is not None
    assert queried.state is PayoutState.SUCCESS
    assert queried.channel_refund_no == accepted.channel_refund_no
    assert [entry["refund_no"] for entry in statement(simulator, "wechat")] == ["rf_02W"]


@pytest.mark.parametrize("channel", ["alipay", "wechat"])
def test_resending_a_refund_id_pays_once(
    simulator: ChannelSimulator, webhook: Webhook, channel: str
) -> None:
    # GIVEN a refund already sent to the channel (P2: the refund id is the channel's key)
    channel_gateway = gateway(simulator, channel)
    first = channel_gateway.pay(payout("rf_03R"))

    # WHEN the same refund id is sent again, sequentially and by eight threads at once
    again = channel_gateway.pay(payout("rf_03R"))
    racers: list[Any] = []
    threads = [
        threading.Thread(target=lambda: racers.append(channel_gateway.pay(payout("rf_03R"))))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # THEN every answer names the same channel refund, and the money moved exactly once
    assert len(racers) == 8
    assert {r.channel_refund_no for r in [first, again, *racers]} == {first.channel_refund_no}
    webhook.wait_for(1)
    deadline = time.monotonic() + WAIT_SECONDS
    while not statement(simulator, channel) and time.monotonic() < deadline:
        time.sleep(0.02)
    entries = statement(simulator, channel)
    assert [(entry["refund_no"], entry["amount"]) for entry in entries] == [("rf_03R", 8800)]


def test_a_busy_channel_refuses_before_paying(simulator: ChannelSimulator) -> None:
    # GIVEN a channel that refuses every call
    alipay = gateway(simulator)
    configure(simulator, "alipay", fail_rate=1)

    # WHEN a refund is paid
    # THEN the refusal is retryable, and nothing was paid
    with pytest.raises(ChannelUnavailable):
        alipay.pay(payout("rf_04B"))
    assert statement(simulator) == []
    # AND once the channel recovers, it knows nothing of that refund (safe to pay again)
    configure(simulator, "alipay", fail_rate=0)
    assert alipay.query("rf_04B") is None


def test_a_lost_answer_is_resolved_by_a_query_not_by_paying_again(
    simulator: ChannelSimulator,
) -> None:
    # GIVEN a channel whose answers never arrive
    alipay = gateway(simulator)
    configure(simulator, "alipay", timeout_rate=1)

    # WHEN a refund is paid, the outcome is unknown to the caller (P2)
    with pytest.raises(ChannelOutcomeUnknown):
        alipay.pay(payout("rf_05T"))

    # THEN the money did move
    assert [entry["refund_no"] for entry in statement(simulator)] == ["rf_05T"]
    # AND a query resolves it as SUCCESS, so the caller never pays it again
    configure(simulator, "alipay", timeout_rate=0)
    found = alipay.query("rf_05T")
    assert found is not None
    assert found.state is PayoutState.SUCCESS


def test_a_caller_that_gives_up_early_leaves_the_payout_made(simulator: ChannelSimulator) -> None:
    # GIVEN a slow channel and a caller whose timeout is shorter than its latency
    configure(simulator, "alipay", latency_ms=400)
    impatient = gateway(simulator, timeout_seconds=0.1)

    # WHEN a refund is paid, the caller times out: outcome unknown (P2)
    with pytest.raises(ChannelOutcomeUnknown):
        impatient.pay(payout("rf_06S"))

    # THEN the channel carries on and pays, which a later query shows
    configure(simulator, "alipay", latency_ms=0)
    patient = gateway(simulator)
    deadline = time.monotonic() + WAIT_SECONDS
    found = patient.query("rf_06S")
    while found is None and time.monotonic() < deadline:
        time.sleep(0.05)
        found = patient.query("rf_06S")
    assert found is not None
    assert found.state is PayoutState.SUCCESS


def test_latency_delays_each_call(simulator: ChannelSimulator) -> None:
    # GIVEN a channel set to 300 ms latency
    alipay = gateway(simulator)
    configure(simulator, "alipay", latency_ms=300)

    # WHEN a refund is paid and then queried
    started = time.monotonic()
    alipay.pay(payout("rf_07L"))
    paid = time.monotonic()
    alipay.query("rf_07L")
    queried = time.monotonic()

    # THEN each call took about that long (loose bound: timing on a shared machine)
    assert paid - started >= 0.25
    assert queried - paid >= 0.25


def test_an_unreachable_channel_is_retryable(simulator: ChannelSimulator) -> None:
    # GIVEN a port where nothing listens
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = SimulatorGateway("alipay", f"http://127.0.0.1:{closed_port}", SECRET)

    # WHEN paying or querying through it
    # THEN nothing can have been processed: retryable
    with pytest.raises(ChannelUnavailable):
        nowhere.pay(payout("rf_08U"))
    with pytest.raises(ChannelUnavailable):
        nowhere.query("rf_08U")


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"secret": "not-the-channel-secret-0123456789"}, id="wrong secret"),
        pytest.param({"wall_clock": lambda: datetime.now(UTC) - timedelta(minutes=10)}, id="stale"),
    ],
)
def test_the_simulator_refuses_a_badly_signed_call_and_changes_nothing(
    simulator: ChannelSimulator, options: dict[str, Any]
) -> None:
    # GIVEN a gateway whose signature the channel cannot accept
    misconfigured = gateway(simulator, **options)

    # WHEN it pays or queries
    # THEN it raises a fault, not a channel outcome the payout step would retry or record
    with pytest.raises(RuntimeError) as paying:
        misconfigured.pay(payout("rf_09S"))
    assert not isinstance(paying.value, ServiceError)
    with pytest.raises(RuntimeError):
        misconfigured.query("rf_09S")
    # AND nothing was paid
    assert statement(simulator) == []


def test_the_simulator_refuses_an_unsigned_call(simulator: ChannelSimulator) -> None:
    # GIVEN a refund request with no signature at all
    body = json.dumps({"refund_id": "rf_10N", "order_id": "o", "amount": 1}).encode()
    url = f"{simulator.url}/alipay/refunds"
    request = urllib.request.Request(url, data=body, method="POST")  # noqa: S310 - local http

    # WHEN it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_SECONDS)  # noqa: S310

    # THEN 401, and nothing was paid
    assert refused.value.code == 401
    assert statement(simulator) == []


def test_read_notification_accepts_any_header_case() -> None:
    # GIVEN a correctly signed notification whose header names are lowercased by a proxy
    body = b'{"refund_id":"rf_11C","channel_refund_no":"N1","status":"FAILED","amount":5}'
    headers = {name.lower(): value for name, value in _signed(body).items()}
    reader = SimulatorGateway("wechat", "http://127.0.0.1:1", SECRET)

    # WHEN it is read
    result = reader.read_notification(headers, body, datetime.now(UTC))

    # THEN it is the refund's result
    assert result is not None
    assert (result.refund_id, result.state, result.amount, result.channel_refund_no) == (
        "rf_11C",
        PayoutState.FAILED,
        5,
        "N1",
    )


NOTIFICATION = b'{"refund_id":"rf_12X","channel_refund_no":"N2","status":"SUCCESS","amount":8800}'
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
SENT = NOW.timestamp()


def test_read_notification_accepts_a_timestamp_300_seconds_off() -> None:
    # GIVEN notifications signed exactly 300 s before and after the reader's wall clock
    reader = SimulatorGateway("alipay", "http://127.0.0.1:1", SECRET)

    # WHEN they are read
    # THEN both are still accepted (over 300 s is stale, API.md)
    for at in (SENT - 300, SENT + 300):
        assert reader.read_notification(_signed(NOTIFICATION, at=at), NOTIFICATION, NOW)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({}, NOTIFICATION, id="unsigned"),
        pytest.param(
            _signed(NOTIFICATION, secret="another-secret", at=SENT), NOTIFICATION, id="wrong key"
        ),
        pytest.param(
            _signed(NOTIFICATION, at=SENT),
            NOTIFICATION.replace(b"8800", b"88000"),
            id="tampered body",
        ),
        pytest.param(_signed(NOTIFICATION, at=SENT - 301), NOTIFICATION, id="stale"),
        pytest.param(_signed(NOTIFICATION, at=SENT + 301), NOTIFICATION, id="future"),
        pytest.param(_signed(b"{not json", at=SENT), b"{not json", id="malformed but signed"),
        pytest.param(
            _signed(b'{"refund_id":"rf_1","status":"PAID","amount":1}', at=SENT),
            b'{"refund_id":"rf_1","status":"PAID","amount":1}',
            id="unknown status",
        ),
        pytest.param(
            _signed(b'{"refund_id":"rf_1","status":"SUCCESS","amount":1.5}', at=SENT),
            b'{"refund_id":"rf_1","status":"SUCCESS","amount":1.5}',
            id="fractional fen",
        ),
    ],
)
def test_read_notification_refuses_what_it_cannot_trust(
    headers: dict[str, str], body: bytes
) -> None:
    # GIVEN a notification that is unsigned, wrongly signed, stale or malformed
    reader = SimulatorGateway("alipay", "http://127.0.0.1:1", SECRET)

    # WHEN it is read
    # THEN it is refused (the webhook answers 401 and changes nothing)
    with pytest.raises(InvalidNotification):
        reader.read_notification(headers, body, NOW)


def test_a_refused_notification_is_delivered_again(
    simulator: ChannelSimulator, webhook: Webhook
) -> None:
    # GIVEN an app whose webhook fails the first delivery
    webhook.fail_first = 1

    # WHEN a refund is paid
    gateway(simulator).pay(payout("rf_13D"))

    # THEN the channel delivers it again after a back-off, until it is taken
    failed, taken = webhook.wait_for(2)
    assert (failed.answered, taken.answered) == (500, 200)
    assert failed.body == taken.body
    reader = gateway(simulator)
    assert reader.read_notification(taken.headers, taken.body, datetime.now(UTC)) is not None
    time.sleep(0.3)
    assert len(webhook.deliveries) == 2


# ---------------------------------------------------------------- control


def test_settings_start_at_zero_and_keep_what_a_change_leaves_out(
    simulator: ChannelSimulator,
) -> None:
    # GIVEN a fresh simulator
    # WHEN one setting changes at a time
    first = configure(simulator, "wechat", fail_rate=0.3)
    second = configure(simulator, "wechat", latency_ms=5)

    # THEN each answer has all settings, the others unchanged
    assert first == {
        "channel": "wechat",
        "fail_rate": 0.3,
        "timeout_rate": 0.0,
        "latency_ms": 0,
        "seed": None,
    }
    assert second == {**first, "latency_ms": 5}
    # AND the other channel is untouched
    assert configure(simulator, "alipay")["fail_rate"] == 0.0


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"fail_rate": 1.5}, ["fail_rate"]),
        ({"fail_rate": -0.1}, ["fail_rate"]),
        ({"timeout_rate": "0.5"}, ["timeout_rate"]),
        ({"timeout_rate": True}, ["timeout_rate"]),
        ({"latency_ms": 60001}, ["latency_ms"]),
        ({"latency_ms": 2.5}, ["latency_ms"]),
        ({"seed": "x"}, ["seed"]),
        ({"fail_rate": 2, "latency_ms": -1, "speed": 1}, ["speed", "fail_rate", "latency_ms"]),
    ],
)
def test_invalid_settings_are_refused_whole(
    simulator: ChannelSimulator, body: dict[str, Any], fields: list[str]
) -> None:
    # GIVEN a channel with settings of its own
    before = configure(simulator, "alipay", latency_ms=7)

    # WHEN an invalid change is sent
    status, answer = control(simulator, "PUT", "alipay", body)

    # THEN 400 in the error envelope, each bad field named, and nothing changed
    assert status == 400
    error = answer["error"]
    assert error["code"] == "invalid_request"
    assert error["rule"] is None
    assert error["message"]
    assert [detail["field"] for detail in error["details"]] == fields
    assert all(detail["problem"] for detail in error["details"])
    assert configure(simulator, "alipay") == before


def test_an_unknown_channel_is_not_found(simulator: ChannelSimulator) -> None:
    # GIVEN/WHEN control calls for a channel the simulator does not play
    put_status, put_answer = control(simulator, "PUT", "paypal", {"fail_rate": 0})
    get_status, get_answer = control(simulator, "GET", "paypal/statement")

    # THEN 404 in the envelope
    assert (put_status, get_status) == (404, 404)
    assert put_answer["error"]["code"] == get_answer["error"]["code"] == "not_found"


def test_a_seed_makes_a_fault_sequence_repeatable(simulator: ChannelSimulator) -> None:
    # GIVEN a channel failing half its calls
    alipay = gateway(simulator)

    def outcomes(seed: int, prefix: str) -> list[bool]:
        configure(simulator, "alipay", fail_rate=0.5, seed=seed)
        refused = []
        for n in range(12):
            try:
                alipay.pay(payout(f"rf_14{prefix}{n:02d}"))
                refused.append(False)
            except ChannelUnavailable:
                refused.append(True)
        return refused

    # WHEN the same seed is set twice, and the same calls follow each time
    first = outcomes(7, "A")
    second = outcomes(7, "B")

    # THEN the same calls fail, and some do and some don't
    assert first == second
    assert any(first)
    assert not all(first)


def test_the_business_clock_stamps_the_statement(
    simulator: ChannelSimulator, clock: BusinessClock, webhook: Webhook
) -> None:
    # GIVEN the business clock set to a day, then moved two days on
    alipay = gateway(simulator)
    wechat = gateway(simulator, "wechat")
    alipay.pay(payout("rf_15A"))
    clock.now = datetime(2026, 12, 2, 17, 30, 5, 123456, tzinfo=UTC)

    # WHEN more refunds are paid (WeChat's when it settles)
    alipay.pay(payout("rf_15B"))
    wechat.pay(payout("rf_15C"))
    webhook.wait_for(3)

    # THEN each entry carries the business time of its success, in UTC with a Z, oldest first
    assert [(entry["refund_no"], entry["at"]) for entry in statement(simulator)] == [
        ("rf_15A", "2026-11-30T09:00:00Z"),
        ("rf_15B", "2026-12-02T17:30:05Z"),
    ]
    assert [entry["at"] for entry in statement(simulator, "wechat")] == ["2026-12-02T17:30:05Z"]


def test_the_simulator_stops_cleanly(webhook: Webhook, clock: BusinessClock) -> None:
    # GIVEN a simulator retrying a notification the app keeps refusing, and a slow call in
    # flight
    sim = ChannelSimulator(SECRET, webhook_base_url=lambda: webhook.url, business_clock=clock)
    sim.start()
    webhook.fail_first = 100
    gateway(sim).pay(payout("rf_16N"))
    webhook.wait_for(1)
    configure(sim, "wechat", latency_ms=5000)
    failures: list[Exception] = []

    def pay_slowly() -> None:
        try:
            gateway(sim, "wechat").pay(payout("rf_16S"))
        except Exception as error:
            failures.append(error)

    slow = threading.Thread(target=pay_slowly, daemon=True)
    slow.start()
    time.sleep(0.1)

    # WHEN it stops, twice
    started = time.monotonic()
    sim.stop()
    sim.stop()

    # THEN it stops at once, and its port is released
    assert time.monotonic() - started < 2
    # AND the call in flight was dropped unanswered: an unknown outcome to its caller
    slow.join(WAIT_SECONDS)
    assert [type(error) for error in failures] == [ChannelOutcomeUnknown]
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0
    # AND a simulator never started stops too
    ChannelSimulator(SECRET, lambda: webhook.url, clock).stop()


# ---------------------------------------------------------------- statements


def test_a_statement_is_what_the_channel_moved_that_beijing_day(
    simulator: ChannelSimulator, clock: BusinessClock
) -> None:
    # GIVEN two refunds paid on 30 November in Beijing, the second at its last second
    # (15:59:59 UTC), and a third a second later, 1 December in Beijing
    alipay = gateway(simulator)
    alipay.pay(payout("rf_17A"))
    clock.now = datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)
    alipay.pay(payout("rf_17B", amount=1))
    clock.now = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    alipay.pay(payout("rf_17C", amount=500))

    # WHEN the statement of 30 November is read through the gateway
    entries = alipay.statement(date(2026, 11, 30))

    # THEN it has both refunds of that day, oldest first, with their amounts and times
    assert entries == [
        StatementEntry("rf_17A", 8800, "SUCCESS", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        StatementEntry("rf_17B", 1, "SUCCESS", datetime(2026, 11, 30, 15, 59, 59, tzinfo=UTC)),
    ]
    # AND the next day's has the third, a day without payouts has none, and the other
    # channel's statement of the same day is its own
    assert [entry.refund_no for entry in alipay.statement(date(2026, 12, 1))] == ["rf_17C"]
    assert alipay.statement(date(2026, 11, 29)) == []
    assert gateway(simulator, "wechat").statement(date(2026, 11, 30)) == []


def test_a_wechat_refund_is_on_the_statement_once_it_settled(
    simulator: ChannelSimulator, webhook: Webhook
) -> None:
    # GIVEN WeChat accepting a refund, which it settles later
    wechat = gateway(simulator, "wechat")
    wechat.pay(payout("rf_18W", amount=1200))

    # WHEN it has settled (and notified), and the day's statement is read
    webhook.wait_for(1)
    entries = wechat.statement(date(2026, 11, 30))

    # THEN the money it moved is there
    assert [(entry.refund_no, entry.amount, entry.status) for entry in entries] == [
        ("rf_18W", 1200, "SUCCESS")
    ]


def test_the_simulator_refuses_an_unsigned_statement_request(simulator: ChannelSimulator) -> None:
    # GIVEN a day with a payout, and a statement request with no signature at all
    gateway(simulator).pay(payout("rf_19N"))
    url = f"{simulator.url}/alipay/statements/2026-11-30"
    request = urllib.request.Request(url, method="GET")  # noqa: S310 - local http

    # WHEN it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_SECONDS)  # noqa: S310

    # THEN 401, and the statement is not shown
    assert refused.value.code == 401
    answer = json.loads(refused.value.read())
    assert answer["code"] == "INVALID_SIGNATURE"
    assert "entries" not in answer
    # AND a gateway holding the wrong secret gets a fault, not a channel outcome to retry
    with pytest.raises(RuntimeError) as reading:
        gateway(simulator, secret="not-the-channel-secret-0123456789").statement(date(2026, 11, 30))
    assert not isinstance(reading.value, ServiceError)


@pytest.mark.parametrize("bad_day", ["2026-02-30", "2026-13-01", "yesterday"])
def test_a_statement_of_no_calendar_day_is_refused(
    simulator: ChannelSimulator, bad_day: str
) -> None:
    # GIVEN a signed statement request for a day that is not a calendar day
    url = f"{simulator.url}/alipay/statements/{bad_day}"
    request = urllib.request.Request(url, headers=_signed(b""), method="GET")  # noqa: S310

    # WHEN it is sent
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=WAIT_SECONDS)  # noqa: S310

    # THEN 400
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["code"] == "INVALID_REQUEST"

    # AND a gateway whose request reaches the simulator with such a day (a proxy garbling its
    # path: the signature covers the body only) raises, never reads an empty statement
    real = Urllib3Transport()

    def garbling(
        method: str, target: str, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> HttpAnswer:
        return real(method, target.replace("2026-11-30", bad_day), headers, body, timeout)

    with pytest.raises(RuntimeError, match="400"):
        gateway(simulator, transport=garbling).statement(date(2026, 11, 30))
