"""Fuzzing the running local stack against its own OpenAPI document (schemathesis).

The document is read from the stack's ``GET /openapi.json``. Every operation in it is called
with inputs generated from it, valid and invalid, by each caller API.md knows: a user,
another user, a ``cs-agent``, a ``cs-senior``, the order system, and no token at all, in
schemathesis's coverage phase (the boundary values, missing and wrongly typed fields, other
media types and unserved methods of each operation, deterministically) and its fuzzing phase
(random cases, under a fixed seed). Every answer must keep the document's promises: never a
server error, a documented status, the documented content type, body schema and headers
(the document requires ``X-Request-Id`` on every answer); invalid input refused before
anything is looked up; a token required where the document says so; 405 with ``Allow`` for a
method a path does not serve.

Orders and refunds in several states are seeded first, through the API, and their ids fill
path, query and body parameters most of the time, so that generated requests get past 404
to what lies behind it.

The run is driven through ``schemathesis.engine``, what the ``schemathesis`` command runs:
the pytest loader that takes a schema from a fixture reads ``Node._nodeid``, which pytest 9.2
no longer has, and the eager one needs the document at import, before the stack runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from schemathesis.engine import events, from_schema
from schemathesis.engine.recorder import ScenarioRecorder

from tests.e2e.conftest import started_stack
from tests.e2e.workflow_client import (
    AGENT_1,
    JPEG,
    ORDER_SYSTEM,
    PNG,
    SENIOR,
    USER_1,
    USER_2,
    Api,
    Who,
)

pytestmark = pytest.mark.e2e

SEED = 20261107
"""The fuzzing phase's seed: the same cases on every run."""
MAX_EXAMPLES = 6
"""Random cases per operation and caller, besides the coverage phase's systematic ones."""
MIN_CASES = 1000
SEEDED_SHARE = 0.8
"""How often a parameter that names a resource takes a seeded id rather than a generated one."""

ROLES: dict[str, Who | None] = {
    "user": USER_1,
    "other-user": USER_2,
    "cs-agent": AGENT_1,
    "cs-senior": SENIOR,
    "order-service": ORDER_SYSTEM,
    "no-token": None,
}
CHECKS: dict[str, dict[str, Any]] = {
    "not_a_server_error": {},
    "status_code_conformance": {},
    "content_type_conformance": {},
    "response_headers_conformance": {},
    "response_schema_conformance": {},
    # API.md's order: authentication, role, size, media type, then validation, before any
    # lookup, state or policy; 404 stays for an invalid path, which names no route.
    "negative_data_rejection": {"expected-statuses": [400, 401, 403, 404, 413, 415]},
    "missing_required_header": {},
    "ignored_auth": {},
    "unsupported_method": {},
}
SCHEDULES = ["escalate-overdue", "close-stale", "daily-stats", "reconcile"]
CHANNELS = ["alipay", "wechat", "balance"]
SIMULATED = ["alipay", "wechat"]
DESCRIPTION = "订单到账后点卡序列号提示无效，截图为证，要求全额退款"
SHOWN_FAILURES = 20
DOCUMENT_PATH = "/openapi.json"


@dataclass(frozen=True)
class Seeded:
    """The running stack, and the ids of what was seeded in it."""

    api: Api
    orders: list[str]
    refunds: list[str]
    evidence: list[str]


