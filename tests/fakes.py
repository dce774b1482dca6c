"""In-memory fakes of every port in ``chalicelib.service.ports``, with the DynamoDB/S3 semantics.

The fakes keep the rules the adapters get from the database (conditional booking, optimistic
versions, conditional idempotency claims) so that the use cases can be tested in
milliseconds, and the contract suite (tests/integration/test_repositories.py) runs the same
tests against these fakes and the moto-backed adapters to keep both honest.

Everything is deep-copied on the way in and out, as a database would: a use case that
mutates a loaded object without saving it changes nothing, and a test notices.

Fault injection: every fake repository has ``fail_next(method, error)`` (the next call of
``method`` raises ``error``, a RuntimeError by default: a process dying half-way),
``before_next(method, hook)`` (run ``hook`` just before the next call: a concurrent request
slipping in between a read and a write) and ``lose_answer_next(method)`` (the next write is
applied, its answer is lost, and the SDK sends the same request again: DESIGN.md, "Lost
answers"). ``calls`` counts the calls of each method.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from chalicelib.adapters.holidays import china_working_day
from chalicelib.domain.calendar import WorkingCalendar
from chalicelib.domain.days import shanghai_day
from chalicelib.domain.events import RefundEvent
from chalicelib.domain.model import (
    Message,
    Order,
    OrderBooking,
    OrderKind,
    OrderStatus,
    PaymentChannel,
    PayoutChannel,
    Reason,
    Refund,
    RefundStatus,
)
from chalicelib.domain.promises import next_escalation, stale_at
from chalicelib.domain.reconciliation import Reconciliation, paid_day
from chalicelib.domain.workflow import Step
from chalicelib.service.exceptions import (
    ConcurrentChange,
    Conflict,
    IdempotencyKeyInFlight,
    RefundIdFenced,
    RefundTotalExceeded,
)
from chalicelib.service.ports import (
    CounterChange,
    IdempotencyRecord,
    Page,
    PayoutRequest,
    PayoutResult,
    PayoutState,
    Ports,
    PresignedUpload,
    ServiceConfig,
    StatementEntry,
    StoredObject,
    StoredOrder,
)

__all__ = [
    "NOW",
    "FakeClock",
    "FakeEventBus",
    "FakeEvidenceStore",
    "FakeGateway",
    "FakeIdempotencyStore",
    "FakeMessageLog",
    "FakeOrderRepository",
    "FakeReconciliationStore",
    "FakeRefundRepository",
    "FakeStatsStore",
    "FakeStepQueue",
    "PresignRequest",
    "SequentialIds",
    "StepDriver",
    "make_ports",
    "sample_order",
    "sample_refund",
]

NOW = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
"""Where both fake clocks start: the same instant as the unit suite's ``NOW``."""

HEAD_BYTES = 16
T = TypeVar("T")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class _Faults:
    """Fault and interleaving injection shared by the fake repositories."""

    def __init__(self) -> None:
        self._errors: dict[str, BaseException] = {}
        self._hooks: dict[str, Callable[[], object]] = {}
        self._lost_answers: set[str] = set()
        self.calls: Counter[str] = Counter()

    def fail_next(self, method: str, error: BaseException | None = None) -> None:
        """The next call of ``method`` raises ``error`` (default: a crash) before doing anything."""
        self._errors[method] = error or RuntimeError(f"injected crash in {method}")

    def before_next(self, method: str, hook: Callable[[], object]) -> None:
        """Run ``hook`` once, just before the next call of ``method`` does its work."""
        self._hooks[method] = hook

    def lose_answer_next(self, method: str) -> None:
        """The next call of ``method`` is applied, then answered as its SDK retry is.

        botocore resends a write whose answer timed out; when the first attempt was applied,
        the retry meets the state that attempt left. Each fake write is one ``attempt``
        closure over its request, so the retry is exactly the same request sent again.
        """
        self._lost_answers.add(method)

    def _send(self, method: str, attempt: Callable[[], T]) -> T:
        """Apply one write request, as the SDK would send it (twice, if its answer is lost)."""
        if method in self._lost_answers:
            self._lost_answers.discard(method)
            with contextlib.suppress(Exception):
                attempt()  # applied (or refused); either way its answer never arrives
        return attempt()

    def _enter(self, method: str) -> None:
        self.calls[method] += 1
        hook = self._hooks.pop(method, None)
        if hook is not None:
            hook()
        error = self._errors.pop(method, None)
        if error is not None:
            raise error


