"""DynamoDB through PynamoDB: the tables, their indexes, and the repositories over them.

Access patterns (docs/access-patterns.md): every hot path is a key-value operation
(GetItem, PutItem, UpdateItem); lists are Queries on indexes; nothing scans.

Lost answers (DESIGN.md): botocore resends a write whose answer it did not get, and when the
first attempt was applied the resent one fails its own condition. So every conditional write
here, on a failed condition, reads the item (strongly consistent) and, when it already holds
this request's write (its refund id, its change id, its holder), returns as if it had
succeeded. docs/access-patterns.md says for each write how it recognises its own.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import secrets
import zlib
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from pynamodb.attributes import (
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PutError, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action as UpdateAction
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model
from pynamodb.settings import get_settings_value

from chalicelib.domain.calendar import WorkingCalendar
from chalicelib.domain.days import shanghai_day
from chalicelib.domain.model import Message, Order, OrderBooking, Refund, RefundStatus
from chalicelib.domain.promises import next_escalation, stale_at
from chalicelib.domain.reconciliation import paid_day
from chalicelib.service.exceptions import (
    ConcurrentChange,
    Conflict,
    IdempotencyKeyInFlight,
    InvalidInput,
    RefundIdFenced,
    RefundTotalExceeded,
)
from chalicelib.service.ports import (
    IdempotencyRecord,
    Page,
    PayoutRequest,
    PayoutResult,
    PayoutState,
    StatementEntry,
    StoredOrder,
)
from chalicelib.settings import Settings

from .codec import dump_order, dump_refund, load_order, load_refund

__all__ = [
    "MODELS",
    "DynamoBalanceLedger",
    "DynamoIdempotencyStore",
    "DynamoMessageLog",
    "DynamoOrderRepository",
    "DynamoRefundRepository",
    "IdempotencyModel",
    "LedgerModel",
    "MessageModel",
    "OrderModel",
    "RefundModel",
    "StatsModel",
    "bind_models",
    "create_tables",
]

CONDITION_FAILED = "ConditionalCheckFailedException"
_M = TypeVar("_M", bound=Model)


def _lost_condition(error: PutError | UpdateError) -> bool:
    return error.cause_response_code == CONDITION_FAILED


def _get(model: type[_M], key: str) -> _M | None:
    """One strongly consistent GetItem: a write is visible to the next read."""
    try:
        return model.get(key, consistent_read=True)
    except model.DoesNotExist:
        return None


class OrderModel(Model):
    """An order (its document) and what it has given back: refunded total, open refund (E4)."""

    class Meta:
        table_name = "orders"
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"  # analytics count each change (O4)

    order_id = UnicodeAttribute(hash_key=True)
    doc = UnicodeAttribute()
    order_version = NumberAttribute(null=True)
    refunded_total = NumberAttribute(default=0)
    open_refund_id = UnicodeAttribute(null=True)
    open_refund_amount = NumberAttribute(null=True)
    open_refund_booked_at = UTCDateTimeAttribute(null=True)

    def to_stored(self) -> StoredOrder:
        return StoredOrder(
            order=load_order(self.doc),
            booking=OrderBooking(
                refunded_total=int(self.refunded_total or 0),
                open_refund_id=self.open_refund_id,
                open_refund_amount=int(self.open_refund_amount or 0),
            ),
            booked_at=self.open_refund_booked_at,
        )


class UserRefundsIndex(GlobalSecondaryIndex["RefundModel"]):
    """A user's refunds, newest first (refund ids are time-ordered)."""

    class Meta:
        index_name = "by_user"
        projection = AllProjection()

    user_id = UnicodeAttribute(hash_key=True)
    refund_id = UnicodeAttribute(range_key=True)


class UserStatusRefundsIndex(GlobalSecondaryIndex["RefundModel"]):
    """A user's refunds in one status, newest first: exact pages for ``?status=``."""

    class Meta:
        index_name = "by_user_status"
        projection = AllProjection()

    user_status = UnicodeAttribute(hash_key=True)
    refund_id = UnicodeAttribute(range_key=True)


class QueueIndex(GlobalSecondaryIndex["RefundModel"]):
    """The CS queue of one status: highest escalation, then earliest due, then id.

    Keyed by status and a shard of the refund id (``pending_review#0..N-1``), so that a peak
    of refunds in one status spreads over N partitions; a read merges the shards.
    """

    class Meta:
        index_name = "by_status_queue"
        projection = AllProjection()

    queue_key = UnicodeAttribute(hash_key=True)
    queue_rank = UnicodeAttribute(range_key=True)


