"""Fault injection for the local stack and its tests: AWS and the channels failing as they do.

One plain object, :class:`FaultPlan`, says what goes wrong and how often (a rate, drawn from
one seeded random sequence in call order):

- **DynamoDB throttling**: the emulator answers ``ProvisionedThroughputExceededException`` or
  ``ThrottlingException`` (status 400, DynamoDB's JSON error shape) instead of applying the
  request, on chosen operations and tables. The SDK retries it with its backoff.
- **Lost answers**: the emulator applies the request, then closes the connection without an
  answer, or holds the answer for ``stall_seconds`` (past the client's read timeout, that is a
  timeout). Either way the SDK resends a request that was applied (DESIGN.md, "Lost answers").
  DynamoDB by default; SQS and EventBridge (``services``) too.
- **SQS deliveries**, in the local pollers: a message handed twice (to a second invocation
  running at the same time, as two Lambda instances would), a batch handed in reverse order,
  and a worker killed in the middle of a step: its invocation dies after some of its AWS
  writes (or after all of them, before its batch is deleted), so its messages come back after
  their visibility timeout and the step must finish exactly once.
- **Payment channels**: the simulator's ``fail_rate`` (a refusal to retry later),
  ``timeout_rate`` (a payout made whose answer is lost) and ``latency_ms``.

Tests configure ``LocalStack.faults`` directly, at any time. ``make run`` takes a plan from the
environment variable ``REFUNDS_LOCAL_FAULTS``, a JSON object whose keys mirror the methods::

    REFUNDS_LOCAL_FAULTS='{"seed": 7,
      "throttle": [{"rate": 0.05, "operations": ["UpdateItem"], "tables": ["refunds-local-refunds"]}],
      "lose_answers": [{"rate": 0.02}, {"rate": 0.01, "stall_seconds": 2}],
      "sqs": {"duplicate_rate": 0.1, "reorder_rate": 0.3, "kill_rate": 0.05, "kill_visible_after": 2},
      "channels": {"alipay": {"fail_rate": 0.2, "timeout_rate": 0.1}}}' make run

A killed invocation's messages are hidden for the queue's visibility timeout (150 s), as on
Lambda, unless ``kill_visible_after`` shortens it (the local stage scales the steps' retry
intervals down the same way). What was injected is counted in :meth:`FaultPlan.injected`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ENVIRONMENT_VARIABLE",
    "THROTTLE_CODES",
    "Delivery",
    "FaultPlan",
    "WorkerKilled",
    "read_json_body",
]

ENVIRONMENT_VARIABLE = "REFUNDS_LOCAL_FAULTS"

THROTTLE_CODES = {
    "ProvisionedThroughputExceededException": (
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API."
    ),
    "ThrottlingException": "Rate of requests exceeds the allowed throughput.",
}
"""DynamoDB's throttling errors, with the messages DynamoDB sends."""

_SERVICES = {
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodbstreams",
    "AmazonSQS": "sqs",
    "AWSEvents": "events",
}
"""The JSON-protocol services the emulator serves, by their ``X-Amz-Target`` prefix."""

_READ_PREFIXES = (
    "Get",
    "BatchGet",
    "TransactGet",
    "Query",
    "Scan",
    "Describe",
    "List",
    "Head",
    "Receive",
)
"""Operations that change nothing: a killed worker dies after a number of the others."""


class WorkerKilled(BaseException):
    """A worker's invocation died (fault injection). Not an Exception: a process's death is
    nothing the code under test can catch and handle, so it unwinds through every
    ``except Exception`` to the poller, which then deletes nothing, as Lambda would not."""


@dataclass
class _AnswerRule:
    """A fault of the emulator's answers: ``throttle`` (not applied) or ``lose`` (applied,
    the answer dropped or stalled)."""

    kind: str
    rate: float
    services: frozenset[str]
    operations: frozenset[str] | None
    tables: frozenset[str] | None
    code: str = "ProvisionedThroughputExceededException"
    stall_seconds: float = 0.0
    limit: int | None = None
    used: int = 0

    def concerns(self, service: str, operation: str, tables: set[str]) -> bool:
        if service not in self.services:
            return False
        if self.operations is not None and operation not in self.operations:
            return False
        if self.limit is not None and self.used >= self.limit:
            return False
        # Only DynamoDB requests name tables; a rule for some tables leaves the rest alone.
        return self.tables is None or bool(tables & self.tables)


