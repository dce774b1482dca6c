"""The refund workflow as Step-Functions-style steps, declared as data (DESIGN.md, "Workflow").

Each step is a named state with a retry policy (max attempts, first interval, backoff rate)
and a catch target, like an ASL ``Task`` state with ``Retry`` and ``Catch``. The engine that
runs them is SQS (one queue per step, its redrive policy's ``maxReceiveCount`` taken from
here) and Lambda; this module only says what should happen, and records on the refund what
did happen, one :class:`StepRun` per execution, like a state machine's execution history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .model import Refund

__all__ = [
    "MAX_STEP_RUNS",
    "WORKFLOW",
    "RetryPolicy",
    "Step",
    "StepDefinition",
    "StepRun",
    "StepStatus",
    "attempt_failed",
    "finish_step",
    "open_run",
    "start_step",
]

MAX_STEP_RUNS = 30
"""How many step executions a refund keeps (the item stays far below DynamoDB's 400 KB)."""


class Step(StrEnum):
    VERIFY_EVIDENCE = "verify-evidence"
    AUTO_REVIEW = "auto-review"
    PAYOUT = "payout"
    CONFIRM_PAYOUT = "confirm-payout"
    ORDER_EVENTS = "order-events"


class StepStatus(StrEnum):
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class RetryPolicy:
    """ASL's ``Retry``: ``IntervalSeconds``, ``BackoffRate``, ``MaxAttempts`` (all attempts)."""

    max_attempts: int
    first_interval_seconds: float
    backoff_rate: float
    max_interval_seconds: float = 900.0

    def interval(self, failed_attempts: int, scale: float = 1.0) -> timedelta:
        """How long to wait after ``failed_attempts`` failures before the next attempt."""
        seconds = self.first_interval_seconds * self.backoff_rate ** max(failed_attempts - 1, 0)
        return timedelta(seconds=min(seconds, self.max_interval_seconds) * scale)


@dataclass(frozen=True)
class StepDefinition:
    step: Step
    comment: str
    retry: RetryPolicy
    catch: str
    """What happens after the last attempt failed (ASL's ``Catch`` ``Next``)."""
    batch_size: int = 10


WORKFLOW: dict[Step, StepDefinition] = {
    definition.step: definition
    for definition in (
        StepDefinition(
            Step.VERIFY_EVIDENCE,
            "Read an uploaded object's real size and first bytes; count the slot or give it a"
            " problem (S3 ObjectCreated through SQS).",
            RetryPolicy(max_attempts=5, first_interval_seconds=2, backoff_rate=2),
            catch="the slot stays uncounted; submit checks it again itself",
        ),
        StepDefinition(
            Step.AUTO_REVIEW,
            "R1's technical check: evidence counted, description specific (F3), the claim"
            " fits the order; platform faults approved at once (O2).",
            RetryPolicy(max_attempts=5, first_interval_seconds=2, backoff_rate=2),
            catch="pending_review: a person reviews what the check could not",
        ),
        StepDefinition(
            Step.PAYOUT,
            "Pay the approved amount through the refund's channel, the refund id as the"
            " channel's refund number (P1, P2); an unknown outcome is resolved by a query.",
            RetryPolicy(max_attempts=6, first_interval_seconds=5, backoff_rate=2),
            catch="payout_failed: first in the CS queue, retry-payout sends it again",
            batch_size=5,
        ),
        StepDefinition(
            Step.CONFIRM_PAYOUT,
            "Ask the channel for a payout it accepted but had not made yet, until it says"
            " SUCCESS or fails it (its notification may come first).",
            RetryPolicy(max_attempts=8, first_interval_seconds=10, backoff_rate=2),
            catch="payout_failed: the channel never confirmed; retry-payout queries it first",
        ),
        StepDefinition(
            Step.ORDER_EVENTS,
            "Upsert an order the order system sent as a message (lower versions ignored).",
            RetryPolicy(max_attempts=5, first_interval_seconds=2, backoff_rate=2),
            catch="the message rests in the dead-letter queue for the order system",
        ),
    )
}
"""The state machine, like its ASL definition: one entry per Task state."""


@dataclass
class StepRun:
    """One execution of a step on a refund (API.md, the admin detail's ``steps``)."""

    step: Step
    status: StepStatus
    started_at: datetime
    attempts: int = 0
    """Attempts finished so far."""
    last_error: str | None = None
    next_attempt_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in (StepStatus.SUCCEEDED, StepStatus.FAILED)


def open_run(refund: Refund, step: Step) -> StepRun | None:
    """The refund's latest execution of ``step`` that has not finished, if any."""
    for run in reversed(refund.steps):
        if run.step is step:
            return None if run.finished else run
    return None


def start_step(refund: Refund, step: Step, at: datetime, due_at: datetime) -> StepRun:
    """A new execution of ``step``, which the refund now awaits until ``due_at`` (wall clock).

    Made in the same write as the change that calls for the step, so that the step's
    message, sent after the write, is owed by the refund itself: if it is lost, the refund
    still says so, and the message is sent again.
    """
    run = StepRun(step, StepStatus.RUNNING, started_at=at)
    refund.steps.append(run)
    del refund.steps[:-MAX_STEP_RUNS]
    refund.awaiting_step = step
    refund.step_due_at = due_at
    return run


def _run_of(refund: Refund, step: Step, at: datetime) -> StepRun:
    run = open_run(refund, step)
    if run is None:
        # A step that finishes without a recorded start (a redelivered message, or a
        # notification that settles it first) still leaves its execution in the history.
        run = StepRun(step, StepStatus.RUNNING, started_at=at)
        refund.steps.append(run)
        del refund.steps[:-MAX_STEP_RUNS]
    return run


def attempt_failed(
    refund: Refund,
    step: Step,
    error: str,
    *,
    at: datetime,
    next_attempt_at: datetime,
    due_at: datetime,
) -> StepRun:
    """An attempt of ``step`` failed and another follows at ``next_attempt_at``."""
    run = _run_of(refund, step, at)
    run.attempts += 1
    run.status = StepStatus.RETRYING
    run.last_error = error
    run.next_attempt_at = next_attempt_at
    if refund.awaiting_step is step:
        refund.step_due_at = due_at
    return run


def finish_step(
    refund: Refund, step: Step, *, at: datetime, error: str | None = None, attempted: bool = True
) -> StepRun:
    """``step`` is done, with ``error`` if it failed for good; the refund awaits it no more.

    ``attempted`` is False when something else settled it (a channel's notification).
    """
    run = _run_of(refund, step, at)
    if attempted:
        run.attempts += 1
    run.status = StepStatus.FAILED if error else StepStatus.SUCCEEDED
    run.last_error = error or run.last_error
    run.next_attempt_at = None
    run.ended_at = at
    if refund.awaiting_step is step:
        refund.awaiting_step = None
        refund.step_due_at = None
    return run
