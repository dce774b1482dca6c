"""The ports the use cases need; adapters implement them on AWS, fakes in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Protocol

from chalicelib.domain.calendar import WorkingCalendar
from chalicelib.domain.events import RefundEvent
from chalicelib.domain.model import (
    Message,
    Order,
    OrderBooking,
    PaymentChannel,
    Refund,
    RefundStatus,
)
from chalicelib.domain.reconciliation import Reconciliation, StatementEntry
from chalicelib.domain.stats import Contribution
from chalicelib.domain.workflow import Step

__all__ = [
    "Clock",
    "CounterChange",
    "EventBus",
    "EvidenceStore",
    "IdGenerator",
    "IdempotencyRecord",
    "IdempotencyStore",
    "MessageLog",
    "OrderRepository",
    "Page",
    "PaymentGateway",
    "PayoutRequest",
    "PayoutResult",
    "PayoutState",
    "Ports",
    "PresignedUpload",
    "ReconciliationStore",
    "RefundRepository",
    "ServiceConfig",
    "StatementEntry",
    "StatsStore",
    "StepQueue",
    "StoredChange",
    "StoredObject",
    "StoredOrder",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """The business clock: deadlines, SLAs, history times (settable in the local stage)."""
        ...

    def wall_now(self) -> datetime:
        """The wall clock: token and URL expiry, idempotency leases, id order."""
        ...


class IdGenerator(Protocol):
    def new_id(self, prefix: str) -> str:
        """A new opaque id, time-ordered by the wall clock (ULID-like), behind ``prefix``."""
        ...


@dataclass(frozen=True)
class StoredOrder:
    order: Order
    booking: OrderBooking
    booked_at: datetime | None = None
    """When the open refund was booked (wall clock), to tell a crashed create from a live one."""


class OrderRepository(Protocol):
    """Orders and their E4 booking.

    Every write here may be applied while its answer is lost and the SDK sends it again
    (DESIGN.md, "Lost answers"): each recognises its own earlier attempt and succeeds.
    """

    def get(self, order_id: str) -> StoredOrder | None: ...

    def upsert(self, order: Order) -> StoredOrder:
        """Store ``order`` unless the stored one has a higher version; return what is stored."""
        ...

    def book_refund(
        self, order_id: str, refund_id: str, amount: int, seen: OrderBooking, at: datetime
    ) -> None:
        """Make ``refund_id`` the order's open refund, if the booking is still ``seen`` (E4).

        Raises Conflict when another booking won; a booking already held by ``refund_id``
        is this request's own.
        """
        ...

    def settle_refund(
        self, order_id: str, refund_id: str, refunded: int, *, paid_limit: int
    ) -> None:
        """Close ``refund_id``'s booking, adding what it gave back to the refunded total.

        The store keeps the refunded total at most ``paid_limit`` (what the user paid, E4):
        raises RefundTotalExceeded rather than go past it. Does nothing if the order's open
        refund is another one (settled already, by this request's lost attempt or another).
        """
        ...

    def reserve(self, order_id: str, refund_id: str, amount: int, *, paid_limit: int) -> None:
        """Set the open refund's booked amount to what was approved (A1: never more).

        The store refuses (RefundTotalExceeded, E4) unless ``refund_id`` is the open refund
        and the refunded total plus ``amount`` stays within ``paid_limit``.
        """
        ...


@dataclass(frozen=True)
class Page:
    items: list[Refund]
    next_cursor: str | None


class RefundRepository(Protocol):
    """Refunds. Each write carries a change id of its own, so that a write whose answer was
    lost is recognised by its retry as done, never taken for a concurrent change."""

    def get(self, refund_id: str) -> Refund | None: ...

    def get_as_created(self, refund_id: str) -> Refund | None:
        """The refund exactly as its create stored it (idempotent replay), or None."""
        ...

    def add(self, refund: Refund) -> None:
        """Store a new refund; raises Conflict if the id exists, RefundIdFenced if the id was
        fenced off by ``abandon``."""
        ...

    def save(self, refund: Refund) -> None:
        """Store a changed refund if nobody changed it since it was read.

        Raises ConcurrentChange otherwise.
        """
        ...

    def abandon(self, refund_id: str, at: datetime) -> bool:
        """Fence off the id of a create that died, so that it can never be stored late.

        False if the refund exists after all (its create finished meanwhile).
        """
        ...

    def list_for_user(
        self, user_id: str, status: RefundStatus | None, limit: int, cursor: str | None
    ) -> Page:
        """The user's refunds, newest first; ``cursor`` is a refund id to continue after."""
        ...

    def count_for_user_since(self, user_id: str, since: datetime) -> int:
        """How many refunds the user created since ``since`` and submitted (abuse signals,
        R1): drafts never count."""
        ...

    def list_queue(
        self, status: RefundStatus, escalated_only: bool, limit: int, cursor: str | None
    ) -> Page:
        """The CS queue of one status: highest escalation, then earliest due (none last),
        then refund id. ``cursor`` is opaque, from an earlier page's ``next_cursor``."""
        ...

    def list_awaiting_steps(self, due_before: datetime, limit: int) -> list[Refund]:
        """Refunds whose awaited step is overdue at ``due_before`` (wall clock): their
        message counts as lost. Costs what is overdue, never the table."""
        ...

    def list_escalations_due(self, now: datetime, limit: int) -> list[Refund]:
        """Refunds whose next escalation (X2) has come at ``now``; costs what is due."""
        ...

    def list_paid_on(self, day: date) -> list[Refund]:
        """The refunds paid on one Asia/Shanghai day and still ``paid`` (``reconcile``)."""
        ...

    def get_many(self, refund_ids: list[str]) -> dict[str, Refund]:
        """The refunds of those ids that exist, by id (fenced creates left out)."""
        ...

    def list_stale(self, now: datetime, limit: int) -> list[Refund]:
        """Drafts and needs_info refunds left alone past their closing time at ``now``."""
        ...


class MessageLog(Protocol):
    def append(self, refund_id: str, message: Message) -> None:
        """Keep ``message`` for good (O5); appending the same message again changes nothing."""
        ...

    def oldest(self, refund_id: str, count: int) -> list[Message]:
        """The refund's ``count`` oldest messages, oldest first."""
        ...


@dataclass(frozen=True)
class PresignedUpload:
    url: str
    fields: dict[str, str]
    expires_at: datetime


@dataclass(frozen=True)
class StoredObject:
    size: int
    etag: str
    head: bytes = field(repr=False)
    version_id: str | None = None
    """The S3 version read (the bucket is versioned), so a later upload cannot replace it."""


class EvidenceStore(Protocol):
    def presign_upload(
        self, key: str, content_type: str, max_size: int, expires_at: datetime
    ) -> PresignedUpload: ...

    def presign_download(self, key: str, version_id: str | None, expires_at: datetime) -> str:
        """A URL that reads this version of the object until ``expires_at``."""
        ...

    def inspect(self, key: str) -> StoredObject | None:
        """The object's real size, ETag and first bytes, or None if nothing is there."""
        ...


@dataclass(frozen=True)
class IdempotencyRecord:
    scope_key: str
    fingerprint: str
    refund_id: str
    holder: str
    """The request holding the lease: a write of the key succeeds only while it holds it."""
    lease_until: datetime
    expires_at: datetime
    status_code: int | None = None
    body: str | None = None


class IdempotencyStore(Protocol):
    """Idempotency keys; a record held by ``record.holder`` is this request's own."""

    def claim(self, record: IdempotencyRecord, now: datetime) -> IdempotencyRecord | None:
        """Store ``record`` unless a live record holds its key; return that one if so."""
        ...

    def take_over(self, seen: IdempotencyRecord, record: IdempotencyRecord) -> None:
        """Replace the expired lease ``seen`` by ``record`` (another holder and lease).

        Raises IdempotencyKeyInFlight if another request took it over first.
        """
        ...

    def reassign(self, record: IdempotencyRecord) -> None:
        """Give the key ``record.refund_id`` while ``record.holder`` still holds it.

        Raises IdempotencyKeyInFlight if another request took it over.
        """
        ...

    def finish(self, record: IdempotencyRecord, status_code: int, body: str) -> None:
        """Keep the first answer for replays, if ``record.holder`` still holds the key; a
        request that lost its lease to a retry leaves the retry's answer alone."""
        ...

    def release(self, record: IdempotencyRecord, now: datetime) -> None:
        """End the lease early, so that a retry can complete the work at once; only while
        ``record.holder`` still holds it."""
        ...


class PayoutState(StrEnum):
    """Where a channel says a payout is (P1, P2)."""

    SUCCESS = "SUCCESS"
    """The money moved (Alipay ``fund_change=Y`` or a refund query's success; WeChat
    ``SUCCESS``)."""
    PROCESSING = "PROCESSING"
    """Accepted, not yet moved: the outcome comes by notification or query."""
    FAILED = "FAILED"
    """Refused for good (Alipay's final ``ACQ.*`` refusals; WeChat ``CLOSED``/``ABNORMAL``)."""


@dataclass(frozen=True)
class PayoutRequest:
    """One refund through a channel. ``refund_id`` is the channel's refund number
    (Alipay ``out_request_no``, WeChat ``out_refund_no``): resending it never pays twice."""

    refund_id: str
    order_id: str
    channel_trade_no: str | None
    amount: int
    """What to pay back, in fen."""
    order_total: int
    """What the user paid for the order, in fen (WeChat's ``amount.total``)."""
    reason: str
    user_id: str = ""
    """Whose platform balance a ``balance`` payout credits."""


@dataclass(frozen=True)
class PayoutResult:
    refund_id: str
    state: PayoutState
    amount: int | None = None
    """What the channel says it moved, in fen, when it says."""
    channel_refund_no: str | None = None
    detail: str = ""
    """The channel's own code and message, for the refund's step history and CS."""


class PaymentGateway(Protocol):
    """A payment channel's refund API (Alipay, WeChat Pay, or the local simulator).

    ``pay`` raises ChannelUnavailable when the channel refused before doing anything and a
    retry is safe, and ChannelOutcomeUnknown when the money may have moved (a timeout, a
    system error, Alipay ``fund_change`` not ``Y``): the caller then asks ``query`` and pays
    again, with the same refund number, only if the channel knows nothing of it.
    """

    def pay(self, request: PayoutRequest) -> PayoutResult: ...

    def query(self, refund_id: str) -> PayoutResult | None:
        """What the channel knows of this refund number; None if nothing."""
        ...

    def read_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> PayoutResult | None:
        """The channel's asynchronous result, once its signature and age are checked.

        Raises InvalidNotification (401) for an unsigned, wrongly signed or stale one (over
        300 s from ``now``, the wall clock). None for a notification that is about no refund
        (Alipay's payment notifications without ``refund_fee``).
        """
        ...

    def statement(self, day: date) -> list[StatementEntry]:
        """The money the channel moved on one Asia/Shanghai day, as its daily statement (or
        bill) lists it, oldest first (``reconcile``)."""
        ...


class ReconciliationStore(Protocol):
    """The runs of ``reconcile``, one per day (API.md, ``GET /admin/reconciliation``)."""

    def record(self, run: Reconciliation) -> None:
        """Keep ``run``, replacing an earlier run over the same day."""
        ...

    def get(self, day: date) -> Reconciliation | None: ...


@dataclass(frozen=True)
class StoredChange:
    """One stored change of an order or a refund (a stream record): before and after."""

    source: str
    sequence_number: str
    before: Order | Refund | None
    after: Order | Refund | None


class EventBus(Protocol):
    """Where refund events go for the rest of the platform (EventBridge)."""

    def publish(self, events: list[RefundEvent]) -> None:
        """Publish every event, or raise: nothing is dropped silently."""
        ...


@dataclass(frozen=True)
class CounterChange:
    """What one stored change of an order or a refund adds to the analytics' counters."""

    source: str
    """The changed item (``refunds#rf_...``, ``orders#o-...``)."""
    sequence_number: str
    """The change's position among that item's changes (its stream record's)."""
    delta: Contribution


class StatsStore(Protocol):
    """The analytics' day counters (O4)."""

    def apply(self, change: CounterChange) -> bool:
        """Apply ``change`` once; False if it (or a later change of its item) was applied."""
        ...

    def days(self, first: date, last: date, groups: list[str]) -> list[dict[str, int]]:
        """Every counter item of those days and groups."""
        ...

    def record_day(self, day: date, figures: str) -> None:
        """Keep a finished day's figures (``daily-stats``)."""
        ...


class StepQueue(Protocol):
    """Where a step's message goes: one queue per step (DESIGN.md, "Workflow")."""

    def send(self, step: Step, refund_id: str, delay_seconds: int = 0) -> None: ...

    def redeliver_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
        """Let a received message that failed be received again after ``seconds``."""
        ...


@dataclass(frozen=True)
class ServiceConfig:
    idempotency_lease_seconds: int = 30
    idempotency_keep_hours: int = 25
    upload_expires_seconds: int = 900
    recent_messages: int = 50
    """How many of the latest messages the refund item carries (all are kept in the log)."""
    recent_message_bytes: int = 32 * 1024
    """How many bytes of message text the refund item carries at most: a list page of 100
    refunds stays well under Lambda's 6 MB answer, and an item under DynamoDB's 400 KB."""
    step_interval_scale: float = 1.0
    """Scales the workflow's retry intervals (the local stage shortens them)."""
    step_grace_seconds: int = 120
    """How long past its due time an awaited step's message counts as lost and is resent."""
    abuse_threshold: int = 10
    """Submitted refunds by one user in 30 days from which the check routes to a senior."""
    download_url_seconds: int = 300
    """How long an evidence download URL of the CS console lives (API.md: at most 5 min)."""
    shards: int = 4
    """Shards of the analytics' platform counters per day (REFUNDS_SHARDS)."""
    sku_shards: int = 8
    """Shards of the per-SKU counters per day: what keeps a day's items small."""


@dataclass(frozen=True)
class Ports:
    """Everything a use case may need, wired once by the bootstrap."""

    orders: OrderRepository
    refunds: RefundRepository
    messages: MessageLog
    evidence: EvidenceStore
    idempotency: IdempotencyStore
    clock: Clock
    ids: IdGenerator
    steps: StepQueue
    gateways: Mapping[PaymentChannel, PaymentGateway]
    """Each channel's refund API; ``balance`` is the platform's own wallet ledger."""
    reconciliations: ReconciliationStore
    stats: StatsStore
    events: EventBus
    config: ServiceConfig = field(default_factory=ServiceConfig)
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar)
    """Working days (mainland China); the repository reads the same one for its indexes."""
