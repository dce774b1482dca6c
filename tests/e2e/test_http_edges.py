"""The local API's HTTP edges, byte by byte: methods it has no handler for, HEAD, requests over
http.server's bounds, bodies cut short and raw UTF-8 in a path (API.md, Conventions). Every
answer is the envelope with an X-Request-Id, as API Gateway's own are once mapped.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import Who

pytestmark = pytest.mark.e2e

USER = Who("u-edges")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        assert self.headers["Content-Type"] == "application/json"
        return json.loads(self.body)

    @property
    def code(self) -> str:
        code: str = self.json()["error"]["code"]
        return code


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """The API port of a local stack started for this module."""
    with started_stack() as local:
        yield int(local.api_url.rsplit(":", 1)[1])


def exchange(port: int, request: bytes, method: str = "GET", half_close: bool = False) -> Answer:
    """Send ``request`` as raw bytes on a new connection and read one answer to ``method``."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        return Answer(response.status, response.headers, response.read())


def request_line(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    head = "".join(f"{line}\r\n" for line in ("Host: localhost", *headers))
    return f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def channel_latency(port: int) -> int:
    """The wechat simulator's latency setting, read by a PUT that changes nothing."""
    answer = exchange(
        port,
        request_line(
            "PUT",
            "/_local/channels/wechat",
            "Content-Type: application/json",
            "Content-Length: 2",
            body=b"{}",
        ),
    )
    assert answer.status == 200, answer.body
    latency: int = answer.json()["latency_ms"]
    return latency


# ---------------------------------------------------------------- methods (finding 1)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("TRACE", "/health", "GET"),
        ("QUERY", "/refunds", "GET, POST"),
        ("PROPFIND", "/refunds/rf_x/evidence/ev_1", "DELETE"),
    ],
)
def test_a_method_the_server_has_no_handler_for_is_405_in_the_envelope(
    port: int, method: str, path: str, allow: str
) -> None:
    # GIVEN a known path WHEN a method no route serves (nor API Gateway routes) is sent
    answer = exchange(port, request_line(method, path, "X-Request-Id: edge-405"))
    # THEN 405 method_not_allowed in the envelope, the caller's request id, the path's Allow
    assert answer.status == 405
    assert answer.code == "method_not_allowed"
    assert answer.headers["X-Request-Id"] == "edge-405"
    assert answer.headers["Allow"] == allow


def test_an_unknown_method_on_an_unknown_path_is_404(port: int) -> None:
    answer = exchange(port, request_line("TRACE", "/nowhere"))
    assert (answer.status, answer.code) == (404, "not_found")
    assert answer.headers["X-Request-Id"]


# ---------------------------------------------------------------- HEAD (finding 2)


@pytest.mark.parametrize(
    ("path", "status", "allow"),
    [("/health", 405, "GET"), ("/refunds", 405, "GET, POST"), ("/nowhere", 404, None)],
)
def test_head_is_answered_with_headers_only(
    port: int, path: str, status: int, allow: str | None
) -> None:
    # GIVEN one keep-alive connection
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        # WHEN HEAD is asked (no route serves it: API.md declares none)
        connection.request("HEAD", path, headers={"X-Request-Id": "edge-head"})
        head = connection.getresponse()
        assert head.read() == b""
        # THEN the status and the path's exact Allow, with no body and no Content-Length
        assert head.status == status
        assert head.getheader("Allow") == allow
        assert head.getheader("Content-Length") is None
        assert head.getheader("X-Request-Id") == "edge-head"
        # AND no stray body bytes: the next answer on the connection reads clean
        connection.request("GET", "/health")
        after = connection.getresponse()
        assert (after.status, json.loads(after.read())) == (200, {"status": "ok"})
    finally:
        connection.close()