@dataclass
class Run:
    """What one caller's run did: cases and statuses by operation, and what went wrong."""

    cases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    failures: dict[tuple[str, str, str], str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def take(self, event: events.EngineEvent) -> None:
        if isinstance(event, events.ScenarioFinished):
            self.record(event.recorder)
        elif isinstance(event, events.NonFatalError):
            self.errors.append(f"{event.label}: {event.value!r}")
        elif isinstance(event, events.FatalError):
            self.errors.append(f"the run stopped: {event.exception!r}")

    def record(self, recorder: ScenarioRecorder) -> None:
        label = recorder.label
        self.cases[label] += len(recorder.cases)
        statuses = self.statuses.setdefault(label, Counter())
        for interaction in recorder.interactions.values():
            if interaction.response is not None:
                statuses[interaction.response.status_code] += 1
        for checks in recorder.checks.values():
            for check in checks:
                if check.failure_info is not None:
                    failure = check.failure_info.failure
                    self.failures.setdefault(
                        (label, check.name, failure.title),
                        f"{failure.message}\n{check.failure_info.code_sample}",
                    )

    def problems(self) -> str:
        """Every error, and the first failures of each operation and check; "" if none."""
        shown = [
            f"{label} [{check}] {title}\n{detail}"
            for (label, check, title), detail in list(self.failures.items())[:SHOWN_FAILURES]
        ]
        if len(self.failures) > SHOWN_FAILURES:
            shown.append(f"... {len(self.failures) - SHOWN_FAILURES} more")
        return "\n\n".join(self.errors + shown)


RUNS: dict[str, Run] = {}
"""Each caller's run, for the totals checked once all have run."""


def _refund(api: Api, order: dict[str, Any], reason: str, submit: bool) -> tuple[str, list[str]]:
    """Feed ``order``, open a refund of it, upload the evidence its quote asks for, and submit
    it if asked; the refund id and its evidence ids."""
    api.put_order(order)
    quote = api.quote(order["order_id"], reason=reason)
    assert quote.status_code == 200, quote.text
    refund_id: str = api.create_refund(order["order_id"], reason, DESCRIPTION)["refund_id"]
    files = [(PNG, "image/png"), (JPEG, "image/jpeg")]
    evidence = [
        api.upload(refund_id, kind, *files[i % 2])
        for i, kind in enumerate(quote.json()["required_evidence"])
    ]
    if submit:
        submitted = api.submit(refund_id)
        assert submitted.status_code == 200, submitted.text
    return refund_id, evidence


def _seed(api: Api) -> Seeded:
    """Orders of both users, and refunds in the states that open most routes: a draft with an
    unused upload slot, one claimed in review, one rejected (to appeal), one awaiting the
    goods' return, one paid by the fast track, and another user's draft."""
    user, other = api.as_user(USER_1), api.as_user(USER_2)
    orders = {
        "free": user.order("fz-free"),
        "draft": user.order("fz-draft"),
        "review": user.order("fz-review"),
        "rejected": user.order("fz-rejected"),
        "return": user.order("fz-return", kind="physical", status="shipped", category="audio"),
        "fast": user.order("fz-fast", platform_fault="duplicate_charge"),
        "other": other.order("fz-other"),
    }
    user.put_order(orders["free"])
    draft, evidence = _refund(user, orders["draft"], "invalid_code", submit=False)
    slot = user.slot(draft, "other", "application/pdf", 2048)
    assert slot.status_code == 201, slot.text
    review, reviewed = _refund(user, orders["review"], "invalid_code", submit=True)
    rejected, _ = _refund(user, orders["rejected"], "invalid_code", submit=True)
    returned, _ = _refund(user, orders["return"], "defective", submit=True)
    fast, _ = _refund(user, orders["fast"], "duplicate_charge", submit=True)
    others, _ = _refund(other, orders["other"], "changed_mind", submit=False)
    for refund_id in (review, rejected, returned):
        user.wait_status(refund_id, "pending_review")
        claimed = user.decide(refund_id, "claim", AGENT_1)
        assert claimed.status_code == 200, claimed.text
    rejection = user.decide(rejected, "reject", AGENT_1, {"rule": "E2", "message": "超过退款期限"})
    assert rejection.status_code == 200, rejection.text
    approval = user.decide(returned, "approve", AGENT_1)
    assert approval.status_code == 200, approval.text
    assert approval.json()["status"] == "awaiting_return"
    user.wait_status(fast, "paid")
    return Seeded(
        api=api,
        orders=[order["order_id"] for order in orders.values()],
        refunds=[draft, review, rejected, returned, fast, others],
        evidence=[*evidence, slot.json()["evidence_id"], *reviewed],
    )


@pytest.fixture(scope="module")
def stack() -> Iterator[Seeded]:
    with started_stack() as local:
        yield _seed(Api(local.api_url))


@pytest.fixture
def fresh_stage(stack: Seeded) -> Iterator[Seeded]:
    """The business clock and the channels' faults as they were before a caller fuzzed the
    local stage's routes: each caller starts from the same stage."""
    yield stack
    stack.api.ok("POST", "/_local/clock", body={"reset": True})
    for channel in SIMULATED:
        stack.api.configure_channel(channel, fail_rate=0, timeout_rate=0, latency_ms=0)


def _config(seeded: Seeded, who: Who | None) -> schemathesis.Config:
    share = {"probability": SEEDED_SHARE}
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "continue-on-failure": True,
            # No requests replayed from an earlier run, and nothing written to disk.
            "cache": {"enabled": False},
            "request-timeout": 30,
            # Generating slowly on a loaded runner is no fault of the API.
            "suppress-health-check": ["too_slow"],
            "headers": who.headers if who else {},
            "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {
                "enabled": False,
                **{name: {"enabled": True, **options} for name, options in CHECKS.items()},
            },
            "phases": {
                "stateful": {"enabled": False},  # the seeded ids stand in for links
                # Inputs taken from earlier answers (fresh ids, times) would differ per run.
                "coverage": {"extra-data-sources": {"responses": False}},
                "fuzzing": {
                    "extra-data-sources": {"responses": False},
                    "error-feedback": {"enabled": False},
                },
            },
            "dictionaries": {
                "orders": {"values": seeded.orders},
                "refunds": {"values": seeded.refunds},
                "evidence": {"values": seeded.evidence},
                "users": {"values": [USER_1.sub, USER_2.sub]},
                "channels": {"values": CHANNELS},
                "schedules": {"values": SCHEDULES},
            },
            "parameters": {
                "path.order_id": {"dictionary": "orders", **share},
                "path.refund_id": {"dictionary": "refunds", **share},
                "path.evidence_id": {"dictionary": "evidence", **share},
                "path.channel": {"dictionary": "channels", **share},
                "path.name": {"dictionary": "schedules", **share},
                "query.refund_id": {"dictionary": "refunds", **share},
                "body.order_id": {"dictionary": "orders", **share},
                "body.user_id": {"dictionary": "users", **share},
                "body.evidence_ids[*]": {"dictionary": "evidence", **share},
            },
        }
    )


