"""Request and response models of API.md; the OpenAPI document is built from these."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from chalicelib.api.errors import FieldInvalid
from chalicelib.domain.evidence import ALLOWED_CONTENT_TYPES, MAX_EVIDENCE_BYTES
from chalicelib.domain.model import (
    Action,
    EvidenceKind,
    Gift,
    Order,
    OrderKind,
    OrderStatus,
    PaymentChannel,
    PayoutChannel,
    PlatformFault,
    Reason,
    RefundStatus,
    Usage,
)
from chalicelib.domain.policy import Quote
from chalicelib.domain.rules import POLICY_RULE_IDS, KindRules, RuleText
from chalicelib.domain.workflow import Step, StepStatus
from chalicelib.service.ports import StatementEntry
from chalicelib.service.refunds import EvidenceSlot
from chalicelib.service.review import RefundDetail

__all__ = [
    "AdminRefundOut",
    "AppealIn",
    "ApproveIn",
    "AsyncApiOut",
    "ChannelSettingsIn",
    "ChannelSettingsOut",
    "ClockIn",
    "ClockOut",
    "CreateRefundIn",
    "ErrorOut",
    "EvidenceIn",
    "EvidenceSlotOut",
    "HealthOut",
    "ListRefundsQuery",
    "LocalEventsOut",
    "LocalEventsQuery",
    "MessageIn",
    "MessageOut",
    "NoContent",
    "NudgeOut",
    "OpenApiOut",
    "OrderIn",
    "OrderOut",
    "OrderStatusIn",
    "QueueItemOut",
    "QueueOut",
    "QueueQuery",
    "QuoteOut",
    "QuoteQuery",
    "RefundEventOut",
    "RefundListOut",
    "RefundOut",
    "RefundPolicyOut",
    "RefundPolicyQuery",
    "RejectIn",
    "RequestInfoIn",
    "RetryPayoutIn",
    "ReturnReceivedIn",
    "ReturnShipmentIn",
    "ScheduleRunOut",
    "StatementOut",
    "StatementQuery",
    "StatsOut",
    "StatsQuery",
    "SubmitIn",
    "WebhookAckOut",
]

MAX_TEXT = 2000
REFUND_ID_PATTERN = r"^rf_[0-9A-HJKMNP-TV-Z]{26}$"
CURSOR_PATTERN = r"^[A-Za-z0-9._~-]{1,512}$"


def _json_number(value: Any) -> Any:
    """A number field takes a JSON number, never a string or a boolean that looks like one."""
    if isinstance(value, str | bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a JSON number")
    return Decimal(str(value))


def _integral(value: Any) -> Any:
    """JSON Schema's integer: a number with no fractional part, however it is written.

    ``5948.0`` and ``5.948e3`` are the integer 5948; ``5948.5``, ``true`` and ``"5948"`` are
    left as they are, for the strict integer check to refuse. The field's own bounds apply
    after, so ``1e400`` (infinity, no integer) and ``1e20`` stay out as before.
    """
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _utc(value: datetime) -> datetime:
    """Times are kept and answered in UTC (API.md); one that has no UTC form is out of range."""
    try:
        return value.astimezone(UTC)
    except OverflowError as error:
        raise ValueError("out of range once converted to UTC") from error


Ratio = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(ge=0, le=1, decimal_places=4),
    PlainSerializer(float, return_type=float, when_used="json"),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.0001}),
]
MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JSON number carries exactly in every client (JavaScript's)."""
Integral = BeforeValidator(_integral)
"""Makes an ``int`` of a request take an integral number written with a fraction (API.md,
Conventions). It goes last in its ``Annotated``, after the bounds: a bound placed after a
validator is still checked, but leaves the OpenAPI schema without its minimum or maximum."""
Integer = Annotated[int, Integral]
"""An integer of a request, bounded by ``Field(ge=..., le=...)`` on a required field (the
field's bounds come first); an optional one uses a bounded alias below, ``Count | None``."""
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER), Integral]
"""A non-negative integer that every client reads exactly."""
Millis = Annotated[int, Field(ge=0, le=60_000), Integral]
"""A duration of up to one minute, in milliseconds."""
MAX_FEN = 10**11
"""A billion CNY: above any order, well inside DynamoDB's and JavaScript's exact numbers."""
Fen = Annotated[
    int,
    Field(ge=0, le=MAX_FEN, description="An amount of money in fen (1 CNY = 100 fen)."),
    Integral,
]
UtcTime = Annotated[AwareDatetime, AfterValidator(_utc)]
Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Id = Annotated[str, Field(min_length=1, max_length=128)]


