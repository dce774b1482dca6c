"""Metrics of the refunds and of the workflow, in CloudWatch's embedded metric format (EMF).

They are emitted at the edge, where the handlers see what happened: the refund events that the
``events_publisher`` stream consumer derives from each stored change, each step attempt of an
SQS worker's batch (chalicelib/api/queues.py), each channel of a ``reconcile`` run. The domain
and the services emit nothing, and no use case needs a metrics port, so this is not an adapter:
it sits in the api layer beside the logger of chalicelib/api/http.py.

A :class:`MetricBatch` belongs to one invocation and is written once, at its end (``flushed``),
as JSON documents on stdout, one line each. Lambda hands stdout to CloudWatch Logs, which turns
a line with an ``_aws`` key into metrics: no API call, no IAM grant, no latency on the way.
Every metric is in the namespace ``Refunds`` with the dimensions ``service`` (``refunds``, as
in the logs) and ``stage``, plus its breakdown: a step and the attempt's outcome, an
escalation level, an SLA phase, a channel. A breakdown is published again without its last
dimension, so that one alarm watches a total: the SLA breaches of every phase, the mismatches
of every channel, the attempts of a step whatever their outcome.

Powertools' ``Metrics`` keeps one set of dimensions per process, shared by every instance and
thread (the local stack serves HTTP and polls the queues in threads of one process), and an
EMF document has one value per dimension, while a batch's attempts can have several outcomes.
So each document here is a Powertools ``EphemeralMetrics`` of its own, which shares nothing
and needs no Lambda context. It is written with one ``write`` of the whole line, as the
logging handler writes a log line: ``print`` (which Powertools' flush uses) writes the line
and its newline apart, and another thread's log line could land between them.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any

from chalicelib.domain.events import RefundEvent, refund_event
from chalicelib.domain.model import Refund, RefundStatus
from chalicelib.domain.reconciliation import Reconciliation
from chalicelib.domain.workflow import Step
from chalicelib.service.ports import StoredChange
from chalicelib.settings import get_settings

__all__ = [
    "NAMESPACE",
    "SERVICE",
    "STATUS_METRICS",
    "Metric",
    "MetricBatch",
    "StepResult",
    "count_refund_changes",
    "flushed",
    "record_run",
    "record_step_attempt",
]

NAMESPACE = "Refunds"
SERVICE = "refunds"
ESCALATED = "refund.escalated"
"""The detail-type of an escalation's event (API.md, "Events for the rest of the platform")."""


class Metric(StrEnum):
    REFUNDS_CREATED = "RefundsCreated"
    REFUNDS_SUBMITTED = "RefundsSubmitted"
    REFUNDS_APPROVED = "RefundsApproved"
    REFUNDS_PAID = "RefundsPaid"
    REFUNDS_PAYOUT_FAILED = "RefundsPayoutFailed"
    REFUNDS_REJECTED = "RefundsRejected"
    REFUNDS_ESCALATED = "RefundsEscalated"
    """By ``level``: 1 when a promise ran out, 2 when it is a cs-senior matter (X2)."""
    SLA_BREACHES = "SlaBreaches"
    """By ``phase`` (review, payout): a refund that overran that promise for the first time,
    as the domain records it (``Refund.sla_breaches``) and the analytics count it (O4)."""
    STEP_ATTEMPTS = "StepAttempts"
    """By ``step`` and ``outcome``."""
    STEP_LATENCY = "StepLatency"
    """Milliseconds of one attempt's handler, by ``step`` and ``outcome``."""
    RECONCILIATION_MISMATCHES = "ReconciliationMismatches"
    """By ``channel``: one value per channel and ``reconcile`` run, 0 included."""
    RECONCILIATION_ENTRIES = "ReconciliationEntries"
    """By ``channel``: the successful lines of its statement that day."""


STATUS_METRICS: dict[RefundStatus, Metric] = {
    RefundStatus.SUBMITTED: Metric.REFUNDS_SUBMITTED,
    RefundStatus.APPROVED: Metric.REFUNDS_APPROVED,
    RefundStatus.PAID: Metric.REFUNDS_PAID,
    RefundStatus.PAYOUT_FAILED: Metric.REFUNDS_PAYOUT_FAILED,
    RefundStatus.REJECTED: Metric.REFUNDS_REJECTED,
}
"""The moves to these statuses are counted, each under its own metric."""


class StepResult(StrEnum):
    """What became of a step attempt's message (the ``outcome`` dimension)."""

    SUCCEEDED = "succeeded"
    """Done: the message is deleted."""
    RETRIED = "retried"
    """It runs again, after the step's backoff or the queue's visibility timeout."""
    FAILED = "failed"
    """Bound for the dead-letter queue: its last attempt failed, or it can never succeed."""