class EscalationDueIndex(GlobalSecondaryIndex["RefundModel"]):
    """Refunds by when they escalate next (X2; sparse: only while a promise runs)."""

    class Meta:
        index_name = "by_escalation_due"
        projection = AllProjection()

    escalation_shard = UnicodeAttribute(hash_key=True)
    escalation_at = UnicodeAttribute(range_key=True)


class StaleIndex(GlobalSecondaryIndex["RefundModel"]):
    """Drafts and needs_info refunds by when they close if left alone (sparse)."""

    class Meta:
        index_name = "by_stale_due"
        projection = AllProjection()

    stale_shard = UnicodeAttribute(hash_key=True)
    stale_at = UnicodeAttribute(range_key=True)


class AwaitingStepIndex(GlobalSecondaryIndex["RefundModel"]):
    """Refunds that await a step's message, by when it is overdue (sparse: only those)."""

    class Meta:
        index_name = "by_step_due"
        projection = AllProjection()

    step_shard = UnicodeAttribute(hash_key=True)
    step_due = UnicodeAttribute(range_key=True)


class PaidDayIndex(GlobalSecondaryIndex["RefundModel"]):
    """``paid`` refunds by the Asia/Shanghai day they were paid, sharded (``reconcile``);
    sparse: only ``paid`` refunds carry the key. Keys only: reconcile reads the refunds it
    needs by batch."""

    class Meta:
        index_name = "by_paid_day"
        projection = KeysOnlyProjection()

    paid_day = UnicodeAttribute(hash_key=True)
    refund_id = UnicodeAttribute(range_key=True)


class RefundModel(Model):
    """A refund: the attributes its keys and indexes need, and the rest as one document.

    The document carries the order snapshot, history, evidence slots and latest messages, so
    a transition and its history entry are one conditional put (optimistic lock on version).
    """

    class Meta:
        table_name = "refunds"
        billing_mode = "PAY_PER_REQUEST"
        stream_view_type = "NEW_AND_OLD_IMAGES"  # analytics count each change (O4)

    refund_id = UnicodeAttribute(hash_key=True)
    # Null only on the fence of an abandoned create (``abandoned_at``), which no index holds.
    user_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    user_status = UnicodeAttribute(null=True)
    queue_key = UnicodeAttribute(null=True)
    queue_rank = UnicodeAttribute(null=True)
    step_shard = UnicodeAttribute(null=True)
    step_due = UnicodeAttribute(null=True)
    escalation_shard = UnicodeAttribute(null=True)
    escalation_at = UnicodeAttribute(null=True)
    stale_shard = UnicodeAttribute(null=True)
    stale_at = UnicodeAttribute(null=True)
    paid_day = UnicodeAttribute(null=True)
    doc = UnicodeAttribute(null=True)
    created_doc = UnicodeAttribute(null=True)
    """The document as the create wrote it, so an idempotent replay answers exactly the same."""
    abandoned_at = UTCDateTimeAttribute(null=True)
    change_id = UnicodeAttribute(null=True)
    """A token of the write that stored this state, so that write's retry knows it as its own."""
    version = VersionAttribute()

    by_user = UserRefundsIndex()
    by_user_status = UserStatusRefundsIndex()
    by_status_queue = QueueIndex()
    by_step_due = AwaitingStepIndex()
    by_escalation_due = EscalationDueIndex()
    by_stale_due = StaleIndex()
    by_paid_day = PaidDayIndex()

    @classmethod
    def from_refund(
        cls, refund: Refund, shards: int, calendar: WorkingCalendar | None = None
    ) -> RefundModel:
        """The item of ``refund``: its document, and the keys of every index it belongs in,
        derived from the refund itself on every write, so none can fall out of step."""
        due = refund.review_due_at or refund.payout_due_at
        rank = (str(2 - refund.escalation_level), _utc_text(due) if due else "~", refund.refund_id)
        shard = _shard(refund.refund_id, shards)
        awaiting = refund.awaiting_step is not None and refund.step_due_at is not None
        item = cls(
            refund.refund_id,
            user_id=refund.user_id,
            status=refund.status.value,
            user_status=f"{refund.user_id}#{refund.status.value}",
            queue_key=f"{refund.status.value}#{shard}",
            queue_rank="#".join(rank),
            step_shard=f"steps#{shard}" if awaiting else None,
            step_due=_utc_text(refund.step_due_at) if awaiting and refund.step_due_at else None,
            doc=dump_refund(refund),
        )
        escalation = next_escalation(refund, calendar or WorkingCalendar())
        if escalation is not None:
            item.escalation_shard = f"escalations#{shard}"
            item.escalation_at = _utc_text(escalation.at)
        stale = stale_at(refund)
        if stale is not None:
            item.stale_shard = f"stale#{shard}"
            item.stale_at = _utc_text(stale)
        paid_on = paid_day(refund)
        if paid_on is not None:
            item.paid_day = f"{paid_on.isoformat()}#{shard}"
        if refund.version:
            item.version = refund.version
        return item

    def to_refund(self) -> Refund | None:
        """The refund, or None for the fence of an abandoned create."""
        if self.doc is None:
            return None
        return load_refund(self.doc, int(self.version or 0))