class Body(BaseModel):
    """A request body: JSON, strict types, no unknown fields."""

    # Validators are built on first use: a cold start pays only for the routes it serves.
    model_config = ConfigDict(extra="forbid", strict=True, defer_build=True)


class Query(BaseModel):
    """Query parameters: text converted to their types, no unknown parameters."""

    model_config = ConfigDict(extra="forbid", defer_build=True)


class Out(BaseModel):
    """A response body, read straight from the domain's objects (their attributes)."""

    model_config = ConfigDict(populate_by_name=True, from_attributes=True, defer_build=True)


class UsageIn(Body):
    total_units: Integer = Field(ge=1, le=MAX_SAFE_INTEGER)
    used_units: Count

    @model_validator(mode="after")
    def _used_within_total(self) -> UsageIn:
        if self.used_units > self.total_units:
            raise FieldInvalid("used_units", "above total_units")
        return self


class GiftIn(Body):
    sku: Id
    title: str = Field(default="", max_length=200)
    value: Fen


class OrderIn(Body):
    """An order as the order system reports it (PUT /internal/orders/{order_id})."""

    order_id: Id
    user_id: Id
    kind: OrderKind
    sku: Id
    title: str = Field(default="", max_length=200)
    category: Id
    list_price: Fen
    paid_amount: Fen
    shipping_fee: Fen = 0
    currency: Literal["CNY"] = "CNY"
    payment_channel: PaymentChannel
    channel_trade_no: str | None = Field(default=None, max_length=128)
    paid_at: UtcTime
    refund_deadline: UtcTime
    status: OrderStatus
    usage: UsageIn | None = None
    service_completion: Ratio = Field(default=Decimal(0), json_schema_extra={"default": 0})
    customized: bool = False
    gifts: list[GiftIn] = Field(default_factory=list, max_length=50)
    platform_fault: PlatformFault | None = None
    version: Count | None = None

    @model_validator(mode="after")
    def _paid_within_price(self) -> OrderIn:
        if self.paid_amount > self.list_price + self.shipping_fee:
            raise FieldInvalid("paid_amount", "above list_price plus shipping_fee")
        return self

    def to_order(self) -> Order:
        return Order(
            order_id=self.order_id,
            user_id=self.user_id,
            kind=self.kind,
            sku=self.sku,
            title=self.title,
            category=self.category,
            list_price=self.list_price,
            paid_amount=self.paid_amount,
            shipping_fee=self.shipping_fee,
            currency=self.currency,
            payment_channel=self.payment_channel,
            channel_trade_no=self.channel_trade_no,
            paid_at=self.paid_at,
            refund_deadline=self.refund_deadline,
            status=self.status,
            usage=Usage(self.usage.total_units, self.usage.used_units) if self.usage else None,
            service_completion=self.service_completion,
            customized=self.customized,
            gifts=tuple(Gift(g.sku, g.title, g.value) for g in self.gifts),
            platform_fault=self.platform_fault,
            version=self.version,
        )


class UsageOut(Out):
    total_units: int
    used_units: int


class GiftOut(Out):
    sku: str
    title: str
    value: int


class OrderOut(Out):
    order_id: str
    user_id: str
    kind: OrderKind
    sku: str
    title: str
    category: str
    list_price: int
    paid_amount: int
    shipping_fee: int
    currency: str
    payment_channel: PaymentChannel
    channel_trade_no: str | None
    paid_at: datetime
    refund_deadline: datetime
    status: OrderStatus
    usage: UsageOut | None
    service_completion: Ratio
    customized: bool
    gifts: list[GiftOut]
    platform_fault: PlatformFault | None
    version: int | None


