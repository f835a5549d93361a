"""The configuration file's schema: strict, frozen models. ``loader.py`` reads and checks it."""

from __future__ import annotations

import hashlib
import importlib.util
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

from gateway.webhooks import DEFAULT_RETRY_SCHEDULE_S, secret_key

Name = Annotated[str, Field(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=65536, ge=256, le=16 * 1024 * 1024)
    workers: int = Field(default=1, ge=1, le=64)
    # A connection idle this long is closed; so is one that has not sent a request's complete
    # headers this long after it opened or after the previous answer (slow clients).
    keepalive_timeout_s: float = Field(default=15.0, gt=0, le=3600)
    body_timeout_s: float = Field(default=10.0, gt=0, le=3600)  # to receive a request's body
    drain_timeout_s: float | None = Field(default=None, gt=0, le=3600)  # default: see README
    batch_concurrency: int = Field(default=10, ge=1, le=100)  # items of one batch at once
    # Connections waiting to be accepted; the kernel caps it at net.core.somaxconn.
    backlog: int = Field(default=4096, ge=1, le=65535)
    # The background work (pending cancellations, crash recovery, webhooks) kept in the store:
    # how often an idle process asks it for due steps, and how many steps it runs at once.
    work_poll_s: float = Field(default=1.0, gt=0, le=60)
    work_concurrency: int = Field(default=32, ge=1, le=1000)
    # Cancellations one process works on at once; beyond, 503 `overloaded` at once (CONTRACT
    # §11): a queue that grows past what the budgets allow only turns answers into timeouts.
    max_in_flight: int = Field(default=1024, ge=1, le=100000)
    # How long a connection refused `overloaded` is not read from (0: read again at once).
    overload_hold_s: float = Field(default=1.0, ge=0, le=10)
    # The operator console at /console: static pages that read the API with a caller key.
    console: bool = True


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True  # one `http.request` line per answer


class TracingConfig(_Strict):
    """OpenTelemetry spans (the ``otel`` extra); without it the ids stay in the logs."""

    exporter: Literal["none", "otlp", "console"] = "none"
    # otlp: the collector's traces URL (http://host:4318/v1/traces); unset: the SDK's default,
    # which honours OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    endpoint: str | None = None
    service_name: str = Field(default="cancel-gateway", min_length=1, max_length=200)
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of traces this gateway starts

    @field_validator("exporter")
    @classmethod
    def _extra_installed(cls, exporter: str) -> str:
        if exporter != "none" and importlib.util.find_spec("opentelemetry.sdk") is None:
            raise ValueError(
                f"{exporter!r} needs the otel extra: pip install 'cancel-gateway[otel]'"
            )
        return exporter


class WebhookConfig(_Strict):
    """Where a caller hears of its cancellations' final outcomes (README, "Webhooks")."""

    url: Annotated[str, Field(max_length=2000, pattern=r"^https?://[^\s]+$")]
    secret: SecretStr  # whsec_<base64>, from the environment
    all: bool = False  # every final answer, not only those that were pending
    retry_schedule_s: list[Annotated[float, Field(ge=0, le=7 * 86400)]] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_SCHEDULE_S), max_length=50
    )

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, secret: SecretStr) -> SecretStr:
        secret_key(secret.get_secret_value())  # a ValueError names no part of it
        return secret


class CallerConfig(_Strict):
    """An inbound client. Its key is given plain (from the environment) or as a SHA-256."""

    name: Name
    key: SecretStr | None = None
    key_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    connections: list[str] = Field(default_factory=list)  # globs; none means no access
    admin: bool = False  # may call POST /admin/reload
    webhook: WebhookConfig | None = None

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return key

    @model_validator(mode="after")
    def _one_key(self) -> CallerConfig:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key or key_sha256")
        return self

    def digest(self) -> bytes:
        if self.key is not None:
            return hashlib.sha256(self.key.get_secret_value().encode()).digest()
        assert self.key_sha256 is not None
        return bytes.fromhex(self.key_sha256)


def _scalar(value: object) -> object:
    # One problem for a value that is no scalar, rather than one for each member of the union.
    if isinstance(value, str | bool | int | float):
        return value
    raise ValueError("must be a string, a number or a boolean")