class MessageModel(Model):
    """Every message on a refund, kept for good (O5); ids are time-ordered."""

    class Meta:
        table_name = "messages"
        billing_mode = "PAY_PER_REQUEST"

    refund_id = UnicodeAttribute(hash_key=True)
    message_id = UnicodeAttribute(range_key=True)
    at = UTCDateTimeAttribute()
    author_role = UnicodeAttribute()
    author = UnicodeAttribute()
    body = UnicodeAttribute()


class IdempotencyModel(Model):
    """An Idempotency-Key of one caller: its body's fingerprint, lease and first answer."""

    class Meta:
        table_name = "idempotency"
        billing_mode = "PAY_PER_REQUEST"

    scope_key = UnicodeAttribute(hash_key=True)
    fingerprint = UnicodeAttribute()
    refund_id = UnicodeAttribute()
    holder = UnicodeAttribute()
    lease_until = UTCDateTimeAttribute()
    expires_at = TTLAttribute()
    status_code = NumberAttribute(null=True)
    body = UnicodeAttribute(null=True)

    def to_record(self) -> IdempotencyRecord:
        return IdempotencyRecord(
            scope_key=self.scope_key,
            fingerprint=self.fingerprint,
            refund_id=self.refund_id,
            holder=self.holder,
            lease_until=self.lease_until,
            expires_at=self.expires_at,
            status_code=int(self.status_code) if self.status_code is not None else None,
            body=self.body,
        )


class LedgerByDayIndex(GlobalSecondaryIndex["LedgerModel"]):
    """A day's credits (Asia/Shanghai), sharded like the CS queue: ``2026-11-11#0..N-1``."""

    class Meta:
        index_name = "by_day"
        projection = AllProjection()

    day_key = UnicodeAttribute(hash_key=True)
    refund_id = UnicodeAttribute(range_key=True)


class LedgerModel(Model):
    """The platform balance's wallet ledger: one credit per refund id, for good (P2)."""

    class Meta:
        table_name = "ledger"
        billing_mode = "PAY_PER_REQUEST"

    refund_id = UnicodeAttribute(hash_key=True)
    user_id = UnicodeAttribute()
    order_id = UnicodeAttribute()
    amount = NumberAttribute()
    at = UTCDateTimeAttribute()
    day_key = UnicodeAttribute()

    by_day = LedgerByDayIndex()


class StatsModel(Model):
    """The analytics' day counters and the markers of the changes counted into them; the
    counters are attributes named at run time (chalicelib/adapters/stats_store.py)."""

    class Meta:
        table_name = "stats"
        billing_mode = "PAY_PER_REQUEST"

    key = UnicodeAttribute(hash_key=True)
    expires_at = TTLAttribute(null=True)
    """Only on markers: they outlive the streams' 24 hours of records, then go."""


MODELS: tuple[type[Model], ...] = (
    OrderModel,
    RefundModel,
    MessageModel,
    IdempotencyModel,
    LedgerModel,
    StatsModel,
)


def _shard(key: str, shards: int) -> int:
    """A stable shard of ``key`` (crc32, the same in every process and language)."""
    return zlib.crc32(key.encode()) % max(shards, 1)