@dataclass
class _SqsFaults:
    duplicate_rate: float = 0.0
    reorder_rate: float = 0.0
    kill_rate: float = 0.0
    kill_writes: int = 6
    """A killed invocation dies right after its n-th AWS write, n drawn from 1 to this plus
    one; one that makes fewer writes dies after its work, before its batch is deleted."""
    kill_visible_after: int | None = None
    """Seconds a killed invocation's messages stay hidden; None: the queue's visibility
    timeout."""
    queues: frozenset[str] | None = None


@dataclass(frozen=True)
class Delivery:
    """How a poller hands over one received batch."""

    batch: list[dict[str, Any]]
    """The messages, in the order handed to the function."""
    again: list[dict[str, Any]] = field(default_factory=list)
    """Messages handed a second time, to another invocation running at the same time."""
    kill_after: int | None = None
    """The invocation dies after this many AWS writes (None: it lives)."""


def _rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number from 0 to 1, not {value!r}")
    return float(value)


def _names(values: Iterable[str] | None) -> frozenset[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        return frozenset({values})
    return frozenset(values)


class FaultPlan:
    """What goes wrong in the local stack, and how often. Safe to change while it runs."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = random.Random(seed)  # noqa: S311 - draws of faults, not secrets
        self._lock = threading.Lock()
        self._rules: list[_AnswerRule] = []
        self._sqs = _SqsFaults()
        self._channels: dict[str, dict[str, Any]] = {}
        self._channel_control: Any = None
        self._injected: Counter[str] = Counter()
        self._local = threading.local()
        self._watched: set[int] = set()

    # ------------------------------------------------------------------ configuration

    def throttle(
        self,
        rate: float,
        *,
        operations: Iterable[str] | None = None,
        tables: Iterable[str] | None = None,
        code: str = "ProvisionedThroughputExceededException",
        limit: int | None = None,
    ) -> FaultPlan:
        """Throttle this share of DynamoDB requests (of ``operations`` on ``tables``; None:
        all), at most ``limit`` times, answering ``code`` instead of applying them."""
        if code not in THROTTLE_CODES:
            raise ValueError(f"code must be one of {sorted(THROTTLE_CODES)}, not {code!r}")
        rule = _AnswerRule(
            "throttle",
            _rate("rate", rate),
            frozenset({"dynamodb"}),
            _names(operations),
            _names(tables),
            code=code,
            limit=limit,
        )
        with self._lock:
            self._rules.append(rule)
        return self

    def lose_answers(
        self,
        rate: float,
        *,
        operations: Iterable[str] | None = None,
        tables: Iterable[str] | None = None,
        services: Iterable[str] = ("dynamodb",),
        stall_seconds: float = 0.0,
        limit: int | None = None,
    ) -> FaultPlan:
        """Apply this share of requests, then lose their answers: the connection closed with
        no answer, or, with ``stall_seconds``, the answer sent that much later."""
        chosen = frozenset(_names(services) or ())
        unknown = chosen - set(_SERVICES.values())
        if unknown:
            raise ValueError(f"no such service behind the emulator: {sorted(unknown)}")
        if stall_seconds < 0:
            raise ValueError("stall_seconds must not be negative")
        rule = _AnswerRule(
            "lose",
            _rate("rate", rate),
            chosen,
            _names(operations),
            _names(tables),
            stall_seconds=float(stall_seconds),
            limit=limit,
        )
        with self._lock:
            self._rules.append(rule)
        return self

    def sqs_deliveries(
        self,
        *,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        kill_rate: float = 0.0,
        kill_writes: int = 6,
        kill_visible_after: int | None = None,
        queues: Iterable[str] | None = None,
    ) -> FaultPlan:
        """Disturb the pollers of ``queues`` (None: all): each message handed twice at
        ``duplicate_rate``, each batch reversed at ``reorder_rate``, each invocation killed
        at ``kill_rate``. Replaces the earlier SQS settings."""
        if kill_writes < 1:
            raise ValueError("kill_writes must be at least 1")
        if kill_visible_after is not None and not 0 <= kill_visible_after <= 43200:
            raise ValueError("kill_visible_after must be from 0 to 43200 seconds")
        settings = _SqsFaults(
            _rate("duplicate_rate", duplicate_rate),
            _rate("reorder_rate", reorder_rate),
            _rate("kill_rate", kill_rate),
            kill_writes,
            kill_visible_after,
            _names(queues),
        )
        with self._lock:
            self._sqs = settings
        return self

    def channel(self, name: str, **settings: float) -> FaultPlan:
        """The payment-channel simulator's faults for ``name`` (``fail_rate``,
        ``timeout_rate``, ``latency_ms``, ``seed``; the others keep their value), applied at
        once if the stack runs, else when it starts."""
        with self._lock:
            self._channels.setdefault(name, {}).update(settings)
            control = self._channel_control
        if control is not None:
            control.configure(name, settings)
        return self

    def clear(self) -> None:
        """No more faults: every rule gone, the SQS deliveries and the channels back to
        normal. What was injected stays counted."""
        with self._lock:
            self._rules.clear()
            self._sqs = _SqsFaults()
            channels, self._channels = self._channels, {}
            control = self._channel_control
        if control is not None:
            for name in channels:
                control.configure(name, {"fail_rate": 0, "timeout_rate": 0, "latency_ms": 0})

    def injected(self) -> dict[str, int]:
        """How often each fault was injected so far, e.g. ``"throttle dynamodb.GetItem"``."""
        with self._lock:
            return dict(self._injected)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FaultPlan:
        """A plan from its JSON form (see the module's docstring)."""
        unknown = set(data) - {"seed", "throttle", "lose_answers", "sqs", "channels"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        plan = cls(seed=data.get("seed"))
        for rule in data.get("throttle", []):
            plan.throttle(**rule)
        for rule in data.get("lose_answers", []):
            plan.lose_answers(**rule)
        if "sqs" in data:
            plan.sqs_deliveries(**data["sqs"])
        for name, settings in data.get("channels", {}).items():
            plan.channel(name, **settings)
        return plan

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> FaultPlan:
        """The plan in ``REFUNDS_LOCAL_FAULTS``, or none (no faults)."""
        text = (os.environ if environ is None else environ).get(ENVIRONMENT_VARIABLE, "")
        if not text.strip():
            return cls()
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{ENVIRONMENT_VARIABLE} is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"{ENVIRONMENT_VARIABLE} must be a JSON object")
        return cls.from_json(data)

    # ------------------------------------------------------------------ the stack's hooks

    def attach(self, ports: Any, simulator_url: str) -> None:
        """Called by the stack once it runs: the app's AWS clients (``ports``'), whose writes a
        killed worker counts, and the payment-channel simulator, which gets the channels'
        faults."""
        from chalicelib.adapters.channels.simulator import SimulatorControl
        from chalicelib.adapters.dynamodb import MODELS

        clients = [model._get_connection().connection.client for model in MODELS]
        clients += [
            port.client for port in (ports.evidence, ports.steps, ports.events, ports.stats)
        ]
        for client in clients:
            self.watch(client)
        channel_control = SimulatorControl(simulator_url)
        with self._lock:
            self._channel_control = channel_control
            channels = {name: dict(settings) for name, settings in self._channels.items()}
        for name, settings in channels.items():
            channel_control.configure(name, settings)

    def watch(self, client: Any) -> None:
        """Count ``client``'s AWS writes toward a worker's death (a botocore client)."""
        if id(client) in self._watched:
            return
        self._watched.add(id(client))
        client.meta.events.register("provide-client-params.*.*", self._refuse_if_dead)
        client.meta.events.register("after-call.*.*", self._count_write)

    def wsgi(self, app: Callable[..., Any]) -> Callable[..., Any]:
        """The emulator's WSGI app, throttling or losing the answers this plan says."""

        def faulty(environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET")
            if not self._rules or not target or "." not in target:
                return app(environ, start_response)
            prefix, operation = target.split(".", 1)
            service = _SERVICES.get(prefix)
            if service is None:
                return app(environ, start_response)
            rule = self._draw(service, operation, _tables_named(read_json_body(environ)))
            if rule is None:
                return app(environ, start_response)
            if rule.kind == "throttle":
                return _throttled(rule.code, start_response)
            answer = app(environ, start_response)
            try:
                body = b"".join(answer)
            finally:
                if hasattr(answer, "close"):
                    answer.close()
            if rule.stall_seconds:
                # Written this late, or not at all if the client gave up on it meanwhile.
                time.sleep(rule.stall_seconds)
                return [body]
            sock = environ.get("werkzeug.socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError(f"{target}: answer dropped (fault injection)")

        return faulty

    def _draw(self, service: str, operation: str, tables: set[str]) -> _AnswerRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.concerns(service, operation, tables) and self._rng.random() < rule.rate:
                    rule.used += 1
                    if rule.kind == "throttle":
                        kind = "throttle"
                    else:
                        kind = "stalled answer" if rule.stall_seconds else "dropped answer"
                    self._injected[f"{kind} {service}.{operation}"] += 1
                    return rule
        return None

    def deliver(self, queue: str, messages: list[dict[str, Any]]) -> Delivery:
        """How a poller of ``queue`` hands over the batch it received."""
        with self._lock:
            settings = self._sqs
            if settings.queues is not None and queue not in settings.queues:
                return Delivery(list(messages))
            rng = self._rng
            again = [m for m in messages if rng.random() < settings.duplicate_rate]
            batch = list(messages)
            if len(batch) > 1 and rng.random() < settings.reorder_rate:
                batch.reverse()
                self._injected["sqs batch reversed"] += 1
            kill_after = None
            if rng.random() < settings.kill_rate:
                kill_after = rng.randint(1, settings.kill_writes + 1)
            if again:
                self._injected["sqs message handed twice"] += len(again)
        return Delivery(batch, again, kill_after)

    @contextmanager
    def invocation(self, kill_after: int | None) -> Iterator[None]:
        """One invocation of a worker on this thread, which dies after its ``kill_after``-th
        AWS write, or, if it makes fewer, after its work (raising WorkerKilled)."""
        if kill_after is None:
            yield
            return
        self._local.writes_left, self._local.dead = kill_after, False
        try:
            yield
            self._local.dead = True
            self._count("worker killed before its delete")
            raise WorkerKilled("killed after its work, before its batch was deleted")
        finally:
            self._local.writes_left, self._local.dead = None, False

    def after_kill(self, sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
        """A killed invocation's messages: hidden for ``kill_visible_after`` if set, else
        left to the queue's visibility timeout."""
        with self._lock:
            hidden_for = self._sqs.kill_visible_after
        if hidden_for is None or not messages:
            return
        sqs.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {
                    "Id": str(i),
                    "ReceiptHandle": message["ReceiptHandle"],
                    "VisibilityTimeout": math.ceil(hidden_for),
                }
                for i, message in enumerate(messages)
            ],
        )

    def _refuse_if_dead(self, **_: Any) -> None:
        if getattr(self._local, "dead", False):
            raise WorkerKilled("a killed worker makes no more calls")

    def _count_write(self, model: Any, **_: Any) -> None:
        left = getattr(self._local, "writes_left", None)
        if left is None or model.name.startswith(_READ_PREFIXES):
            return
        self._local.writes_left = left - 1
        if left == 1:
            self._local.dead = True
            self._count("worker killed mid-step")
            raise WorkerKilled(f"killed right after {model.name}")

    def _count(self, what: str) -> None:
        with self._lock:
            self._injected[what] += 1


def read_json_body(environ: dict[str, Any]) -> dict[str, Any]:
    """A JSON-protocol request's body (SQS, DynamoDB, EventBridge), read and put back for the
    emulator; {} if it is not one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _tables_named(body: dict[str, Any]) -> set[str]:
    """The DynamoDB tables a request names (none for other services)."""
    if "TableName" in body:
        return {str(body["TableName"])}
    if isinstance(body.get("RequestItems"), dict):
        return {str(name) for name in body["RequestItems"]}
    actions = body.get("TransactItems")
    if isinstance(actions, list):
        return {
            str(action.get("TableName", ""))
            for item in actions
            if isinstance(item, dict)
            for action in item.values()
            if isinstance(action, dict)
        }
    return set()


def _throttled(code: str, start_response: Any) -> list[bytes]:
    """DynamoDB's answer to a throttled request: status 400 and its JSON error shape."""
    body = json.dumps(
        {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": THROTTLE_CODES[code]}
    ).encode()
    start_response(
        "400 Bad Request",
        [
            ("Content-Type", "application/x-amz-json-1.0"),
            ("Content-Length", str(len(body))),
            ("x-amzn-RequestId", uuid.uuid4().hex.upper()),
        ],
    )
    return [body]
