"""`make bench`: the hot routes against the local stack, each beside its floor.

Prints, for POST /refunds and GET /refunds/{id}: p50 and p95 latency over HTTP (keep-alive),
AWS calls per request, and the median split of the server's time between the project's own
code and waiting on AWS. The floors are bare Chalice routes doing one DynamoDB GetItem or
PutItem, served by the same local server against the same moto server. Then the same routes
with 10,000 refunds stored instead of 100, and `import app` beside `import boto3`. Between the
two, the full lifecycle of refunds from create to paid (bench/lifecycle.py), and the load run
(bench/load.py: 32 clients for 60 s, with its verdicts on 5xx answers and on refunds lost or
paid twice), while the table is still small: moto's Query, which the automatic check makes,
walks the whole table. ``python -m bench load [SECONDS]`` runs the load run alone.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import requests
from chalice.app import Chalice, Request, Response

from chalicelib.settings import LOCAL_STAGE, get_settings
from infra.local.event_consumer import detach_consumer
from infra.local.stack import LocalStack, make_http_service
from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token

from .events import EventFigures, measure_events, print_events
from .lifecycle import CallTally, LifecycleRun, print_lifecycle, run_lifecycles, seed_orders
from .load import load_seconds, print_load, run_load
from .sweeps import measure_sweeps, print_sweeps

USER = "u-bench"
SAMPLES = 300
WARMUP = 20
SMALL_STORE = 100
LARGE_STORE = 10_000
IMPORT_RUNS = 7
LIFECYCLE_REFUNDS = 200
LIFECYCLE_SECONDS = 110.0
"""A refund's lifecycle takes 0.5 to 1.5 s of this one process (moto, pollers and all): the
budget keeps `make bench` near 5 minutes on 2 cores; the figures say how many fitted."""
CONCURRENT_CLIENTS = 3
CONCURRENT_REFUNDS = 30
CONCURRENT_SECONDS = 20.0


@dataclass
class Meter:
    """AWS calls and their time, per server thread, for the request that thread serves."""

    local: threading.local = field(default_factory=threading.local)
    records: list[tuple[float, float, int]] = field(default_factory=list)

    def watch(self, client: Any) -> None:
        client.meta.events.register("before-call.*.*", self._before)
        client.meta.events.register("after-call.*.*", self._after)

    def _before(self, **_: Any) -> None:
        self.local.started = time.perf_counter()
        self.local.calls = getattr(self.local, "calls", 0) + 1

    def _after(self, **_: Any) -> None:
        self.local.aws = getattr(self.local, "aws", 0.0) + time.perf_counter() - self.local.started

    def middleware(self, request: Request, get_response: Callable[[Request], Response]) -> Response:
        self.local.calls, self.local.aws = 0, 0.0
        started = time.perf_counter()
        response = get_response(request)
        self.records.append((time.perf_counter() - started, self.local.aws, self.local.calls))
        return response


@dataclass
class Figures:
    name: str
    latencies: list[float]
    records: list[tuple[float, float, int]]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p95(self) -> float:
        return statistics.quantiles(self.latencies, n=20)[-1] * 1000

    @property
    def calls(self) -> float:
        return statistics.mean(r[2] for r in self.records) if self.records else 1.0

    @property
    def own_ms(self) -> float:
        return statistics.median(r[0] - r[1] for r in self.records) * 1000 if self.records else 0.0

    @property
    def aws_ms(self) -> float:
        return statistics.median(r[1] for r in self.records) * 1000 if self.records else 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


Send = Callable[[requests.Session, int], requests.Response]


def _timed_pair(route: Send, floor: Send, n: int) -> tuple[list[float], list[float]]:
    """Latencies of a route and its floor, sent alternately so both see the same machine."""
    timings: tuple[list[float], list[float]] = ([], [])
    with requests.Session() as route_session, requests.Session() as floor_session:
        for i in range(-WARMUP, n):
            for send, session, latencies in (
                (route, route_session, timings[0]),
                (floor, floor_session, timings[1]),
            ):
                started = time.perf_counter()
                answer = send(session, i)
                elapsed = time.perf_counter() - started
                if answer.status_code >= 300:
                    raise RuntimeError(f"{answer.status_code} {answer.text}")
                if i >= 0:
                    latencies.append(elapsed)
    return timings


def _floor_app(endpoint: str, table: str) -> Chalice:
    import boto3

    dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.put_item(TableName=table, Item={"pk": {"S": "one"}, "v": {"S": "x" * 1000}})
    floor = Chalice(app_name="floor")

    @floor.route("/get", methods=["GET"])
    def get() -> dict[str, Any]:
        return dynamodb.get_item(TableName=table, Key={"pk": {"S": "one"}})["Item"]

    @floor.route("/put", methods=["POST"])
    def put() -> dict[str, str]:
        dynamodb.put_item(TableName=table, Item={"pk": {"S": str(time.time_ns())}, "v": {"S": "x"}})
        return {"ok": "yes"}

    return floor


@contextmanager
def _serving(app: Chalice) -> Iterator[str]:
    service = make_http_service(app, "127.0.0.1", _free_port())
    service.start()
    try:
        yield service.url
    finally:
        service.stop()


def _seed(ports: Any, orders: int, refunds: int, tag: str) -> tuple[list[str], list[str]]:
    """Orders to refund and refunds to read, written straight to the tables in batches."""
    from chalicelib.adapters.codec import dump_order
    from chalicelib.adapters.dynamodb import OrderModel, RefundModel
    from chalicelib.domain.model import (
        Action,
        HistoryEntry,
        Order,
        OrderKind,
        OrderStatus,
        PaymentChannel,
        PayoutChannel,
        Reason,
        Refund,
        RefundStatus,
    )
    from chalicelib.settings import get_settings

    now = ports.clock.now()

    def order(order_id: str) -> Order:
        return Order(
            order_id=order_id,
            user_id=USER,
            kind=OrderKind.VIRTUAL,
            sku="steam-100",
            category="game-card",
            list_price=10000,
            paid_amount=8800,
            payment_channel=PaymentChannel.ALIPAY,
            paid_at=now - timedelta(days=1),
            refund_deadline=now + timedelta(days=30),
            status=OrderStatus.DELIVERED,
        )

    order_ids = [f"o-{tag}-{i}" for i in range(orders)]
    with OrderModel.batch_write() as batch:
        for order_id in order_ids:
            batch.save(OrderModel(order_id, doc=dump_order(order(order_id)), refunded_total=0))
    refund_ids = []
    with RefundModel.batch_write() as batch:
        for i in range(refunds):
            refund_id = ports.ids.new_id("rf_")
            refund = Refund(
                refund_id=refund_id,
                order=order(f"o-{tag}-stored-{i}"),
                status=RefundStatus.DRAFT,
                reason=Reason.INVALID_CODE,
                description="序列号无效，要求退款，截图为证",
                amount=8800,
                payout_channel=PayoutChannel.ORIGINAL,
                channel=PaymentChannel.ALIPAY,
                gifts_returned=True,
                fast_track=False,
                needs_return=False,
                created_at=now,
                updated_at=now,
                history=[HistoryEntry(now, USER, Action.CREATE, None, RefundStatus.DRAFT)],
            )
            item = RefundModel.from_refund(refund, get_settings().shards)
            item.version = 1
            batch.save(item)
            refund_ids.append(refund_id)
    return order_ids, refund_ids


def _measure_phase(
    api: str,
    floor_url: str,
    headers: dict[str, str],
    meter: Meter,
    orders: list[str],
    refunds: list[str],
    label: str,
) -> list[tuple[Figures, Figures]]:
    """Each hot route beside its floor: (POST /refunds, PutItem), (GET /refunds/{id}, GetItem)."""
    body = '{"order_id": "%s", "reason": "invalid_code", "description": "点卡提示序列号无效，截图为证，要求全额退款"}'

    def create(s: requests.Session, i: int) -> requests.Response:
        return s.post(
            f"{api}/refunds",
            data=(body % orders[i]).encode(),
            headers={
                **headers,
                "Idempotency-Key": f"bench-{label}-{i}",
                "Content-Type": "application/json",
            },
        )

    def read(s: requests.Session, i: int) -> requests.Response:
        return s.get(f"{api}/refunds/{refunds[i % len(refunds)]}", headers=headers)

    results = []
    for name, send, floor_name, floor in (
        ("POST /refunds", create, "floor PutItem", lambda s, i: s.post(f"{floor_url}/put")),
        ("GET /refunds/{id}", read, "floor GetItem", lambda s, i: s.get(f"{floor_url}/get")),
    ):
        meter.records.clear()
        route_times, floor_times = _timed_pair(send, floor, SAMPLES)
        results.append(
            (
                Figures(f"{name} ({label})", route_times, list(meter.records[WARMUP:])),
                Figures(f"{floor_name} ({label})", floor_times, []),
            )
        )
    return results


def _import_ms(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [
        float(
            subprocess.run(  # noqa: S603 - our own interpreter and code
                [sys.executable, "-c", code], capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(IMPORT_RUNS)
    ]
    return statistics.median(runs) * 1000


_COLD_GET = """
import time
from chalice.test import Client  # the test client stands in for Lambda's runtime: not timed
started = time.perf_counter()
from app import app
imported = time.perf_counter()
with Client(app, stage_name="local") as client:
    answer = client.http.get(PATH, headers={"Authorization": "Bearer " + TOKEN})
