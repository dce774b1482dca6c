"""Lambda's event sources, played locally: SQS pollers and schedules for ``app.event_sources``.

For each SQS handler, a poller does what Lambda's event source mapping does: it receives up
to the handler's batch size with ``WaitTimeSeconds=0`` (a long poll would hold the
emulator's one-at-a-time lock, DESIGN.md field notes), builds the records Lambda would
(messageId, receiptHandle, body, attributes with ``ApproximateReceiveCount``,
eventSourceARN), calls the handler as Lambda does, deletes what succeeded, and leaves the
``batchItemFailures`` to their visibility timeout and the queue's redrive policy. It sleeps
when idle and is woken when the emulator applies a send, a visibility change or an upload.
A :class:`~infra.local.faults.FaultPlan` may disturb its deliveries: a message handed twice
(to a second invocation at the same time), a batch reversed, an invocation killed mid-step
(nothing deleted, as after a crash on Lambda).
Schedules call their handler with a CloudWatch scheduled event at their rate, its ``time``
read from the business clock, as a moved clock would make EventBridge's.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from chalice.app import ScheduledEventConfig, SQSEventConfig

from .faults import FaultPlan, WorkerKilled

__all__ = [
    "LambdaContext",
    "Schedule",
    "SqsPoller",
    "StreamPoller",
    "Wakeup",
    "event_source_services",
]

log = logging.getLogger("refunds.local")

SHARDS_REFRESH_SECONDS = 10.0
IDLE_FIRST_SECONDS = 0.05
IDLE_MAX_SECONDS = 0.5
FUNCTION_TIMEOUT_MS = 25_000


class Wakeup:
    """Pollers sleep on this; the emulator rings it when a message may be waiting: for the
    queues or tables it names, so that a write wakes only the pollers it concerns."""

    def __init__(self) -> None:
        self._events: list[tuple[str | None, threading.Event]] = []
        self._lock = threading.Lock()

    def subscribe(self, key: str | None = None) -> threading.Event:
        """An event set when ``key`` (a queue or table name; None: anything) is rung."""
        event = threading.Event()
        with self._lock:
            self._events.append((key, event))
        return event

    def ring(self, keys: Iterable[str] | None = None) -> None:
        """Wake the pollers of ``keys``; every poller if ``keys`` is None."""
        wanted = None if keys is None else set(keys)
        with self._lock:
            for key, event in self._events:
                if wanted is None or key is None or key in wanted:
                    event.set()


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str
    aws_request_id: str
    started: float
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return max(0, FUNCTION_TIMEOUT_MS - int((time.monotonic() - self.started) * 1000))


class _Poller:
    """A thread that polls while there is work, and otherwise sleeps until woken (backing
    off from 50 to 500 ms when nothing wakes it), as an event source mapping does."""

    name: str

    def __init__(self, wakeup: Wakeup, key: str | None = None) -> None:
        self._woken = wakeup.subscribe(key)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._woken.set()
        if self._thread:
            self._thread.join(timeout=30)

    def poll_once(self) -> int:
        """Hand over one batch; how many records it held."""
        raise NotImplementedError

    def _run(self) -> None:
        idle = IDLE_FIRST_SECONDS
        while not self._stopping.is_set():
            try:
                handled = self.poll_once()
            except Exception:
                log.exception("poller failed; polling on", extra={"source": self.name})
                handled = 0
            if handled:
                idle = IDLE_FIRST_SECONDS
                continue
            self._woken.wait(idle)
            if self._woken.is_set():
                self._woken.clear()
                idle = IDLE_FIRST_SECONDS
            else:
                idle = min(idle * 2, IDLE_MAX_SECONDS)


class SqsPoller(_Poller):
    """Lambda's SQS event source mapping for one handler."""

    def __init__(
        self,
        app: Any,
        source: SQSEventConfig,
        sqs: Any,
        wakeup: Wakeup,
        faults: FaultPlan | None = None,
    ) -> None:
        super().__init__(wakeup, source.queue)
        self.name = f"sqs:{source.queue}"
        self._queue = source.queue or ""
        self._faults = faults or FaultPlan()
        self._handler = app.handler_map[source.name]
        self._function = source.name
        self._batch_size = source.batch_size
        self._sqs = sqs
        self._url = sqs.get_queue_url(QueueName=source.queue)["QueueUrl"]
        self._arn = sqs.get_queue_attributes(QueueUrl=self._url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self._region = self._arn.split(":")[3]

    def poll_once(self) -> int:
        """Receive one batch and hand it to the handler; how many messages it held."""
        answer = self._sqs.receive_message(
            QueueUrl=self._url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages", [])
        if not messages:
            return 0
        delivery = self._faults.deliver(self._queue, messages)
        again = None
        if delivery.again:
            # A duplicate delivery, to another instance at the same time. What it reports is
            # not used: its messages are this batch's, deleted as this batch's invocation says.
            again = threading.Thread(
                target=self._invoke, args=(delivery.again, None), name=f"{self.name}:again"
            )
            again.start()
        failed = self._invoke(delivery.batch, delivery.kill_after)
        if again is not None:
            again.join()
        if failed is None:
            # Killed: nothing deleted; the batch shows again after its visibility timeout.
            self._faults.after_kill(self._sqs, self._url, messages)
            return len(messages)
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self._sqs.delete_message_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)
                ],
            )
        return len(messages)

    def _invoke(self, messages: list[dict[str, Any]], kill_after: int | None) -> set[str] | None:
        """Call the function as Lambda does; the ids of the messages it did not finish, or
        None if the invocation was killed."""
        event = {"Records": [self._record(message) for message in messages]}
        context = LambdaContext(self._function, str(uuid.uuid4()), time.monotonic())
        try:
            with self._faults.invocation(kill_after):
                result = self._handler(event, context) or {}
        except WorkerKilled as killed:
            log.warning(
                "worker killed (fault injection)",
                extra={"function": self._function, "fault": str(killed)},
            )
            return None
        except Exception:
            # An unhandled error fails the whole batch, as on Lambda.
            log.exception("handler failed its whole batch", extra={"function": self._function})
            return {message["MessageId"] for message in messages}
        return {item["itemIdentifier"] for item in result.get("batchItemFailures", [])}

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self._arn,
            "awsRegion": self._region,
        }


