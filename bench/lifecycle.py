"""The full lifecycle of refunds on the local stack, over HTTP as the clients drive it.

Each refund: create (Idempotency-Key), two evidence slots each with a real multipart upload
to its presigned POST, submit, wait for the automatic check, claim and approve as a
``cs-agent``, wait for ``paid`` to the balance (the wallet ledger: no simulator latency).
Every AWS call of the process's botocore clients is put down to whoever made it: an API
request, a worker (an SQS or a stream handler), the pollers (Lambda's event source mappings,
played locally) or a schedule. Step latencies come from the refund's own history, written by
the server, so they do not depend on how often the client polls.
"""

from __future__ import annotations

import functools
import statistics
import struct
import threading
import time
import zlib
from collections import Counter, defaultdict
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
QUIET_SECONDS = 1.0
QUIET_LIMIT = 30.0
TIMEOUT = 10
DESCRIPTION = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
"""A description that passes F3 (fact, evidence, claim), so the check hands it to a person."""
EVIDENCE_KINDS = ("order_screenshot", "problem_screenshot")
AGENT = "agent-bench"

EMPTY_RECEIVE = "pollers: empty receives"
POLLER = "pollers: batches received and deleted"
STREAM_POLLER = "stream pollers: shards described and read"
EVENT_CONSUMER = "the local consumer of the refund events"
SCHEDULE = "schedules"
OTHER = "other threads"
NOT_IN_TOTAL = frozenset({EMPTY_RECEIVE, STREAM_POLLER, EVENT_CONSUMER, SCHEDULE, OTHER})
"""Not billed as the function's work: Lambda's event source mappings receive from SQS and
read DynamoDB streams themselves (stream reads by Lambda triggers cost nothing); the events'
consumer stands for another service; schedules run on their clock, whatever the refunds do."""


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
    failed: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Failed conditions (a lost optimistic lock, mostly), by caller and operation."""
    aws_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    span_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    span_aws_seconds: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))

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
    """In the per-refund total: not the pollers' empty receives nor the stream pollers' reads
    (NOT_IN_TOTAL), not the client's status reads."""
    return caller not in NOT_IN_TOTAL and not caller.startswith("GET ")


@dataclass
class _Span:
    caller: str
    aws: float = 0.0


@dataclass
class CallTally:
    """Every AWS call of the watched clients while a run counts, put down to its caller.

    The caller is known from the thread: an API request (the middleware marks it), a worker
    (its handler is wrapped), else the thread's name (``sqs:...`` and ``stream:...`` pollers,
    ``event-consumer``, ``schedule:...``).
    """

    local: threading.local = field(default_factory=threading.local)
    lock: threading.Lock = field(default_factory=threading.Lock)
    current: Counts | None = None
    watched: set[int] = field(default_factory=set)
    last_work: float = 0.0
    """When a request or a worker last finished: the stack is quiet once none has run for a
    while."""

    def watch(self, client: Any) -> None:
        if id(client) in self.watched:
            return
        self.watched.add(id(client))
        client.meta.events.register("before-call.*.*", self._before, unique_id="bench-tally-b")
        client.meta.events.register("after-call.*.*", self._after, unique_id="bench-tally-a")

    def watch_new_clients(self) -> None:
        """Watch every botocore client made from now on in this process, whoever makes it:
        the app's (PynamoDB makes a botocore session per connection), the stack's pollers'."""
        from botocore.session import Session

        create = Session.create_client

        @functools.wraps(create)
        def create_and_watch(session: Session, *args: Any, **kwargs: Any) -> Any:
            client = create(session, *args, **kwargs)
            self.watch(client)
            return client

        # setattr: mypy refuses an assignment to a method.
        setattr(Session, "create_client", create_and_watch)  # noqa: B010

    def instrument(self, app: Chalice) -> None:
        """Mark API requests and worker invocations; before the stack builds its pollers, which
        take the functions from ``app.handler_map``. Schedules are left to their threads."""
        app.register_middleware(self._middleware, "http")
        workers = [s.name for s in app.event_sources if isinstance(s, SQSEventConfig)]
        workers += [function.name for function in app.pure_lambda_functions]
        for name in workers:
            app.handler_map[name] = self._worker(f"worker {name}", app.handler_map[name])

    @contextmanager
    def counting(self) -> Iterator[Counts]:
        """Count every call from here to the end of the block into one fresh Counts."""
        counts = self.current = Counts()
        try:
            yield counts
        finally:
            self.current = None

    def wait_quiet(self, quiet: float = QUIET_SECONDS, limit: float = QUIET_LIMIT) -> None:
        """Wait until no request or worker has run for ``quiet`` seconds (at most ``limit``),
        so that what was written before a run (its orders) is counted by the analytics, and
        their calls by nobody, before the run."""
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline:
            idle = time.perf_counter() - self.last_work
            if idle >= quiet:
                return
            time.sleep(quiet - idle)

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
                counts.failed[caller, f"{operation} {failed}"] += 1

    def _in_span(self, caller: str, work: Callable[[], Any]) -> Any:
        span = self.local.span = _Span(caller)
        started = time.perf_counter()
        try:
            return work()
        finally:
            self.local.span = None
            self.last_work = time.perf_counter()
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
    if name.startswith("stream:"):
        return STREAM_POLLER
    if name == "event-consumer":
        return EVENT_CONSUMER
    if name.startswith("schedule:"):
        return SCHEDULE
    return OTHER


