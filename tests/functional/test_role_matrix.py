"""The role matrix (API.md, "Authentication and roles"): every route x every caller x whose
resource it is, with the status API.md's order of checks gives.

The cells are generated from ``ROUTES``, the table every route is declared in, so a new route
is in the matrix the moment it exists: its access decides its 401 and 403 cells, and, on a
user's route, its 404 for another user's resource (never 403 for that). ``SCENARIOS`` says
what each route acts on and what it answers once access is granted, so that those cells are
exact too; a route missing from it still gets every access cell, and its granted cells only
assert that access was granted.

Callers: no token, the user ``u-1``, another user ``u-2``, a ``cs-agent``, a ``cs-senior``
and the ``order-service``, each with a token of its own ``sub``. Whose: the caller's ``own``
resource (staff are users of the platform too) or ``other's`` (``u-1``'s, or ``u-2``'s for
``u-1``); the console's refund routes also meet an ``appealed`` refund, which only a senior
handles (X3). The webhook is signed by its channel instead, and the ``/_local`` routes are
open to anyone in the local stage and absent from every deployed one.

The world (AWS on moto, the app, a payment-channel simulator, shared orders and refunds in
every state a route acts on) is built once for the module. A cell that is denied runs against
the shared resources and proves it changed nothing; a cell that gets through a route that
changes state gets a resource of its own in the state the route acts on, so that its status
is the route's real answer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import count
from typing import Any

import pytest

from app import app
from chalicelib.adapters.channels.simulator import SimulatorControl, sign
from chalicelib.api.http import ROUTES, Access, RouteSpec
from chalicelib.api.routes import local_stage
from chalicelib.service import review
from chalicelib.settings import DEFAULT_LOCAL_CHANNEL_SECRET
from infra.local.channel_simulator import ChannelSimulator
from infra.local.event_consumer import create_event_route
from infra.local.stack import create_step_queues
from tests.conftest import Aws
from tests.functional.conftest import DESCRIPTION, ORDER_SERVICE, Answer, Api, Contract, Shop
from tests.support import bearer, order_payload

# ---------------------------------------------------------------- callers and whose


@dataclass(frozen=True)
class Caller:
    name: str
    sub: str | None
    groups: tuple[str, ...] = ()

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.sub, *self.groups) if self.sub else {}

    @property
    def staff(self) -> bool:
        return bool(set(self.groups) & Access.CS.value)


USER = "u-1"
OTHER_USER = "u-2"
SENIOR = Caller("cs-senior", "senior-1", ("cs-senior",))
CALLERS = (
    Caller("no token", None),
    Caller("user", USER),
    Caller("another user", OTHER_USER),
    Caller("cs-agent", "agent-1", ("cs-agent",)),
    SENIOR,
    Caller("order-service", ORDER_SERVICE, ("order-service",)),
)

OWN, OTHERS, APPEALED = "own", "other's", "appealed (X3)"


def owner_of(caller: Caller, whose: str) -> str:
    """Who owns the resource of a cell: the caller itself, or someone else."""
    if whose == OWN and caller.sub is not None:
        return caller.sub
    return OTHER_USER if caller.sub == USER else USER


# ---------------------------------------------------------------- what each route acts on


@dataclass(frozen=True)
class Resource:
    owner: str
    order_id: str
    refund_id: str = ""
    evidence_id: str = ""


Body = Callable[[Resource | None], Any]


@dataclass(frozen=True)
class Scenario:
    """What a route acts on, and what it answers once the caller is let through."""

    state: str | None
    """The state of the resource the route acts on (``World.build``): ``order`` (no refund
    yet), ``draft`` (one evidence slot, nothing uploaded), ``ready`` (F2's evidence uploaded),
    ``submitted``, ``pending_review``, ``claimed`` (by the cell's caller, a senior for anyone
    else), ``awaiting_return`` (a shipped good approved, PH1), ``rejected``, ``appealed``,
    ``appealed_claimed`` (by the cell's senior); None when it reads no one's resource."""
    granted: int | None
    """The status once access is granted; None: only that access was granted."""
    body: Body | None = None
    query: str = ""
    params: dict[str, str] = field(default_factory=dict)
    """Path parameters that are not a resource (a channel, a schedule's name)."""
    changes: bool = False
    """A granted call changes its resource: each such cell gets one of its own."""
    appealed: tuple[str, int, int] | None = None
    """The console on an appealed refund (X3): its state, the senior's status, the agent's."""


def _create(resource: Resource | None) -> dict[str, Any]:
    assert resource is not None
    return {"order_id": resource.order_id, "reason": "invalid_code", "description": DESCRIPTION}


SCENARIOS: dict[tuple[str, str], Scenario] = {
    # public
    ("GET", "/health"): Scenario(None, 200),
    ("GET", "/openapi.json"): Scenario(None, 200),
    ("GET", "/asyncapi.json"): Scenario(None, 200),
    ("GET", "/refund-policy"): Scenario(None, 200, query="kind=virtual"),
    # the local stage's own
    ("PUT", "/_local/channels/{channel}"): Scenario(
        None, 200, body=lambda _: {"latency_ms": 0}, params={"channel": "alipay"}
    ),
    ("GET", "/_local/channels/{channel}/statement"): Scenario(
        None, 200, params={"channel": "alipay"}
    ),
    ("POST", "/_local/schedules/{name}/run"): Scenario(None, 200, params={"name": "close-stale"}),
    ("POST", "/_local/clock"): Scenario(None, 200, body=lambda _: {"reset": True}),
    ("GET", "/_local/events"): Scenario(None, 200, query="refund_id=rf_01KBZ000000000000000000099"),
    # the mobile app's
    ("GET", "/orders/{order_id}/refund-quote"): Scenario("order", 200),
    ("POST", "/refunds"): Scenario("order", 201, body=_create, changes=True),
    ("GET", "/refunds"): Scenario(None, 200),
    ("GET", "/refunds/{refund_id}"): Scenario("draft", 200),
    ("POST", "/refunds/{refund_id}/evidence"): Scenario(
        "draft",
        201,
        body=lambda _: {"kind": "other", "content_type": "image/png", "size": 10},
        changes=True,
    ),
    ("DELETE", "/refunds/{refund_id}/evidence/{evidence_id}"): Scenario("draft", 204, changes=True),
    ("POST", "/refunds/{refund_id}/submit"): Scenario("ready", 200, changes=True),
    ("POST", "/refunds/{refund_id}/cancel"): Scenario("draft", 200, changes=True),
    ("POST", "/refunds/{refund_id}/messages"): Scenario(
        "draft", 201, body=lambda _: {"body": "请尽快处理"}, changes=True
    ),
    ("POST", "/refunds/{refund_id}/return-shipment"): Scenario(
        "awaiting_return",
        200,
        body=lambda _: {"carrier": "SF", "tracking_number": "SF1234567890"},
        changes=True,
    ),
    ("POST", "/refunds/{refund_id}/appeal"): Scenario(
        "rejected",
        200,
        body=lambda _: {"statement": "订单仍在退款期内，见订单页截图"},
        changes=True,
    ),
    ("POST", "/refunds/{refund_id}/nudge"): Scenario("submitted", 200, changes=True),
    # the order system's
    ("PUT", "/internal/orders/{order_id}"): Scenario(
        "order",
        200,
        body=lambda r: r and order_payload(order_id=r.order_id, user_id=r.owner, version=9),
        changes=True,
    ),
    # the console's
    ("GET", "/admin/refunds"): Scenario(None, 200, query="status=pending_review"),
    ("GET", "/admin/refunds/{refund_id}"): Scenario("draft", 200, appealed=("appealed", 200, 200)),
    ("POST", "/admin/refunds/{refund_id}/claim"): Scenario(
        "pending_review", 200, changes=True, appealed=("appealed", 200, 403)
    ),
    ("POST", "/admin/refunds/{refund_id}/approve"): Scenario(
        "claimed", 200, changes=True, appealed=("appealed_claimed", 200, 403)
    ),
    ("POST", "/admin/refunds/{refund_id}/reject"): Scenario(
        "claimed",
        200,
        body=lambda _: {"rule": "E2", "message": "已过退款期"},
        changes=True,
        appealed=("appealed_claimed", 200, 403),
    ),
    ("POST", "/admin/refunds/{refund_id}/request-info"): Scenario(
        "claimed",
        200,
        body=lambda _: {"message": "请上传序列号截图"},
        changes=True,
        appealed=("appealed_claimed", 200, 403),
    ),
    ("POST", "/admin/refunds/{refund_id}/return-received"): Scenario(
        "awaiting_return",
        200,
        body=lambda _: {"intact": True},
        changes=True,
        appealed=("appealed_claimed", 409, 403),
    ),
    # Granted, a retry is refused by the refund's state: it never failed a payout (409).
    ("POST", "/admin/refunds/{refund_id}/retry-payout"): Scenario(
        "claimed",
        409,
        body=lambda _: {"payout_channel": "balance"},
        changes=True,
        appealed=("appealed_claimed", 409, 403),
    ),
    ("PUT", "/admin/orders/{order_id}/status"): Scenario(
        "order", 200, body=lambda _: {"status": "delivered", "note": "卡密实际未发放"}, changes=True
    ),
    ("GET", "/admin/stats"): Scenario(None, 200, query="from=2026-11-01&to=2026-11-30"),
    # Granted, a day no run covered is 404 (API.md): the route has no one's resource to hide.
    ("GET", "/admin/reconciliation"): Scenario(None, 404, query="day=2001-01-01"),
    # the channels' (the signature's cells are below)
    ("POST", "/webhooks/payouts/{channel}"): Scenario(None, 200, params={"channel": "alipay"}),
}


def scenario_of(spec: RouteSpec) -> Scenario:
    """The route's scenario, or, for a route not in the table yet, its resource from its path."""
    known = SCENARIOS.get((spec.method, spec.path))
    if known is not None:
        return known
    if "{refund_id}" in spec.path:
        return Scenario("draft", None)
    return Scenario("order" if "{order_id}" in spec.path else None, None)


# ---------------------------------------------------------------- the cells


@dataclass(frozen=True)
class Cell:
    spec: RouteSpec
    scenario: Scenario
    caller: Caller
    whose: str
    expected: int | None
    """The status; None: any status that grants access (not 401, 403, or a 404 that hides)."""
    signature: str | None = None
    """Webhooks: "fresh" or "stale" signed notifications, or none (a token is no signature)."""
    stage: str = "local"

    @property
    def state(self) -> str | None:
        if self.whose == APPEALED and self.scenario.appealed is not None:
            return self.scenario.appealed[0]
        return self.scenario.state

    @property
    def denied(self) -> bool:
        return self.expected in (401, 403) or (self.expected == 404 and self.whose == OTHERS)


PUBLIC_PATHS = ("/health", "/openapi.json", "/asyncapi.json", "/refund-policy")
SENIOR_PATHS = ("/admin/reconciliation",)


def contract_access(path: str) -> Access | None:
    """Who may call ``path``, by API.md's table of roles (not by the route's own declaration,
    which the matrix checks); None for a path the table does not place."""
    if path.startswith(("/orders/", "/refunds")):
        return Access.USER
    if path.startswith("/admin/"):
        return Access.SENIOR if path in SENIOR_PATHS else Access.CS
    if path.startswith("/internal/"):
        return Access.ORDER_SERVICE
    if path.startswith("/webhooks/"):
        return Access.CHANNEL
    if path in PUBLIC_PATHS or path.startswith("/_local/"):
        return Access.PUBLIC
    return None


def expected_status(access: Access, scenario: Scenario, caller: Caller, whose: str) -> int | None:
    """API.md's order: authentication (401), role (403), then existence and ownership (404,
    never 403 for another user's resource), then role checks on the resource (403, X3)."""
    if access is Access.PUBLIC:
        return scenario.granted
    if caller.sub is None:
        return 401
    if access is not Access.USER and not set(caller.groups) & access.value:
        return 403
    if access is Access.USER and whose == OTHERS and scenario.state is not None:
        return 404
    if whose == APPEALED and scenario.appealed is not None:
        _, senior, agent = scenario.appealed
        return senior if SENIOR.groups[0] in caller.groups else agent
    return scenario.granted


def _wholes(scenario: Scenario, caller: Caller) -> tuple[str, ...]:
    if scenario.state is None:
        return ("-",)
    wholes = (OTHERS,) if caller.sub is None else (OWN, OTHERS)
    return (*wholes, APPEALED) if scenario.appealed is not None else wholes


def _cells() -> Iterator[Cell]:
    for spec in ROUTES:
        scenario = scenario_of(spec)
        access = contract_access(spec.path) or spec.access
        if access is Access.CHANNEL:
            # A token is no signature: every caller without one is 401; the channel's own
            # signature is the only way in, and a stale one is a replay (401).
            for caller in CALLERS:
                yield Cell(spec, scenario, caller, "-", 401)
            yield Cell(spec, scenario, CALLERS[0], "-", scenario.granted, signature="fresh")
            yield Cell(spec, scenario, CALLERS[0], "-", 401, signature="stale")
            continue
        for caller in CALLERS:
            for whose in _wholes(scenario, caller):
                expected = expected_status(access, scenario, caller, whose)
                yield Cell(spec, scenario, caller, whose, expected)
        if spec.path.startswith("/_local/"):
            # Never present in deployed stages (API.md): answered as an unknown route.
            yield Cell(spec, scenario, CALLERS[0], "-", 404, stage="deployed")


def _cell_id(cell: Cell) -> str:
    who = f"signed {cell.signature}" if cell.signature else cell.caller.name
    where = f" | {cell.stage} stage" if cell.stage != "local" else ""
    return f"{cell.spec.method} {cell.spec.path} | {who} | {cell.whose}{where}"


CELLS = list(_cells())


# ---------------------------------------------------------------- the world, built once

STATUS_OF = {
    "ready": "draft",
    "claimed": "pending_review",
    "appealed_claimed": "appealed",
}
"""The refund's status in a state of ``Scenario.state`` that is not a status itself."""


@dataclass
class World:
    api: Api
    aws: Aws
    _shared: dict[tuple[str, str], Resource] = field(default_factory=dict)
    _shops: dict[str, Shop] = field(default_factory=dict)
    _numbers: Iterator[int] = field(default_factory=lambda: count(1))

    def shop(self, owner: str) -> Shop:
        """One per owner: its Idempotency-Keys never repeat."""
        if owner not in self._shops:
            service = bearer(ORDER_SERVICE, "order-service")
            self._shops[owner] = Shop(self.api, self.aws, bearer(owner), service)
        return self._shops[owner]

    def shared(self, state: str, owner: str) -> Resource:
        """One resource per state and owner, for every cell that must not change it."""
        if (state, owner) not in self._shared:
            self._shared[(state, owner)] = self.build(state, owner, SENIOR)
        return self._shared[(state, owner)]

    def build(self, state: str, owner: str, claimer: Caller) -> Resource:
        """A resource of ``owner`` in ``state``, walked there through the routes (and the
        automatic check's step); ``claimer`` claims and decides where the state needs it."""
        order_id = f"o-matrix-{next(self._numbers)}"
        physical = state == "awaiting_return"
        shop = self.shop(owner)
        shipped = {"kind": "physical", "status": "shipped"} if physical else {}
        shop.order(order_id=order_id, user_id=owner, **shipped)
        if state == "order":
            return Resource(owner, order_id)
        refund_id = shop.refund(order_id, "changed_mind" if physical else "invalid_code")[
            "refund_id"
        ]
        if state == "draft":
            slot = shop.slot(refund_id, "other")
            return Resource(owner, order_id, refund_id, slot["evidence_id"])
        kinds = ("order_screenshot",) if physical else ("order_screenshot", "problem_screenshot")
        shop.evidence(refund_id, *kinds)
        steps = [
            ("ready", lambda: None),
            ("submitted", lambda: self._ok(shop.submit(refund_id))),
            ("pending_review", lambda: review.handle_auto_review(self.aws.ports, refund_id, 1)),
            ("claimed", lambda: self._decide(refund_id, "claim", claimer)),
        ]
        if physical:
            steps.append(("awaiting_return", lambda: self._decide(refund_id, "approve", claimer)))
        else:
            reject = {"rule": "E2", "message": "已过退款期"}
            steps += [
                ("rejected", lambda: self._decide(refund_id, "reject", claimer, reject)),
                ("appealed", lambda: self._appeal(shop, refund_id)),
                ("appealed_claimed", lambda: self._decide(refund_id, "claim", claimer)),
            ]
        for reached, step in steps:
            step()
            if reached == state:
                stored = self.aws.ports.refunds.get(refund_id)
                assert stored is not None
                assert stored.status.value == STATUS_OF.get(state, state)
                return Resource(owner, order_id, refund_id)
        raise AssertionError(f"no way to a refund in {state}")

    def _ok(self, answer: Answer) -> None:
        assert answer.status in (200, 201), answer.json

    def _decide(self, refund_id: str, action: str, who: Caller, body: Any = None) -> None:
        self._ok(self.api.post(f"/admin/refunds/{refund_id}/{action}", body, who.headers))

    def _appeal(self, shop: Shop, refund_id: str) -> None:
        statement = {"statement": "订单仍在退款期内，见订单页截图"}
        self._ok(self.api.post(f"/refunds/{refund_id}/appeal", statement, shop.user_headers))

    def stored(self, resource: Resource) -> tuple[Any, Any]:
        ports = self.aws.ports
        refund = ports.refunds.get(resource.refund_id) if resource.refund_id else None
        return ports.orders.get(resource.order_id), refund


@pytest.fixture(scope="module")
def world(contract: Contract) -> Iterator[World]:
    """The ``aws`` and ``client`` fixtures' set-up, once for the module, with what the local
    stack adds: the step queues, the event bus's log, and a payment-channel simulator behind
    ``/_local/channels``."""
    import boto3
    from chalice.test import Client
    from moto import mock_aws

    from chalicelib import bootstrap
    from chalicelib.adapters.dynamodb import create_tables
    from chalicelib.settings import Settings

    simulator = ChannelSimulator(
        DEFAULT_LOCAL_CHANNEL_SECRET, lambda: "http://127.0.0.1:9", lambda: datetime.now(UTC)
    )
    simulator.start()
    with mock_aws(), pytest.MonkeyPatch.context() as patch:
        settings = Settings.from_environ()
        ports = bootstrap.build_ports(settings)
        # The abuse signal (many refunds by one user in 30 days) would send u-1's refunds to
        # seniors only; the matrix opens far more than a user does.
        ports = replace(ports, config=replace(ports.config, abuse_threshold=1_000_000))
        create_tables()
        s3 = boto3.client("s3", region_name=settings.region)
        s3.create_bucket(Bucket=settings.evidence_bucket)
        s3.put_bucket_versioning(
            Bucket=settings.evidence_bucket, VersioningConfiguration={"Status": "Enabled"}
        )
        sqs = boto3.client("sqs", region_name=settings.region)
        create_step_queues(sqs)
        create_event_route(
            boto3.client("events", region_name=settings.region),
            sqs,
            boto3.client("dynamodb", region_name=settings.region),
            settings.event_bus,
            settings.event_log_table or "",
        )
        bootstrap.install(ports, bootstrap.build_verifier(settings))
        patch.setattr(local_stage, "get_simulator_control", lambda: SimulatorControl(simulator.url))
        try:
            with Client(app, stage_name="local") as client:
                yield World(Api(client, contract), Aws(settings, ports, s3))
        finally:
            bootstrap.install(None, None)
            simulator.stop()


# ---------------------------------------------------------------- the matrix


def _request(world: World, cell: Cell) -> tuple[Resource | None, str, Any, dict[str, str]]:
    """The resource of the cell, and the path, body and headers of its request."""
    scenario, caller = cell.scenario, cell.caller
    resource = None
    if cell.state is not None:
        owner = owner_of(caller, OTHERS if cell.whose == APPEALED else cell.whose)
        claimer = caller if caller.staff else SENIOR
        resource = (
            world.build(cell.state, owner, claimer)
            if scenario.changes and not cell.denied
            else world.shared(cell.state, owner)
        )
    params = {
        "order_id": resource.order_id if resource else "o-none",
        "refund_id": resource.refund_id if resource else "rf-none",
        "evidence_id": resource.evidence_id if resource else "ev-none",
        "channel": "alipay",
        "name": "none",
        **scenario.params,
    }
    path = cell.spec.path.format(**params)
    if scenario.query:
        path += "?" + scenario.query
    body = scenario.body(resource) if scenario.body else None
    headers = {**caller.headers}
    if cell.spec.headers:
        headers.update({name: f"matrix-{uuid.uuid4()}" for name in cell.spec.headers})
    return resource, path, body, headers


def _signed(headers: dict[str, str], signature: str) -> tuple[bytes, dict[str, str]]:
    """A notification of a refund the platform does not know, signed by the channel."""
    body = (
        b'{"refund_id": "rf_01KBZ000000000000000000099", "channel_refund_no": "ch-1",'
        b' "status": "SUCCESS", "amount": 8800}'
    )
    at = str(int(time.time()) - (600 if signature == "stale" else 0))
    signed = {
        "X-Channel-Timestamp": at,
        "X-Channel-Signature": sign(DEFAULT_LOCAL_CHANNEL_SECRET, at, body),
    }
    return body, {**headers, **signed}


@pytest.mark.parametrize("cell", CELLS, ids=_cell_id)
def test_role_matrix(world: World, cell: Cell, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the caller, and the resource of the cell in the state its route acts on
    resource, path, body, headers = _request(world, cell)
    if cell.signature:
        body, headers = _signed(headers, cell.signature)
    if cell.stage == "deployed":
        deployed = replace(local_stage.get_settings(), stage="prod")
        monkeypatch.setattr(local_stage, "get_settings", lambda: deployed)
    before = world.stored(resource) if resource and cell.denied else None
    # WHEN the caller calls the route
    answer = world.api.call(cell.spec.method, path, body, headers)
    # THEN the status is the one API.md's order of checks gives
    if cell.expected is None:
        user_route = contract_access(cell.spec.path) is Access.USER
        hiding = (404,) if cell.state is not None and user_route else ()
        assert answer.status not in (401, 403, *hiding), answer.json
        assert answer.status < 500, answer.json
    else:
        assert answer.status == cell.expected, answer.json
    codes = {401: "unauthenticated", 403: "forbidden", 404: "not_found"}
    if answer.status in codes:
        assert answer.code == codes[answer.status]
    # AND a denied call changed nothing
    if before is not None and resource is not None:
        assert world.stored(resource) == before


def test_every_route_is_declared_with_the_access_api_mds_table_gives_it() -> None:
    # GIVEN every route, and API.md's table of who may call what
    # THEN each route is placed by the table, and declared with the access it gives
    declared = {f"{spec.method} {spec.path}": spec.access for spec in ROUTES}
    placed = {f"{spec.method} {spec.path}": contract_access(spec.path) for spec in ROUTES}
    assert declared == placed


def test_the_matrix_covers_every_route_and_its_scenarios_name_real_routes() -> None:
    # GIVEN the route table and the scenarios
    routes = {(spec.method, spec.path) for spec in ROUTES}
    # THEN every route has cells for every caller, and no scenario outlived its route
    assert {(c.spec.method, c.spec.path) for c in CELLS} == routes
    assert set(SCENARIOS) <= routes
    for spec in ROUTES:
        callers = {c.caller.name for c in CELLS if c.spec is spec}
        assert callers == {caller.name for caller in CALLERS}


def test_a_user_route_never_answers_403_for_another_users_resource() -> None:
    # GIVEN every cell of a user's route on another user's resource
    cells = [c for c in CELLS if contract_access(c.spec.path) is Access.USER and c.whose == OTHERS]
    # THEN each expects 401 without a token, else 404 (API.md: never 403 for that)
    assert cells
    for cell in cells:
        assert cell.expected == (401 if cell.caller.sub is None else 404), _cell_id(cell)


def test_the_consoles_decisions_on_an_appealed_refund_are_seniors_only_X3() -> None:
    # GIVEN the console's decisions on an appealed refund
    cells = [
        c
        for c in CELLS
        if c.whose == APPEALED and c.spec.method == "POST" and c.caller.name == "cs-agent"
    ]
    # THEN a cs-agent gets 403 on every one of them
    assert cells
    assert {cell.expected for cell in cells} == {403}
