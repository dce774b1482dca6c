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
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from .faults import FaultPlan, read_json_body
from .upload_policy import respond as respond_refusal
from .upload_policy import screen as screen_upload

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
MAX_KEPT_BODY = 1024 * 1024
READ_PIECE = 64 * 1024
MAX_LINE = 65536


class StackService(Protocol):
    """Something the stack runs beside the API: started in order, stopped in reverse."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _ShortBody(Exception):
    """The client stopped sending before the end of the body its framing announced."""


class _RequestHandler(ChaliceRequestHandler):
    """Chalice's local handler, made to behave like the deployed API Gateway in front of it.

    Every answer is in the envelope with an ``X-Request-Id``, http.server's own included;
    every method reaches the app; a body is dispatched only once it has fully arrived; a HEAD
    answer has no body; raw UTF-8 in a request target reads as its percent-encoded form.
    """

    # Chalice writes headers and body apart: with Nagle on, every keep-alive reply waits
    # ~40 ms for the client's delayed ACK (DESIGN.md, field notes).
    disable_nagle_algorithm = True
    path: str

    def log_message(self, format: str, *args: Any) -> None:
        """The app logs every request as JSON with its request id; no second, plain line."""

    def parse_request(self) -> bool:
        # http.server decodes the request line as Latin-1, so raw UTF-8 bytes in a path would
        # reach the app as other characters. A client should have percent-encoded them (RFC
        # 3986): do it here, and the app reads the same text either way.
        if not super().parse_request():
            return False
        self.path = _percent_encode_raw_bytes(self.path)
        return True

    def __getattr__(self, name: str) -> Any:
        # http.server answers a method it finds no do_<METHOD> for (TRACE, QUERY, ...) with a
        # 501 page; they go to the app instead, which answers them as any method a path does
        # not serve: 405 with the path's Allow, or 404 where no route is.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def _parse_payload(self) -> tuple[dict[str, Any], bytes | None]:
        headers = dict(self.headers)
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return headers, _kept(self._read_chunks())
        length = int(self.headers.get("content-length", "0"))
        if length < 0:
            raise ValueError("a negative Content-Length")
        return headers, _kept(self._read_exactly(length)) if length else None

    def _handle(self) -> None:
        try:
            self._generic_handle()
        except ValueError:
            # A Content-Length or chunk size that is not a size: the framing is broken, so
            # answer and close rather than guess where the next request starts.
            self.close_connection = True
            self._send_envelope(400, "invalid_request", "malformed request framing")
        except _ShortBody:
            # Nothing is dispatched: a part of a body is not the body. If the client hung up
            # for good, this answer fails to go out, and _Server drops it quietly.
            self.close_connection = True
            self._send_envelope(
                400, "invalid_request", "the body ended before the length its framing announced"
            )

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals, in the envelope like every other answer.

        They come before the app, where API Gateway's own answers come when deployed (and are
        mapped to the envelope there too): a request line over 64 KiB is 414, a header line
        over 64 KiB or more than 100 headers is 431, an unreadable request line 400, an HTTP
        version it does not speak 505. They keep those statuses, which say what to shorten,
        with the code ``invalid_request`` (API.md: a request the API cannot take as sent).
        The connection closes after them, and the request id is always a new one, since the
        request's headers were not read.
        """
        self.close_connection = True
        # An unreadable request line leaves http.server's HTTP/0.9 default, which would send
        # the body alone; API Gateway speaks no HTTP/0.9, so the answer has its status line.
        self.request_version = self.protocol_version
        phrase = self.responses.get(code, ("",))[0]
        self._send_envelope(code, "invalid_request", message or phrase, caller_request_id="")

    def _send_envelope(
        self, status: int, code: str, message: str, caller_request_id: str | None = None
    ) -> None:
        from chalicelib.api.errors import envelope
        from chalicelib.api.http import JSON, json_text, request_id_for

        if caller_request_id is None:
            caller_request_id = self.headers.get("x-request-id", "")
        headers = {"Content-Type": JSON, "X-Request-Id": request_id_for(caller_request_id)}
        if self.close_connection:
            headers["Connection"] = "close"
        self._send_http_response(status, headers, json_text(envelope(code, message)))

    def _send_http_response(
        self, code: int, headers: dict[str, Any], body: str | bytes | None
    ) -> None:
        if self.command != "HEAD":
            super()._send_http_response(code, headers, body)
            return
        # A HEAD answer has no body, and may give a Content-Length only if it is GET's
        # (RFC 9110, 9.3.2, 8.6): no route here serves HEAD, so its 405 or 404 gives none.
        self.send_response(code)
        self._send_headers({k: v for k, v in headers.items() if k.lower() != "content-length"})

    def _read_exactly(self, length: int) -> Iterator[bytes]:
        """``length`` bytes of the body, in pieces (no allocation of a claimed length)."""
        while length > 0:
            piece = self.rfile.read(min(length, READ_PIECE))
            if not piece:
                raise _ShortBody
            length -= len(piece)
            yield piece

    def _read_chunks(self) -> Iterator[bytes]:
        """A chunked body's data, chunk after chunk, up to its last (empty) chunk."""
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                raise _ShortBody
            if len(line) > MAX_LINE:
                raise ValueError("a chunk size line too long")
            size = int(line.split(b";")[0].strip(), 16)
            if size < 0:
                raise ValueError("a negative chunk size")
            if size == 0:
                self.rfile.readline(MAX_LINE)  # the end of the (ignored) trailer
                return
            yield from self._read_exactly(size)
            self.rfile.readline(MAX_LINE)

    def _send_error_response(self, error: LocalGatewayException) -> None:
        # The local gateway answers an unknown route itself, like API Gateway's "Missing
        # Authentication Token"; deployed, a gateway response maps it to the envelope.
        self._send_envelope(404, "not_found", f"no route {self.command} {self.path}")


