"""The workflow's Lambda functions: one SQS worker per step, and the sweep that resends
what a lost message owed (DESIGN.md, "Workflow"). Each handler only parses its message and
calls the step's use case; chalicelib/api/queues.py reports failures back to SQS."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from chalice.app import Blueprint, CloudWatchEvent, Cron, Rate, SQSEvent
from pydantic import ValidationError

from chalicelib.adapters.sqs import queue_name
from chalicelib.adapters.streams import stored_change
from chalicelib.api import metrics
from chalicelib.api.http import logger
from chalicelib.api.models import OrderIn
from chalicelib.api.queues import run_batch, step_refund_id
from chalicelib.bootstrap import get_ports
from chalicelib.domain.workflow import WORKFLOW, Step
from chalicelib.service import (
    analytics,
    events,
    orders,
    payout,
    promises,
    reconciliation,
    refunds,
    review,
    workflow,
)
from chalicelib.service.exceptions import StepRejected
from chalicelib.service.ports import Ports
from chalicelib.service.workflow import DONE, StepOutcome

__all__ = ["blueprint"]

blueprint = Blueprint(__name__)

BOUND_FOR_DLQ = StepOutcome(delete=False)


def _guarded(handle: Any) -> Any:
    """A message that can never succeed is redelivered with no backoff, so that it reaches
    the dead-letter queue after the queue's ``maxReceiveCount`` quick receives."""

    def run(body: str, received: int) -> StepOutcome:
        try:
            outcome: StepOutcome = handle(body, received)
        except StepRejected:
            return BOUND_FOR_DLQ
        return outcome

    return run


def _refund_steps(
    event: SQSEvent, step: Step, handle: Callable[[Ports, str, int], StepOutcome]
) -> Any:
    """A batch of step messages, each naming its refund, handed to the step's use case."""
    ports = get_ports()
    return run_batch(
        event.to_dict(),
        ports.steps,
        step,
        _guarded(lambda body, received: handle(ports, step_refund_id(body), received)),
    )


@blueprint.on_sqs_message(
    queue=queue_name(Step.AUTO_REVIEW), batch_size=WORKFLOW[Step.AUTO_REVIEW].batch_size
)
def auto_review_worker(event: SQSEvent) -> dict[str, Any]:
    return _refund_steps(event, Step.AUTO_REVIEW, review.handle_auto_review)


@blueprint.on_sqs_message(
    queue=queue_name(Step.PAYOUT), batch_size=WORKFLOW[Step.PAYOUT].batch_size
)
def payout_worker(event: SQSEvent) -> dict[str, Any]:
    return _refund_steps(event, Step.PAYOUT, payout.handle_payout)


@blueprint.on_sqs_message(
    queue=queue_name(Step.CONFIRM_PAYOUT), batch_size=WORKFLOW[Step.CONFIRM_PAYOUT].batch_size
)
def confirm_payout_worker(event: SQSEvent) -> dict[str, Any]:
    return _refund_steps(event, Step.CONFIRM_PAYOUT, payout.handle_confirm_payout)


@blueprint.on_sqs_message(
    queue=queue_name(Step.VERIFY_EVIDENCE), batch_size=WORKFLOW[Step.VERIFY_EVIDENCE].batch_size
)
def verify_evidence_worker(event: SQSEvent) -> dict[str, Any]:
    """S3 ``ObjectCreated`` notifications of the evidence bucket, through SQS."""
    ports = get_ports()

    def handle(body: str, received: int) -> StepOutcome:
        outcome = DONE
        for refund_id, evidence_id in _uploaded_slots(body):
            done = refunds.handle_upload(ports, refund_id, evidence_id, received)
            outcome = outcome if done.delete else done
        return outcome

    return run_batch(event.to_dict(), ports.steps, Step.VERIFY_EVIDENCE, _guarded(handle))


def _uploaded_slots(body: str) -> list[tuple[str, str]]:
    """(refund id, evidence id) of each object created under a slot's key. S3's test event
    and objects under any other key are skipped: they never count."""
    try:
        notification = json.loads(body)
        records = notification.get("Records", [])
        keys = [unquote_plus(record["s3"]["object"]["key"]) for record in records]
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise StepRejected(f"not an S3 notification: {body[:200]!r}") from error
    return [slot for key in keys if (slot := refunds.parse_evidence_key(key))]


