"""The load run: 32 clients at once for a minute on the local stack, as the apps drive it.

Each client is, in turn, the order system feeding an order, an app user opening a refund on
it (each order its own user), uploading its evidence and submitting it, an agent claiming and
approving what the automatic check handed to a person, and a reader of refunds, lists and
quotes. A third of the orders are platform faults (O2), paid with no person; the payouts go
to Alipay, WeChat Pay or the balance. Each step picks its kind of request by weight, as long
as there is something to do it on (a draft to submit, a refund in review to approve).

Printed: API requests per second, p50/p95/p99 latency by kind and overall, the answers by
status, and then the verdicts, as figures whose target is 0: 5xx answers; refunds lost (an
approved refund with no payout in its channel's statement once the system settled), paid
twice, paid another amount than approved, or paid without an approval. The statements are
the channels' own (``/_local/channels/{channel}/statement``), read after the run.

``make bench`` runs it for 60 s within the whole bench; ``python -m bench load [SECONDS]``
runs it alone, on a stack of its own (``BENCH_LOAD_SECONDS`` sets the duration too).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from infra.local.tokens import LOCAL_DEFAULT_SECRET, mint_token

from .lifecycle import PNG

__all__ = ["LoadFigures", "load_seconds", "print_load", "run_load"]

CLIENTS = 32
SECONDS = 60.0
SECONDS_VARIABLE = "BENCH_LOAD_SECONDS"
WEIGHTS = {"read": 0.55, "create": 0.15, "submit": 0.15, "approve": 0.15}
"""How often a client picks each kind of step (a create feeds its order and uploads its
evidence; an approval claims first)."""
SETTLE_SECONDS = 150.0
"""After the run, how long the approved refunds may take to be paid: past the workflow's
grace for a lost step message (120 s), after which ``resume-steps`` sends it again."""
RESUME_EVERY = 5.0
TIMEOUT = 30
PAID = 8800
LOWER = 8000
DESCRIPTION = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
FAULT_DESCRIPTION = "同一笔订单被扣款两次，银行流水显示重复扣款 88 元"
EVIDENCE = ("order_screenshot", "problem_screenshot")
CHANNELS = ("alipay", "wechat", "balance")
NO_ANSWER = 0
"""The status counted for a request that got no answer at all (a broken connection)."""
MAX_FAILURES_KEPT = 20


def load_seconds(argument: str | None = None) -> float:
    """The run's duration: the argument, else ``BENCH_LOAD_SECONDS``, else 60 s."""
    text = argument or os.environ.get(SECONDS_VARIABLE) or str(SECONDS)
    seconds = float(text)
    if seconds <= 0:
        raise ValueError(f"the load run needs a positive duration, not {text}")
    return seconds


def _bearer(sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(LOCAL_DEFAULT_SECRET, sub, groups)}


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Refund:
    refund_id: str
    owner: dict[str, str]
    order_id: str
    channel: str
    fast_track: bool
    approved_amount: int | None = None
    """Set once an approval was answered (by an agent, or, for a platform fault, by the
    system after its submission)."""


@dataclass
class LoadFigures:
    clients: int
    seconds: float
    """How long the clients ran."""
    latencies: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: Counter[int] = field(default_factory=Counter)
    uploads: list[float] = field(default_factory=list)
    """The presigned POSTs straight to S3 (not API requests)."""
    refunds: list[_Refund] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    """Answers a client did not expect, with their bodies (the first few)."""
    settle_seconds: float = 0.0
    unsettled: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    wrong_amount: list[str] = field(default_factory=list)
    unapproved_paid: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(len(values) for values in self.latencies.values())

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)

    @property
    def approved(self) -> list[_Refund]:
        return [refund for refund in self.refunds if refund.approved_amount is not None]