def _utc_text(at: datetime) -> str:
    """Sortable UTC text for range keys: every value the same length and offset."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_BINDING = (
    "table_name",
    "region",
    "host",
    "connect_timeout_seconds",
    "read_timeout_seconds",
    "max_retry_attempts",
)
"""What ``bind_models`` sets on each model's Meta, in its binding's order."""


def bind_models(settings: Settings) -> None:
    """Point the models at the stage's tables and endpoint (moto in tests and locally)."""
    names = {
        OrderModel: settings.orders_table,
        RefundModel: settings.refunds_table,
        MessageModel: settings.messages_table,
        IdempotencyModel: settings.idempotency_table,
        LedgerModel: settings.ledger_table,
        StatsModel: settings.stats_table,
    }
    if settings.is_local:
        # The local stack's emulator answers one request at a time: PynamoDB's own timeouts.
        calls: tuple[Any, ...] = tuple(
            get_settings_value(name)
            for name in ("connect_timeout_seconds", "read_timeout_seconds", "max_retry_attempts")
        )
    else:
        # Each call ends within the function's timeout, as the bootstrap's clients' do.
        calls = (
            settings.aws_connect_timeout_seconds,
            settings.aws_read_timeout_seconds,
            settings.aws_max_attempts - 1,  # PynamoDB counts the retries, in standard mode
        )
    for model, table_name in names.items():
        binding = (table_name, settings.region, settings.aws_endpoint_url, *calls)
        meta = model.Meta
        if tuple(getattr(meta, name, None) for name in _BINDING) == binding:
            continue  # keep the connection: each new one builds a botocore session (~0.1 s)
        for name, value in zip(_BINDING, binding, strict=True):
            setattr(meta, name, value)
        model._connection = None


def create_tables() -> None:
    """Create the bound tables (the local stack and tests; deployed stages use infra/)."""
    for model in MODELS:
        if not model.exists():
            model.create_table(wait=True)


class DynamoOrderRepository:
    def get(self, order_id: str) -> StoredOrder | None:
        item = _get(OrderModel, order_id)
        return item.to_stored() if item else None

    def upsert(self, order: Order) -> StoredOrder:
        model = OrderModel
        condition = model.order_id.does_not_exist() | model.order_version.does_not_exist()
        actions: list[UpdateAction] = [
            model.doc.set(dump_order(order)),
            model.refunded_total.add(0),
        ]
        if order.version is not None:
            condition = condition | (model.order_version <= order.version)
            actions.append(model.order_version.set(order.version))
        item = model(order.order_id)
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as error:
            if not _lost_condition(error):
                raise
            stored = self.get(order.order_id)
            if stored is None:
                raise
            return stored
        return item.to_stored()

    def book_refund(
        self, order_id: str, refund_id: str, amount: int, seen: OrderBooking, at: datetime
    ) -> None:
        model = OrderModel
        condition = (model.refunded_total == seen.refunded_total) & (
            model.open_refund_id.does_not_exist()
        )
        try:
            model(order_id).update(
                actions=[
                    model.open_refund_id.set(refund_id),
                    model.open_refund_amount.set(amount),
                    model.open_refund_booked_at.set(at),
                ],
                condition=condition,
            )
        except UpdateError as error:
            if not _lost_condition(error):
                raise
            stored = _get(OrderModel, order_id)
            if stored is not None and stored.open_refund_id == refund_id:
                return  # this request's own booking, applied by an attempt whose answer was lost
            raise Conflict("a refund for this order is already open", rule="E4") from error

    def reserve(self, order_id: str, refund_id: str, amount: int, *, paid_limit: int) -> None:
        model = OrderModel
        try:
            model(order_id).update(
                actions=[model.open_refund_amount.set(amount)],
                # Resending it meets the same condition and sets the same amount.
                condition=(model.open_refund_id == refund_id)
                & (model.refunded_total <= paid_limit - amount),
            )
        except UpdateError as error:
            if _lost_condition(error):
                raise RefundTotalExceeded(order_id) from error
            raise

    def settle_refund(
        self, order_id: str, refund_id: str, refunded: int, *, paid_limit: int
    ) -> None:
        model = OrderModel
        try:
            model(order_id).update(
                actions=[
                    model.refunded_total.add(refunded),
                    model.open_refund_id.remove(),
                    model.open_refund_amount.remove(),
                    model.open_refund_booked_at.remove(),
                ],
                # E4 in the database: the total never passes what the user paid.
                condition=(model.open_refund_id == refund_id)
                & (model.refunded_total <= paid_limit - refunded),
            )
        except UpdateError as error:
            if not _lost_condition(error):
                raise
            stored = _get(OrderModel, order_id)
            if stored is not None and stored.open_refund_id == refund_id:
                raise RefundTotalExceeded(order_id) from error
            # Settled already: by this request's attempt whose answer was lost, or another.


