"""The local stack: the whole system on one machine, on an in-process AWS emulator.

It plays the parts that AWS plays when deployed: moto stands in for DynamoDB and S3, and the
runner stands in for API Gateway and Lambda. The runner owns everything in-process (no
forked reloader that outlives a kill) as a list of services started in order and stopped in
reverse. The HTTP API is one service; the event sources of later slices (SQS pollers handing
handlers Lambda's own event shape, schedules, S3 notifications, a payment-channel simulator)
are further services added to the same list.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import HTTPServer
from socketserver import ThreadingMixIn
from typing import Any, Protocol

from chalice.config import Config
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalGatewayException,
)

from .channel_simulator import ChannelSimulator
from .event_consumer import CONSUMER_QUEUE, EventConsumer, create_event_route
from .event_sources import StreamPoller, Wakeup, event_source_services

__all__ = [
    "LocalStack",
    "StackService",
    "create_step_queues",
    "make_http_service",
    "notify_uploads",
]

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}
LISTEN_BACKLOG = 128
MAX_CHUNKED_BODY = 1024 * 1024


class StackService(Protocol):
    """Something the stack runs beside the API: started in order, stopped in reverse."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _RequestHandler(ChaliceRequestHandler):
    """Chalice's local handler, made to behave like the deployed API Gateway in front of it."""

    # Chalice writes headers and body apart: with Nagle on, every keep-alive reply waits
    # ~40 ms for the client's delayed ACK (DESIGN.md, field notes).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """The app logs every request as JSON with its request id; no second, plain line."""

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        headers, body = super()._parse_payload()
        if body is None and "chunked" in self.headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        return headers, body

    def _handle(self) -> None:
        try:
            self._generic_handle()
        except ValueError:
            # A Content-Length or chunk size that is not a number: the framing is broken, so
            # answer and close rather than guess where the next request starts.
            self.close_connection = True
            self._send_envelope(400, "invalid_request", "malformed request framing")

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _send_envelope(self, status: int, code: str, message: str) -> None:
        from chalicelib.api.errors import envelope
        from chalicelib.api.http import JSON, json_text, request_id_for

        headers = {
            "Content-Type": JSON,
            "X-Request-Id": request_id_for(self.headers.get("x-request-id", "")),
        }
        self._send_http_response(status, headers, json_text(envelope(code, message)))

    def _read_chunked(self) -> bytes:
        """A chunked body, read up to a bound (the app answers 413 past 64 KiB anyway)."""
        parts: list[bytes] = []
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return b"".join(parts)
            chunk = self.rfile.read(size)
            self.rfile.readline()
            total += size
            if total <= MAX_CHUNKED_BODY:
                parts.append(chunk)

    def _send_error_response(self, error: LocalGatewayException) -> None:
        # The local gateway answers an unknown route itself, like API Gateway's "Missing
        # Authentication Token"; deployed, a gateway response maps it to the envelope.
        self._send_envelope(404, "not_found", f"no route {self.command} {self.path}")


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets connections under a few dozen clients.
    request_queue_size = LISTEN_BACKLOG


@dataclass
class _HttpService:
    name: str
    server: _Server
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=self.name, daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread:
            self.thread.join()


def make_http_service(app: Any, host: str, port: int, stage: str = "local") -> _HttpService:
    """Serve ``app`` like ``chalice local``, minus its hazards (see _RequestHandler)."""
    # What chalice.local.create_local_server does: app.current_request becomes thread-local,
    # so concurrent requests never read each other's bodies.
    if not isinstance(app, LocalChalice):
        CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
        app.__class__ = CustomLocalChalice
    config = Config.create(chalice_stage=stage, chalice_app=app)

    handler = functools.partial(_RequestHandler, app_object=app, config=config)
    return _HttpService("http-api", _Server((host, port), handler))


_WAKING_SQS_TARGETS = frozenset(
    {
        "AmazonSQS.SendMessage",
        "AmazonSQS.SendMessageBatch",
        "AmazonSQS.ChangeMessageVisibility",
        "AmazonSQS.ChangeMessageVisibilityBatch",
        "AWSEvents.PutEvents",  # a rule's SQS target is sent inside the PutEvents request
    }
)


