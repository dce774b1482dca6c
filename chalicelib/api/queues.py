"""SQS batches as Lambda hands them over: each record's step run, failures reported back.

Lambda deletes a batch's messages unless the handler names them in ``batchItemFailures``
(with ``ReportBatchItemFailures`` on the event source mapping), so one bad message never
runs the batch again. A failed message's visibility timeout is set to its step's backoff,
which is when SQS shows it again; after the step's last attempt it is left to the queue's
redrive policy, which moves it to the dead-letter queue.

Each attempt is counted by its step and outcome, with its handler's time (chalicelib/api/
metrics.py), and the batch's metrics are written when the batch is done.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

from chalicelib.api.http import logger
from chalicelib.api.metrics import StepResult, flushed, record_step_attempt
from chalicelib.domain.workflow import WORKFLOW, Step
from chalicelib.service.exceptions import StepRejected
from chalicelib.service.ports import StepQueue
from chalicelib.service.workflow import StepOutcome

__all__ = ["StepNotDone", "run_batch", "step_refund_id"]

RecordHandler = Callable[[str, int], StepOutcome]
"""(message body, how often SQS has handed this message over) -> what to do with it."""


class StepNotDone(Exception):
    """The record's step is not done: its message stays on the queue (batchItemFailures)."""


def run_batch(
    event: dict[str, Any], queue: StepQueue, step: Step, handle: RecordHandler
) -> dict[str, Any]:
    """Run every record of an SQS event of ``step``'s queue; answer Lambda's partial batch
    response."""
    from aws_lambda_powertools.utilities.batch import (
        BatchProcessor,
        EventType,
        process_partial_response,
    )
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

    with flushed() as metrics:

        def record_handler(record: SQSRecord) -> None:
            received = int(record.attributes.approximate_receive_count or 1)
            started = time.perf_counter()
            try:
                outcome = handle(record.body, received)
            except Exception:
                # Back after the queue's visibility timeout; after its maxReceiveCount (the
                # step's max attempts) receives, the redrive moves it to the dead-letter queue.
                last = received >= WORKFLOW[step].retry.max_attempts
                ended = StepResult.FAILED if last else StepResult.RETRIED
                record_step_attempt(metrics, step, ended, _since(started))
                raise
            seconds = math.ceil(outcome.visible_in.total_seconds())
            if outcome.delete:
                ended = StepResult.SUCCEEDED
            else:
                ended = StepResult.RETRIED if seconds else StepResult.FAILED
            record_step_attempt(metrics, step, ended, _since(started))
            if outcome.delete:
                return
            queue.redeliver_in(record.event_source_arn, record.receipt_handle, seconds)
            raise StepNotDone(
                f"again in {seconds} s" if seconds else "bound for the dead-letter queue"
            )

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


def _since(started: float) -> float:
    """Milliseconds since ``started`` (a ``time.perf_counter()``)."""
    return round((time.perf_counter() - started) * 1000, 3)


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
