"""Settings: every ``CALLBOARD_*`` environment variable, validated once at start.

A bad value stops the process with one line naming the variable (see :class:`SettingsError`);
:func:`load_settings` is the only way the rest of Callboard reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, FilePath, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from config.durations import parse_duration

ENV_PREFIX = "CALLBOARD_"

CommaList = Annotated[list[str], NoDecode]

#: Seconds, written as a number or a duration string (``30s``, ``15m``, ``1h``, ``30d``).
Duration = Annotated[
    float, BeforeValidator(lambda value: parse_duration(value) if isinstance(value, str) else value)
]

DEFAULT_SENSITIVE_FIELDS = (
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "email",
    "ssn",
    "credit_card",
    "card_number",
)


class SettingsError(ValueError):
    """A ``CALLBOARD_*`` variable has a bad value; ``str()`` is one line naming the variable."""


class Settings(BaseSettings):
    """Every setting of Callboard. The README's configuration table lists the same fields."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    broker_url: str | None = Field(
        default=None,
        description="redis://, rediss:// (TLS), unix:// or amqp:// URL; unset runs an embedded Redis.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL (PostgreSQL via psycopg2); unset uses SQLite in DATA_DIR."
    )
    data_dir: Path = Field(default=Path("var"), description="Where embedded Redis and SQLite keep data.")
    actor_modules: CommaList = Field(
        default_factory=list, description="Comma list of extra actor modules to load."
    )
    worker_processes: int = Field(default=0, ge=0, le=256, description="Worker processes; 0 = one per CPU.")
    worker_threads: int = Field(default=8, ge=1, le=1024, description="Threads per worker process.")
    worker_queues: CommaList = Field(
        default_factory=list, description="Queues to consume (comma list); empty = every declared queue."
    )
    worker_max_messages: int = Field(
        default=1000, ge=0, description="Recycle a worker process after this many messages; 0 = never."
    )
    worker_shutdown_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a stopping worker waits for running messages before handing them back.",
    )
    worker_idle_timeout: float = Field(
        default=1.0, gt=0, le=60, description="Seconds an idle consumer waits between broker polls."
    )
    max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=128 * 1024 * 1024,
        description="Largest encoded message a producer may send, in bytes; workers dead-letter larger.",
    )
    dlq_retention: float = Field(
        default=30 * 86400.0, gt=0, description="Dead letters older than this are pruned (e.g. 30d)."
    )
    dlq_drain_interval: float = Field(
        default=5.0, gt=0, description="Seconds between moves of broker dead letters into the store."
    )
    dlq_alert_actor: str | None = Field(
        default=None, description="Actor sent a message when messages are dead-lettered (rate-limited)."
    )
    dlq_alert_interval: float = Field(
        default=300.0, gt=0, description="At most one dead-letter alert per actor per this many seconds."
    )
    sensitive_fields: CommaList = Field(
        default_factory=lambda: list(DEFAULT_SENSITIVE_FIELDS),
        description="Argument names (substring, any case) redacted in logs and the dead-letter store.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that seals dead letters' original arguments; unset: <data_dir>/secret.key.",
    )
    schedule_file: Path = Field(
        default=Path(__file__).with_name("schedule.toml"),
        description="The periodic schedule (TOML); the shipped config/schedule.toml by default.",
    )
    scheduler_lease: float = Field(
        default=15.0,
        gt=0,
        description="Seconds a scheduler leader's lease lasts; a standby takes over after.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for shared state (worker heartbeats); unset: the broker, when it is Redis.",
    )
    metrics_port: int = Field(
        default=9191,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz and /readyz (one per worker pod or scheduler); 0 = off.",
    )
    metrics_host: str = Field(default="0.0.0.0", description="Address the metrics port binds.")
    metrics_dir: Path | None = Field(
        default=None,
        description="prometheus_client multiprocess directory, wiped at start; unset: a new temp dir.",
    )
    heartbeat_interval: float = Field(
        default=5.0, gt=0, le=60, description="Seconds between a worker process's heartbeats."
    )
    heartbeat_timeout: float = Field(
        default=30.0, gt=0, description="A worker whose last heartbeat is older than this is dead."
    )
    stuck_recycle_after: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a thread stays stuck (hard limit + 10 s grace) before its process "
        "recycles itself; 0 = never.",
    )
    send_timeout: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="Seconds a send keeps retrying an unreachable broker before it raises; 0 = at once.",
    )
    sentry_dsn: SecretStr | None = Field(default=None, description="Sentry DSN; unset: Sentry is off.")
    sentry_environment: str = Field(default="production", description="Sentry environment tag.")
    sentry_release: str | None = Field(
        default=None, description="Sentry release tag; unset: callboard@<version>."
    )
    sentry_traces_sample_rate: float = Field(
        default=0.0, ge=0, le=1, description="Share of messages traced as Sentry transactions."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")
    log_format: Literal["json", "console"] = Field(default="json")

    # -- notifications: email, webhooks, circuit breakers --------------------------------------
    smtp_host: str | None = Field(
        default=None, description="SMTP server for send_email; unset: email is off."
    )
    smtp_port: int = Field(default=587, ge=1, le=65535, description="SMTP port (587 STARTTLS, 465 TLS).")
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user; unset: no AUTH.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP AUTH password.")
    smtp_starttls: bool = Field(default=True, description="Upgrade the connection with STARTTLS.")
    smtp_ssl: bool = Field(default=False, description="Implicit TLS from the first byte (port 465).")
    smtp_from: str = Field(default="callboard@localhost", description="Sender address of send_email.")
    smtp_timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds per SMTP operation.")
    smtp_ca_file: FilePath | None = Field(
        default=None, description="CA bundle that verifies the SMTP server; unset: the system's."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key that signs webhooks; unset: send_webhook refuses."
    )
    webhook_connect_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Webhook connect timeout (s)."
    )
    webhook_read_timeout: float = Field(default=30.0, gt=0, le=600, description="Webhook read timeout (s).")
    webhook_allowed_networks: CommaList = Field(
        default_factory=list,
        description="CIDRs webhooks may reach although private, loopback or link-local (SSRF guard).",
    )
    breaker_failure_threshold: int = Field(
        default=5, ge=1, le=10_000, description="Consecutive failures that open a circuit breaker."
    )
    breaker_recovery_timeout: float = Field(
        default=60.0, gt=0, le=86400, description="Seconds an open breaker waits before one trial."
    )

    @field_validator("webhook_allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        items = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
        if isinstance(items, list):
            for item in items:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
        return items

    @field_validator(
        "smtp_host", "smtp_username", "smtp_password", "smtp_ca_file", "webhook_secret", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("breaker_recovery_timeout", mode="before")
    @classmethod
    def _breaker_duration(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    # -- idempotency, result storage, history retention (issue 6) --------------------------
    idempotency_redis_timeout: Duration = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Seconds an idempotency claim waits for Redis before using the database instead.",
    )
    idempotency_failover: Duration = Field(
        default=5.0,
        ge=0,
        description="After Redis fails a claim, seconds claims go straight to the database before "
        "Redis is tried again.",
    )
    result_ttl: Duration = Field(
        default=3600.0, gt=0, description="How long a stored actor result is kept (store_results=True)."
    )
    schedule_history_retention: Duration = Field(
        default=30 * 86400.0, gt=0, description="Scheduler fire history older than this is pruned."
    )
    # -- end of issue 6 settings -------------------------------------------------------------

    @field_validator(
        "dlq_retention",
        "dlq_drain_interval",
        "dlq_alert_interval",
        "scheduler_lease",
        "heartbeat_interval",
        "heartbeat_timeout",
        "send_timeout",
        mode="before",
    )
    @classmethod
    def _durations(cls, value: object) -> object:
        return parse_duration(value) if isinstance(value, str) else value

    @field_validator("actor_modules", "worker_queues", "sensitive_fields", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _normalise_case(cls, value: object) -> object:
        if isinstance(value, str):
            return value.upper() if value.lower() in {"debug", "info", "warning", "error"} else value.lower()
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.lower().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in {"redis", "rediss", "unix", "amqp", "amqps"}:
            raise ValueError("must start with redis://, rediss://, unix://, amqp:// or amqps://")
        return value

    @property
    def processes(self) -> int:
        """The effective number of worker processes (``worker_processes``, or one per CPU)."""
        return self.worker_processes or os.cpu_count() or 1

    # -- ops: alerts (send_alert), cleanup (cleanup_old_files, cleanup_temp_files) ----------------
    alert_emails: CommaList = Field(
        default_factory=list, description="Comma list of addresses that receive alerts (one send_email)."
    )
    alert_webhooks: CommaList = Field(
        default_factory=list, description="Comma list of http(s) URLs that receive alerts as JSON."
    )
    alert_slack_webhook: SecretStr | None = Field(
        default=None,
        description="Slack-compatible incoming-webhook URL that receives alerts (secret: holds a token).",
    )
    alert_dedupe_window: float = Field(
        default=15 * 60.0,
        ge=0,
        description="An alert with the same dedupe key within this window is suppressed; 0 = never.",
    )
    cleanup_roots: CommaList = Field(
        default_factory=list,
        description="Comma list of absolute directories cleanup_old_files may delete in.",
    )
    cleanup_temp_max_age: float = Field(
        default=86400.0, gt=0, description="cleanup_temp_files deletes temp files older than this."
    )

    @field_validator("alert_dedupe_window", "cleanup_temp_max_age", mode="before")
    @classmethod
    def _ops_durations(cls, value: object) -> object:
        return cls._durations(value)  # in this block, not in _durations' list: merges stay easy

    @field_validator("alert_emails", "alert_webhooks", "cleanup_roots", mode="before")
    @classmethod
    def _ops_split_commas(cls, value: object) -> object:
        return cls._split_commas(value)

    @field_validator("alert_webhooks")
    @classmethod
    def _check_alert_webhooks(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.lower().startswith(("http://", "https://")):
                raise ValueError("every URL must start with http:// or https://")
        return value

    @field_validator("alert_slack_webhook")
    @classmethod
    def _check_alert_slack_webhook(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if not value.get_secret_value().lower().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("cleanup_roots")
    @classmethod
    def _check_cleanup_roots(cls, value: list[str]) -> list[str]:
        for root in value:
            if not os.path.isabs(root):
                raise ValueError(f"must be absolute directories (got {root!r})")
        return value

    # -- status, progress and workflows (issue 9) ------------------------------------------------
    status_ttl: Duration = Field(
        default=3600.0,
        gt=0,
        description="How long a message's status is kept after its last change (callboard status).",
    )
    status_flush_interval: Duration = Field(
        default=0.1,
        gt=0,
        le=10,
        description="Seconds a worker gathers status changes and progress before writing them in one "
        "pipelined round trip (also the fastest a message's progress is written).",
    )


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    variable = ENV_PREFIX + field.upper()
    value = first.get("input")
    shown = f" (got {value!r})" if isinstance(value, str | int | float) else ""
    more = f"; and {error.error_count() - 1} more" if error.error_count() > 1 else ""
    return f"{variable}: {first['msg']}{shown}{more}"


def load_settings(**overrides: object) -> Settings:
    """Read and validate the ``CALLBOARD_*`` environment.

    Raises :class:`SettingsError` with one line naming the first bad variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise SettingsError(_one_line(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once. Tests call ``get_settings.cache_clear()``."""
    return load_settings()
