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

import secrets
from datetime import datetime
from typing import TypeVar

from pynamodb.attributes import (
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import PutError, UpdateError
from pynamodb.expressions.update import Action as UpdateAction
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from chalicelib.domain.model import Message, Order, OrderBooking, Refund, RefundStatus
from chalicelib.service.exceptions import (
    ConcurrentChange,
    Conflict,
    IdempotencyKeyInFlight,
    RefundIdFenced,
    RefundTotalExceeded,
)
from chalicelib.service.ports import IdempotencyRecord, Page, StoredOrder
from chalicelib.settings import Settings

from .codec import dump_order, dump_refund, load_order, load_refund

__all__ = [
    "MODELS",
    "DynamoIdempotencyStore",
    "DynamoMessageLog",
    "DynamoOrderRepository",
    "DynamoRefundRepository",
    "IdempotencyModel",
    "MessageModel",
    "OrderModel",
    "RefundModel",
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
    """The CS queue of one status: highest escalation, then earliest due, then id."""

    class Meta:
        index_name = "by_status_queue"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    queue_rank = UnicodeAttribute(range_key=True)


class RefundModel(Model):
    """A refund: the attributes its keys and indexes need, and the rest as one document.

    The document carries the order snapshot, history, evidence slots and latest messages, so
    a transition and its history entry are one conditional put (optimistic lock on version).
    """

    class Meta:
        table_name = "refunds"
        billing_mode = "PAY_PER_REQUEST"

    refund_id = UnicodeAttribute(hash_key=True)
    # Null only on the fence of an abandoned create (``abandoned_at``), which no index holds.
    user_id = UnicodeAttribute(null=True)
    status = UnicodeAttribute(null=True)
    user_status = UnicodeAttribute(null=True)
    queue_rank = UnicodeAttribute(null=True)
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

    @classmethod
    def from_refund(cls, refund: Refund) -> RefundModel:
        due = refund.review_due_at or refund.payout_due_at
        rank = (str(2 - refund.escalation_level), due.isoformat() if due else "~", refund.refund_id)
        item = cls(
            refund.refund_id,
            user_id=refund.user_id,
            status=refund.status.value,
            user_status=f"{refund.user_id}#{refund.status.value}",
            queue_rank="#".join(rank),
            doc=dump_refund(refund),
        )
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


MODELS: tuple[type[Model], ...] = (OrderModel, RefundModel, MessageModel, IdempotencyModel)


def bind_models(settings: Settings) -> None:
    """Point the models at the stage's tables and endpoint (moto in tests and locally)."""
    names = {
        OrderModel: settings.orders_table,
        RefundModel: settings.refunds_table,
        MessageModel: settings.messages_table,
        IdempotencyModel: settings.idempotency_table,
    }
    for model, table_name in names.items():
        binding = (table_name, settings.region, settings.aws_endpoint_url)
        meta = model.Meta
        if (meta.table_name, getattr(meta, "region", None), getattr(meta, "host", None)) == binding:
            continue  # keep the connection: each new one builds a botocore session (~0.1 s)
        meta.table_name, meta.region, meta.host = binding
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
        item = RefundModel.from_refund(refund)
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
        item = RefundModel.from_refund(refund)
        model = RefundModel
        change_id = _change_id()
        try:
            item.update(
                actions=[
                    model.user_id.set(item.user_id),
                    model.status.set(item.status),
                    model.user_status.set(item.user_status),
                    model.queue_rank.set(item.queue_rank),
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