# --- clock and ids -------------------------------------------------------------------------


class FakeClock:
    """Both clocks of the Clock port, settable apart; ``advance`` moves both (time passes)."""

    def __init__(self, now: datetime = NOW, wall: datetime | None = None) -> None:
        self._now = now
        self._wall = wall or now

    def now(self) -> datetime:
        return self._now

    def wall_now(self) -> datetime:
        return self._wall

    def set(self, now: datetime | None = None, *, wall: datetime | None = None) -> None:
        """Set the business clock (``now``) and/or the wall clock."""
        if now is not None:
            self._now = now
        if wall is not None:
            self._wall = wall

    def advance(self, delta: timedelta | None = None, **parts: float) -> None:
        """Let time pass on both clocks: ``advance(hours=26)`` or ``advance(timedelta(...))``."""
        step = (delta or timedelta()) + timedelta(**parts)
        self._now += step
        self._wall += step


def _crockford(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


class SequentialIds:
    """ULID-shaped ids (26 Crockford characters) from the wall clock and a counter.

    Deterministic, and time-ordered like the real generator: a later wall-clock millisecond
    gives a greater id, and ids minted in one millisecond increase.
    """

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self._last = 0

    def new_id(self, prefix: str) -> str:
        millis = int(self._clock.wall_now().timestamp() * 1000)
        value = max(millis << 80, self._last + 1)
        self._last = value
        return prefix + _crockford(value, 26)


# --- orders --------------------------------------------------------------------------------


@dataclass
class _OrderRow:
    order: Order
    booking: OrderBooking
    booked_at: datetime | None


class FakeOrderRepository(_Faults):
    """Orders with the adapter's conditional writes: version ordering and E4 booking."""

    def __init__(self) -> None:
        super().__init__()
        self._rows: dict[str, _OrderRow] = {}

    def get(self, order_id: str) -> StoredOrder | None:
        self._enter("get")
        row = self._rows.get(order_id)
        return self._stored(row) if row else None

    def upsert(self, order: Order) -> StoredOrder:
        self._enter("upsert")

        def attempt() -> StoredOrder:
            row = self._rows.get(order.order_id)
            if row is None:
                row = _OrderRow(copy.deepcopy(order), OrderBooking(), None)
                self._rows[order.order_id] = row
                return self._stored(row)
            stored_version = row.order.version
            applies = stored_version is None or (
                order.version is not None and stored_version <= order.version
            )
            if applies:
                # The booking fields are the refunds' business, never the order system's.
                row.order = copy.deepcopy(order)
            return self._stored(row)

        return self._send("upsert", attempt)

    def book_refund(
        self, order_id: str, refund_id: str, amount: int, seen: OrderBooking, at: datetime
    ) -> None:
        self._enter("book_refund")

        def attempt() -> None:
            row = self._rows.get(order_id)
            if row is not None and row.booking.open_refund_id == refund_id:
                return  # this request's own booking, applied by an attempt whose answer was lost
            if (
                row is None
                or row.booking.refunded_total != seen.refunded_total
                or row.booking.open_refund_id is not None
            ):
                raise Conflict("a refund for this order is already open", rule="E4")
            row.booking = replace(row.booking, open_refund_id=refund_id, open_refund_amount=amount)
            row.booked_at = at

        self._send("book_refund", attempt)

    def reserve(self, order_id: str, refund_id: str, amount: int, *, paid_limit: int) -> None:
        self._enter("reserve")

        def attempt() -> None:
            row = self._rows.get(order_id)
            if (
                row is None
                or row.booking.open_refund_id != refund_id
                or row.booking.refunded_total + amount > paid_limit
            ):
                raise RefundTotalExceeded(order_id)
            row.booking = replace(row.booking, open_refund_amount=amount)

        self._send("reserve", attempt)

    def settle_refund(
        self, order_id: str, refund_id: str, refunded: int, *, paid_limit: int
    ) -> None:
        self._enter("settle_refund")

        def attempt() -> None:
            row = self._rows.get(order_id)
            if row is None or row.booking.open_refund_id != refund_id:
                return  # settled already, by this request's lost attempt or another
            total = row.booking.refunded_total + refunded
            if total > paid_limit:
                raise RefundTotalExceeded(order_id)
            row.booking = OrderBooking(refunded_total=total)
            row.booked_at = None

        self._send("settle_refund", attempt)

    @staticmethod
    def _stored(row: _OrderRow) -> StoredOrder:
        return StoredOrder(copy.deepcopy(row.order), row.booking, row.booked_at)


# --- refunds -------------------------------------------------------------------------------


class FakeRefundRepository(_Faults):
    """Refunds with optimistic versions, their state as created, and the per-user index."""

    def __init__(self, calendar: WorkingCalendar | None = None) -> None:
        super().__init__()
        self._calendar = calendar or WorkingCalendar(china_working_day)
        self._items: dict[str, Refund] = {}
        self._created: dict[str, Refund] = {}
        self._abandoned: set[str] = set()
        self._change_ids: dict[str, int] = {}
        """The change id of each refund's last write, as the item's ``change_id``."""
        self._changes = 0

    def _new_change_id(self) -> int:
        self._changes += 1
        return self._changes

    def get(self, refund_id: str) -> Refund | None:
        self._enter("get")
        item = self._items.get(refund_id)
        return copy.deepcopy(item) if item else None

    def get_as_created(self, refund_id: str) -> Refund | None:
        self._enter("get_as_created")
        item = self._created.get(refund_id)
        return copy.deepcopy(item) if item else None

    def add(self, refund: Refund) -> None:
        self._enter("add")
        request = copy.deepcopy(refund)
        request.version = 1
        change_id = self._new_change_id()

        def attempt() -> None:
            if request.refund_id in self._abandoned:
                raise RefundIdFenced(request.refund_id)
            if request.refund_id in self._items:
                if self._change_ids.get(request.refund_id) == change_id:
                    return  # this request's own add, whose answer was lost
                raise Conflict(f"refund {request.refund_id} exists")
            self._items[request.refund_id] = copy.deepcopy(request)
            self._change_ids[request.refund_id] = change_id
            # The refund exactly as this add stored it, version 1 included; saves never
            # touch it.
            self._created[request.refund_id] = copy.deepcopy(request)

        self._send("add", attempt)
        refund.version = 1

    def save(self, refund: Refund) -> None:
        self._enter("save")
        request = copy.deepcopy(refund)
        change_id = self._new_change_id()

        def attempt() -> int:
            current = self._items.get(request.refund_id)
            # DynamoDB's version condition: the stored version equals the one read, or, for
            # a version of 0, no version stored at all.
            current_version = current.version if current else 0
            if request.version != current_version:
                if self._change_ids.get(request.refund_id) == change_id:
                    return current_version  # this save, whose answer was lost
                raise ConcurrentChange()
            stored = copy.deepcopy(request)
            stored.version = current_version + 1
            self._items[request.refund_id] = stored
            self._change_ids[request.refund_id] = change_id
            return stored.version

        refund.version = self._send("save", attempt)

    def abandon(self, refund_id: str, at: datetime) -> bool:
        self._enter("abandon")

        def attempt() -> bool:
            if refund_id in self._items:
                return False
            self._abandoned.add(refund_id)
            return True

        return self._send("abandon", attempt)

    def list_for_user(
        self, user_id: str, status: RefundStatus | None, limit: int, cursor: str | None
    ) -> Page:
        self._enter("list_for_user")
        found = sorted(
            (
                r
                for r in self._items.values()
                if r.user_id == user_id
                and (status is None or r.status is status)
                and (cursor is None or r.refund_id < cursor)
            ),
            key=lambda r: r.refund_id,
            reverse=True,
        )
        items = [copy.deepcopy(r) for r in found[:limit]]
        more = len(found) > limit
        return Page(items=items, next_cursor=items[-1].refund_id if more else None)

    def count_for_user_since(self, user_id: str, since: datetime) -> int:
        self._enter("count_for_user_since")
        return sum(
            1
            for r in self._items.values()
            if r.user_id == user_id and r.created_at >= since and r.status is not RefundStatus.DRAFT
        )

    def list_queue(
        self, status: RefundStatus, escalated_only: bool, limit: int, cursor: str | None
    ) -> Page:
        self._enter("list_queue")

        def rank(refund: Refund) -> str:
            due = refund.review_due_at or refund.payout_due_at
            return "#".join(
                (
                    str(2 - refund.escalation_level),
                    due.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") if due else "~",
                    refund.refund_id,
                )
            )

        found = sorted(
            (
                r
                for r in self._items.values()
                if r.status is status
                and (not escalated_only or r.escalation_level >= 1)
                and (cursor is None or rank(r) > cursor)
            ),
            key=rank,
        )
        items = [copy.deepcopy(r) for r in found[:limit]]
        more = len(found) > limit
        return Page(items=items, next_cursor=rank(items[-1]) if more else None)

    def list_awaiting_steps(self, due_before: datetime, limit: int) -> list[Refund]:
        self._enter("list_awaiting_steps")
        due = [
            r
            for r in self._items.values()
            if r.awaiting_step is not None and r.step_due_at and r.step_due_at <= due_before
        ]
        return [copy.deepcopy(r) for r in sorted(due, key=lambda r: r.step_due_at or NOW)][:limit]

    def list_escalations_due(self, now: datetime, limit: int) -> list[Refund]:
        self._enter("list_escalations_due")
        due = [
            (escalation.at, r)
            for r in self._items.values()
            if (escalation := next_escalation(r, self._calendar)) and escalation.at <= now
        ]
        return [copy.deepcopy(r) for _, r in sorted(due, key=lambda pair: pair[0])][:limit]

    def list_stale(self, now: datetime, limit: int) -> list[Refund]:
        self._enter("list_stale")
        due = [(at, r) for r in self._items.values() if (at := stale_at(r)) and at <= now]
        return [copy.deepcopy(r) for _, r in sorted(due, key=lambda pair: pair[0])][:limit]

    def list_paid_on(self, day: date) -> list[Refund]:
        self._enter("list_paid_on")
        return [copy.deepcopy(r) for r in self._items.values() if paid_day(r) == day]

    def get_many(self, refund_ids: list[str]) -> dict[str, Refund]:
        self._enter("get_many")
        return {i: copy.deepcopy(self._items[i]) for i in refund_ids if i in self._items}

    def all(self) -> list[Refund]:
        """Every stored refund (a test's view of the table), oldest first."""
        return [copy.deepcopy(self._items[key]) for key in sorted(self._items)]


class FakeMessageLog(_Faults):
    """The unbounded message log, one entry per (refund, message id) like the table."""

    def __init__(self) -> None:
        super().__init__()
        self._messages: dict[str, dict[str, Message]] = {}

    def append(self, refund_id: str, message: Message) -> None:
        self._enter("append")

        def attempt() -> None:
            self._messages.setdefault(refund_id, {})[message.message_id] = message

        self._send("append", attempt)

    def oldest(self, refund_id: str, count: int) -> list[Message]:
        self._enter("oldest")
        return self.for_refund(refund_id)[: max(count, 0)]

    def for_refund(self, refund_id: str) -> list[Message]:
        """The refund's messages in id (time) order, as a Query on the table returns them."""
        kept = self._messages.get(refund_id, {})
        return [kept[key] for key in sorted(kept)]


# --- evidence ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PresignRequest:
    key: str
    content_type: str
    max_size: int
    expires_at: datetime


class FakeEvidenceStore(_Faults):
    """An S3 bucket in memory: tests put objects under any key, as a (lying) client could."""

    URL = "https://evidence.fake.local/"

    def __init__(self) -> None:
        super().__init__()
        self._objects: dict[str, bytes] = {}
        self.presigned: list[PresignRequest] = []

    def put(self, key: str, data: bytes) -> None:
        """An upload landed under ``key``: S3 emulators do not enforce the POST policy."""
        self._objects[key] = bytes(data)

    def delete(self, key: str) -> None:
        self._objects.pop(key, None)

    def keys(self) -> list[str]:
        return sorted(self._objects)

    def presign_upload(
        self, key: str, content_type: str, max_size: int, expires_at: datetime
    ) -> PresignedUpload:
        self._enter("presign_upload")
        self.presigned.append(PresignRequest(key, content_type, max_size, expires_at))
        fields = {
            "key": key,
            "Content-Type": content_type,
            "x-fake-content-length-range": f"1,{max_size}",
            "x-fake-expires": expires_at.isoformat(),
        }
        return PresignedUpload(url=self.URL, fields=fields, expires_at=expires_at)

    def presign_download(self, key: str, version_id: str | None, expires_at: datetime) -> str:
        self._enter("presign_download")
        return f"{self.URL}{key}?version={version_id}&expires={expires_at.isoformat()}"

    def inspect(self, key: str) -> StoredObject | None:
        self._enter("inspect")
        data = self._objects.get(key)
        if data is None:
            return None
        etag = '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'
        return StoredObject(size=len(data), etag=etag, head=data[:HEAD_BYTES])


# --- idempotency ---------------------------------------------------------------------------


class FakeIdempotencyStore(_Faults):
    """Idempotency keys with the adapter's conditions: live claims win, expired keys are free."""

    def __init__(self) -> None:
        super().__init__()
        self._records: dict[str, IdempotencyRecord] = {}

    def get(self, scope_key: str) -> IdempotencyRecord | None:
        """A test's look at a stored key."""
        return self._records.get(scope_key)

    def claim(self, record: IdempotencyRecord, now: datetime) -> IdempotencyRecord | None:
        self._enter("claim")

        def attempt() -> IdempotencyRecord | None:
            held = self._records.get(record.scope_key)
            if held is None or held.expires_at < now:
                # A new claim carries no answer yet, whatever the record passed in says.
                self._records[record.scope_key] = replace(record, status_code=None, body=None)
                return None
            if held.holder == record.holder:
                return None  # this request's own claim, whose answer was lost
            return held

        return self._send("claim", attempt)

    def take_over(self, seen: IdempotencyRecord, record: IdempotencyRecord) -> None:
        self._enter("take_over")

        def attempt() -> None:
            held = self._records.get(record.scope_key)
            if held is not None and held.holder == record.holder:
                return  # this request's own take-over, whose answer was lost
            if (
                held is None
                or held.holder != seen.holder
                or held.lease_until != seen.lease_until
                or held.body is not None
            ):
                raise IdempotencyKeyInFlight()
            self._records[record.scope_key] = replace(
                held, holder=record.holder, lease_until=record.lease_until
            )

        self._send("take_over", attempt)

    def reassign(self, record: IdempotencyRecord) -> None:
        self._enter("reassign")

        def attempt() -> None:
            held = self._held_by(record)
            if held is None:
                raise IdempotencyKeyInFlight()
            self._records[record.scope_key] = replace(held, refund_id=record.refund_id)

        self._send("reassign", attempt)

    def finish(self, record: IdempotencyRecord, status_code: int, body: str) -> None:
        self._enter("finish")

        def attempt() -> None:
            held = self._held_by(record)
            if held is not None:
                self._records[record.scope_key] = replace(held, status_code=status_code, body=body)

        self._send("finish", attempt)

    def release(self, record: IdempotencyRecord, now: datetime) -> None:
        self._enter("release")

        def attempt() -> None:
            held = self._held_by(record)
            if held is not None:
                self._records[record.scope_key] = replace(held, lease_until=now)

        self._send("release", attempt)

    def _held_by(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        """The stored key, if ``record``'s request still holds it."""
        held = self._records.get(record.scope_key)
        return held if held is not None and held.holder == record.holder else None


# --- workflow and payment channels ---------------------------------------------------------


@dataclass(frozen=True)
class SentStep:
    step: Step
    refund_id: str
    delay_seconds: int


class FakeStepQueue(_Faults):
    """The step queues: what was sent, in order; ``take`` hands them over like a poller."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[SentStep] = []
        self.redelivered: list[tuple[str, int]] = []

    def send(self, step: Step, refund_id: str, delay_seconds: int = 0) -> None:
        self._enter("send")
        self.sent.append(SentStep(step, refund_id, delay_seconds))

    def redeliver_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
        self._enter("redeliver_in")
        self.redelivered.append((receipt_handle, seconds))

    def take(self) -> list[SentStep]:
        sent, self.sent = self.sent, []
        return sent


class FakeGateway(_Faults):
    """A payment channel that keeps what it paid, one payout per refund number (P2).

    ``answers`` queues what the next ``pay`` calls do: a PayoutState (the money moves for
    SUCCESS; nothing for FAILED), or an exception: ChannelUnavailable (nothing happens) or
    ChannelOutcomeUnknown (the money moves, the answer is lost). With nothing queued, it pays.
    ``processing`` keeps accepted payouts PROCESSING until ``complete`` is called.
    """

    def __init__(self, channel: str = "alipay", clock: FakeClock | None = None) -> None:
        super().__init__()
        self.channel = channel
        self._clock = clock or FakeClock()
        self.answers: list[PayoutState | Exception] = []
        self.paid: dict[str, PayoutResult] = {}
        self.payouts: list[PayoutRequest] = []
        """Every payout that moved money: a refund number twice here is a double payout."""
        self.lines: list[StatementEntry] = []
        """The channel's statement: a line per payout that moved money (tests may plant
        more, as a channel's own mistakes)."""

    def pay(self, request: PayoutRequest) -> PayoutResult:
        self._enter("pay")
        if request.refund_id in self.paid:
            return self.paid[request.refund_id]
        answer = self.answers.pop(0) if self.answers else PayoutState.SUCCESS
        if isinstance(answer, Exception):
            from chalicelib.service.exceptions import ChannelOutcomeUnknown

            if isinstance(answer, ChannelOutcomeUnknown):
                self._move(request, PayoutState.SUCCESS)
            raise answer
        if answer is PayoutState.FAILED:
            return PayoutResult(request.refund_id, answer, detail="ACQ.TRADE_HAS_FINISHED")
        return self._move(request, answer)

    def _move(self, request: PayoutRequest, state: PayoutState) -> PayoutResult:
        result = PayoutResult(request.refund_id, state, request.amount, f"ch-{request.refund_id}")
        self.paid[request.refund_id] = result
        self.payouts.append(request)
        self.lines.append(
            StatementEntry(request.refund_id, request.amount, "SUCCESS", self._clock.now())
        )
        return result

    def statement(self, day: date) -> list[StatementEntry]:
        self._enter("statement")
        return sorted(
            (line for line in self.lines if shanghai_day(line.at) == day),
            key=lambda line: line.at,
        )

    def complete(self, refund_id: str) -> PayoutResult:
        """The channel made an accepted payout (what its notification then says)."""
        done = replace(self.paid[refund_id], state=PayoutState.SUCCESS)
        self.paid[refund_id] = done
        return done

    def query(self, refund_id: str) -> PayoutResult | None:
        self._enter("query")
        return self.paid.get(refund_id)

    def read_notification(self, headers: Any, body: bytes, now: datetime) -> PayoutResult | None:
        """Notifications signed as the local simulator signs them (API.md's scheme)."""
        from chalicelib.adapters.channels.simulator import SimulatorGateway
        from chalicelib.settings import DEFAULT_LOCAL_CHANNEL_SECRET

        reader = SimulatorGateway(self.channel, "http://127.0.0.1:9", DEFAULT_LOCAL_CHANNEL_SECRET)
        return reader.read_notification(headers, body, now)


# --- analytics -----------------------------------------------------------------------------


class FakeStatsStore(_Faults):
    """Day counters with the adapter's rule: a change of an item counts once, and never
    after a later change of the same item."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, Counter[str]] = {}
        self.marks: dict[str, str] = {}
        self.days_recorded: dict[date, str] = {}

    def apply(self, change: CounterChange) -> bool:
        self._enter("apply")
        sequence = change.sequence_number.zfill(40)

        def attempt() -> bool:
            if self.marks.get(change.source, "") >= sequence:
                return False
            self.marks[change.source] = sequence
            for (day, group), counters in change.delta.items():
                self.items.setdefault(f"{day.isoformat()}#{group}", Counter()).update(counters)
            return True

        return self._send("apply", attempt)

    def days(self, first: date, last: date, groups: list[str]) -> list[dict[str, int]]:
        self._enter("days")
        keys = [
            f"{(first + timedelta(days=n)).isoformat()}#{group}"
            for n in range((last - first).days + 1)
            for group in groups
        ]
        return [dict(self.items[key]) for key in keys if key in self.items]

    def record_day(self, day: date, figures: str) -> None:
        self._enter("record_day")
        self.days_recorded[day] = figures


class FakeReconciliationStore(_Faults):
    """The runs of ``reconcile``, one per day."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[date, Reconciliation] = {}

    def record(self, run: Reconciliation) -> None:
        self._enter("record")
        self.runs[run.day] = run

    def get(self, day: date) -> Reconciliation | None:
        self._enter("get")
        return self.runs.get(day)


class FakeEventBus(_Faults):
    """The bus: every event published, in order, duplicates included."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[RefundEvent] = []

    def publish(self, events: list[RefundEvent]) -> None:
        self._enter("publish")
        self.published.extend(events)


# --- wiring and builders -------------------------------------------------------------------


def make_ports(
    clock: FakeClock | None = None, config: ServiceConfig | None = None, **overrides: Any
) -> Ports:
    """Ports built from fresh fakes; ``overrides`` replace single ports by name."""
    clock = clock or FakeClock()
    calendar = WorkingCalendar(china_working_day)
    parts: dict[str, Any] = {
        "orders": FakeOrderRepository(),
        "refunds": FakeRefundRepository(calendar),
        "messages": FakeMessageLog(),
        "evidence": FakeEvidenceStore(),
        "idempotency": FakeIdempotencyStore(),
        "clock": clock,
        "ids": SequentialIds(clock),
        "steps": FakeStepQueue(),
        "gateways": {
            PaymentChannel.ALIPAY: FakeGateway("alipay", clock),
            PaymentChannel.WECHAT: FakeGateway("wechat", clock),
            PaymentChannel.BALANCE: FakeGateway("balance", clock),
        },
        "reconciliations": FakeReconciliationStore(),
        "stats": FakeStatsStore(),
        "events": FakeEventBus(),
        "config": config or ServiceConfig(),
        "calendar": calendar,
    }
    parts.update(overrides)
    return Ports(**parts)


def sample_order(now: datetime = NOW, **overrides: Any) -> Order:
    """A paid, delivered, unused virtual order of 100.00 CNY, refundable for a week from ``now``."""
    fields: dict[str, Any] = {
        "order_id": "o-1001",
        "user_id": "u-1",
        "kind": OrderKind.VIRTUAL,
        "sku": "steam-100",
        "title": "Steam 100",
        "category": "game-card",
        "list_price": 10000,
        "paid_amount": 10000,
        "payment_channel": PaymentChannel.ALIPAY,
        "channel_trade_no": "2026112022001",
        "paid_at": now - timedelta(days=2),
        "refund_deadline": now + timedelta(days=7),
        "status": OrderStatus.DELIVERED,
        "service_completion": Decimal(0),
    }
    fields.update(overrides)
    return Order(**fields)


def sample_refund(refund_id: str, now: datetime = NOW, **overrides: Any) -> Refund:
    """A refund in ``draft`` of ``sample_order()`` (or ``order=``), created at ``now``."""
    order = overrides.pop("order", None) or sample_order(now)
    fields: dict[str, Any] = {
        "refund_id": refund_id,
        "order": order,
        "status": RefundStatus.DRAFT,
        "reason": Reason.INVALID_CODE,
        "description": "订单 o-1001 的点卡到账后提示序列号无效，要求全额退款",
        "amount": order.paid_amount,
        "payout_channel": PayoutChannel.ORIGINAL,
        "channel": order.payment_channel,
        "gifts_returned": True,
        "fast_track": False,
        "needs_return": False,
        "created_at": now,
        "updated_at": now,
    }
    fields.update(overrides)
    return Refund(**fields)


@dataclass
class StepDriver:
    """Plays SQS and Lambda for the step queues over the fakes: each sent message is handed
    to its step's handler, handed again after its backoff (the clocks move by it) while the
    handler says so, and kept in ``dead_letters`` when it is bound for the dead-letter queue."""

    ports: Ports
    dead_letters: list[SentStep] = field(default_factory=list)
    deliveries: Counter[Step] = field(default_factory=Counter)

    def run(self, rounds: int = 20) -> None:
        from chalicelib.service import payout, review

        handlers = {
            Step.AUTO_REVIEW: review.handle_auto_review,
            Step.PAYOUT: payout.handle_payout,
            Step.CONFIRM_PAYOUT: payout.handle_confirm_payout,
        }
        queue = self.ports.steps
        assert isinstance(queue, FakeStepQueue)
        for _ in range(rounds):
            sent = queue.take()
            if not sent:
                return
            for message in sent:
                received = 0
                while True:
                    received += 1
                    self.deliveries[message.step] += 1
                    outcome = handlers[message.step](self.ports, message.refund_id, received)
                    if outcome.delete:
                        break
                    if not outcome.visible_in:
                        self.dead_letters.append(message)
                        break
                    clock = self.ports.clock
                    assert isinstance(clock, FakeClock)
                    clock.advance(outcome.visible_in)
        raise AssertionError(f"steps still sent after {rounds} rounds")