class _Client:
    """One of the clients: its own HTTP sessions, refunds and agent."""

    def __init__(self, api: str, index: int, figures: LoadFigures, lock: threading.Lock) -> None:
        self.api = api
        self.index = index
        self.figures = figures
        self.lock = lock
        self.http = requests.Session()
        self.s3 = requests.Session()
        self.agent = _bearer(f"agent-load-{index}", "cs-agent")
        self.orders = _bearer("order-system", "order-service")
        self.random = random.Random(index)
        self.drafts: list[_Refund] = []
        self.in_review: list[_Refund] = []
        self.known: list[_Refund] = []
        self.made = 0

    def run(self, until: float) -> None:
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        while time.perf_counter() < until:
            kind = self.random.choices(kinds, weights)[0]
            if kind == "submit" and not self.drafts:
                kind = "create"
            if kind == "approve" and not self.in_review:
                kind = "read"
            if kind == "read" and not self.known:
                kind = "create"
            getattr(self, f"_{kind}")()
        self.http.close()
        self.s3.close()

    # ------------------------------------------------------------------ the steps

    def _create(self) -> None:
        self.made += 1
        n = self.made
        channel = CHANNELS[n % len(CHANNELS)]
        fast_track = n % 3 == 0
        user_id = f"u-load-{self.index}-{n}-{uuid.uuid4().hex[:6]}"
        owner = _bearer(user_id)
        order_id = f"o-load-{self.index}-{n}-{uuid.uuid4().hex[:6]}"
        now = datetime.now(UTC)
        order: dict[str, Any] = {
            "order_id": order_id,
            "user_id": user_id,
            "kind": "virtual",
            "sku": "steam-100",
            "category": "game-card",
            "list_price": 10000,
            "paid_amount": PAID,
            "payment_channel": "alipay" if channel == "balance" else channel,
            "paid_at": _utc(now - timedelta(days=1)),
            "refund_deadline": _utc(now + timedelta(days=30)),
            "status": "delivered",
        }
        if fast_track:
            order["platform_fault"] = "duplicate_charge"
        if self._call("order", "PUT", f"/internal/orders/{order_id}", self.orders, order) is None:
            return
        body = {
            "order_id": order_id,
            "reason": "duplicate_charge" if fast_track else "invalid_code",
            "description": FAULT_DESCRIPTION if fast_track else DESCRIPTION,
            "payout_channel": "balance" if channel == "balance" else "original",
        }
        headers = {**owner, "Idempotency-Key": uuid.uuid4().hex}
        created = self._call("create", "POST", "/refunds", headers, body)
        if created is None:
            return
        refund = _Refund(created["refund_id"], owner, order_id, channel, fast_track)
        with self.lock:
            self.figures.refunds.append(refund)
        self.known.append(refund)
        if not fast_track:
            for kind in EVIDENCE:
                self._upload(refund, kind)
        self.drafts.append(refund)

    def _upload(self, refund: _Refund, kind: str) -> None:
        slot = {"kind": kind, "content_type": "image/png", "size": len(PNG)}
        path = f"/refunds/{refund.refund_id}/evidence"
        answer = self._call("evidence slot", "POST", path, refund.owner, slot)
        if answer is None:
            return
        started = time.perf_counter()
        posted = self.s3.post(
            answer["upload"]["url"],
            data=answer["upload"]["fields"],
            files={"file": ("evidence.png", PNG, "image/png")},
            timeout=TIMEOUT,
        )
        with self.lock:
            self.figures.uploads.append(time.perf_counter() - started)
        if posted.status_code >= 300:
            self._unexpected(f"S3 upload: {posted.status_code} {posted.text[:300]}")

    def _submit(self) -> None:
        refund = self.drafts.pop(0)
        path = f"/refunds/{refund.refund_id}/submit"
        if self._call("submit", "POST", path, refund.owner) is None:
            return
        if refund.fast_track:
            refund.approved_amount = PAID  # the check approves it in full (O2)
        else:
            self.in_review.append(refund)

    def _approve(self) -> None:
        refund = self.in_review.pop(0)
        read = self._call("read", "GET", f"/refunds/{refund.refund_id}", refund.owner)
        if read is None or read["status"] != "pending_review":
            if read is not None and read["status"] == "submitted":
                self.in_review.append(refund)  # the check has not run yet
            return
        path = f"/admin/refunds/{refund.refund_id}"
        if self._call("claim", "POST", f"{path}/claim", self.agent) is None:
            return
        lower = self.random.random() < 0.25
        body = {"amount": LOWER, "note": "部分已使用，协商退款"} if lower else {}
        if self._call("approve", "POST", f"{path}/approve", self.agent, body) is not None:
            refund.approved_amount = LOWER if lower else PAID

    def _read(self) -> None:
        refund = self.random.choice(self.known)
        pick = self.random.random()
        if pick < 0.7:
            self._call("read", "GET", f"/refunds/{refund.refund_id}", refund.owner)
        elif pick < 0.85:
            self._call("read", "GET", "/refunds?limit=20", refund.owner)
        else:
            path = f"/orders/{refund.order_id}/refund-quote?reason=invalid_code"
            self._call("read", "GET", path, refund.owner)

    # ------------------------------------------------------------------ HTTP

    def _call(
        self, kind: str, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> Any:
        """One API request, timed and counted; its JSON if it succeeded, else None."""
        started = time.perf_counter()
        try:
            answer = self.http.request(
                method, self.api + path, json=body, headers=headers, timeout=TIMEOUT
            )
        except requests.RequestException as error:
            with self.lock:
                self.figures.statuses[NO_ANSWER] += 1
            self._unexpected(f"{method} {path}: {error}")
            return None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.figures.latencies[kind].append(elapsed)
            self.figures.statuses[answer.status_code] += 1
        if answer.status_code >= 300:
            self._unexpected(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
            return None
        return answer.json()

    def _unexpected(self, what: str) -> None:
        with self.lock:
            if len(self.figures.failures) < MAX_FAILURES_KEPT:
                self.figures.failures.append(what)


def run_load(api: str, seconds: float, clients: int = CLIENTS) -> LoadFigures:
    """``clients`` clients at once for ``seconds``; then the system settles, and the
    channels' statements are compared with the refunds.

    The clients run in a process of their own, as the apps do: in the stack's process they
    would take its interpreter lock from the API, the workers and the emulator they measure.
    """
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        figures: LoadFigures = pool.apply(_drive, (api, seconds, clients))
    _settle(api, figures)
    _compare_statements(api, figures)
    return figures


def _drive(api: str, seconds: float, clients: int) -> LoadFigures:
    figures = LoadFigures(clients, seconds)
    lock = threading.Lock()
    drivers = [_Client(api, k, figures, lock) for k in range(clients)]
    started = time.perf_counter()
    threads = [
        threading.Thread(target=d.run, args=(started + seconds,), name=f"bench-load-{k}")
        for k, d in enumerate(drivers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures.seconds = time.perf_counter() - started
    return figures


def _settle(api: str, figures: LoadFigures) -> None:
    """Wait until every approved refund is paid (or the settle time is over), running
    ``resume-steps`` as its schedule would."""
    started = time.perf_counter()
    waiting = {refund.refund_id: refund for refund in figures.approved}
    last_resume = started
    with requests.Session() as http:
        while waiting and time.perf_counter() - started < SETTLE_SECONDS:
            for refund_id, refund in list(waiting.items()):
                answer = http.get(
                    f"{api}/refunds/{refund_id}", headers=refund.owner, timeout=TIMEOUT
                )
                if answer.status_code == 200 and answer.json()["status"] == "paid":
                    del waiting[refund_id]
            if waiting:
                time.sleep(0.5)
            if time.perf_counter() - last_resume > RESUME_EVERY:
                http.post(f"{api}/_local/schedules/resume-steps/run", timeout=TIMEOUT)
                last_resume = time.perf_counter()
    figures.settle_seconds = time.perf_counter() - started
    figures.unsettled = sorted(waiting)


def _compare_statements(api: str, figures: LoadFigures) -> None:
    """Each approved refund paid exactly once, its approved amount, in its channel; nothing
    paid for a refund of the run that was not approved."""
    mine = {refund.refund_id: refund for refund in figures.refunds}
    moved: defaultdict[str, list[tuple[str, int]]] = defaultdict(list)
    with requests.Session() as http:
        for channel in CHANNELS:
            url = f"{api}/_local/channels/{channel}/statement"
            answer = http.get(url, timeout=TIMEOUT)
            answer.raise_for_status()
            for entry in answer.json()["entries"]:
                if entry["refund_no"] in mine and entry["status"] == "SUCCESS":
                    moved[entry["refund_no"]].append((channel, int(entry["amount"])))
    for refund_id, refund in mine.items():
        entries = moved.get(refund_id, [])
        if refund.approved_amount is None:
            if entries:
                figures.unapproved_paid.append(refund_id)
        elif not entries:
            figures.lost.append(refund_id)
        elif len(entries) > 1:
            figures.doubled.append(refund_id)
        elif entries[0] != (refund.channel, refund.approved_amount):
            figures.wrong_amount.append(refund_id)


def _ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] * 1000 if values else 0.0
    return statistics.quantiles(values, n=100)[q - 1] * 1000


def print_load(figures: LoadFigures) -> None:
    everything = [value for values in figures.latencies.values() for value in values]
    print()
    print(
        f"Load: {figures.clients} clients at once for {figures.seconds:.0f} s (order fed, refund "
        f"created, evidence uploaded, submitted, claimed and approved, read), "
        f"{len(figures.refunds)} refunds created"
    )
    print(f"API requests: {figures.requests} = {figures.requests / figures.seconds:.1f} per second")
    print(f"  {'request':<16}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    rows: list[tuple[str, list[float]]] = sorted(figures.latencies.items())
    for name, values in [*rows, ("all", everything)]:
        print(
            f"  {name:<16}{len(values):>8}{_ms(values, 50):>9.1f}{_ms(values, 95):>9.1f}"
            f"{_ms(values, 99):>9.1f}"
        )
    statuses = ", ".join(
        f"{status if status != NO_ANSWER else 'no answer'}: {n}"
        for status, n in sorted(figures.statuses.items())
    )
    print(f"answers by status: {statuses}")
    print(
        f"uploads straight to S3 (presigned POST): {len(figures.uploads)}, "
        f"p50 {_ms(figures.uploads, 50):.1f} ms"
    )
    approved = figures.approved
    print(
        f"settled: {len(approved) - len(figures.unsettled)} of {len(approved)} approved refunds "
        f"paid {figures.settle_seconds:.0f} s after the run"
    )
    verdicts: list[tuple[str, Callable[[LoadFigures], int]]] = [
        ("5xx answers", lambda f: f.server_errors),
        ("refunds lost (approved, not paid)", lambda f: len(f.lost)),
        ("refunds paid twice", lambda f: len(f.doubled)),
        ("refunds paid another amount or channel", lambda f: len(f.wrong_amount)),
        ("refunds paid without an approval", lambda f: len(f.unapproved_paid)),
    ]
    print(f"  {'verdict (statements vs refunds)':<44}{'found':>7}{'target':>8}")
    for name, count in verdicts:
        print(f"  {name:<44}{count(figures):>7}{0:>8}")
    for failure in figures.failures[:5]:
        print(f"  unexpected: {failure}")
    for refund_id in [*figures.lost, *figures.doubled, *figures.wrong_amount][:5]:
        print(f"  look at: {refund_id}")