def _operations(document: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }


@pytest.mark.parametrize("role", list(ROLES))
def test_every_answer_keeps_the_document(fresh_stage: Seeded, role: str) -> None:
    url = f"{fresh_stage.api.base}{DOCUMENT_PATH}"
    schema = schemathesis.openapi.from_url(url, config=_config(fresh_stage, ROLES[role]))
    run = RUNS[role] = Run()
    for event in from_schema(schema).execute():
        run.take(event)
    problems = run.problems()
    assert not problems, problems
    # The engine leaves out the operation that served the document: it is called once here.
    served = schema[DOCUMENT_PATH]["GET"].Case()
    response = served.call_and_validate()
    run.cases[served.operation.label] += 1
    run.statuses.setdefault(served.operation.label, Counter())[response.status_code] += 1
    # AND every operation of the document was called
    operations = _operations(response.json())
    assert operations == set(run.cases), sorted(operations ^ set(run.cases))


def _reached(label: str, statuses: Counter[int]) -> bool:
    """Whether some answer came from past the lookup of the resources a path names."""
    if label.startswith("POST /webhooks/"):
        # Generated notifications are never signed: 401 means a known channel was found.
        return 401 in statuses
    return any(status < 300 or status in (409, 422, 429) for status in statuses)


def test_the_fuzzing_reached_every_route() -> None:
    assert set(RUNS) == set(ROLES), f"only {sorted(RUNS)} were fuzzed"
    # THEN over a thousand cases ran
    total = sum(sum(run.cases.values()) for run in RUNS.values())
    assert total >= MIN_CASES, total
    # AND every operation that names a resource got past its 404 for some caller
    answered: dict[str, Counter[int]] = {}
    for run in RUNS.values():
        for label, statuses in run.statuses.items():
            answered.setdefault(label, Counter()).update(statuses)
    stuck = {
        label: dict(statuses)
        for label, statuses in sorted(answered.items())
        if "{" in label and not _reached(label, statuses)
    }
    assert not stuck, stuck
