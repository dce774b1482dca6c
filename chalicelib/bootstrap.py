"""Wires the ports once per process, lazily: nothing connects to AWS at import time."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from chalicelib.service.exceptions import NotFound
from chalicelib.settings import Settings, get_settings

if TYPE_CHECKING:
    from chalicelib.adapters.auth import TokenVerifier
    from chalicelib.adapters.channels.simulator import SimulatorControl
    from chalicelib.adapters.event_log import LocalEventLog
    from chalicelib.domain.model import PaymentChannel
    from chalicelib.service.ports import (
        Clock,
        PaymentGateway,
        PayoutRequest,
        PayoutResult,
        Ports,
        RefundRepository,
        StatementEntry,
    )

__all__ = [
    "build_ports",
    "build_verifier",
    "get_event_log",
    "get_ports",
    "get_simulator_control",
    "get_verifier",
    "install",
]

_lock = threading.Lock()
_ports: Ports | None = None
_verifier: TokenVerifier | None = None


def _client_config(settings: Settings, **options: Any) -> Any:
    """botocore's Config of every client the app builds. In a deployed stage each call is
    bounded by the settings' timeouts and standard retries, so that it ends within the
    function's timeout; the local stack's emulator answers one request at a time, so a request
    may wait there behind others, and its clients keep botocore's defaults."""
    from botocore.config import Config

    if settings.is_local:
        return Config(**options)
    return Config(
        connect_timeout=settings.aws_connect_timeout_seconds,
        read_timeout=settings.aws_read_timeout_seconds,
        retries={"mode": "standard", "total_max_attempts": settings.aws_max_attempts},
        **options,
    )


@functools.cache
def _s3_client(settings: Settings) -> Any:
    """One S3 client per process and settings (a client costs a botocore session to build)."""
    import boto3

    if settings.aws_endpoint_url:
        # The local stack's emulator, at its own address (DESIGN.md, field notes).
        s3_options = {"addressing_style": "path"}
    else:
        # The bucket's regional virtual-hosted endpoint, in us-east-1 too: the legacy global
        # endpoint answers for a bucket of another region, or a new one, with a redirect that
        # a browser's presigned POST does not follow.
        s3_options = {"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"}
    return boto3.client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.aws_endpoint_url,
        config=_client_config(settings, signature_version="s3v4", s3=s3_options),
    )


@functools.cache
def _client(service: str, settings: Settings) -> Any:
    import boto3

    return boto3.client(
        service,
        region_name=settings.region,
        endpoint_url=settings.aws_endpoint_url,
        config=_client_config(settings),
    )


def _dynamodb_client(settings: Settings) -> Any:
    """A plain DynamoDB client, for the analytics' counters (attributes named at run time)."""
    return _client("dynamodb", settings)


def _events_client(settings: Settings) -> Any:
    return _client("events", settings)


def _sqs_client(settings: Settings) -> Any:
    return _client("sqs", settings)