Breakdown = tuple[tuple[str, str], ...]
"""A document's own dimensions beside service and stage, in order, with their values."""


class MetricBatch:
    """The metrics of one invocation: one EMF document per breakdown, written by ``flush``."""

    def __init__(self) -> None:
        self._counts: dict[Breakdown, Counter[Metric]] = {}
        self._timings: dict[Breakdown, dict[Metric, list[float]]] = {}

    def count(self, metric: Metric, value: int = 1, **breakdown: str) -> None:
        """Add ``value`` (0 included: a datapoint that says nothing happened) to ``metric``."""
        self._counts.setdefault(tuple(breakdown.items()), Counter())[metric] += value

    def time(self, metric: Metric, milliseconds: float, **breakdown: str) -> None:
        """One duration of ``metric``, a value of its own in the document (SQS hands a worker
        at most 10 messages; EMF takes up to 100 values a metric)."""
        timings = self._timings.setdefault(tuple(breakdown.items()), {})
        timings.setdefault(metric, []).append(milliseconds)

    def flush(self) -> None:
        """Write every document, one line each, and forget them."""
        stage = get_settings().stage
        for breakdown in dict.fromkeys([*self._counts, *self._timings]):
            document = self._document(stage, breakdown)
            sys.stdout.write(json.dumps(document, separators=(",", ":")) + "\n")
        sys.stdout.flush()
        self._counts.clear()
        self._timings.clear()

    def _document(self, stage: str, breakdown: Breakdown) -> Mapping[str, Any]:
        from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

        document = EphemeralMetrics(
            namespace=NAMESPACE,
            service=SERVICE,
            default_dimensions={"service": SERVICE, "stage": stage},
        )
        for dimension, label in breakdown:
            document.add_dimension(dimension, label)
        if breakdown:
            document.add_dimensions(stage=stage, **dict(breakdown[:-1]))
        for metric, total in self._counts.get(breakdown, Counter()).items():
            document.add_metric(name=metric.value, unit=MetricUnit.Count, value=total)
        for metric, values in self._timings.get(breakdown, {}).items():
            for milliseconds in values:
                document.add_metric(
                    name=metric.value, unit=MetricUnit.Milliseconds, value=milliseconds
                )
        return document.serialize_metric_set()


@contextmanager
def flushed() -> Iterator[MetricBatch]:
    """A batch for one invocation, written when it ends, however it ends."""
    batch = MetricBatch()
    try:
        yield batch
    finally:
        batch.flush()


def count_refund_changes(changes: Iterable[StoredChange]) -> None:
    """Count the refunds' stored changes, as ``events_publisher`` publishes them, and write
    the counts: a creation, a move to a counted status (STATUS_METRICS), an escalation by its
    level, and an SLA phase the refund breached for the first time.

    Counted from the refunds' change stream, after the batch's events were published, each
    change gives one count. A stream batch handed over again (an invocation that failed after
    publishing, a timeout) counts its changes again: that is rare, and the metrics are for
    watching trends and raising alarms; the analytics (O4) are the exact figures.
    """
    with flushed() as batch:
        for change in changes:
            before = change.before if isinstance(change.before, Refund) else None
            after = change.after if isinstance(change.after, Refund) else None
            event = refund_event(before, after)
            if event is not None:
                _count_event(batch, event)
            if after is not None:
                breached = set(before.sla_breaches) if before is not None else set()
                for phase in after.sla_breaches:
                    if phase not in breached:
                        batch.count(Metric.SLA_BREACHES, phase=phase)


def _count_event(batch: MetricBatch, event: RefundEvent) -> None:
    if event.detail_type == ESCALATED:
        batch.count(Metric.REFUNDS_ESCALATED, level=str(event.escalation_level))
        return
    if event.previous_status is None:
        batch.count(Metric.REFUNDS_CREATED)
    metric = STATUS_METRICS.get(RefundStatus(event.status))
    if metric is not None:
        batch.count(metric)


def record_step_attempt(
    batch: MetricBatch, step: Step, result: StepResult, milliseconds: float
) -> None:
    """One attempt of ``step``: counted by its outcome, with how long its handler took."""
    batch.count(Metric.STEP_ATTEMPTS, step=step.value, outcome=result.value)
    batch.time(Metric.STEP_LATENCY, milliseconds, step=step.value, outcome=result.value)


def record_run(run: Reconciliation) -> None:
    """Write a ``reconcile`` run's result, one document per channel: its mismatches (0 too,
    so that the alarm sees the runs) and its statement's successful lines."""
    with flushed() as batch:
        for channel in run.channels.values():
            mismatches = len(channel.mismatches)
            batch.count(Metric.RECONCILIATION_MISMATCHES, mismatches, channel=channel.channel)
            batch.count(Metric.RECONCILIATION_ENTRIES, channel.entries, channel=channel.channel)