def _kept(pieces: Iterator[bytes]) -> bytes:
    """A body read to its end, kept up to a bound (the app answers 413 past 64 KiB anyway):
    the rest is read and dropped, so the next request on the connection starts where it
    should."""
    kept: list[bytes] = []
    total = 0
    for piece in pieces:
        if total < MAX_KEPT_BODY:
            kept.append(piece)
        total += len(piece)
    return b"".join(kept)


_TARGET_SAFE = frozenset(range(0x21, 0x7F))


def _percent_encode_raw_bytes(target: str) -> str:
    """A request target read as Latin-1, with every byte outside printable ASCII (raw UTF-8)
    percent-encoded; escapes already there are left as they are."""
    return "".join(
        chr(byte) if byte in _TARGET_SAFE else f"%{byte:02X}" for byte in target.encode("latin-1")
    )


class _Server(ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog of 5 resets connections under a few dozen clients.
    request_queue_size = LISTEN_BACKLOG

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request is not a fault: no traceback for it."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


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


def _app_signing_secret(access_key: str) -> str | None:
    """The secret of ``access_key`` if the app's boto3 signs with it: the environment's pair,
    which LocalStack sets to LOCAL_CREDENTIALS unless others are given."""
    if access_key != os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    return os.environ.get("AWS_SECRET_ACCESS_KEY")


def _wall_now() -> datetime:
    return datetime.now(UTC)


class _Emulator:
    """moto's server, answering one request at a time.

    DynamoDB applies each request atomically; moto's backends do not lock, so two conditional
    writes racing in two server threads can both pass their condition (seen: one order booked
    by three refunds in 3 rounds out of 10 with 8 threads). Serialising the requests gives the
    local stack DynamoDB's guarantee, which E4 rests on. After a request that may have queued
    a message, it wakes the pollers (19 ms from send to handler, instead of an idle tick).
    A form upload (presigned POST) is first checked as S3 checks it, and refused with S3's
    own answer before moto can store it (upload_policy).
    """

    def __init__(
        self, host: str, port: int, wakeup: Wakeup, table_wakeup: Wakeup, faults: FaultPlan
    ) -> None:
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
            body = read_json_body(environ) if target else {}
            # moto enforces no presigned POST policy: S3's checks run first (upload_policy).
            refusal = screen_upload(environ, _app_signing_secret, _wall_now())
            if refusal is not None:
                return respond_refusal(refusal, start_response)
            with lock:
                answer = backend(environ, start_response)
            if _may_queue_a_message(environ):
                wakeup.ring(_queues_concerned(target, body))
            elif target in _TABLE_WRITES:
                table_wakeup.ring(_tables_written(target, body))
            return answer

        # In front of it all, the faults a test or REFUNDS_LOCAL_FAULTS asks for (faults.py).
        self.server = make_server(
            host,
            port,
            faults.wsgi(one_at_a_time),
            threaded=True,
            request_handler=MotoRequestHandler,
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
    faults: FaultPlan = field(default_factory=FaultPlan.from_environ)
    """What goes wrong, and how often (faults.py); tests configure it while the stack runs."""

    def start(self) -> None:
        """Start everything, or, if any part fails (a port in use), stop what had started."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        _forget_emulated_aws()
        self._moto = _Emulator(
            self.host, self.moto_port, self._wakeup, self._table_wakeup, self.faults
        )
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

        _check_local_queues(app)
        api = make_http_service(app, self.host, self.port)
        self.api_url = api.url
        business_now = ports.clock.now
        self.services[0:0] = [
            api,
            *event_source_services(app, sqs, self._wakeup, business_now, self.faults),
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
        self.faults.attach(ports, simulator.url)

    def stop(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        if self._moto:
            self._moto.stop()
            self._moto = None
            _forget_emulated_aws()


def _check_local_queues(app: Any) -> None:
    """The app names its SQS handlers' queues for its stage when it is imported: imported
    before the local stage was set, it would poll queues that do not exist."""
    from chalice.app import SQSEventConfig

    from chalicelib.adapters.sqs import queue_name
    from chalicelib.domain.workflow import Step
    from chalicelib.settings import LOCAL_STAGE

    local = {queue_name(step, LOCAL_STAGE) for step in Step}
    queues = {str(s.queue) for s in app.event_sources if isinstance(s, SQSEventConfig)}
    if not queues <= local:
        raise RuntimeError(
            f"the app was imported for another stage (its queues: {sorted(queues - local)});"
            " set REFUNDS_STAGE=local before importing it, or import it after the stack starts"
        )


def _forget_emulated_aws() -> None:
    """moto keeps what it emulates per process: a stack starts from an empty AWS, and leaves
    none of its tables, bus or queues to the next stack of the same process (tests)."""
    from moto.core.base_backend import BackendDict

    BackendDict.reset()


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
