"""The full lifecycle of refunds on the local stack, over HTTP as the clients drive it.

Each refund: create (Idempotency-Key), two evidence slots each with a real multipart upload
to its presigned POST, submit, wait for the automatic check, claim and approve as a
``cs-agent``, wait for ``paid`` to the balance (the wallet ledger: no simulator latency).
Every AWS call the stack's clients make is put down to whoever made it: an API request, a
worker (an SQS handler), the pollers (Lambda's event source mapping, played locally) or a
schedule. Step latencies come from the refund's own history, written by the server, so they
do not depend on how often the client polls.
"""

from __future__ import annotations

import statistics
import struct
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from chalice.app import Chalice, Request, Response, SQSEventConfig

from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token

__all__ = [
    "CallTally",
    "Counts",
    "LifecycleRun",
    "print_lifecycle",
    "run_lifecycles",
    "seed_orders",
]

CALL_TARGET = 20
STEP_TARGET_MS = 100.0
POLL_SECONDS = 0.02
"""The client's status poll: short enough not to idle, long enough not to load 2 cores."""
STEP_DEADLINE = 15.0
SETTLE_SECONDS = 0.5
"""After the last refund reads ``paid``, its payout's tail (the order settled, the message
deleted) is still running: counting goes on this long."""
TIMEOUT = 10
DESCRIPTION = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
"""A description that passes F3 (fact, evidence, claim), so the check hands it to a person."""
EVIDENCE_KINDS = ("order_screenshot", "problem_screenshot")
AGENT = "agent-bench"

EMPTY_RECEIVE = "pollers: empty receives"
POLLER = "pollers: batches received and deleted"
SCHEDULE = "schedules"
OTHER = "other threads"
NOT_IN_TOTAL = frozenset({EMPTY_RECEIVE, SCHEDULE, OTHER})


def _png() -> bytes:
    """A real 8x8 grey PNG: signature, IHDR, one IDAT, IEND (the server reads its first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + bytes([0x80] * 8) for _ in range(8))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = _png()


# --- counting ------------------------------------------------------------------------------


@dataclass
class Counts:
    """What one run cost: AWS calls by (caller, operation), and the server's time by caller."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    aws_seconds: Counter[str] = field(default_factory=Counter)
    span_seconds: Counter[str] = field(default_factory=Counter)
    span_aws_seconds: Counter[str] = field(default_factory=Counter)

    def total(self) -> int:
        """Calls of the app, its workers and the pollers' batches; not the empty receives."""
        return sum(n for (caller, _), n in self.calls.items() if _counted(caller))

    def by_operation(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for (caller, operation), n in self.calls.items():
            if _counted(caller):
                found[operation] += n
        return found

    def by_caller(self) -> Counter[str]:
        found: Counter[str] = Counter()
        for (caller, _), n in self.calls.items():
            found[caller] += n
        return found


def _counted(caller: str) -> bool:
    """In the per-refund total: not the pollers' empty receives (Lambda's event source
    mapping, which AWS does not bill to the function), not the client's status reads."""
    return caller not in NOT_IN_TOTAL and not caller.startswith("GET ")


@dataclass
class _Span:
    caller: str
    aws: float = 0.0


@dataclass
class CallTally:
    """Every AWS call of the watched clients while a run counts, put down to its caller.

    The caller is known from the thread: an API request (the middleware marks it), a worker
    (its handler is wrapped), else the thread's name (``sqs:...`` pollers, ``schedule:...``).
    """

    local: threading.local = field(default_factory=threading.local)
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: Counts | None = None
    watched: set[int] = field(default_factory=set)

    def watch(self, client: Any) -> None:
        if id(client) in self.watched:
            return
        self.watched.add(id(client))
        client.meta.events.register("before-call.*.*", self._before, unique_id="bench-tally-b")
        client.meta.events.register("after-call.*.*", self._after, unique_id="bench-tally-a")

    def instrument(self, app: Chalice) -> None:
        """Mark API requests and worker invocations; before the stack builds its pollers."""
        app.register_middleware(self._middleware, "http")
        for source in app.event_sources:
            if isinstance(source, SQSEventConfig):
                handler = app.handler_map[source.name]
                app.handler_map[source.name] = self._worker(f"worker {source.name}", handler)

    @contextmanager
    def counting(self) -> Iterator[Counts]:
        """Count every call from here to the end of the block into one fresh Counts."""
        counts = self.current = Counts()
        try:
            yield counts
        finally:
            self.current = None

    def _before(self, **_: Any) -> None:
        self.local.started = time.perf_counter()

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        elapsed = time.perf_counter() - getattr(self.local, "started", time.perf_counter())
        span: _Span | None = getattr(self.local, "span", None)
        if span is not None:
            span.aws += elapsed
        counts = self.current
        if counts is None:
            return
        operation = f"{model.service_model.service_name}.{model.name}"
        caller = span.caller if span is not None else _thread_caller(operation, parsed)
        failed = parsed.get("Error", {}).get("Code")
        with self.lock:
            counts.calls[caller, operation] += 1
            counts.aws_seconds[operation] += elapsed
            if failed:
                counts.failed[f"{operation} {failed}"] += 1

    def _in_span(self, caller: str, work: Callable[[], Any]) -> Any:
        span = self.local.span = _Span(caller)
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.local.span = None
            counts = self.current
            if counts is not None:
                with self.lock:
                    counts.span_seconds[caller] += time.perf_counter() - started
                    counts.span_aws_seconds[caller] += span.aws

    def _middleware(self, request: Request, get_response: Callable[[Request], Response]) -> Any:
        path = (request.context or {}).get("resourcePath") or request.path
        return self._in_span(f"{request.method} {path}", lambda: get_response(request))

    def _worker(self, caller: str, handler: Callable[..., Any]) -> Callable[..., Any]:
        def run(event: Any, context: Any) -> Any:
            return self._in_span(caller, lambda: handler(event, context))

        return run


def _thread_caller(operation: str, parsed: dict[str, Any]) -> str:
    name = threading.current_thread().name
    if name.startswith("sqs:"):
        if operation == "sqs.ReceiveMessage" and not parsed.get("Messages"):
            return EMPTY_RECEIVE
        return POLLER
    if name.startswith("schedule:"):
        return SCHEDULE
    return OTHER