class QuoteQuery(Query):
    reason: Reason = Reason.CHANGED_MIND
    gifts_returned: bool = True


class BreakdownOut(Out):
    item: Literal[
        "paid_amount",
        "shipping_not_refunded",
        "used_units",
        "service_completed",
        "gift_not_returned",
        "already_refunded",
    ]
    amount: int


class QuoteOut(Out):
    order_id: str
    refundable: bool
    rule: str | None
    message: str
    amount: int
    currency: str
    breakdown: list[BreakdownOut]
    required_evidence: list[EvidenceKind]
    needs_return: bool
    payout_channels: list[PayoutChannel]

    @classmethod
    def of(cls, quote: Quote, currency: str) -> QuoteOut:
        return cls(
            order_id=quote.order_id,
            refundable=quote.refundable,
            rule=quote.rule,
            message=quote.message,
            amount=quote.amount,
            currency=currency,
            breakdown=[BreakdownOut(item=b.item, amount=b.amount) for b in quote.breakdown],  # type: ignore[arg-type]
            required_evidence=list(quote.required_evidence),
            needs_return=quote.needs_return,
            payout_channels=list(quote.payout_channels),
        )


class CreateRefundIn(Body):
    order_id: Id
    reason: Reason
    description: Text
    payout_channel: PayoutChannel = PayoutChannel.ORIGINAL
    gifts_returned: bool = True


class EvidenceIn(Body):
    kind: EvidenceKind
    content_type: str = Field(json_schema_extra={"enum": list(ALLOWED_CONTENT_TYPES)})
    size: Integer = Field(ge=1, le=MAX_EVIDENCE_BYTES)

    @field_validator("content_type")
    @classmethod
    def _allowed_type(cls, value: str) -> str:
        if value not in ALLOWED_CONTENT_TYPES:
            raise ValueError("must be one of " + ", ".join(ALLOWED_CONTENT_TYPES))
        return value


class SubmitIn(Body):
    description: Text | None = None


class MessageIn(Body):
    body: Text


class UploadOut(Out):
    url: str
    fields: dict[str, str]


class EvidenceSlotOut(Out):
    evidence_id: str
    upload: UploadOut
    expires_at: datetime

    @classmethod
    def of(cls, slot: EvidenceSlot) -> EvidenceSlotOut:
        return cls(
            evidence_id=slot.evidence.evidence_id,
            upload=UploadOut(url=slot.upload.url, fields=slot.upload.fields),
            expires_at=slot.upload.expires_at,
        )


class EvidenceOut(Out):
    evidence_id: str
    kind: EvidenceKind
    content_type: str
    size: int
    uploaded: bool
    problem: str | None


class MessageOut(Out):
    at: datetime
    author_role: Literal["user", "agent", "system"]
    body: str


class HistoryOut(Out):
    at: datetime
    actor: str
    action: Action
    from_: RefundStatus | None = Field(
        validation_alias=AliasChoices("from_status", "from"), serialization_alias="from"
    )
    to: RefundStatus | None = Field(validation_alias=AliasChoices("to_status", "to"))
    note: str | None
    rule: str | None


class RefundOut(Out):
    refund_id: str
    order_id: str
    user_id: str
    status: RefundStatus
    reason: Reason
    description: str
    amount: int
    approved_amount: int | None
    currency: str
    payout_channel: PayoutChannel
    channel: PaymentChannel
    fast_track: bool
    needs_return: bool
    escalation_level: int
    evidence: list[EvidenceOut]
    messages: list[MessageOut]
    history: list[HistoryOut]
    review_due_at: datetime | None
    payout_due_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ListRefundsQuery(Query):
    status: RefundStatus | None = None
    limit: Integer = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, pattern=REFUND_ID_PATTERN)


class RefundListOut(Out):
    items: list[RefundOut]
    next_cursor: str | None


class HealthOut(Out):
    status: Literal["ok"]