class StreamPoller(_Poller):
    """Lambda's DynamoDB stream event source mapping for one table and one function: each
    shard read in order from its trim horizon, a batch handed over as Lambda's records, and
    after a ``batchItemFailures`` the shard read again from the failed record."""

    def __init__(
        self,
        app: Any,
        function: str,
        stream_arn: str,
        streams: Any,
        wakeup: Wakeup,
        batch_size: int = 100,
    ) -> None:
        super().__init__(wakeup, stream_arn.split("/")[1])
        self.name = f"stream:{stream_arn.split('/')[1]}"
        self._handler = app.handler_map[function]
        self._function = function
        self._arn = stream_arn
        self._streams = streams
        self._batch_size = batch_size
        self._iterators: dict[str, str] = {}
        self._shards: list[str] = []
        self._shards_read_at = 0.0

    def poll_once(self) -> int:
        """Read each shard once; how many records were handed over."""
        handled = 0
        for shard_id in self._current_shards():
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self._arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            answer = self._streams.get_records(
                ShardIterator=self._iterators[shard_id], Limit=self._batch_size
            )
            records = answer.get("Records", [])
            if records:
                handled += len(records)
                failed = self._hand_over(records)
                if failed is not None:
                    self._iterators[shard_id] = self._streams.get_shard_iterator(
                        StreamArn=self._arn,
                        ShardId=shard_id,
                        ShardIteratorType="AT_SEQUENCE_NUMBER",
                        SequenceNumber=failed,
                    )["ShardIterator"]
                    continue
            self._iterators[shard_id] = answer["NextShardIterator"]
        return handled

    def _current_shards(self) -> list[str]:
        """The stream's shards, described again only every few seconds (as Lambda does)."""
        if time.monotonic() - self._shards_read_at > SHARDS_REFRESH_SECONDS:
            description = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]
            self._shards = [shard["ShardId"] for shard in description["Shards"]]
            self._shards_read_at = time.monotonic()
        return self._shards

    def _hand_over(self, records: list[dict[str, Any]]) -> str | None:
        """Call the function; the sequence number to read again from, if a record failed."""
        event = {
            "Records": [
                {**record, "eventSource": "aws:dynamodb", "eventSourceARN": self._arn}
                for record in records
            ]
        }
        context = LambdaContext(self._function, str(uuid.uuid4()), time.monotonic())
        try:
            result = self._handler(event, context) or {}
        except Exception:
            log.exception("stream handler failed its batch", extra={"function": self._function})
            return str(records[0]["dynamodb"]["SequenceNumber"])
        failures = result.get("batchItemFailures", [])
        return str(failures[0]["itemIdentifier"]) if failures else None


_RATE = re.compile(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)")
_DAILY_CRON = re.compile(r"cron\((\d+) (\d+) \* \* \? \*\)")
_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class Schedule:
    """An EventBridge schedule: its handler, called with a scheduled event at its rate."""

    def __init__(self, app: Any, source: ScheduledEventConfig, now: Callable[[], datetime]) -> None:
        expression = source.schedule_expression
        text = expression if isinstance(expression, str) else expression.to_string()
        self.name = f"schedule:{source.name}"
        self._daily_at: tuple[int, int] | None = None
        if rate := _RATE.fullmatch(text):
            self.every = int(rate.group(1)) * _SECONDS[rate.group(2).rstrip("s")]
        elif daily := _DAILY_CRON.fullmatch(text):
            self.every = _SECONDS["day"]
            self._daily_at = (int(daily.group(2)), int(daily.group(1)))
        else:
            raise ValueError(f"the local stack runs rate() and daily cron() schedules, not {text}")
        self._function = source.name
        self._handler = app.handler_map[source.name]
        self._now = now
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.wait(self._until_next()):
            try:
                self.fire()
            except Exception:
                log.exception("scheduled function failed", extra={"function": self._function})

    def _until_next(self) -> float:
        """Seconds to the next firing: a rate's interval, or the next daily UTC time."""
        if self._daily_at is None:
            return float(self.every)
        now = datetime.now(UTC)
        hour, minute = self._daily_at
        next_at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if next_at <= now:
            next_at += timedelta(days=1)
        return (next_at - now).total_seconds()

    def fire(self) -> Any:
        now = self._now()
        event = {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1",
            "resources": [f"arn:aws:events:us-east-1:123456789012:rule/{self._function}"],
            "detail": {},
        }
        context = LambdaContext(self._function, str(uuid.uuid4()), time.monotonic())
        return self._handler(event, context)


def event_source_services(
    app: Any,
    sqs: Any,
    wakeup: Wakeup,
    now: Callable[[], datetime],
    faults: FaultPlan | None = None,
) -> list[SqsPoller | Schedule]:
    """A poller for every SQS handler (its deliveries disturbed as ``faults`` says) and a
    timer for every schedule of ``app``, whose events carry ``now`` (the business clock) as
    their time."""
    services: list[SqsPoller | Schedule] = []
    for source in app.event_sources:
        if isinstance(source, SQSEventConfig):
            services.append(SqsPoller(app, source, sqs, wakeup, faults))
        elif isinstance(source, ScheduledEventConfig):
            services.append(Schedule(app, source, now))
    return services
