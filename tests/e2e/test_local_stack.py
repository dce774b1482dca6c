"""The whole system over HTTP: `python -m infra.local` (what `make run` starts), driven by a
client that knows only API.md."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.e2e.conftest import free_port
from tests.support import order_payload

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"ready: API (\S+), AWS emulator (\S+)")
CONSOLE = re.compile(r"^CS console: (\S+) ")
TOKEN = re.compile(r"^\s+(.+?): (\S+)$")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
PDF = b"%PDF-1.7\n" + b"0" * 300


@dataclass
class Stack:
    api: str
    tokens: dict[str, str]
    process: subprocess.Popen[str]
    console: str

    def headers(self, who: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}", **extra}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    env = {**os.environ, "PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    env.pop("REFUNDS_AWS_ENDPOINT", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    api, console, tokens = "", "", {}
    lines: list[str] = []
    timer = threading.Timer(60, process.kill)
    timer.start()
    for line in process.stdout:
        lines.append(line)
        if match := READY.search(line):
            api = match.group(1)
        elif shown := CONSOLE.match(line):
            console = shown.group(1)
        elif api and (token := TOKEN.match(line)):
            tokens[token.group(1)] = token.group(2)
            if "order-service" in tokens:  # the last of the demo tokens
                break
    timer.cancel()
    assert api, "the stack never became ready:\n" + "".join(lines)
    assert len(tokens) == 5, "the ready line lacks the demo tokens:\n" + "".join(lines)
    threading.Thread(target=process.stdout.read, daemon=True).start()
    yield Stack(api, tokens, process, console)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_refund_from_order_to_submission_over_http(stack: Stack) -> None:
    """GIVEN the order system feeds an order WHEN the user quotes it, opens a refund, uploads
    two evidence files with real multipart POSTs to the presigned URLs and submits THEN the
    refund reads back submitted with both files counted (F1, F2, R1)."""
    api, user = stack.api, stack.headers("user u-1")
    order = order_payload(order_id="o-e2e-1", user_id="u-1")
    put = requests.put(
        f"{api}/internal/orders/o-e2e-1",
        json=order,
        headers=stack.headers("order-service"),
        timeout=10,
    )
    assert put.status_code == 200, put.text

    quote = requests.get(
        f"{api}/orders/o-e2e-1/refund-quote",
        params={"reason": "invalid_code"},
        headers=user,
        timeout=10,
    ).json()
    assert quote["refundable"] is True
    assert quote["amount"] == 8800
    assert quote["required_evidence"] == ["order_screenshot", "problem_screenshot"]

    description = "订单 o-e2e-1 的点卡到账后提示序列号无效，要求全额退款"
    created = requests.post(
        f"{api}/refunds",
        json={"order_id": "o-e2e-1", "reason": "invalid_code", "description": description},
        headers={**user, "Idempotency-Key": "e2e-create-1"},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    refund = created.json()
    assert refund["status"] == "draft"
    assert refund["description"] == description
    refund_id = refund["refund_id"]

    for kind, content_type, content in (
        ("order_screenshot", "image/png", PNG),
        ("problem_screenshot", "application/pdf", PDF),
    ):
        slot = requests.post(
            f"{api}/refunds/{refund_id}/evidence",
            json={"kind": kind, "content_type": content_type, "size": len(content)},
            headers=user,
            timeout=10,
        )
        assert slot.status_code == 201, slot.text
        upload = slot.json()["upload"]
        posted = requests.post(
            upload["url"],
            data=upload["fields"],
            files={"file": ("evidence", content, content_type)},
            timeout=10,
        )
        assert posted.status_code in (200, 201, 204), posted.text

    submitted = requests.post(f"{api}/refunds/{refund_id}/submit", headers=user, timeout=10)
    assert submitted.status_code == 200, submitted.text
    assert submitted.json()["status"] == "submitted"

    read = requests.get(f"{api}/refunds/{refund_id}", headers=user, timeout=10)
    assert read.status_code == 200
    body = read.json()
    assert body["status"] == "submitted"
    assert [e["uploaded"] for e in body["evidence"]] == [True, True]
    assert [h["action"] for h in body["history"]] == ["create", "submit"]
    assert read.headers["X-Request-Id"]


def test_an_upload_that_lies_about_its_type_does_not_count(stack: Stack) -> None:
    """GIVEN a slot declared as PNG WHEN a PDF is posted to it THEN the server-side check
    reads the real type from the first bytes and the evidence stays uploaded: false."""
    api, user = stack.api, stack.headers("user u-1")
    created = requests.post(
        f"{api}/refunds",
        json={
            "order_id": "o-1-card",
            "reason": "changed_mind",
            "description": "买错了面值，想退款重新购买",
        },
        headers={**user, "Idempotency-Key": "e2e-lying-upload"},
        timeout=10,
    ).json()
    slot = requests.post(
        f"{api}/refunds/{created['refund_id']}/evidence",
        json={"kind": "order_screenshot", "content_type": "image/png", "size": len(PDF)},
        headers=user,
        timeout=10,
    ).json()
    requests.post(
        slot["upload"]["url"],
        data=slot["upload"]["fields"],
        files={"file": ("evidence", PDF, "image/png")},
        timeout=10,
    )
    refund = requests.get(f"{api}/refunds/{created['refund_id']}", headers=user, timeout=10).json()
    assert refund["evidence"][0]["uploaded"] is False
    assert "application/pdf" in refund["evidence"][0]["problem"]


def test_the_ready_line_shows_where_the_console_is(stack: Stack) -> None:
    page = requests.get(stack.console, timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert stack.console == f"{stack.api}/console"


def test_unknown_routes_and_methods_answer_in_the_envelope(stack: Stack) -> None:
    """API.md conventions: 404 not_found and 405 method_not_allowed, with X-Request-Id."""
    missing = requests.get(
        f"{stack.api}/no/such/route", headers={"X-Request-Id": "abc-1"}, timeout=10
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.headers["X-Request-Id"] == "abc-1"
    wrong = requests.delete(f"{stack.api}/health", timeout=10)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert wrong.headers["X-Request-Id"]


def test_concurrent_requests_never_read_each_others_bodies(stack: Stack) -> None:
    """GIVEN two users with a refund each WHEN both post many messages at once THEN every
    message lands on its own user's refund (the local server keeps requests apart)."""
    api = stack.api
    refunds = {}
    for user in ("u-1", "u-2"):
        headers = stack.headers(f"user {user}", **{"Idempotency-Key": f"e2e-concurrent-{user}"})
        answer = requests.post(
            f"{api}/refunds",
            json={
                "order_id": f"o-{user[-1]}-boost",
                "reason": "service_not_delivered",
                "description": "代练三天没有任何进度，聊天记录为证，要求退款",
            },
            headers=headers,
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        refunds[user] = answer.json()["refund_id"]

    errors: list[str] = []
    posted = {user: 0 for user in refunds}
    lock = threading.Lock()

    def post(user: str, n: int) -> None:
        with requests.Session() as session:
            for i in range(n):
                answer = session.post(
                    f"{api}/refunds/{refunds[user]}/messages",
                    json={"body": f"{user} message {i}"},
                    headers=stack.headers(f"user {user}"),
                    timeout=10,
                )
                with lock:
                    if answer.status_code == 201:
                        posted[user] += 1
                    elif answer.status_code != 409:  # a concurrent change may win (API.md)
                        errors.append(f"{user}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=post, args=(user, 10)) for user in ("u-1", "u-2") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for user, refund_id in refunds.items():
        refund = requests.get(
            f"{api}/refunds/{refund_id}", headers=stack.headers(f"user {user}"), timeout=10
        ).json()
        assert len(refund["messages"]) == posted[user] > 0
        assert all(m["body"].startswith(user) for m in refund["messages"])
    assert errors == []


def test_sigterm_stops_the_stack_cleanly(stack: Stack) -> None:
    """`make run` stops cleanly on SIGTERM: the process exits 0 and frees its port."""
    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(timeout=20) == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{stack.api}/health", timeout=2)


def test_a_port_in_use_is_a_clear_error_not_a_hang() -> None:
    """GIVEN the API port is taken WHEN `make run` starts THEN it says so and exits 1,
    leaving nothing running (the emulator it had started is stopped)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "PORT": str(port)}
        env.pop("REFUNDS_AWS_ENDPOINT", None)
        finished = subprocess.run(
            [sys.executable, "-m", "infra.local"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert finished.returncode == 1
    assert "Address already in use" in finished.stdout