assert answer.status_code == 200, answer.body
print(imported - started, time.perf_counter() - imported)
"""


def _cold_get_ms(endpoint: str, refund_id: str, token: str) -> tuple[float, float]:
    """A fresh process's import and first GET /refunds/{id} (what a Lambda cold start pays)."""
    code = _COLD_GET.replace("PATH", repr(f"/refunds/{refund_id}")).replace("TOKEN", repr(token))
    env = {**os.environ, "REFUNDS_AWS_ENDPOINT": endpoint, "POWERTOOLS_LOG_LEVEL": "WARNING"}
    runs = []
    for _ in range(IMPORT_RUNS):
        out = subprocess.run(  # noqa: S603 - our own interpreter and code
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout.split()
        runs.append((float(out[0]) * 1000, float(out[1]) * 1000))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _print_table(pairs: list[tuple[Figures, Figures]]) -> None:
    print(
        f"{'route':<34}{'p50 ms':>8}{'p95 ms':>8}{'floor x':>9}{'AWS calls':>11}"
        f"{'own ms':>8}{'AWS ms':>8}"
    )
    for row, floor in pairs:
        print(
            f"{row.name:<34}{row.p50:>8.2f}{row.p95:>8.2f}{row.p50 / floor.p50:>9.2f}"
            f"{row.calls:>11.2f}{row.own_ms:>8.2f}{row.aws_ms:>8.2f}"
        )
        print(
            f"{floor.name:<34}{floor.p50:>8.2f}{floor.p95:>8.2f}{1:>9.2f}{1:>11.2f}{'-':>8}{'-':>8}"
        )


def _lifecycles(api: str, tally: CallTally) -> list[LifecycleRun]:
    """The lifecycle by one client, then by a few at once, each refund on its own order."""
    orders = seed_orders(api, "life", LIFECYCLE_REFUNDS + CONCURRENT_REFUNDS)
    few = orders[LIFECYCLE_REFUNDS:]
    return [
        run_lifecycles(api, tally, orders[:LIFECYCLE_REFUNDS], 1, LIFECYCLE_SECONDS),
        run_lifecycles(api, tally, few, CONCURRENT_CLIENTS, CONCURRENT_SECONDS),
    ]


def main() -> int:
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    # The app names its queues for its stage when it is imported, here before the stack starts.
    os.environ["REFUNDS_STAGE"] = LOCAL_STAGE
    from app import app
    from chalicelib import bootstrap
    from chalicelib.adapters.dynamodb import MODELS

    stack = LocalStack(port=_free_port())
    meter = Meter()
    tally = CallTally()
    app.register_middleware(meter.middleware, "http")
    tally.instrument(app)
    tally.watch_new_clients()
    stack.start()
    phases: list[list[tuple[Figures, Figures]]] = []
    try:
        ports = bootstrap.get_ports()
        for model in MODELS:
            meter.watch(model._get_connection().connection.client)
        meter.watch(ports.evidence.client)  # type: ignore[attr-defined]
        token = mint_token(LOCAL_DEFAULT_SECRET, USER)
        headers = {"Authorization": "Bearer " + token}
        # The local bus's consumer stands for the rest of the platform, not the system under
        # measure: it is detached until the event figures are taken (the events are still
        # published, and their calls counted); else it falls behind the bench's own traffic,
        # and moto's receive cost grows with its queue's depth.
        attach_consumer = detach_consumer(ports.events.client, get_settings().event_bus)  # type: ignore[attr-defined]
        needed = SAMPLES + WARMUP
        with _serving(_floor_app(stack.aws_endpoint, "bench-floor")) as floor_url:

            def measure(stored: int, orders: list[str], refunds: list[str]) -> None:
                ordered = [*orders[WARMUP:], *orders[:WARMUP]]
                label = f"{stored} stored"
                phases.append(
                    _measure_phase(
                        stack.api_url, floor_url, headers, meter, ordered, refunds, label
                    )
                )

            def bulk_load(orders: int, refunds: int, tag: str) -> tuple[list[str], list[str]]:
                """Seed as an import would; the streams' readers catch up before any figure
                is taken."""
                seeded = _seed(ports, orders, refunds, tag)
                tally.wait_quiet()
                return seeded

            orders, refunds = bulk_load(needed, SMALL_STORE, "small")
            measure(SMALL_STORE, orders, refunds)
            lifecycle_stored = len(refunds) + needed
            lifecycles = _lifecycles(stack.api_url, tally)
            load = run_load(stack.api_url, load_seconds())
            created = needed + sum(len(run.refunds) for run in lifecycles) + len(load.refunds)
            orders, _ = bulk_load(needed, 0, "large")
            _, more = bulk_load(0, LARGE_STORE - len(refunds) - created, "filler")
            refunds = [*refunds, *more]
            measure(LARGE_STORE, orders, refunds)
        attach_consumer()
        event_figures = _events(stack.api_url, tally)
        cold_import, cold_get = _cold_get_ms(stack.aws_endpoint, refunds[0], token)
    finally:
        stack.stop()
    sweep_figures = measure_sweeps()

    _print_table([pair for phase in phases for pair in phase])
    for index, route in enumerate(("POST /refunds", "GET /refunds/{id}")):
        ratio = phases[1][index][0].p50 / phases[0][index][0].p50
        print(f"{route}: p50 with {LARGE_STORE} stored / with {SMALL_STORE} = {ratio:.2f}")
    app_ms, boto3_ms = _import_ms("app"), _import_ms("boto3")
    print(
        f"import app {app_ms:.0f} ms, import boto3 {boto3_ms:.0f} ms: ratio {app_ms / boto3_ms:.2f}"
    )
    print(
        f"cold start: import {cold_import:.0f} ms, then the first GET /refunds/{{id}} "
        f"{cold_get:.0f} ms (clients, validators, JWT made on first use)"
    )
    print_lifecycle(lifecycles, lifecycle_stored)
    print_load(load)
    print_sweeps(sweep_figures)
    print_events(event_figures)
    return 0


def _events(api: str, tally: CallTally) -> EventFigures:
    """Write-to-event latency, and the calls the refunds stream and the bus add per refund
    (the events publisher's and the stream readers')."""
    tokens = {
        "user": mint_token(LOCAL_DEFAULT_SECRET, "u-events"),
        "orders": mint_token(LOCAL_DEFAULT_SECRET, "order-system", ["order-service"]),
        "user_id": "u-events",
    }
    with tally.counting() as counts:
        figures = measure_events(api, tokens)
    for (caller, operation), n in counts.calls.items():
        if caller == "worker events_publisher" or caller.startswith("stream:"):
            figures.calls[operation] += n
    return figures


def load_only(argv: list[str]) -> int:
    """``python -m bench load [SECONDS]``: the load run alone, on a stack of its own."""
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    seconds = load_seconds(argv[0] if argv else None)
    stack = LocalStack(port=_free_port())
    stack.start()
    try:
        from chalicelib import bootstrap

        # As in the whole bench: the bus's consumer stands for the rest of the platform.
        detach_consumer(bootstrap.get_ports().events.client, get_settings().event_bus)  # type: ignore[attr-defined]
        figures = run_load(stack.api_url, seconds)
    finally:
        stack.stop()
    print_load(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(load_only(sys.argv[2:]) if sys.argv[1:2] == ["load"] else main())