class OpenApiOut(Out):
    """An OpenAPI 3 document (the keys of the OpenAPI specification)."""

    model_config = ConfigDict(extra="allow")
    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class RefundPolicyQuery(Query):
    kind: OrderKind


class RuleOut(Out):
    rule: str
    zh: str
    en: str

    @classmethod
    def of(cls, text: RuleText) -> RuleOut:
        return cls(rule=text.rule, zh=text.zh, en=text.en)


class RefundPolicyOut(Out):
    kind: OrderKind
    rules: list[RuleOut]
    not_refundable: list[RuleOut]

    @classmethod
    def of(cls, kind: OrderKind, rules: KindRules) -> RefundPolicyOut:
        return cls(
            kind=kind,
            rules=[RuleOut.of(r) for r in rules.rules],
            not_refundable=[RuleOut.of(r) for r in rules.not_refundable],
        )


class ErrorDetail(Out):
    model_config = ConfigDict(extra="allow")
    field: str | None = None
    problem: str


class ErrorBody(Out):
    code: str
    message: str
    rule: str | None
    details: list[ErrorDetail]


class ErrorOut(Out):
    """The envelope of every error (API.md)."""

    error: ErrorBody


class NoContent(Out):
    """No body (204)."""


class ReturnShipmentIn(Body):
    carrier: str = Field(min_length=1, max_length=64)
    tracking_number: str = Field(min_length=1, max_length=64)


class AppealIn(Body):
    statement: Text
    evidence_ids: list[Id] = Field(default_factory=list, max_length=10)


class QueueQuery(Query):
    status: RefundStatus
    escalated: bool = False
    limit: Integer = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, pattern=CURSOR_PATTERN)


class QueueItemOut(RefundOut):
    assignee: str | None


class QueueOut(Out):
    items: list[QueueItemOut]
    next_cursor: str | None


class AdminEvidenceOut(EvidenceOut):
    download_url: str | None = Field(
        description="The checked version of the object, readable for at most 5 minutes"
    )


class StepOut(Out):
    step: Step
    status: StepStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    started_at: datetime
    ended_at: datetime | None


class AdminRefundOut(QueueItemOut):
    """The refund as the console shows it: the order as it was, evidence to look at, and
    the workflow's executions like a state machine's history."""

    order: OrderOut
    evidence: list[AdminEvidenceOut]  # type: ignore[assignment]
    steps: list[StepOut]

    @classmethod
    def of(cls, detail: RefundDetail) -> AdminRefundOut:
        refund = detail.refund
        base = QueueItemOut.model_validate(refund).model_dump()
        base["evidence"] = [
            {
                **EvidenceOut.model_validate(e).model_dump(),
                "download_url": detail.downloads.get(e.evidence_id),
            }
            for e in refund.evidence
        ]
        base["order"] = OrderOut.model_validate(refund.order)
        base["steps"] = [StepOut.model_validate(run) for run in refund.steps]
        return cls.model_validate(base)


def _rule_id(value: str) -> str:
    if value not in POLICY_RULE_IDS:
        raise ValueError("must be a rule id of the refund policy (E1, V2, PH1, ...)")
    return value


RuleId = Annotated[
    str,
    AfterValidator(_rule_id),
    WithJsonSchema({"type": "string", "enum": sorted(POLICY_RULE_IDS)}),
]


class ApproveIn(Body):
    amount: Fen | None = None
    note: Text | None = None


class RejectIn(Body):
    rule: RuleId
    message: Text


class RequestInfoIn(Body):
    message: Text


class ReturnReceivedIn(Body):
    intact: bool
    gifts_returned: bool = True


class RetryPayoutIn(Body):
    payout_channel: PayoutChannel


class OrderStatusIn(Body):
    status: OrderStatus
    note: Text


class WebhookAckOut(Out):
    received: Literal[True]


class ChannelSettingsIn(Body):
    fail_rate: float | None = Field(default=None, ge=0, le=1)
    timeout_rate: float | None = Field(default=None, ge=0, le=1)
    latency_ms: Millis | None = None
    seed: Count | None = None


class ChannelSettingsOut(Out):
    channel: str
    fail_rate: float
    timeout_rate: float
    latency_ms: int
    seed: int | None