def _change_id() -> str:
    return secrets.token_hex(8)


class DynamoRefundRepository:
    def __init__(self, shards: int = 1, calendar: WorkingCalendar | None = None) -> None:
        self._shards = shards
        """How many shards spread the CS queue's and the sweeps' index keys."""
        self._calendar = calendar or WorkingCalendar()

    def get(self, refund_id: str) -> Refund | None:
        item = _get(RefundModel, refund_id)
        return item.to_refund() if item else None

    def abandon(self, refund_id: str, at: datetime) -> bool:
        fence = RefundModel(refund_id, abandoned_at=at)
        try:
            fence.save(condition=RefundModel.refund_id.does_not_exist())
        except PutError as error:
            if not _lost_condition(error):
                raise
            # Something holds the id: an earlier fence (abandoned already), or the refund.
            existing = _get(RefundModel, refund_id)
            return existing is not None and existing.doc is None
        return True

    def get_as_created(self, refund_id: str) -> Refund | None:
        item = _get(RefundModel, refund_id)
        if item is None or item.created_doc is None:
            return None
        return load_refund(item.created_doc, version=1)

    def add(self, refund: Refund) -> None:
        item = RefundModel.from_refund(refund, self._shards, self._calendar)
        item.created_doc = item.doc
        item.change_id = _change_id()
        try:
            item.save(condition=RefundModel.refund_id.does_not_exist())
        except PutError as error:
            if not _lost_condition(error):
                raise
            stored = _get(RefundModel, refund.refund_id)
            if stored is not None and stored.doc is None:
                raise RefundIdFenced(refund.refund_id) from error
            if stored is None or stored.change_id != item.change_id:
                raise Conflict(f"refund {refund.refund_id} exists") from error
            # This add, whose answer was lost.
        refund.version = 1

    def save(self, refund: Refund) -> None:
        """One UpdateItem, conditional on the version read; ``created_doc`` stays as it was."""
        item = RefundModel.from_refund(refund, self._shards, self._calendar)
        model = RefundModel
        change_id = _change_id()
        try:
            item.update(
                actions=[
                    model.user_id.set(item.user_id),
                    model.status.set(item.status),
                    model.user_status.set(item.user_status),
                    model.queue_key.set(item.queue_key),
                    model.queue_rank.set(item.queue_rank),
                    _set_or_remove(model.step_shard, item.step_shard),
                    _set_or_remove(model.step_due, item.step_due),
                    _set_or_remove(model.escalation_shard, item.escalation_shard),
                    _set_or_remove(model.escalation_at, item.escalation_at),
                    _set_or_remove(model.stale_shard, item.stale_shard),
                    _set_or_remove(model.stale_at, item.stale_at),
                    _set_or_remove(model.paid_day, item.paid_day),
                    model.doc.set(item.doc),
                    model.change_id.set(change_id),
                ]
            )
        except UpdateError as error:
            if not _lost_condition(error):
                raise
            stored = _get(RefundModel, refund.refund_id)
            if stored is None or stored.change_id != change_id:
                raise ConcurrentChange() from error
            item.version = stored.version  # this save, whose answer was lost
        refund.version = int(item.version or 0)

    def list_for_user(
        self, user_id: str, status: RefundStatus | None, limit: int, cursor: str | None
    ) -> Page:
        before = RefundModel.refund_id < cursor if cursor else None
        if status is None:
            results = RefundModel.by_user.query(
                user_id, before, scan_index_forward=False, limit=limit + 1
            )
        else:
            results = RefundModel.by_user_status.query(
                f"{user_id}#{status.value}", before, scan_index_forward=False, limit=limit + 1
            )
        items = [refund for item in results if (refund := item.to_refund())]
        more = len(items) > limit
        items = items[:limit]
        return Page(items=items, next_cursor=items[-1].refund_id if more else None)

    def count_for_user_since(self, user_id: str, since: datetime) -> int:
        # Refund ids are time-ordered: every id from ``since`` on sorts after its floor.
        floor = "rf_" + _ulid_floor(since)
        return RefundModel.by_user.count(
            user_id,
            RefundModel.refund_id >= floor,
            filter_condition=RefundModel.status != RefundStatus.DRAFT.value,
        )

    def list_queue(
        self, status: RefundStatus, escalated_only: bool, limit: int, cursor: str | None
    ) -> Page:
        after = _decode_cursor(cursor) if cursor else None
        rank = RefundModel.queue_rank
        condition: Condition | None = rank > after if after else None
        if escalated_only:
            # Rank starts with 2 - level: levels 1 and 2 sort before "2".
            condition = rank.between(after, "1~") if after else rank < "2"
        shards = []
        for shard in range(self._shards):
            results = RefundModel.by_status_queue.query(
                f"{status.value}#{shard}", condition, limit=limit + 1
            )
            shards.append(item for item in results if item.queue_rank != after)
        merged = list(heapq.merge(*shards, key=lambda item: item.queue_rank or ""))
        page = merged[:limit]
        items = [refund for item in page if (refund := item.to_refund())]
        more = len(merged) > limit
        last = page[-1].queue_rank if more and page else None
        return Page(items=items, next_cursor=_encode_cursor(last) if last else None)

    def list_awaiting_steps(self, due_before: datetime, limit: int) -> list[Refund]:
        return _due(
            RefundModel.by_step_due, "steps", RefundModel.step_due, due_before, self._shards, limit
        )

    def list_escalations_due(self, now: datetime, limit: int) -> list[Refund]:
        index, key = RefundModel.by_escalation_due, RefundModel.escalation_at
        return _due(index, "escalations", key, now, self._shards, limit)

    def list_paid_on(self, day: date) -> list[Refund]:
        ids = [
            item.refund_id
            for shard in range(self._shards)
            for item in RefundModel.by_paid_day.query(f"{day.isoformat()}#{shard}")
        ]
        paid = self.get_many(ids)
        # The index is eventually consistent: a refund read since it was indexed may have
        # moved on.
        return [paid[refund_id] for refund_id in ids if paid_day(paid.get(refund_id)) == day]

    def get_many(self, refund_ids: list[str]) -> dict[str, Refund]:
        found = {}
        for item in RefundModel.batch_get(refund_ids, consistent_read=True):
            refund = item.to_refund()
            if refund is not None:
                found[refund.refund_id] = refund
        return found

    def list_stale(self, now: datetime, limit: int) -> list[Refund]:
        return _due(
            RefundModel.by_stale_due, "stale", RefundModel.stale_at, now, self._shards, limit
        )


