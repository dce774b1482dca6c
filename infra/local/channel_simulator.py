"""The local stage's payment channels: Alipay and WeChat Pay, played by one HTTP server.

It speaks the simplified protocol of API.md ("Payment channels", "Local stage only") and
keeps the behaviour that matters to P1 and P2: the refund id is the channel's refund number
and its idempotency key, so resending it never pays twice; a payout can be made while its
answer is lost (``timeout_rate``), which only a query resolves; Alipay answers at once,
WeChat answers PROCESSING and notifies the result later; every success is notified to the
app's webhook, with retries, like the real channels. Its statement is the money it actually
moved, which is what reconciliation and the end-to-end tests compare against.

It is deliberately self-contained (standard library only, its own signing code): it stands
for a party outside the system, so a signing mistake in the app's adapter must not be
mirrored by sharing that adapter's code here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import unquote, urlsplit

from chalicelib.domain.days import shanghai_day

__all__ = ["CHANNELS", "ChannelSettings", "ChannelSimulator"]

logger = logging.getLogger(__name__)

CHANNELS = ("alipay", "wechat")
MAX_SKEW_SECONDS = 300
MAX_BODY = 64 * 1024
MAX_LATENCY_MS = 60_000
MIN_SETTLE_SECONDS = 0.02
NOTIFY_TRIES = 6
NOTIFY_FIRST_DELAY = 0.2
NOTIFY_TIMEOUT_SECONDS = 2.0
JOIN_TIMEOUT_SECONDS = 5.0
LISTEN_BACKLOG = 128
SHUTDOWN_POLL_SECONDS = 0.05
"""How often serve_forever looks for stop(): its default half second would be stop()'s delay."""

_REFUND_NO_PREFIX = {"alipay": "2088", "wechat": "5030"}


@dataclass
class ChannelSettings:
    """One channel's fault injection, as ``PUT /_control/{channel}`` sets it."""

    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    latency_ms: int = 0
    seed: int | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def as_json(self, channel: str) -> dict[str, Any]:
        return {
            "channel": channel,
            "fail_rate": self.fail_rate,
            "timeout_rate": self.timeout_rate,
            "latency_ms": self.latency_ms,
            "seed": self.seed,
        }


@dataclass
class _Payout:
    refund_id: str
    channel_refund_no: str
    amount: int
    status: str

    def as_json(self) -> dict[str, Any]:
        return {
            "refund_id": self.refund_id,
            "channel_refund_no": self.channel_refund_no,
            "status": self.status,
            "amount": self.amount,
        }


@dataclass
class _Channel:
    name: str
    settings: ChannelSettings = field(default_factory=ChannelSettings)
    payouts: dict[str, _Payout] = field(default_factory=dict)
    statement: list[dict[str, Any]] = field(default_factory=list)
    sequence: int = 0


class _Server(ThreadingMixIn, HTTPServer):
    # Request threads are daemons: one sleeping through a long ``latency_ms`` must not hold
    # up stop() or the process's exit.
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets connections under a few dozen clients.
    request_queue_size = LISTEN_BACKLOG
    simulator: ChannelSimulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Only socket errors get here (the handler answers its own faults): a caller that gave
        # up (its own timeout) leaves a broken pipe behind, not worth a traceback on stderr.
        logger.debug("channel simulator: request from %s failed", client_address, exc_info=True)