# --- the clients ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededOrder:
    order_id: str
    owner: dict[str, str]
    """The Authorization header of the order's user."""


def _bearer(sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(LOCAL_DEFAULT_SECRET, sub, groups)}


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ok(answer: requests.Response) -> Any:
    if answer.status_code >= 300:
        method = answer.request.method if answer.request else "?"
        raise RuntimeError(f"{method} {answer.url}: {answer.status_code} {answer.text}")
    return answer.json() if answer.content else None


def seed_orders(api: str, tag: str, count: int) -> list[SeededOrder]:
    """A delivered game card per refund, each of its own user (a sixth refund by one user in
    30 days would go to a senior, R1), fed in over HTTP as the order system does."""
    now = datetime.now(UTC)
    order_service = _bearer("order-system", "order-service")
    seeded = []
    with requests.Session() as session:
        for i in range(count):
            order_id, user_id = f"o-life-{tag}-{i}", f"u-life-{tag}-{i}"
            order: dict[str, Any] = {
                "order_id": order_id,
                "user_id": user_id,
                "kind": "virtual",
                "sku": "steam-100",
                "title": "Steam 100 点卡",
                "category": "game-card",
                "list_price": 10000,
                "paid_amount": 8800,
                "payment_channel": "alipay",
                "channel_trade_no": f"2026{i:012d}",
                "paid_at": _utc(now - timedelta(days=2)),
                "refund_deadline": _utc(now + timedelta(days=30)),
                "status": "delivered",
            }
            url = f"{api}/internal/orders/{order_id}"
            _ok(session.put(url, json=order, headers=order_service, timeout=TIMEOUT))
            seeded.append(SeededOrder(order_id, _bearer(user_id)))
    return seeded


class Client:
    """One client at a time of the API: the app's user for their refund, then an agent."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.http = requests.Session()
        self.s3 = requests.Session()
        self.agent = _bearer(AGENT, "cs-agent")
        self.uploads = 0

    def close(self) -> None:
        self.http.close()
        self.s3.close()

    def lifecycle(self, order: SeededOrder, key: str) -> dict[str, Any]:
        """One refund from create to paid; the refund as the client reads it once paid."""
        api, user = self.api, order.owner
        body: dict[str, Any] = {
            "order_id": order.order_id,
            "reason": "invalid_code",
            "description": DESCRIPTION,
            "payout_channel": "balance",
        }
        headers = {**user, "Idempotency-Key": key}
        created = _ok(self.http.post(f"{api}/refunds", json=body, headers=headers, timeout=TIMEOUT))
        refund_id = created["refund_id"]
        for kind in EVIDENCE_KINDS:
            self._upload(refund_id, kind, user)
        _ok(self.http.post(f"{api}/refunds/{refund_id}/submit", headers=user, timeout=TIMEOUT))
        self._wait(refund_id, user, "pending_review", passing={"submitted"})
        for decision in ("claim", "approve"):
            url = f"{api}/admin/refunds/{refund_id}/{decision}"
            _ok(self.http.post(url, headers=self.agent, timeout=TIMEOUT))
        return self._wait(refund_id, user, "paid", passing={"approved", "paying"})

    def _upload(self, refund_id: str, kind: str, user: dict[str, str]) -> None:
        """Open a slot, then post the file to its presigned URL (multipart), as the app does."""
        slot: dict[str, Any] = {"kind": kind, "content_type": "image/png", "size": len(PNG)}
        url = f"{self.api}/refunds/{refund_id}/evidence"
        upload = _ok(self.http.post(url, json=slot, headers=user, timeout=TIMEOUT))["upload"]
        posted = self.s3.post(
            upload["url"],
            data=upload["fields"],
            files={"file": ("evidence.png", PNG, "image/png")},
            timeout=TIMEOUT,
        )
        _ok(posted)
        self.uploads += 1

    def _wait(
        self, refund_id: str, user: dict[str, str], status: str, passing: set[str]
    ) -> dict[str, Any]:
        """Poll GET /refunds/{id} until ``status``; any status but ``passing`` is a fault."""
        deadline = time.monotonic() + STEP_DEADLINE
        url = f"{self.api}/refunds/{refund_id}"
        while True:
            refund: dict[str, Any] = _ok(self.http.get(url, headers=user, timeout=TIMEOUT))
            if refund["status"] == status:
                return refund
            if refund["status"] not in passing or time.monotonic() > deadline:
                raise RuntimeError(f"{refund_id} is {refund['status']}, awaited {status}")
            time.sleep(POLL_SECONDS)


# --- runs ----------------------------------------------------------------------------------


@dataclass
class LifecycleRun:
    """Refunds taken through their lifecycle by a number of clients at once."""

    clients: int
    planned: int
    refunds: list[dict[str, Any]]
    seconds: float
    """From the first create to the last refund read paid."""
    counted_seconds: float
    """``seconds`` and the settling time after: what the counts cover."""
    uploads: int
    cpu_seconds: float
    """The process's CPU time over ``seconds``: client, API, workers, pollers and moto."""
    counts: Counts

    @property
    def per_second(self) -> float:
        return len(self.refunds) / self.seconds

    def each(self, amount: float) -> float:
        return amount / len(self.refunds)

    def step_ms(self, start: str, end: str) -> list[float]:
        """Per refund, from the history entry ``start`` to ``end``: both ``at`` are written by
        the server (the business clock, the wall clock locally) when it decides the change."""
        return [_between(refund["history"], start, end) for refund in self.refunds]