def build_ports(settings: Settings, clock: Clock | None = None) -> Ports:
    """The AWS-backed ports of a stage; ``clock`` replaces the system clock (local stage)."""
    from chalicelib.adapters.clock import SettableClock, SystemClock
    from chalicelib.adapters.dynamodb import (
        DynamoBalanceLedger,
        DynamoIdempotencyStore,
        DynamoMessageLog,
        DynamoOrderRepository,
        DynamoRefundRepository,
        bind_models,
    )
    from chalicelib.adapters.eventbridge import EventBridgeBus
    from chalicelib.adapters.holidays import china_working_day
    from chalicelib.adapters.ids import UlidGenerator
    from chalicelib.adapters.reconciliation_store import DynamoReconciliationStore
    from chalicelib.adapters.s3_evidence import S3EvidenceStore
    from chalicelib.adapters.sqs import SqsStepQueue
    from chalicelib.adapters.stats_store import DynamoStatsStore
    from chalicelib.domain.calendar import WorkingCalendar
    from chalicelib.domain.model import PaymentChannel
    from chalicelib.service.ports import Ports, ServiceConfig

    bind_models(settings)
    clock = clock or (SettableClock() if settings.is_local else SystemClock())
    calendar = WorkingCalendar(
        china_working_day, holidays=settings.holidays, working_days=settings.working_days
    )
    refunds = DynamoRefundRepository(settings.shards, calendar)
    return Ports(
        orders=DynamoOrderRepository(),
        refunds=refunds,
        messages=DynamoMessageLog(),
        evidence=S3EvidenceStore(
            settings.evidence_bucket, lambda: _s3_client(settings), clock.wall_now
        ),
        idempotency=DynamoIdempotencyStore(),
        clock=clock,
        ids=UlidGenerator(),
        steps=SqsStepQueue(lambda: _sqs_client(settings), settings.stage),
        gateways={
            PaymentChannel.BALANCE: DynamoBalanceLedger(settings.shards, clock),
            **build_channel_gateways(settings, clock, refunds),
        },
        reconciliations=DynamoReconciliationStore(
            settings.stats_table, lambda: _dynamodb_client(settings)
        ),
        stats=DynamoStatsStore(settings.stats_table, lambda: _dynamodb_client(settings)),
        events=EventBridgeBus(settings.event_bus, lambda: _events_client(settings)),
        config=ServiceConfig(
            idempotency_lease_seconds=settings.idempotency_lease_seconds,
            idempotency_keep_hours=settings.idempotency_keep_hours,
            upload_expires_seconds=settings.upload_expires_seconds,
            step_interval_scale=settings.step_interval_scale,
            abuse_threshold=settings.abuse_threshold,
            shards=settings.shards,
            sku_shards=settings.sku_shards,
        ),
        calendar=calendar,
    )


def build_channel_gateways(
    settings: Settings, clock: Clock, refunds: RefundRepository
) -> dict[PaymentChannel, PaymentGateway]:
    """Alipay and WeChat Pay: the local stage's simulator, or the channels themselves."""
    from chalicelib.domain.model import PaymentChannel

    if settings.is_local:
        from chalicelib.adapters.channels.simulator import SimulatorGateway

        if not (settings.channel_simulator_url and settings.channel_secret):
            raise RuntimeError("REFUNDS_CHANNEL_SIMULATOR_URL is not set (the local stack sets it)")
        return {
            channel: SimulatorGateway(
                channel.value,
                settings.channel_simulator_url,
                settings.channel_secret,
                wall_clock=clock.wall_now,
            )
            for channel in (PaymentChannel.ALIPAY, PaymentChannel.WECHAT)
        }
    from chalicelib.adapters.channels.alipay import AlipayGateway, AlipayTrade
    from chalicelib.adapters.channels.wechat import WeChatPayGateway

    def alipay_trade(refund_id: str) -> AlipayTrade:
        refund = refunds.get(refund_id)
        if refund is None:
            raise NotFound("refund", refund_id)
        return AlipayTrade(refund.order.order_id, refund.order.channel_trade_no)

    def alipay() -> PaymentGateway:
        keys = _channel_credentials(settings)["alipay"]
        return AlipayGateway(
            app_id=keys["app_id"],
            app_private_key=keys["app_private_key"],
            alipay_public_key=keys["alipay_public_key"],
            trade_reference=alipay_trade,
            wall_clock=clock.wall_now,
        )

    def wechat() -> PaymentGateway:
        keys = _channel_credentials(settings)["wechat"]
        return WeChatPayGateway(
            mchid=keys["mchid"],
            merchant_serial_no=keys["merchant_serial_no"],
            merchant_private_key=keys["merchant_private_key"],
            platform_serial_no=keys["platform_serial_no"],
            platform_public_key=keys["platform_public_key"],
            apiv3_key=keys["apiv3_key"],
            wall_clock=clock.wall_now,
        )

    return {PaymentChannel.ALIPAY: OnFirstUse(alipay), PaymentChannel.WECHAT: OnFirstUse(wechat)}