_TABLE_WRITES = frozenset(
    f"DynamoDB_20120810.{operation}"
    for operation in (
        "PutItem",
        "UpdateItem",
        "DeleteItem",
        "BatchWriteItem",
        "TransactWriteItems",
    )
)


def _may_queue_a_message(environ: dict[str, Any]) -> bool:
    """A request after which a poller may find a message: an SQS send or visibility change,
    or an S3 upload (S3 speaks REST, with no X-Amz-Target; its notification lands on a queue
    inside the upload request). A needless wake costs one empty receive."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target is not None:
        return target in _WAKING_SQS_TARGETS
    return environ.get("REQUEST_METHOD") in ("POST", "PUT")


def _read_json_body(environ: dict[str, Any]) -> dict[str, Any]:
    """A JSON-protocol request's body (SQS, DynamoDB, EventBridge), read and put back for
    moto; {} if it is not one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(raw)
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _queues_concerned(target: str | None, body: dict[str, Any]) -> set[str] | None:
    """The queues a send, a visibility change, a bus event or an upload may fill (None: all)."""
    from chalicelib.adapters.sqs import queue_name
    from chalicelib.domain.workflow import Step

    if target is None:  # an S3 upload: its notification goes to the verify-evidence queue
        return {queue_name(Step.VERIFY_EVIDENCE)}
    if target == "AWSEvents.PutEvents":
        return {CONSUMER_QUEUE}
    url = body.get("QueueUrl")
    return {str(url).rsplit("/", 1)[-1]} if url else None


def _tables_written(target: str | None, body: dict[str, Any]) -> set[str] | None:
    """The tables a DynamoDB write changed, whose streams may have records (None: all)."""
    if target == "DynamoDB_20120810.BatchWriteItem":
        return set(body.get("RequestItems", {}))
    if target == "DynamoDB_20120810.TransactWriteItems":
        return {
            action.get("TableName", "")
            for item in body.get("TransactItems", [])
            for action in item.values()
        }
    table = body.get("TableName")
    return {str(table)} if table else None