@blueprint.on_sqs_message(
    queue=queue_name(Step.ORDER_EVENTS), batch_size=WORKFLOW[Step.ORDER_EVENTS].batch_size
)
def order_events_worker(event: SQSEvent) -> dict[str, Any]:
    """Orders from the order system's queue: the same payload as PUT /internal/orders."""
    ports = get_ports()

    def handle(body: str, received: int) -> StepOutcome:
        try:
            order = OrderIn.model_validate_json(body).to_order()
        except ValidationError as error:
            raise StepRejected(f"not a valid order: {error.error_count()} problems") from error
        return orders.handle_order_event(ports, order, received)

    return run_batch(event.to_dict(), ports.steps, Step.ORDER_EVENTS, _guarded(handle))


@blueprint.schedule(Rate(15, unit=Rate.MINUTES), name="escalate_overdue")
def escalate_overdue(event: CloudWatchEvent) -> dict[str, int]:
    """X2: escalate the refunds whose promise ran out, at the event's time."""
    return {"escalated": promises.escalate_overdue(get_ports(), _event_time(event))}


@blueprint.schedule(Rate(1, unit=Rate.HOURS), name="close_stale")
def close_stale(event: CloudWatchEvent) -> dict[str, int]:
    """Close untouched drafts and unanswered needs_info refunds, at the event's time."""
    return {"closed": promises.close_stale(get_ports(), _event_time(event))}


def _event_time(event: CloudWatchEvent) -> datetime:
    """A scheduled function's "now" is its event's time (the local stack sends the business
    clock's), never the clock of the machine that happens to run it."""
    return datetime.fromisoformat(event.time.replace("Z", "+00:00"))


@blueprint.schedule(Cron(30, 16, "*", "*", "?", "*"), name="daily_stats")
def daily_stats(event: CloudWatchEvent) -> dict[str, int]:
    """Keep the figures of the Asia/Shanghai day before the event's time (O4), at 00:30
    Beijing time: half an hour for the day's last stream records to be counted."""
    figures = analytics.record_yesterday(get_ports(), _event_time(event))
    return {"orders": figures.orders, "refunds": figures.refunds}


@blueprint.schedule(Cron(0, 2, "*", "*", "?", "*"), name="reconcile")
def reconcile(event: CloudWatchEvent) -> dict[str, int]:
    """Reconcile the channels' statements of the Asia/Shanghai day before the event's time
    at 10:00 Beijing time: Alipay's bill of a day is ready after about 09:00 the next."""
    run = reconciliation.reconcile_yesterday(get_ports(), _event_time(event))
    metrics.record_run(run)
    return {name: len(channel.mismatches) for name, channel in run.channels.items()}


STREAM_CONSUMERS = {
    "stats_consumer": ("orders_table", "refunds_table"),
    "events_publisher": ("refunds_table",),
}
"""Which function reads which tables' streams: the template maps them, the local stack polls
them (a stream's ARN is known only once its table exists, so Chalice cannot declare them)."""


@blueprint.lambda_function(name="stats_consumer")
def stats_consumer(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The orders' and refunds' stream records, counted into the analytics once each (O4).

    Records of one shard come in order; on a failure the batch reports the failed record, and
    Lambda (with ReportBatchItemFailures) resends from it: what came before is not redone.
    """
    ports = get_ports()
    for record in event.get("Records", []):
        try:
            stored = stored_change(record)
            if stored is not None:
                analytics.count_change(ports, stored)
        except Exception:
            logger().exception(
                "stream record not counted; retried from it",
                extra={"sequence": record["dynamodb"]["SequenceNumber"]},
            )
            return {"batchItemFailures": [{"itemIdentifier": record["dynamodb"]["SequenceNumber"]}]}
    return {"batchItemFailures": []}


@blueprint.lambda_function(name="events_publisher")
def events_publisher(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """The refunds' stream records, published as refund events (API.md, "Events"): the
    stream is the outbox. A batch that fails is handed over again whole (bisected on
    error by the mapping): events are at least once, their event_id the same each time.

    Once the events are out, the same changes are counted into the refunds' metrics
    (chalicelib/api/metrics.py): one count per change, written before the invocation ends."""
    changes = [c for record in event.get("Records", []) if (c := stored_change(record))]
    events.publish_changes(get_ports(), changes)
    metrics.count_refund_changes(changes)
    return {"batchItemFailures": []}


@blueprint.schedule(Rate(1, unit=Rate.MINUTES), name="resume_steps")
def resume_steps(event: CloudWatchEvent) -> dict[str, int]:
    """Resend the messages of steps whose refund still awaits them past their due time."""
    return {"resent": workflow.resume_waiting_steps(get_ports())}