# A value a connection fixes for one of its provider's params.
FixedValue = Annotated[str | StrictBool | StrictInt | StrictFloat, BeforeValidator(_scalar)]


class RetrySettings(_Strict):
    """How a cancellation is repeated after a transient failure (README, "Resilience")."""

    max_attempts: int = Field(default=3, ge=1, le=10)
    backoff_base_s: float = Field(default=0.1, ge=0, le=60)
    backoff_max_s: float = Field(default=2.0, ge=0, le=300)
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    budget_min_retries: int = Field(default=3, ge=0, le=100000)
    budget_window_s: float = Field(default=10.0, gt=0, le=3600)


class BreakerSettings(_Strict):
    failures: int = Field(default=5, ge=1, le=10000)  # consecutive failed attempts to open
    open_s: float = Field(default=5.0, gt=0, le=3600)  # first wait before one probe
    max_open_s: float = Field(default=60.0, gt=0, le=86400)  # the wait doubles up to this

    @model_validator(mode="after")
    def _max_covers_first(self) -> BreakerSettings:
        if self.max_open_s < self.open_s:
            raise ValueError("max_open_s must be at least open_s")
        return self


class LimitSettings(_Strict):
    concurrency: int = Field(default=1024, ge=1, le=100000)  # attempts in flight at once
    # Attempts per second (token bucket); unset takes the provider's default, 0 is no limit.
    rate_per_s: float | None = Field(default=None, ge=0, le=100000)
    burst: int | None = Field(default=None, ge=1, le=100000)  # default: rate_per_s, at least 1
    # Longest wait for a slot or a token; unset: as long as the budget allows, 0: not at all.
    max_wait_s: float | None = Field(default=None, ge=0, le=300)


class AsyncSettings(_Strict):
    """How a pending cancellation is worked on in the background (CONTRACT §10)."""

    max_age_s: float = Field(default=86400.0, gt=0, le=30 * 86400)  # then outcome_unknown
    first_delay_s: float = Field(default=1.0, gt=0, le=3600)  # before the first probe or repeat
    max_delay_s: float = Field(default=300.0, gt=0, le=86400)  # the delay doubles up to this


class ConnectionConfig(_Strict):
    """One account at one provider: the routing key of a cancellation."""

    provider: Name
    base_url: str | None = None
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    params: dict[str, FixedValue] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0, le=300)  # every attempt and backoff included
    connect_timeout_s: float = Field(default=3.0, gt=0, le=300)
    attempt_timeout_s: float | None = Field(default=None, gt=0, le=300)  # unset: what is left
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    # ``async`` in the file (a Python keyword as a name).
    settling: AsyncSettings = Field(default_factory=AsyncSettings, alias="async")


class StoreConfig(_Strict):
    """Where idempotency keys and the cancellation ledger live (README, "Store")."""

    backend: Literal["memory", "sqlite", "redis", "postgres"] = "sqlite"
    path: str = "cancel-gateway.db"  # sqlite: relative to the config file
    url: SecretStr | None = None  # redis: redis://[:password@]host:port/db
    dsn: SecretStr | None = None  # postgres: postgresql://user:password@host:port/db
    prefix: str = Field(default="cg:", max_length=50)  # redis key prefix
    key_ttl_s: float = Field(default=86400.0, gt=0, le=30 * 86400)
    ledger_ttl_s: float = Field(default=30 * 86400.0, gt=0)  # redis: how long rows are kept
    timeout_s: float = Field(default=2.0, gt=0, le=60)  # one store operation

    @model_validator(mode="after")
    def _address_given(self) -> StoreConfig:
        if self.backend == "redis" and self.url is None:
            raise ValueError("the redis backend needs `url`")
        if self.backend == "postgres" and self.dsn is None:
            raise ValueError("the postgres backend needs `dsn`")
        return self


class GatewayConfig(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    providers: list[str] = Field(default_factory=list)  # more definition files or folders
    callers: list[CallerConfig] = Field(min_length=1)
    connections: dict[Name, ConnectionConfig] = Field(default_factory=dict)
