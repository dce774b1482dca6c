"""Stage settings, read once from the environment (set per stage in .chalice/config.json)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

__all__ = ["LOCAL_STAGE", "STAGE_PARAMETER", "Settings", "get_settings", "process_stage"]

LOCAL_STAGE = "local"
STAGE_PARAMETER = "${Stage}"
"""The stage as infra/template.yaml names it: one package serves every stage, and each stack
says which one it is (its `Stage` parameter), so the names packaged carry the parameter."""
DEFAULT_LOCAL_JWT_SECRET = "local-dev-secret-0123456789abcdef"  # noqa: S105 - the local stage's documented default
DEFAULT_LOCAL_CHANNEL_SECRET = "local-channel-secret-0123456789abcdef"  # noqa: S105 - API.md's default
LOCAL_STEP_INTERVAL_SCALE = "0.02"
"""The local stage's retries: a payout to a channel that always fails is payout_failed in
seconds, not minutes (API.md, local stage)."""


CHANNEL_CREDENTIALS = {
    "alipay": ("app_id", "app_private_key", "alipay_public_key"),
    "wechat": (
        "mchid",
        "merchant_serial_no",
        "merchant_private_key",
        "platform_serial_no",
        "platform_public_key",
        "apiv3_key",
    ),
}
"""The deployed stages' channel credentials: the JSON secret named by
REFUNDS_CHANNEL_CREDENTIALS_SECRET holds ``{"alipay": {...}, "wechat": {...}}`` with these
keys. Read from Secrets Manager on first use, never from the repository or the function's
environment (anyone who may read a function's configuration reads its environment)."""


@dataclass(frozen=True)
class Settings:
    stage: str
    region: str
    aws_endpoint_url: str | None
    orders_table: str
    refunds_table: str
    messages_table: str
    idempotency_table: str
    evidence_bucket: str
    ledger_table: str
    stats_table: str
    event_bus: str
    jwt_secret: str | None
    jwks_url: str | None
    jwt_issuer: str | None
    jwt_audience: str | None
    idempotency_lease_seconds: int = 30
    """How long a create holds its key. It must outlive the function's timeout: a booking
    older than the lease with no refund item is taken for a create that died, and is
    released; ``from_environ`` refuses settings where it does not."""
    function_timeout_seconds: int = 25
    """The function's timeout, as ``lambda_timeout`` in .chalice/config.json sets it."""
    idempotency_keep_hours: int = 25
    upload_expires_seconds: int = 900
    shards: int = 4
    """How many shards spread the hot index keys (the CS queue by status, the step sweep,
    the ledger by day): docs/access-patterns.md says what rate each holds."""
    step_interval_scale: float = 1.0
    channel_secret: str | None = None
    """The local payment-channel simulator's HMAC secret (API.md)."""
    channel_simulator_url: str | None = None
    """Where the local stage's Alipay and WeChat Pay are simulated."""
    sku_shards: int = 8
    """Shards of the analytics' per-SKU day counters."""
    abuse_threshold: int = 10
    """Submitted refunds by one user in 30 days from which the check routes to a senior."""
    holidays: frozenset[date] = frozenset()
    """Configured days off (REFUNDS_EXTRA_HOLIDAYS, ISO dates, comma-separated)."""
    working_days: frozenset[date] = frozenset()
    """Configured working days (REFUNDS_EXTRA_WORKING_DAYS), e.g. a year the table lacks."""
    event_log_table: str | None = None
    """The local stage's record of the events a consumer of the bus received."""
    channel_credentials_secret: str | None = None
    """Deployed stages: the Secrets Manager secret of the channels' keys."""
    in_lambda: bool = False
    """Whether this process is a Lambda function (Lambda sets AWS_LAMBDA_FUNCTION_NAME)."""
    aws_connect_timeout_seconds: float = 2.0
    aws_read_timeout_seconds: float = 5.0
    aws_max_attempts: int = 3
    """Each AWS call of a deployed stage: connect and read timeouts, and attempts (the first
    included) in botocore's standard retry mode. botocore's own (60 s, and PynamoDB's 15 s
    connect, 30 s read) outlive the function, which would then die waiting on one call;
    ``from_environ`` refuses settings whose worst case does not end within the function's
    timeout."""
    cognito_domain: str | None = None
    """The user pool's hosted UI domain, where the CS console signs agents in."""
    cognito_client_id: str | None = None
    """The CS console's app client in the user pool (its callback URL: the console's own)."""

    @property
    def is_local(self) -> bool:
        return self.stage == LOCAL_STAGE

    @property
    def aws_call_budget_seconds(self) -> float:
        """The longest one AWS call can take: every attempt timing out on connect and read,
        and the standard retry mode's backoff before each retry (at most 2^(n-1) s before
        retry n)."""
        attempts = self.aws_max_attempts
        per_attempt = self.aws_connect_timeout_seconds + self.aws_read_timeout_seconds
        return attempts * per_attempt + sum(2**retry for retry in range(attempts - 1))

    @classmethod
    def from_environ(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        stage = env.get("REFUNDS_STAGE", "")
        if not stage:
            raise RuntimeError(
                "REFUNDS_STAGE is not set (.chalice/config.json sets the local stage's,"
                " infra/template.yaml a deployed stack's)"
            )
        local = stage == LOCAL_STAGE
        prefix = env.get("REFUNDS_TABLE_PREFIX", f"refunds-{stage}")
        return cls(
            stage=stage,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            aws_endpoint_url=env.get("REFUNDS_AWS_ENDPOINT") or None,
            orders_table=env.get("REFUNDS_ORDERS_TABLE", f"{prefix}-orders"),
            refunds_table=env.get("REFUNDS_REFUNDS_TABLE", f"{prefix}-refunds"),
            messages_table=env.get("REFUNDS_MESSAGES_TABLE", f"{prefix}-messages"),
            idempotency_table=env.get("REFUNDS_IDEMPOTENCY_TABLE", f"{prefix}-idempotency"),
            evidence_bucket=env.get("REFUNDS_EVIDENCE_BUCKET", f"{prefix}-evidence"),
            ledger_table=env.get("REFUNDS_LEDGER_TABLE", f"{prefix}-ledger"),
            stats_table=env.get("REFUNDS_STATS_TABLE", f"{prefix}-stats"),
            event_bus=env.get("REFUNDS_EVENT_BUS", f"refunds-{stage}"),
            event_log_table=env.get("REFUNDS_EVENT_LOG_TABLE", f"{prefix}-event-log")
            if local
            else None,
            jwt_secret=env.get("REFUNDS_JWT_SECRET", DEFAULT_LOCAL_JWT_SECRET) if local else None,
            jwks_url=env.get("REFUNDS_JWKS_URL") or None,
            jwt_issuer=env.get("REFUNDS_JWT_ISSUER") or None,
            jwt_audience=env.get("REFUNDS_JWT_AUDIENCE") or None,
            idempotency_lease_seconds=int(env.get("REFUNDS_IDEMPOTENCY_LEASE_SECONDS", "30")),
            function_timeout_seconds=int(env.get("REFUNDS_FUNCTION_TIMEOUT_SECONDS", "25")),
            shards=int(env.get("REFUNDS_SHARDS", "4")),
            step_interval_scale=float(
                env.get("REFUNDS_STEP_INTERVAL_SCALE", LOCAL_STEP_INTERVAL_SCALE if local else "1")
            ),
            channel_secret=(
                env.get("REFUNDS_CHANNEL_SECRET", DEFAULT_LOCAL_CHANNEL_SECRET) if local else None
            ),
            channel_simulator_url=env.get("REFUNDS_CHANNEL_SIMULATOR_URL") or None,
            channel_credentials_secret=env.get("REFUNDS_CHANNEL_CREDENTIALS_SECRET") or None,
            cognito_domain=env.get("REFUNDS_COGNITO_DOMAIN") or None,
            cognito_client_id=env.get("REFUNDS_COGNITO_CLIENT_ID") or None,
            abuse_threshold=int(env.get("REFUNDS_ABUSE_THRESHOLD", "10")),
            sku_shards=int(env.get("REFUNDS_STATS_SKU_SHARDS", "8")),
            holidays=_dates(env.get("REFUNDS_EXTRA_HOLIDAYS", "")),
            working_days=_dates(env.get("REFUNDS_EXTRA_WORKING_DAYS", "")),
            in_lambda=bool(env.get("AWS_LAMBDA_FUNCTION_NAME")),
        )

    def __post_init__(self) -> None:
        if self.is_local and self.in_lambda:
            # The local stage trusts HS256 tokens signed with a secret that has a public
            # default (API.md): a function deployed with it would take anyone's token.
            raise RuntimeError(
                "the local stage (HS256 tokens, a shared secret) refuses to run in Lambda:"
                " deployed stages verify RS256 tokens against the issuer's JWKS"
            )
        if not self.is_local and self.aws_call_budget_seconds >= self.function_timeout_seconds:
            raise RuntimeError(
                f"one AWS call may take {self.aws_call_budget_seconds:g} s with these timeouts"
                f" and retries, not less than the function's timeout"
                f" ({self.function_timeout_seconds} s): the function would die waiting on it"
            )
        if self.idempotency_lease_seconds <= self.function_timeout_seconds:
            raise RuntimeError(
                f"REFUNDS_IDEMPOTENCY_LEASE_SECONDS ({self.idempotency_lease_seconds}) must be"
                f" longer than the function's timeout ({self.function_timeout_seconds} s):"
                " a create still running when its lease ends would be taken for a dead one"
            )


def _dates(text: str) -> frozenset[date]:
    return frozenset(date.fromisoformat(part.strip()) for part in text.split(",") if part.strip())


def process_stage(env: Mapping[str, str] | None = None) -> str:
    """The stage of this process, for the names Chalice needs as literals when the app is
    imported (its SQS event sources' queues): REFUNDS_STAGE in Lambda and in the local stack;
    none when `chalice package` imports the app, since a stack names its stage only when it is
    deployed: the names then carry the template's parameter, which CloudFormation fills in."""
    return (os.environ if env is None else env).get("REFUNDS_STAGE") or STAGE_PARAMETER


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read on first use (never at import time)."""
    return Settings.from_environ()
