"""The refund model: orders as the order system feeds them, refunds, evidence, history."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from .workflow import Step, StepRun

__all__ = [
    "CURRENCY",
    "QUALITY_REASONS",
    "Action",
    "Evidence",
    "EvidenceKind",
    "Gift",
    "HistoryEntry",
    "Message",
    "Order",
    "OrderBooking",
    "OrderKind",
    "OrderStatus",
    "PaymentChannel",
    "PayoutChannel",
    "PlatformFault",
    "Reason",
    "Refund",
    "RefundStatus",
    "ReturnShipment",
    "Usage",
]

CURRENCY = "CNY"


class OrderKind(StrEnum):
    VIRTUAL = "virtual"
    PHYSICAL = "physical"
    SERVICE = "service"


class OrderStatus(StrEnum):
    PAID = "paid"
    DELIVERED = "delivered"
    SHIPPED = "shipped"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class PaymentChannel(StrEnum):
    ALIPAY = "alipay"
    WECHAT = "wechat"
    BALANCE = "balance"


class PayoutChannel(StrEnum):
    ORIGINAL = "original"
    BALANCE = "balance"


class PlatformFault(StrEnum):
    DUPLICATE_CHARGE = "duplicate_charge"
    WRONG_ITEM_ISSUED = "wrong_item_issued"


class Reason(StrEnum):
    NOT_AS_DESCRIBED = "not_as_described"
    NOT_DELIVERED = "not_delivered"
    DEFECTIVE = "defective"
    INVALID_CODE = "invalid_code"
    SERVICE_NOT_DELIVERED = "service_not_delivered"
    DUPLICATE_CHARGE = "duplicate_charge"
    WRONG_ITEM_ISSUED = "wrong_item_issued"
    CHANGED_MIND = "changed_mind"
    OTHER = "other"


QUALITY_REASONS = frozenset(
    {Reason.NOT_AS_DESCRIBED, Reason.DEFECTIVE, Reason.INVALID_CODE, Reason.WRONG_ITEM_ISSUED}
)


class EvidenceKind(StrEnum):
    ORDER_SCREENSHOT = "order_screenshot"
    PROBLEM_SCREENSHOT = "problem_screenshot"
    USAGE_RECORD = "usage_record"
    DEFECT_PHOTO = "defect_photo"
    CHAT_RECORD = "chat_record"
    OTHER = "other"


class RefundStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    PENDING_REVIEW = "pending_review"
    NEEDS_INFO = "needs_info"
    APPROVED = "approved"
    AWAITING_RETURN = "awaiting_return"
    PAYING = "paying"
    PAID = "paid"
    PAYOUT_FAILED = "payout_failed"
    REJECTED = "rejected"
    APPEALED = "appealed"
    CANCELLED = "cancelled"
    CLOSED = "closed"


class Action(StrEnum):
    CREATE = "create"
    SUBMIT = "submit"
    AUTO_REVIEW = "auto_review"
    CLAIM = "claim"
    APPROVE = "approve"
    REJECT = "reject"
    REQUEST_INFO = "request_info"
    RETURN_SHIPMENT = "return_shipment"
    RETURN_RECEIVED = "return_received"
    PAYOUT = "payout"
    PAID = "paid"
    PAYOUT_FAILED = "payout_failed"
    RETRY_PAYOUT = "retry_payout"
    APPEAL = "appeal"
    CANCEL = "cancel"
    CLOSE = "close"
    ESCALATE = "escalate"
    NUDGE = "nudge"
    ORDER_CORRECTED = "order_corrected"
    REMOVE_EVIDENCE = "remove_evidence"


@dataclass(frozen=True)
class Usage:
    """Units of a virtual good sold by quantity (credit, or days of a membership)."""

    total_units: int
    used_units: int

    @property
    def remaining_units(self) -> int:
        return self.total_units - self.used_units


@dataclass(frozen=True)
class Gift:
    sku: str
    title: str
    value: int


@dataclass(frozen=True)
class Order:
    """An order as the platform's order system reports it. Amounts in fen."""

    order_id: str
    user_id: str
    kind: OrderKind
    sku: str
    category: str
    list_price: int
    paid_amount: int
    payment_channel: PaymentChannel
    paid_at: datetime
    refund_deadline: datetime
    status: OrderStatus
    title: str = ""
    currency: str = CURRENCY
    shipping_fee: int = 0
    channel_trade_no: str | None = None
    usage: Usage | None = None
    service_completion: Decimal = Decimal(0)
    customized: bool = False
    gifts: tuple[Gift, ...] = ()
    platform_fault: PlatformFault | None = None
    version: int | None = None


