"""The workflow's step queues on SQS: one queue per step, each with a dead-letter queue."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from chalicelib.adapters.clients import OnFirstUseClient
from chalicelib.domain.workflow import WORKFLOW, Step
from chalicelib.settings import process_stage

__all__ = [
    "DEAD_LETTER_RETENTION_SECONDS",
    "VISIBILITY_TIMEOUT_SECONDS",
    "SqsStepQueue",
    "dead_letter_queue_name",
    "queue_attributes",
    "queue_name",
    "step_message",
]

QUEUE_PREFIX = "refunds-"
VISIBILITY_TIMEOUT_SECONDS = 150
"""Six times the function's timeout (25 s), as AWS advises for a Lambda event source: a
message in flight is never shown to a second worker while the first may still run."""
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


def queue_name(step: Step, stage: str | None = None) -> str:
    """The queue of a step in a stage (``refunds-<stage>-<step>``): the same name in
    ``@app.on_sqs_message``, the template and the local stack. Chalice needs it as a literal
    when the app is imported, so the stage defaults to the process's own (``process_stage``):
    packaged, that is the template's ``${Stage}``, which the event source mapping's ARN, a
    ``Fn::Sub``, resolves to the stack's stage."""
    return f"{QUEUE_PREFIX}{stage or process_stage()}-{step.value}"


def dead_letter_queue_name(step: Step, stage: str | None = None) -> str:
    return f"{queue_name(step, stage)}-dlq"


def queue_attributes(step: Step, dead_letter_arn: str) -> dict[str, str]:
    """A step queue's attributes: its redrive after the step's last attempt (the workflow
    table's ``max_attempts``), as the packaged template declares them too."""
    redrive = {
        "deadLetterTargetArn": dead_letter_arn,
        "maxReceiveCount": WORKFLOW[step].retry.max_attempts,
    }
    return {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
        "RedrivePolicy": json.dumps(redrive),
    }


def step_message(step: Step, refund_id: str) -> str:
    return json.dumps({"step": step.value, "refund_id": refund_id}, separators=(",", ":"))


class SqsStepQueue(OnFirstUseClient):
    """Sends step messages to the stage's queues; their URLs are looked up once per process."""

    def __init__(self, client_factory: Callable[[], Any], stage: str) -> None:
        super().__init__(client_factory)
        self._stage = stage
        self._urls: dict[str, str] = {}
        self._lock = threading.Lock()

    def url(self, name: str) -> str:
        if name not in self._urls:
            with self._lock:
                if name not in self._urls:
                    self._urls[name] = self.client.get_queue_url(QueueName=name)["QueueUrl"]
        return self._urls[name]

    def send(self, step: Step, refund_id: str, delay_seconds: int = 0) -> None:
        self.client.send_message(
            QueueUrl=self.url(queue_name(step, self._stage)),
            MessageBody=step_message(step, refund_id),
            DelaySeconds=min(max(delay_seconds, 0), 900),
        )

    def redeliver_in(self, queue_arn: str, receipt_handle: str, seconds: int) -> None:
        """Let a failed message be received again after ``seconds`` (a retry's backoff)."""
        name = queue_arn.rsplit(":", 1)[-1]
        self.client.change_message_visibility(
            QueueUrl=self.url(name),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=min(max(seconds, 0), 43200),
        )