class _DropConnection(Exception):
    """The call's answer must never reach the caller (``timeout_rate``, or stopping)."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without this every keep-alive answer would wait
    # on the client's delayed ACK (DESIGN.md, field notes).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("channel simulator: " + format, *args)

    def _route(self) -> None:
        body = self._read_body()
        if body is None:
            return
        path = urlsplit(self.path).path
        parts = [unquote(part) for part in path.strip("/").split("/")]
        simulator = self.server.simulator
        try:
            status, payload = simulator._dispatch(
                self.command, parts, dict(self.headers.items()), body
            )
        except _DropConnection:
            # Nothing written, connection closed: the caller sees its request sent and the
            # connection dropped, the unknown outcome of P2.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except Exception:
            # A fault of the simulator itself: logged loudly, and answered as a channel's
            # system error (an unknown outcome to the caller), never a silent drop.
            logger.exception("channel simulator: %s %s failed", self.command, self.path)
            status, payload = 500, {"code": "SYSTEM_ERROR", "message": "simulator fault"}
        self._send_json(status, payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _route

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            self._send_json(400, {"code": "INVALID_REQUEST", "message": "bad Content-Length"})
            return None
        return self.rfile.read(length)

    def _send_json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def _control_error(code: str, message: str, details: list[Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "rule": None, "details": details}}


def _is_number(value: Any) -> bool:
    # bool is an int in Python, never a rate in JSON.
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_int(value: Any) -> int | None:
    """An integer, or an integral number written with a fraction (API.md conventions)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _utc_text(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class ChannelSimulator:
    """Alipay and WeChat Pay for the local stage, over HTTP on ``host:port`` (0: any free port).

    The socket is bound at construction, so that ``url`` is known before the stack starts
    anything (the app is wired with it); ``start()`` begins serving.
    """

    name = "channel-simulator"

    def __init__(
        self,
        secret: str,
        webhook_base_url: Callable[[], str],
        business_clock: Callable[[], datetime],
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._secret = secret.encode("utf-8")
        self._webhook_base_url = webhook_base_url
        self._business_clock = business_clock
        # One lock for all state: payouts are recorded exactly once per (channel, refund id)
        # whatever the server's threads do, and the rates' random draws stay in call order.
        self._lock = threading.Lock()
        self._channels = {name: _Channel(name) for name in CHANNELS}
        self._stopping = threading.Event()
        self._background: set[threading.Thread] = set()
        self._server = _Server((host, port), _Handler)
        self._server.simulator = self
        self._serve_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._serve_thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),
            name=self.name,
            daemon=True,
        )
        self._serve_thread.start()
        logger.info("channel simulator listening on %s", self.url)

    def stop(self) -> None:
        """Stop serving and wait for the threads; safe to call twice, or before start()."""
        self._stopping.set()
        if self._serve_thread is not None:
            # shutdown() waits for serve_forever to notice: it would wait forever if it never ran.
            self._server.shutdown()
            self._serve_thread.join()
            self._serve_thread = None
        self._server.server_close()
        with self._lock:
            background = list(self._background)
        deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
        for thread in background:
            # Daemons: one stuck in a webhook call cannot keep the process alive past this.
            thread.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ routing

    def _dispatch(
        self, method: str, parts: list[str], headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        """One request's answer; raises _DropConnection for an answer that must be lost."""
        if parts and parts[0] == "_control":
            return self._control(method, parts[1:], body)
        if len(parts) >= 2 and parts[1] in ("refunds", "statements"):
            channel = self._channels.get(parts[0])
            if channel is None:
                return 404, {"code": "NOT_FOUND", "message": f"no channel {parts[0]}"}
            found = channel
            if parts[1] == "refunds" and method == "POST" and len(parts) == 2:
                return self._signed(headers, body, lambda: self._refund(found, body))
            if parts[1] == "refunds" and method == "GET" and len(parts) == 3:
                return self._signed(headers, body, lambda: self._query(found, parts[2]))
            if parts[1] == "statements" and method == "GET" and len(parts) == 3:
                return self._signed(headers, body, lambda: self._statement(found, parts[2]))
        return 404, {"code": "NOT_FOUND", "message": f"no route {method} /{'/'.join(parts)}"}

    def _signed(
        self, headers: dict[str, str], body: bytes, answer: Callable[[], tuple[int, Any]]
    ) -> tuple[int, Any]:
        # Checked before anything else: a request the channel cannot trust changes nothing.
        lowered = {name.lower(): value for name, value in headers.items()}
        timestamp = lowered.get("x-channel-timestamp", "")
        signature = lowered.get("x-channel-signature", "")
        if (
            not (timestamp.isascii() and timestamp.isdigit())
            or abs(time.time() - int(timestamp)) > MAX_SKEW_SECONDS
            or not signature.isascii()
            or not hmac.compare_digest(_signature(self._secret, timestamp, body), signature.lower())
        ):
            return 401, {
                "code": "INVALID_SIGNATURE",
                "message": "unsigned, wrongly signed or stale",
            }
        return answer()

    # ------------------------------------------------------------------ channel API

    def _delay(self, channel: _Channel) -> None:
        with self._lock:
            latency_ms = channel.settings.latency_ms
        # An Event wait rather than sleep, so that stop() cuts it short; a call caught by
        # stop() is dropped before it changes anything, like a channel going down mid-call.
        if latency_ms and self._stopping.wait(latency_ms / 1000):
            raise _DropConnection

    def _refund(self, channel: _Channel, body: bytes) -> tuple[int, Any]:
        parsed = _parse_refund_request(body)
        if isinstance(parsed, str):
            return 400, {"code": "INVALID_REQUEST", "message": parsed}
        refund_id, amount = parsed
        self._delay(channel)
        settle: _Payout | None = None
        with self._lock:
            # Both draws on every call, so that a seed gives the same sequence whatever the
            # rates are set to.
            busy = channel.settings.rng.random() < channel.settings.fail_rate
            lost = channel.settings.rng.random() < channel.settings.timeout_rate
            if busy:
                return 503, {"code": "SYSTEM_BUSY", "message": "system busy, retry later"}
            payout = channel.payouts.get(refund_id)
            if payout is None:
                payout = self._record(channel, refund_id, amount)
                settle = payout
            answer = payout.as_json()
        if settle is not None:
            if settle.status == "SUCCESS":
                self._in_background(f"notify-{channel.name}", self._notify, channel, answer)
            else:
                self._in_background(f"settle-{channel.name}", self._settle_later, channel, settle)
        if lost:
            raise _DropConnection
        return 200, answer

    def _record(self, channel: _Channel, refund_id: str, amount: int) -> _Payout:
        """A new payout; the caller holds the lock."""
        channel.sequence += 1
        refund_no = f"{_REFUND_NO_PREFIX[channel.name]}{channel.sequence:012d}"
        # Alipay refunds synchronously; WeChat accepts and settles later.
        status = "SUCCESS" if channel.name == "alipay" else "PROCESSING"
        payout = _Payout(refund_id, refund_no, amount, status)
        channel.payouts[refund_id] = payout
        if status == "SUCCESS":
            self._book(channel, payout)
        return payout

    def _book(self, channel: _Channel, payout: _Payout) -> None:
        """The statement entry of money that moved; the caller holds the lock."""
        channel.statement.append(
            {
                "refund_no": payout.refund_id,
                "amount": payout.amount,
                "status": "SUCCESS",
                "at": _utc_text(self._business_clock()),
            }
        )

    def _settle_later(self, channel: _Channel, payout: _Payout) -> None:
        with self._lock:
            delay = max(channel.settings.latency_ms / 1000, MIN_SETTLE_SECONDS)
        if self._stopping.wait(delay):
            return
        with self._lock:
            if payout.status != "PROCESSING":
                return
            payout.status = "SUCCESS"
            self._book(channel, payout)
            answer = payout.as_json()
        self._notify(channel, answer)

    def _statement(self, channel: _Channel, day_text: str) -> tuple[int, Any]:
        """The channel's statement of one Beijing day, as a channel's daily bill: what moved."""
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            return 400, {"code": "INVALID_REQUEST", "message": f"not a day: {day_text}"}
        with self._lock:
            entries = [
                dict(entry)
                for entry in channel.statement
                # Channels cut their bills at midnight Beijing time.
                if shanghai_day(datetime.fromisoformat(entry["at"].replace("Z", "+00:00"))) == day
            ]
        return 200, {"channel": channel.name, "day": day.isoformat(), "entries": entries}

    def _query(self, channel: _Channel, refund_id: str) -> tuple[int, Any]:
        self._delay(channel)
        with self._lock:
            # Same draws as a payout call, so the sequence stays the seed's; a query's answer
            # is never lost, only refused.
            busy = channel.settings.rng.random() < channel.settings.fail_rate
            channel.settings.rng.random()
            if busy:
                return 503, {"code": "SYSTEM_BUSY", "message": "system busy, retry later"}
            payout = channel.payouts.get(refund_id)
            if payout is None:
                return 404, {"code": "NOT_FOUND", "message": f"no refund {refund_id}"}
            return 200, payout.as_json()

    # ------------------------------------------------------------------ notifications

    def _in_background(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                target(*args)
            except Exception:
                logger.exception("channel simulator: %s failed", name)
            finally:
                with self._lock:
                    self._background.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            if self._stopping.is_set():
                # stop() has already collected the threads it waits for.
                return
            self._background.add(thread)
        thread.start()

    def _notify(self, channel: _Channel, payload: dict[str, Any]) -> None:
        """Deliver one result to the app's webhook until it answers 2xx, or give up."""
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        url = f"{self._webhook_base_url().rstrip('/')}/webhooks/payouts/{channel.name}"
        delay = NOTIFY_FIRST_DELAY
        for attempt in range(1, NOTIFY_TRIES + 1):
            # Signed afresh on each try, as a channel does: a retry hours later is not stale.
            timestamp = str(int(time.time()))
            request = urllib.request.Request(  # noqa: S310 - the URL is the app's, http(s)
                url,
                data=body,
                method="POST",
                headers={
                    "Content-Type": "application/json",
                    "X-Channel-Timestamp": timestamp,
                    "X-Channel-Signature": _signature(self._secret, timestamp, body),
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT_SECONDS) as answer:  # noqa: S310
                    status = answer.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError as error:
                status = None
                logger.info(
                    "channel simulator: notifying %s of %s failed (try %d): %s",
                    url,
                    payload["refund_id"],
                    attempt,
                    error,
                )
            if status is not None and 200 <= status < 300:
                return
            if status is not None:
                logger.info(
                    "channel simulator: %s answered %d to %s's notification (try %d)",
                    url,
                    status,
                    payload["refund_id"],
                    attempt,
                )
            if attempt < NOTIFY_TRIES and self._stopping.wait(delay):
                return
            delay *= 2
        logger.warning(
            "channel simulator: gave up notifying %s of refund %s after %d tries",
            url,
            payload["refund_id"],
            NOTIFY_TRIES,
        )

    # ------------------------------------------------------------------ control

    def _control(self, method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        if not parts or parts[0] not in self._channels or len(parts) > 2:
            return 404, _control_error("not_found", "no such channel or route", [])
        channel = self._channels[parts[0]]
        if len(parts) == 1 and method == "PUT":
            return self._configure(channel, body)
        if len(parts) == 2 and parts[1] == "statement" and method == "GET":
            with self._lock:
                entries = [dict(entry) for entry in channel.statement]
            return 200, {"channel": channel.name, "entries": entries}
        if len(parts) == 1 or parts[1] == "statement":
            return 405, _control_error("method_not_allowed", f"{method} not allowed", [])
        return 404, _control_error("not_found", "no such channel or route", [])

    def _configure(self, channel: _Channel, body: bytes) -> tuple[int, Any]:
        try:
            changes = json.loads(body or b"{}", parse_constant=_reject_constant)
        except ValueError:
            return 400, _control_error("invalid_request", "body is not JSON", [])
        if not isinstance(changes, dict):
            return 400, _control_error("invalid_request", "body must be an object", [])
        details: list[dict[str, str]] = []
        for name in changes:
            if name not in ("fail_rate", "timeout_rate", "latency_ms", "seed"):
                details.append({"field": name, "problem": "unknown field"})
        for name in ("fail_rate", "timeout_rate"):
            if name in changes and not (_is_number(changes[name]) and 0 <= changes[name] <= 1):
                details.append({"field": name, "problem": "must be a number from 0 to 1"})
        if "latency_ms" in changes:
            latency = _as_int(changes["latency_ms"])
            if latency is None or not 0 <= latency <= MAX_LATENCY_MS:
                details.append(
                    {
                        "field": "latency_ms",
                        "problem": f"must be an integer from 0 to {MAX_LATENCY_MS}",
                    }
                )
        if "seed" in changes and _as_int(changes["seed"]) is None:
            details.append({"field": "seed", "problem": "must be an integer"})
        if details:
            return 400, _control_error("invalid_request", "invalid settings", details)
        with self._lock:
            settings = channel.settings
            if "fail_rate" in changes:
                settings.fail_rate = float(changes["fail_rate"])
            if "timeout_rate" in changes:
                settings.timeout_rate = float(changes["timeout_rate"])
            if "latency_ms" in changes:
                settings.latency_ms = _as_int(changes["latency_ms"]) or 0
            if "seed" in changes:
                settings.seed = _as_int(changes["seed"])
                settings.rng.seed(settings.seed)
            answer = settings.as_json(channel.name)
        logger.info("channel simulator: %s", answer)
        return 200, answer


def _parse_refund_request(body: bytes) -> tuple[str, int] | str:
    """A refund request's refund id and amount, or what is wrong with it."""
    try:
        request = json.loads(body, parse_constant=_reject_constant)
    except ValueError:
        return "body is not JSON"
    if not isinstance(request, dict):
        return "body must be an object"
    refund_id = request.get("refund_id")
    if not isinstance(refund_id, str) or not refund_id or len(refund_id) > 64:
        # Both channels take at most 64 characters for their refund number.
        return "refund_id must be a string of 1 to 64 characters"
    if not isinstance(request.get("order_id"), str) or not request["order_id"]:
        return "order_id must be a non-empty string"
    amount = _as_int(request.get("amount"))
    if amount is None or amount <= 0:
        return "amount must be a positive integer number of fen"
    trade_no = request.get("channel_trade_no")
    if trade_no is not None and not isinstance(trade_no, str):
        return "channel_trade_no must be a string or null"
    return refund_id, amount