def _between(history: list[dict[str, Any]], start: str, end: str) -> float:
    at: dict[str, datetime] = {}
    for entry in history:
        at.setdefault(entry["action"], datetime.fromisoformat(entry["at"]))
    return (at[end] - at[start]).total_seconds() * 1000


def run_lifecycles(
    api: str,
    tally: CallTally,
    orders: list[SeededOrder],
    clients: int,
    budget_seconds: float,
) -> LifecycleRun:
    """A refund of each order through its whole lifecycle; ``clients`` clients at once, each
    taking its share of the orders one after another. No client starts a refund past
    ``budget_seconds``, so that a slower stack makes the run shorter, not the bench longer."""
    shares = [orders[k::clients] for k in range(clients)]
    drivers = [Client(api) for _ in shares]
    done: list[list[dict[str, Any]]] = [[] for _ in shares]
    errors: list[BaseException] = []
    tag = f"{clients}-{time.time_ns()}"

    def drive(k: int, deadline: float) -> None:
        try:
            for i, order in enumerate(shares[k]):
                if time.perf_counter() > deadline:
                    return
                done[k].append(drivers[k].lifecycle(order, f"life-{tag}-{k}-{i}"))
        except BaseException as error:
            errors.append(error)

    tally.wait_quiet()
    with tally.counting() as counts:
        started, cpu = time.perf_counter(), time.process_time()
        threads = [
            threading.Thread(
                target=drive, args=(k, started + budget_seconds), name=f"bench-client-{k}"
            )
            for k in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        time.sleep(SETTLE_SECONDS)
        counted = time.perf_counter() - started
    for driver in drivers:
        driver.close()
    if errors:
        raise errors[0]
    refunds = [refund for share in done for refund in share]
    uploads = sum(driver.uploads for driver in drivers)
    return LifecycleRun(clients, len(orders), refunds, seconds, counted, uploads, cpu, counts)


# --- the figures ---------------------------------------------------------------------------


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def _server_split(counts: Counts, callers: Callable[[str], bool]) -> tuple[float, float]:
    """Seconds the server spent on ``callers``' requests or invocations, and of those, waiting
    on AWS: the client's status reads are not the server's work, and are left out."""
    chosen = [caller for caller in counts.span_seconds if _counted(caller) and callers(caller)]
    spent = sum(counts.span_seconds[caller] for caller in chosen)
    return spent, sum(counts.span_aws_seconds[caller] for caller in chosen)


def _own_share(counts: Counts, callers: Callable[[str], bool]) -> float:
    spent, waited = _server_split(counts, callers)
    return (spent - waited) / spent if spent else 0.0


def print_lifecycle(runs: list[LifecycleRun], stored: int) -> None:
    first = runs[0]
    print()
    print(
        f"Lifecycle: {_how_many(first)}, {first.clients} client at a time, {stored} stored before"
    )
    print(
        "over HTTP: create, 2 evidence slots and their uploads, submit, check, claim, approve, "
        "paid (balance)"
    )
    print(
        f"AWS calls per refund: {first.each(first.counts.total()):.2f} (target: at most "
        f"{CALL_TARGET}), made by the API, the workers and the\npollers' batches; not the "
        f"pollers' empty receives, nor the stream pollers' reads"
    )
    _print_operations(first)
    _print_callers(first)
    _print_uncounted(first)
    _print_server_time(first)
    print("throughput through the whole lifecycle:")
    for run in runs:
        clients = f"{run.clients} client{'s' if run.clients > 1 else ''}:"
        print(
            f"  {clients:<11}{run.per_second:.2f} refunds/s over {_how_many(run)}, "
            f"{run.each(run.counts.total()):.2f} AWS calls per refund,\n"
            f"  {'':<11}{run.each(run.cpu_seconds) * 1000:.0f} ms of the process's CPU per refund"
        )
    print(f"{'step (history timestamps)':<40}{'p50 ms':>8}{'p95 ms':>8}{'target p50':>12}")
    for run in runs:
        for name, start, end in (
            ("submit -> pending_review", "submit", "auto_review"),
            ("approve -> paid (balance)", "approve", "paid"),
        ):
            ms = run.step_ms(start, end)
            label = f"{name} ({run.clients} client{'s' if run.clients > 1 else ''})"
            target = f"< {STEP_TARGET_MS:.0f}"
            print(f"{label:<40}{_p50(ms):>8.1f}{_p95(ms):>8.1f}{target:>12}")


def _how_many(run: LifecycleRun) -> str:
    done = len(run.refunds)
    if done == run.planned:
        return f"{done} refunds"
    return f"{done} of {run.planned} refunds (the time budget's)"


def _print_operations(run: LifecycleRun) -> None:
    counts = run.counts
    print(f"  {'by operation':<48}{'per refund':>11}{'mean ms':>9}")
    for operation, n in counts.by_operation().most_common():
        every = sum(m for (_, op), m in counts.calls.items() if op == operation)
        mean = counts.aws_seconds[operation] / every * 1000
        print(f"  {operation:<48}{run.each(n):>11.2f}{mean:>9.2f}")


def _print_callers(run: LifecycleRun) -> None:
    failed: Counter[str] = Counter()
    for (caller, _), n in run.counts.failed.items():
        failed[caller] += n
    print(f"  {'by caller':<48}{'per refund':>11}{'of which failed conditions':>28}")
    for caller, n in sorted(run.counts.by_caller().items()):
        if _counted(caller):
            print(f"  {caller:<48}{run.each(n):>11.2f}{run.each(failed[caller]):>28.2f}")


def _print_uncounted(run: LifecycleRun) -> None:
    callers = run.counts.by_caller()
    polled: Counter[str] = Counter()
    for (caller, operation), n in run.counts.calls.items():
        if caller.startswith("GET "):
            polled[operation] += n
    empty = callers[EMPTY_RECEIVE]
    rows = [
        (f"{EMPTY_RECEIVE} ({empty / run.counted_seconds:.0f} a second)", empty),
        *((f"client's status polls: {op}", n) for op, n in polled.items()),
        ("client's uploads straight to S3 (presigned POST)", run.uploads),
        (STREAM_POLLER, callers[STREAM_POLLER]),
        (EVENT_CONSUMER, callers[EVENT_CONSUMER]),
        (SCHEDULE, callers[SCHEDULE]),
        (OTHER, callers[OTHER]),
    ]
    print(
        f"  not in the total: the pollers stand for Lambda's event source mappings (not billed\n"
        f"  to the function); the client polls GET /refunds/{{id}} every "
        f"{POLL_SECONDS * 1000:.0f} ms"
    )
    for name, n in rows:
        print(f"  {name:<48}{run.each(n):>11.2f}")


def _print_server_time(run: LifecycleRun) -> None:
    spent, waited = _server_split(run.counts, lambda _: True)
    own = spent - waited
    api = _own_share(run.counts, lambda caller: not caller.startswith("worker "))
    workers = _own_share(run.counts, lambda caller: caller.startswith("worker "))
    print(
        f"server's time per refund: {run.each(spent) * 1000:.0f} ms, of which the project's own "
        f"code {run.each(own) * 1000:.0f} ms ({own / spent:.0%}:\nAPI requests {api:.0%}, workers "
        f"{workers:.0%}); the rest waiting on AWS (moto, in this process, whose lock and GIL\n"
        f"the pollers and the client share)"
    )