class OnFirstUse:
    """A payment gateway built when first used: most functions (the API's reads, the
    check) never pay anyone, and should not fetch the channels' keys at their cold start."""

    def __init__(self, build: Callable[[], PaymentGateway]) -> None:
        self._build = build
        self._gateway: PaymentGateway | None = None
        self._lock = threading.Lock()

    def _get(self) -> PaymentGateway:
        if self._gateway is None:
            with self._lock:
                if self._gateway is None:
                    self._gateway = self._build()
        return self._gateway

    def pay(self, request: PayoutRequest) -> PayoutResult:
        return self._get().pay(request)

    def query(self, refund_id: str) -> PayoutResult | None:
        return self._get().query(refund_id)

    def read_notification(
        self, headers: Mapping[str, str], body: bytes, now: datetime
    ) -> PayoutResult | None:
        return self._get().read_notification(headers, body, now)

    def statement(self, day: date) -> list[StatementEntry]:
        return self._get().statement(day)


@functools.cache
def _channel_credentials(settings: Settings) -> dict[str, dict[str, str]]:
    """The channels' keys, from the stage's Secrets Manager secret, read once per process."""
    import json

    from chalicelib.settings import CHANNEL_CREDENTIALS

    if not settings.channel_credentials_secret:
        raise RuntimeError("REFUNDS_CHANNEL_CREDENTIALS_SECRET is not set")
    secrets = _client("secretsmanager", settings)
    secret = secrets.get_secret_value(SecretId=settings.channel_credentials_secret)
    stored = json.loads(secret["SecretString"])
    missing = [
        f"{channel}.{key}"
        for channel, keys in CHANNEL_CREDENTIALS.items()
        for key in keys
        if not stored.get(channel, {}).get(key)
    ]
    if missing:
        raise RuntimeError("the channel credentials secret lacks " + ", ".join(missing))
    return {
        channel: {key: stored[channel][key] for key in keys}
        for channel, keys in CHANNEL_CREDENTIALS.items()
    }


def build_verifier(settings: Settings) -> TokenVerifier:
    """HS256 with a shared secret in the local stage; Cognito's RS256 JWKS elsewhere."""
    from chalicelib.adapters.auth import HS256Verifier, JWKSVerifier

    if settings.is_local:
        if not settings.jwt_secret:
            raise RuntimeError("REFUNDS_JWT_SECRET is empty")
        return HS256Verifier(settings.jwt_secret)
    if not (settings.jwks_url and settings.jwt_issuer and settings.jwt_audience):
        raise RuntimeError(
            "REFUNDS_JWKS_URL, REFUNDS_JWT_ISSUER and REFUNDS_JWT_AUDIENCE are required"
        )
    return JWKSVerifier(settings.jwks_url, settings.jwt_issuer, settings.jwt_audience)


def get_ports() -> Ports:
    global _ports
    if _ports is None:
        with _lock:
            if _ports is None:
                _ports = build_ports(get_settings())
    return _ports


def get_verifier() -> TokenVerifier:
    global _verifier
    if _verifier is None:
        with _lock:
            if _verifier is None:
                _verifier = build_verifier(get_settings())
    return _verifier


def install(ports: Ports | None = None, verifier: TokenVerifier | None = None) -> None:
    """Replace the wiring (tests, the local stack); None means: build again on next use. The
    local stage's holds on its simulator and its event record go with it: a new wiring may
    come with another local stack."""
    global _ports, _verifier
    with _lock:
        _ports = ports
        _verifier = verifier
    get_simulator_control.cache_clear()
    get_event_log.cache_clear()


@functools.cache
def get_simulator_control() -> SimulatorControl:
    """The local stage's hold on its payment-channel simulator (``/_local/channels``)."""
    from chalicelib.adapters.channels.simulator import SimulatorControl

    settings = get_settings()
    if not settings.channel_simulator_url:
        raise RuntimeError("REFUNDS_CHANNEL_SIMULATOR_URL is not set (the local stack sets it)")
    return SimulatorControl(settings.channel_simulator_url)


@functools.cache
def get_event_log() -> LocalEventLog:
    """The local stage's record of the events its bus delivered (``/_local/events``)."""
    from chalicelib.adapters.event_log import LocalEventLog

    settings = get_settings()
    if not settings.event_log_table:
        raise RuntimeError("the event log exists in the local stage only")
    return LocalEventLog(settings.event_log_table, lambda: _dynamodb_client(settings))