def _due(index: Any, prefix: str, key: Any, now: datetime, shards: int, limit: int) -> list[Refund]:
    """Items of a sparse, sharded "due" index whose time has come: a Query per shard on
    ``key <= now``, so what is read is what is due, never the table."""
    found: list[Refund] = []
    for shard in range(shards):
        results = index.query(f"{prefix}#{shard}", key <= _utc_text(now), limit=limit - len(found))
        found += [refund for item in results if (refund := item.to_refund())]
        if len(found) >= limit:
            break
    return found


def _set_or_remove(attribute: Any, value: str | None) -> UpdateAction:
    return attribute.set(value) if value is not None else attribute.remove()


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _ulid_floor(at: datetime) -> str:
    """The lowest ULID of ``at``'s millisecond: ids minted from then on sort at or above it."""
    value = int(at.timestamp() * 1000) << 80
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return "".join(reversed(chars))


def _encode_cursor(rank: str) -> str:
    return base64.urlsafe_b64encode(rank.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as error:
        raise InvalidInput("cursor", "not a cursor this list gave out") from error


class DynamoMessageLog:
    def append(self, refund_id: str, message: Message) -> None:
        MessageModel(
            refund_id,
            message.message_id,
            at=message.at,
            author_role=message.author_role,
            author=message.author,
            body=message.body,
        ).save()

    def oldest(self, refund_id: str, count: int) -> list[Message]:
        if count <= 0:
            return []
        return [
            Message(m.message_id, m.at, m.author_role, m.author, m.body)
            for m in MessageModel.query(refund_id, limit=count, consistent_read=True)
        ]


class DynamoIdempotencyStore:
    def claim(self, record: IdempotencyRecord, now: datetime) -> IdempotencyRecord | None:
        item = IdempotencyModel(
            record.scope_key,
            fingerprint=record.fingerprint,
            refund_id=record.refund_id,
            holder=record.holder,
            lease_until=record.lease_until,
            expires_at=record.expires_at,
        )
        # A key past its keeping time counts as unused even before DynamoDB's TTL removes it.
        condition = IdempotencyModel.scope_key.does_not_exist() | (
            IdempotencyModel.expires_at < now
        )
        try:
            item.save(condition=condition)
        except PutError as error:
            if not _lost_condition(error):
                raise
            held = _get(IdempotencyModel, record.scope_key)
            if held is None:
                raise IdempotencyKeyInFlight() from error
            if held.holder == record.holder:
                return None  # this request's own claim, whose answer was lost
            return held.to_record()
        return None

    def take_over(self, seen: IdempotencyRecord, record: IdempotencyRecord) -> None:
        model = IdempotencyModel
        try:
            model(record.scope_key).update(
                actions=[
                    model.holder.set(record.holder),
                    model.lease_until.set(record.lease_until),
                ],
                condition=(model.holder == seen.holder)
                & (model.lease_until == seen.lease_until)
                & model.body.does_not_exist(),
            )
        except UpdateError as error:
            if not _lost_condition(error):
                raise
            if not self._holds(record):
                raise IdempotencyKeyInFlight() from error
            # This request's own take-over, whose answer was lost.

    def reassign(self, record: IdempotencyRecord) -> None:
        model = IdempotencyModel
        try:
            model(record.scope_key).update(
                actions=[model.refund_id.set(record.refund_id)],
                condition=model.holder == record.holder,
            )
        except UpdateError as error:
            if _lost_condition(error):
                raise IdempotencyKeyInFlight() from error
            raise

    def finish(self, record: IdempotencyRecord, status_code: int, body: str) -> None:
        model = IdempotencyModel
        self._while_held(record, [model.status_code.set(status_code), model.body.set(body)])

    def release(self, record: IdempotencyRecord, now: datetime) -> None:
        self._while_held(record, [IdempotencyModel.lease_until.set(now)])

    @staticmethod
    def _while_held(record: IdempotencyRecord, actions: list[UpdateAction]) -> None:
        """Write the key only while ``record``'s request holds it. Resending the same write
        meets the same condition, so a lost answer needs no reading back; a request that lost
        its lease to a retry writes nothing over the retry's work."""
        model = IdempotencyModel
        try:
            model(record.scope_key).update(actions=actions, condition=model.holder == record.holder)
        except UpdateError as error:
            if not _lost_condition(error):
                raise

    @staticmethod
    def _holds(record: IdempotencyRecord) -> bool:
        held = _get(IdempotencyModel, record.scope_key)
        return held is not None and held.holder == record.holder


class DynamoBalanceLedger:
    """The ``balance`` channel: a credit to the user's platform balance is one conditional
    PutItem keyed by the refund id, so it happens once whatever is retried (P2), instantly."""

    def __init__(self, shards: int, clock: Any) -> None:
        self._shards = shards
        self._clock = clock

    def pay(self, request: PayoutRequest) -> PayoutResult:
        at = self._clock.now()
        day = shanghai_day(at).isoformat()
        entry = LedgerModel(
            request.refund_id,
            user_id=request.user_id,
            order_id=request.order_id,
            amount=request.amount,
            at=at,
            day_key=f"{day}#{_shard(request.refund_id, self._shards)}",
        )
        try:
            entry.save(condition=LedgerModel.refund_id.does_not_exist())
        except PutError as error:
            if not _lost_condition(error):
                raise
            # Credited already: by this request's attempt whose answer was lost, or an
            # earlier one. Either way once, and that credit is the answer.
            known = self.query(request.refund_id)
            if known is None:
                raise
            return known
        return PayoutResult(
            request.refund_id, PayoutState.SUCCESS, request.amount, request.refund_id
        )

    def query(self, refund_id: str) -> PayoutResult | None:
        entry = _get(LedgerModel, refund_id)
        if entry is None:
            return None
        return PayoutResult(refund_id, PayoutState.SUCCESS, int(entry.amount), refund_id)

    def read_notification(self, headers: Any, body: bytes, now: datetime) -> PayoutResult | None:
        from .exceptions import InvalidNotification

        raise InvalidNotification("the balance is credited at once; it sends no notifications")

    def statement(self, day: date) -> list[StatementEntry]:
        entries = [
            StatementEntry(item.refund_id, int(item.amount), "SUCCESS", item.at)
            for shard in range(self._shards)
            for item in LedgerModel.by_day.query(f"{day.isoformat()}#{shard}")
        ]
        return sorted(entries, key=lambda entry: (entry.at, entry.refund_no))