class _Emulator:
    """moto's server, answering one request at a time.

    DynamoDB applies each request atomically; moto's backends do not lock, so two conditional
    writes racing in two server threads can both pass their condition (seen: one order booked
    by three refunds in 3 rounds out of 10 with 8 threads). Serialising the requests gives the
    local stack DynamoDB's guarantee, which E4 rests on. After a request that may have queued
    a message, it wakes the pollers (19 ms from send to handler, instead of an idle tick).
    """

    def __init__(self, host: str, port: int, wakeup: Wakeup, table_wakeup: Wakeup) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        backend = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def one_at_a_time(environ: dict[str, Any], start_response: Any) -> Any:
            target = environ.get("HTTP_X_AMZ_TARGET")
            body = _read_json_body(environ) if target else {}
            with lock:
                answer = backend(environ, start_response)
            if _may_queue_a_message(environ):
                wakeup.ring(_queues_concerned(target, body))
            elif target in _TABLE_WRITES:
                table_wakeup.ring(_tables_written(target, body))
            return answer

        self.server = make_server(
            host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler
        )
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="aws-emulator", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@dataclass
class LocalStack:
    """The moto server, the stage's tables and bucket, demo data, and the services."""

    host: str = "127.0.0.1"
    port: int = 8000
    moto_port: int = 0
    seed: Callable[[Any], None] | None = None
    services: list[StackService] = field(default_factory=list)
    aws_endpoint: str = ""
    api_url: str = ""
    _moto: _Emulator | None = None
    _wakeup: Wakeup = field(default_factory=Wakeup)
    _table_wakeup: Wakeup = field(default_factory=Wakeup)

    def start(self) -> None:
        """Start everything, or, if any part fails (a port in use), stop what had started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = _Emulator(self.host, self.moto_port, self._wakeup, self._table_wakeup)
        self._moto.start()
        self.aws_endpoint = self._moto.url
        for name, value in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(name, value)
        os.environ["REFUNDS_STAGE"] = "local"
        os.environ["REFUNDS_AWS_ENDPOINT"] = self.aws_endpoint

        from chalicelib import bootstrap
        from chalicelib.adapters.dynamodb import create_tables
        from chalicelib.settings import DEFAULT_LOCAL_CHANNEL_SECRET, Settings

        # The simulator binds its port now, so the app can be told where it is.
        simulator = ChannelSimulator(
            os.environ.get("REFUNDS_CHANNEL_SECRET", DEFAULT_LOCAL_CHANNEL_SECRET),
            webhook_base_url=lambda: self.api_url,
            business_clock=lambda: bootstrap.get_ports().clock.now(),
            host=self.host,
        )
        self.services.insert(0, simulator)
        os.environ["REFUNDS_CHANNEL_SIMULATOR_URL"] = simulator.url

        settings = Settings.from_environ()
        ports = bootstrap.build_ports(settings)
        create_tables()
        s3 = ports.evidence.client  # type: ignore[attr-defined]
        s3.create_bucket(Bucket=settings.evidence_bucket)
        # Versioned as deployed: the version that passed the evidence check stays readable.
        s3.put_bucket_versioning(
            Bucket=settings.evidence_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        sqs = ports.steps.client  # type: ignore[attr-defined]
        create_step_queues(sqs)
        notify_uploads(s3, sqs, settings.evidence_bucket)
        event_queue = create_event_route(
            ports.events.client,  # type: ignore[attr-defined]
            sqs,
            ports.stats.client,  # type: ignore[attr-defined]
            settings.event_bus,
            settings.event_log_table or "",
        )
        bootstrap.install(ports, bootstrap.build_verifier(settings))
        if self.seed:
            self.seed(ports)

        from app import app

        api = make_http_service(app, self.host, self.port)
        self.api_url = api.url
        business_now = ports.clock.now
        self.services[0:0] = [
            api,
            *event_source_services(app, sqs, self._wakeup, business_now),
            *_stream_consumers(app, settings, self._table_wakeup),
            EventConsumer(
                sqs,
                ports.stats.client,  # type: ignore[attr-defined]
                event_queue,
                settings.event_log_table or "",
                self._wakeup,
            ),
        ]
        for index, service in enumerate(self.services):
            try:
                service.start()
            except BaseException:
                del self.services[index:]  # stop() then stops only what had started
                raise

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._moto:
            self._moto.stop()
            self._moto = None


def create_step_queues(sqs: Any) -> None:
    """Each step's queue and dead-letter queue, with the packaged template's attributes."""
    from chalicelib.adapters.sqs import (
        DEAD_LETTER_RETENTION_SECONDS,
        dead_letter_queue_name,
        queue_attributes,
        queue_name,
    )
    from chalicelib.domain.workflow import Step

    for step in Step:
        dead_letters = sqs.create_queue(
            QueueName=dead_letter_queue_name(step),
            Attributes={"MessageRetentionPeriod": str(DEAD_LETTER_RETENTION_SECONDS)},
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=dead_letters, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sqs.create_queue(QueueName=queue_name(step), Attributes=queue_attributes(step, arn))


def notify_uploads(s3: Any, sqs: Any, bucket: str) -> None:
    """S3 ObjectCreated under ``evidence/`` to the verify-evidence queue, as deployed."""
    from chalicelib.adapters.sqs import queue_name
    from chalicelib.domain.workflow import Step

    url = sqs.get_queue_url(QueueName=queue_name(Step.VERIFY_EVIDENCE))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "evidence/"}]}},
                }
            ]
        },
    )


def _stream_consumers(app: Any, settings: Any, wakeup: Wakeup) -> list[StreamPoller]:
    """A poller for each table stream a function reads (chalicelib/api/routes/workers.py)."""
    import boto3

    from chalicelib.api.routes.workers import STREAM_CONSUMERS

    options = {"region_name": settings.region, "endpoint_url": settings.aws_endpoint_url}
    tables, streams = (
        boto3.client("dynamodb", **options),
        boto3.client("dynamodbstreams", **options),
    )
    pollers = []
    for function, table_settings in STREAM_CONSUMERS.items():
        for setting in table_settings:
            table = tables.describe_table(TableName=getattr(settings, setting))["Table"]
            pollers.append(StreamPoller(app, function, table["LatestStreamArn"], streams, wakeup))
    return pollers
