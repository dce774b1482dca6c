"""SQS batches as Lambda hands them over: each record's step run, failures reported back.

Lambda deletes a batch's messages unless the handler names them in ``batchItemFailures``
(with ``ReportBatchItemFailures`` on the event source mapping), so one bad message never
runs the batch again. A failed message's visibility timeout is set to its step's backoff,
which is when SQS shows it again; after the step's last attempt it is left to the queue's
redrive policy, which moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from chalicelib.api.http import logger
from chalicelib.service.exceptions import StepRejected
from chalicelib.service.ports import StepQueue
from chalicelib.service.workflow import StepOutcome

__all__ = ["StepNotDone", "run_batch", "step_refund_id"]

RecordHandler = Callable[[str, int], StepOutcome]
"""(message body, how often SQS has handed this message over) -> what to do with it."""


class StepNotDone(Exception):
    """The record's step is not done: its message stays on the queue (batchItemFailures)."""


def run_batch(event: dict[str, Any], queue: StepQueue, handle: RecordHandler) -> dict[str, Any]:
    """Run every record of an SQS event; answer Lambda's partial batch response."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    def record_handler(record: SQSRecord) -> None:
        received = int(record.attributes.approximate_receive_count or 1)
        outcome = handle(record.body, received)
        if outcome.delete:
            return
        seconds = math.ceil(outcome.visible_in.total_seconds())
        queue.redeliver_in(record.event_source_arn, record.receipt_handle, seconds)
        raise StepNotDone(f"again in {seconds} s" if seconds else "bound for the dead-letter queue")

    processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
    result = process_partial_response(
        event=event, record_handler=record_handler, processor=processor
    )
    failures = result.get("batchItemFailures", [])
    records = event.get("Records", [])
    source = records[0].get("eventSourceARN", "").rsplit(":", 1)[-1] if records else ""
    logger().info(
        "batch handled", extra={"queue": source, "records": len(records), "failed": len(failures)}
    )
    return dict(result)


def step_refund_id(body: str) -> str:
    """The refund a step message names; a message that names none can never succeed."""
    try:
        data = json.loads(body)
        refund_id = data["refund_id"]
    except (ValueError, TypeError, KeyError) as error:
        raise StepRejected(f"not a step message: {body[:200]!r}") from error
    if not isinstance(refund_id, str) or not refund_id:
        raise StepRejected(f"not a step message: {body[:200]!r}")
    return refund_id