@dataclass(frozen=True)
class OrderBooking:
    """What an order has already given back (E4): paid refunds and the one open refund."""

    refunded_total: int = 0
    open_refund_id: str | None = None
    open_refund_amount: int = 0

    def remaining(self, paid_amount: int, *, own_refund_id: str | None = None) -> int:
        """What is left to refund; a refund's own booking does not count against itself."""
        in_flight = 0 if self.open_refund_id == own_refund_id else self.open_refund_amount
        return paid_amount - self.refunded_total - in_flight


@dataclass
class Evidence:
    """An evidence slot: declared at creation, counted once its object passed the check."""

    evidence_id: str
    kind: EvidenceKind
    content_type: str
    size: int
    created_at: datetime
    uploaded: bool = False
    problem: str | None = None
    checked_etag: str | None = None
    checked_version: str | None = None
    """The object version that passed the check: the one reviewers are shown."""
    submitted: bool = False
    """Counted toward a submission: reviewers rely on it, so it can no longer be removed."""


@dataclass(frozen=True)
class ReturnShipment:
    """How the goods come back (PH1): the user's carrier and tracking number."""

    carrier: str
    tracking_number: str
    at: datetime


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    actor: str
    action: Action
    from_status: RefundStatus | None
    to_status: RefundStatus | None
    note: str | None = None
    rule: str | None = None


@dataclass(frozen=True)
class Message:
    message_id: str
    at: datetime
    author_role: str
    author: str
    body: str


@dataclass
class Refund:
    """A refund request and everything that happened to it (O1)."""

    refund_id: str
    order: Order
    status: RefundStatus
    reason: Reason
    description: str
    amount: int
    payout_channel: PayoutChannel
    channel: PaymentChannel
    gifts_returned: bool
    fast_track: bool
    needs_return: bool
    created_at: datetime
    updated_at: datetime
    approved_amount: int | None = None
    escalation_level: int = 0
    review_due_at: datetime | None = None
    payout_due_at: datetime | None = None
    assignee: str | None = None
    """The agent who claimed the refund (R4): only they decide, until a senior takes over."""
    senior_only: bool = False
    """Claimed and decided by a ``cs-senior`` only: an appeal (X3), or abuse signals (R1)."""
    appealed: bool = False
    """X3: a rejected refund can be appealed once."""
    return_shipment: ReturnShipment | None = None
    sla_breaches: list[str] = field(default_factory=list)
    """The phases (review, payout) in which the platform overran its promise (X2, O4)."""
    last_nudged_at: datetime | None = None
    """When the user last nudged it (X2): another nudge waits 24 hours."""
    channel_may_have_paid: bool = False
    """A payout request may have reached ``channel`` (its answer was lost, or it accepted the
    payout without confirming it): that channel is asked before the money goes another way."""
    evidence: list[Evidence] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    """The latest messages; older ones are only in the message log (O5)."""
    archived_messages: int = 0
    """How many of the oldest messages are only in the message log."""
    steps: list[StepRun] = field(default_factory=list)
    """The workflow's executions on this refund, oldest first (bounded)."""
    awaiting_step: Step | None = None
    """The step a message is owed for: set in the same write as the change that starts it,
    cleared in the write that finishes it, so a message lost in between is sent again."""
    step_due_at: datetime | None = None
    """When the awaited step is overdue (wall clock): its message counts as lost then."""
    version: int = 0

    @property
    def order_id(self) -> str:
        return self.order.order_id

    @property
    def user_id(self) -> str:
        return self.order.user_id

    @property
    def currency(self) -> str:
        return self.order.currency

    def find_evidence(self, evidence_id: str) -> Evidence | None:
        return next((e for e in self.evidence if e.evidence_id == evidence_id), None)

    def uploaded_kinds(self) -> set[EvidenceKind]:
        return {e.kind for e in self.evidence if e.uploaded}
