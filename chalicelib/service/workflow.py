"""The workflow engine's use cases: attempt a step, record its failures, catch its last one,
and send again what a lost message owed (DESIGN.md, "Workflow").

A step's message names the refund and the step; every handler judges the refund's stored
state, so a duplicated, re-ordered or late message does nothing twice. The attempt count
lives on the refund (its :class:`StepRun`), not only in SQS's receive count, so a message
sent again by the sweep continues the count instead of starting over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from chalicelib.domain.model import Refund
from chalicelib.domain.workflow import (
    WORKFLOW,
    Step,
    attempt_failed,
    finish_step,
    open_run,
    start_step,
)

from .changes import on_fresh_state
from .exceptions import ConcurrentChange, StepRejected, StepRetry
from .ports import Ports

__all__ = [
    "DONE",
    "StepOutcome",
    "attempt",
    "begin_step",
    "resume_waiting_steps",
    "send_awaited_step",
]

log = logging.getLogger("refunds.workflow")

Catch = Callable[[Refund, str], None]
"""What a step's last failure does to the refund (ASL's ``Catch``), before it is saved."""


@dataclass(frozen=True)
class StepOutcome:
    """What the queue does with a step's message: delete it, or let it be received again
    after ``visible_in`` (a retry's backoff; zero for one bound for the dead-letter queue)."""

    delete: bool
    visible_in: timedelta = timedelta(0)


DONE = StepOutcome(delete=True)


def begin_step(ports: Ports, refund: Refund, step: Step, delay: timedelta = timedelta(0)) -> None:
    """Make the refund await ``step``, in the change about to be saved; ``send_awaited_step``
    after the save sends its message."""
    grace = timedelta(seconds=ports.config.step_grace_seconds)
    start_step(refund, step, at=ports.clock.now(), due_at=ports.clock.wall_now() + delay + grace)


def send_awaited_step(ports: Ports, refund: Refund, delay: timedelta = timedelta(0)) -> None:
    """Send the message the saved refund owes. If sending fails, the refund still owes it,
    and ``resume_waiting_steps`` sends it once it is overdue: the change stands either way."""
    if refund.awaiting_step is None:
        return
    try:
        ports.steps.send(refund.awaiting_step, refund.refund_id, int(delay.total_seconds()))
    except Exception:
        log.warning(
            "step message not sent; the sweep resends it",
            extra={"refund_id": refund.refund_id, "step": refund.awaiting_step.value},
            exc_info=True,
        )


def attempt(
    ports: Ports,
    step: Step,
    refund_id: str | None,
    received: int,
    work: Callable[[], object],
    catch: Catch | None = None,
) -> StepOutcome:
    """Run one attempt of ``step`` and tell the queue what to do with its message.

    A failure (StepRetry, or any fault: AWS errors are transient more often than not) is
    recorded on the refund with its next attempt; after the last attempt of the step's
    retry policy, ``catch`` moves the refund on, and the message goes to the dead-letter
    queue. StepRejected (a message that can never succeed) goes there at once.
    """
    try:
        work()
        return DONE
    except StepRejected as rejected:
        log.error("step message rejected", extra={"step": step.value, "error": str(rejected)})
        return StepOutcome(delete=False)
    except StepRetry as failure:
        error = str(failure)
    except Exception as fault:
        log.exception("step attempt failed", extra={"step": step.value, "refund_id": refund_id})
        error = f"internal error ({type(fault).__name__})"
    if refund_id is None:
        return _backoff(ports, step, received)
    return on_fresh_state(lambda: _record_failure(ports, step, refund_id, error, received, catch))


def _backoff(ports: Ports, step: Step, failed: int) -> StepOutcome:
    """After ``failed`` attempts: again after the policy's interval, or, past the last
    attempt, to the dead-letter queue (received again at once, then moved by the redrive)."""
    policy = WORKFLOW[step].retry
    if failed >= policy.max_attempts:
        return StepOutcome(delete=False)
    return StepOutcome(False, policy.interval(failed, ports.config.step_interval_scale))


def _record_failure(
    ports: Ports, step: Step, refund_id: str, error: str, received: int, catch: Catch | None
) -> StepOutcome:
    refund = ports.refunds.get(refund_id)
    if refund is None:
        return _backoff(ports, step, received)
    run = open_run(refund, step)
    failed = max(received, (run.attempts if run else 0) + 1)
    now = ports.clock.now()
    if failed >= WORKFLOW[step].retry.max_attempts:
        log.error(
            "step failed after its last attempt",
            extra={"step": step.value, "refund_id": refund_id, "error": error},
        )
        if catch is not None:
            catch(refund, error)
        finish_step(refund, step, at=now, error=error)
        ports.refunds.save(refund)
        return StepOutcome(delete=False)
    outcome = _backoff(ports, step, failed)
    log.warning(
        "step attempt failed; it runs again",
        extra={
            "step": step.value,
            "refund_id": refund_id,
            "attempt": failed,
            "retry_in_s": outcome.visible_in.total_seconds(),
            "error": error,
        },
    )
    grace = timedelta(seconds=ports.config.step_grace_seconds)
    attempt_failed(
        refund,
        step,
        error,
        at=now,
        next_attempt_at=now + outcome.visible_in,
        due_at=ports.clock.wall_now() + outcome.visible_in + grace,
    )
    ports.refunds.save(refund)
    return outcome


def resume_waiting_steps(ports: Ports, limit: int = 100) -> int:
    """Send again the messages of steps whose refund still awaits them past their due time:
    a process that died between a change and its message, or a message that ended in the
    dead-letter queue before its step was caught. Returns how many were sent."""
    now = ports.clock.wall_now()
    overdue = ports.refunds.list_awaiting_steps(now, limit)
    sent = 0
    for refund in overdue:
        log.warning(
            "resending an overdue step message",
            extra={"refund_id": refund.refund_id, "step": str(refund.awaiting_step)},
        )
        # Due again one grace later, so that the next sweep leaves the new message time.
        refund.step_due_at = now + timedelta(seconds=ports.config.step_grace_seconds)
        try:
            ports.refunds.save(refund)
        except ConcurrentChange:
            continue  # the refund moved meanwhile: its own change decides what it awaits
        send_awaited_step(ports, refund)
        sent += 1
    return sent