# ---------------------------------------------------------------- http.server's bounds (finding 3)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (request_line("GET", "/health", "X-Big: " + "a" * 70_000), 431),
        (request_line("GET", "/health", *(f"X-H{n}: v" for n in range(101))), 431),
        (request_line("GET", "/health?q=" + "a" * 70_000), 414),
        (b"GET /health HTTP/9.9\r\n\r\n", 505),
        (b"GET\r\n\r\n", 400),
    ],
    ids=["header-line", "header-count", "uri", "version", "request-line"],
)
def test_requests_over_the_server_s_bounds_are_answered_in_the_envelope(
    port: int, request_bytes: bytes, status: int
) -> None:
    answer = exchange(port, request_bytes)
    # THEN the gateway-level status, in the envelope with a request id, and the connection closes
    assert answer.status == status
    assert answer.code == "invalid_request"
    assert answer.json()["error"]["message"]
    assert answer.headers["X-Request-Id"]
    assert answer.headers["Connection"] == "close"


# ---------------------------------------------------------------- bodies cut short (finding 4)


def test_a_body_cut_short_is_refused_and_never_dispatched(port: int) -> None:
    # GIVEN a PUT announcing 1000 bytes of a body that would set a latency
    partial = b'{"latency_ms": 7}'
    request = request_line(
        "PUT",
        "/_local/channels/wechat",
        "Content-Type: application/json",
        "Content-Length: 1000",
        body=partial,
    )
    # WHEN the client stops sending after 17 bytes
    answer = exchange(port, request, method="PUT", half_close=True)
    # THEN 400 invalid_request in the envelope, and the connection closes
    assert (answer.status, answer.code) == (400, "invalid_request")
    assert answer.headers["X-Request-Id"]
    assert answer.headers["Connection"] == "close"
    # AND the app never saw the part that arrived
    assert channel_latency(port) == 0


def test_a_chunked_body_cut_short_is_refused(port: int) -> None:
    request = request_line(
        "PUT",
        "/_local/channels/wechat",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=b'11\r\n{"latency_ms": 8}\r\n',  # no last chunk
    )
    answer = exchange(port, request, method="PUT", half_close=True)
    assert (answer.status, answer.code) == (400, "invalid_request")
    assert channel_latency(port) == 0


def test_a_whole_chunked_body_is_dispatched(port: int) -> None:
    request = request_line(
        "PUT",
        "/_local/channels/wechat",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
        body=b'9\r\n{"latency\r\n8;ext=1\r\n_ms": 0}\r\n0\r\n\r\n',
    )
    answer = exchange(port, request, method="PUT")
    assert answer.status == 200, answer.body
    assert answer.json()["latency_ms"] == 0


def test_a_body_over_the_limit_still_arrives_whole_enough_for_413(port: int) -> None:
    body = b'{"latency_ms": 0, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    request = request_line(
        "PUT",
        "/_local/channels/wechat",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        body=body,
    )
    answer = exchange(port, request, method="PUT")
    assert (answer.status, answer.code) == (413, "payload_too_large")


def test_a_client_that_hangs_up_leaves_no_traceback(
    port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a request whose body never arrives in full
    request = request_line(
        "PUT",
        "/_local/channels/wechat",
        "Content-Type: application/json",
        "Content-Length: 1000",
        body=b'{"latency_ms": 9}',
    )
    # WHEN the client resets the connection
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(request)
    time.sleep(0.1)  # the server is now waiting for the rest of the body
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    # THEN the server goes on, nothing was dispatched, and stderr shows no traceback
    assert channel_latency(port) == 0
    time.sleep(0.3)  # the handler thread's end
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- raw UTF-8 in a path (finding 5)


def test_raw_utf8_in_a_path_reads_as_its_percent_encoded_form(port: int) -> None:
    authorization = f"Authorization: {USER.headers['Authorization']}"
    refund_id = "rf_退款"
    raw = f"GET /refunds/{refund_id} HTTP/1.1\r\nHost: localhost\r\n{authorization}\r\n\r\n"
    encoded = request_line("GET", f"/refunds/{quote(refund_id)}", authorization)
    # WHEN the same id is sent as raw UTF-8 bytes and percent-encoded
    as_raw = exchange(port, raw.encode())
    as_encoded = exchange(port, encoded)
    # THEN the app reads the same id both ways
    assert (as_raw.status, as_raw.code) == (404, "not_found")
    assert as_raw.json()["error"]["message"] == f"refund {refund_id} not found"
    assert as_raw.json()["error"]["message"] == as_encoded.json()["error"]["message"]
