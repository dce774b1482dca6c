"""A consumer of the refund events, as the rest of the platform would be one: a rule on the
emulator's bus sends every ``refunds`` event to a queue, and this service records what
arrives, per refund, for ``GET /_local/events``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from chalicelib.adapters.event_log import EVENT_LOG_KEY

from .event_sources import Wakeup, _Poller

__all__ = ["CONSUMER_QUEUE", "EventConsumer", "create_event_route", "detach_consumer"]

log = logging.getLogger("refunds.local")

CONSUMER_QUEUE = "refunds-local-events-consumer"
RULE = "refunds-local-all-events"


def create_event_route(events: Any, sqs: Any, ddb: Any, bus: str, log_table: str) -> str:
    """The bus, a rule sending every refund event to the consumer's queue, and the log
    table; the queue's URL."""
    events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=CONSUMER_QUEUE)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events.put_rule(Name=RULE, EventBusName=bus, EventPattern=json.dumps({"source": ["refunds"]}))
    events.put_targets(Rule=RULE, EventBusName=bus, Targets=[{"Id": "consumer", "Arn": arn}])
    hash_key, range_key = EVENT_LOG_KEY
    ddb.create_table(
        TableName=log_table,
        KeySchema=[
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": hash_key, "AttributeType": "S"},
            {"AttributeName": range_key, "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    return str(url)


class EventConsumer(_Poller):
    """Receives the consumer queue's events and records each under its refund."""

    def __init__(self, sqs: Any, ddb: Any, queue_url: str, log_table: str, wakeup: Wakeup) -> None:
        super().__init__(wakeup, CONSUMER_QUEUE)
        self.name = "event-consumer"
        self._sqs = sqs
        self._ddb = ddb
        self._url = queue_url
        self._table = log_table

    def poll_once(self) -> int:
        messages = self._sqs.receive_message(
            QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        ).get("Messages", [])
        if not messages:
            return 0
        # Three requests for up to ten events: the emulator answers one request at a time.
        self._ddb.batch_write_item(
            RequestItems={
                self._table: [
                    {"PutRequest": {"Item": self._item(message["Body"], n)}}
                    for n, message in enumerate(messages)
                ]
            }
        )
        self._sqs.delete_message_batch(
            QueueUrl=self._url,
            Entries=[
                {"Id": str(n), "ReceiptHandle": message["ReceiptHandle"]}
                for n, message in enumerate(messages)
            ],
        )
        return len(messages)

    @staticmethod
    def _item(body: str, position: int) -> dict[str, Any]:
        refund_id = json.loads(body).get("detail", {}).get("refund_id", "")
        return {
            "refund_id": {"S": refund_id},
            "received": {"S": f"{time.time_ns():020d}{position:02d}"},
            "event": {"S": body},
        }


def detach_consumer(events: Any, bus: str) -> Any:
    """Stop the rule sending events to the consumer while a bulk load runs; returns the
    function that sends them again. (A bulk import is not traffic: nobody consumes it.)"""
    targets = events.list_targets_by_rule(Rule=RULE, EventBusName=bus)["Targets"]
    events.remove_targets(Rule=RULE, EventBusName=bus, Ids=[t["Id"] for t in targets])

    def attach() -> None:
        events.put_targets(Rule=RULE, EventBusName=bus, Targets=targets)

    return attach