class StatementQuery(Query):
    day: date | None = None


class StatementEntryOut(Out):
    refund_no: str
    amount: int
    status: str
    at: datetime


class StatementOut(Out):
    channel: str
    entries: list[StatementEntryOut]

    @classmethod
    def of(cls, channel: str, entries: list[StatementEntry]) -> StatementOut:
        return cls(channel=channel, entries=[StatementEntryOut.model_validate(e) for e in entries])


class ScheduleRunOut(Out):
    schedule: str
    now: datetime
    result: dict[str, Any]


class NudgeOut(Out):
    escalated: bool
    review_due_at: datetime | None
    payout_due_at: datetime | None
    message: str


class ClockIn(Body):
    """Exactly one of: set the business clock, move it on, or give it back to real time."""

    now: UtcTime | None = None
    advance_hours: float | None = Field(default=None, ge=-24 * 3650, le=24 * 3650)
    reset: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ClockIn:
        given = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if not given:
            raise ValueError("give exactly one of now, advance_hours, reset")
        if len(given) > 1:
            raise FieldInvalid(given[1], f"give only one of {', '.join(given)}")
        return self


class ClockOut(Out):
    now: datetime


class StatsQuery(Query):
    from_: date = Field(alias="from")
    to: date

    model_config = ConfigDict(extra="forbid", defer_build=True, populate_by_name=True)


class AnomalyOut(Out):
    scope: Literal["sku", "category"]
    key: str
    orders: int
    refunds: int
    rate: float
    baseline_rate: float


class SlaBreachesOut(Out):
    review: int
    payout: int


class StatsOut(Out):
    """A period's refund analytics (O4): counts, medians, SLA breaches and anomalies."""

    from_: date = Field(serialization_alias="from")
    to: date
    orders: int
    refunds: int
    by_reason: dict[str, int]
    by_status: dict[str, int]
    median_review_hours: float | None
    median_payout_hours: float | None
    sla_breaches: SlaBreachesOut
    anomalies: list[AnomalyOut]


class RefundEventDetailOut(Out):
    """The ``detail`` of a refund event (API.md, "Events for the rest of the platform")."""

    event_id: str = Field(description="refund id and version: the same on every redelivery")
    refund_id: str
    order_id: str
    user_id: str
    status: RefundStatus
    previous_status: RefundStatus | None
    amount: int
    approved_amount: int | None
    channel: PaymentChannel
    escalation_level: int
    version: int
    at: datetime


class RefundEventOut(Out):
    """A refund event as EventBridge delivers it (source ``refunds``)."""

    model_config = ConfigDict(
        populate_by_name=True, from_attributes=True, extra="allow", defer_build=True
    )
    source: Literal["refunds"]
    detail_type: str = Field(
        alias="detail-type",
        pattern=r"^refund\.[a-z_]+$",
        description="refund.<status> or refund.escalated",
    )
    time: datetime
    detail: RefundEventDetailOut


class LocalEventsQuery(Query):
    refund_id: Id


class LocalEventsOut(Out):
    items: list[RefundEventOut]


class AsyncApiOut(Out):
    """An AsyncAPI 3 document (the keys of the AsyncAPI specification)."""

    model_config = ConfigDict(extra="allow")
    asyncapi: str
    info: dict[str, Any]


class ReconciliationQuery(Query):
    day: date


class MismatchOut(Out):
    kind: Literal[
        "missing_at_channel", "unknown_refund", "amount_differs", "paid_twice", "status_differs"
    ]
    refund_id: str
    channel_amount: int | None
    platform_amount: int | None
    platform_status: str | None


class ChannelReconciliationOut(Out):
    entries: int
    """Successful lines in the channel's statement of the day."""
    amount: int
    """Their total, in fen."""
    matched: int
    mismatches: list[MismatchOut]


class ReconciliationOut(Out):
    """A ``reconcile`` run over one Asia/Shanghai day: each channel's statement against the
    refunds (API.md)."""

    day: date
    ran_at: datetime
    channels: dict[str, ChannelReconciliationOut]
