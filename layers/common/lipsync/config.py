"""Configuration: each function's environment as a pydantic model, validated at cold start,
and secrets read from Secrets Manager through Powertools Parameters (cached)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, Json, field_validator, model_validator

from lipsync.endpoints import reachable_api_url

SECRET_CACHE_SECONDS = 300

# The template's `Tuning` parameter: one optional JSON object for what a first deploy need not
# decide. Each key, the variable it stands for and its default. A variable the environment sets
# itself (`sam local`'s env.json, a test) wins over Tuning; Tuning wins over the default.
TUNING_VARIABLE = "TUNING"
TUNABLES: dict[str, tuple[str, str]] = {
    "SyncApiBaseUrl": ("SYNC_API_BASE_URL", "https://api.sync.so"),
    "PublicApiUrl": ("PUBLIC_API_URL", ""),
    "DefaultOptions": ("DEFAULT_OPTIONS", '{"sync_mode": "bounce"}'),
    "PresignedUrlSeconds": ("PRESIGNED_URL_SECONDS", "3600"),
    "CreateRatePerMinute": ("CREATE_RATE_PER_MINUTE", "60"),
    "TransientFailureRetries": ("TRANSIENT_FAILURE_RETRIES", "1"),
    "WebhookTimeoutSeconds": ("WEBHOOK_TIMEOUT_SECONDS", "600"),
    "PollFirstIntervalSeconds": ("POLL_FIRST_INTERVAL_SECONDS", "15"),
    "PollBackoffRate": ("POLL_BACKOFF_RATE", "1.5"),
    "PollMaxIntervalSeconds": ("POLL_MAX_INTERVAL_SECONDS", "120"),
    "MaxJobSeconds": ("MAX_JOB_SECONDS", "21600"),
    "JobRetentionDays": ("JOB_RETENTION_DAYS", "90"),
    "PriceTableUsdPerSecond": (
        "PRICE_TABLE_USD_PER_SECOND",
        '{"lipsync-2": 0.05, "lipsync-2-pro": 0.083, "sync-3": 0.133}',
    ),
    "LogLevel": ("POWERTOOLS_LOG_LEVEL", "INFO"),
}


class TuningError(ValueError):
    """The Tuning parameter is not a JSON object of known keys (the message says what to fix)."""


def parse_tuning(text: str) -> dict[str, str]:
    """Tuning's JSON as the variables it sets (objects and numbers as their JSON text)."""
    if not text.strip():
        return {}
    try:
        tuning = json.loads(text)
    except ValueError as error:
        raise TuningError(f"the Tuning parameter is not JSON: {error}") from None
    if not isinstance(tuning, dict):
        raise TuningError(f"the Tuning parameter must be a JSON object, not {type(tuning).__name__}")
    unknown = sorted(set(tuning) - set(TUNABLES))
    if unknown:
        raise TuningError(
            f"the Tuning parameter has unknown key(s) {', '.join(unknown)}; known: {', '.join(TUNABLES)}"
        )
    return {
        TUNABLES[key][0]: value if isinstance(value, str) else json.dumps(value)
        for key, value in tuning.items()
    }


def environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment with Tuning and the tunables' defaults applied (see TUNABLES)."""
    given = dict(os.environ if environ is None else environ)
    defaults = dict(TUNABLES.values())
    return defaults | parse_tuning(given.get(TUNING_VARIABLE, "")) | given


class EnvSettings(BaseModel):
    # Built on first use: each function validates one or two of these, so the rest cost nothing.
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return cls.model_validate(environment(environ))


class StoreSettings(EnvSettings):
    jobs_table: str = Field(validation_alias="JOBS_TABLE", min_length=1)


class SyncApiSettings(StoreSettings):
    sync_api_base_url: str = Field(validation_alias="SYNC_API_BASE_URL", pattern=r"^https?://")
    sync_api_key_secret: str = Field(validation_alias="SYNC_API_KEY_SECRET", min_length=1)
    sync_api_timeout_seconds: float = Field(8.0, validation_alias="SYNC_API_TIMEOUT_SECONDS", gt=0, le=25)


MAX_DEADLINE_SECONDS = 86400  # the watch window (48 h) must outlast any deadline by a day


class LifecycleTimings(EnvSettings):
    """Timings the dispatcher hands to each job's execution, checked against each other at cold
    start (CloudFormation's rules cannot compare two numbers): a deploy with timings that cannot
    work fails in the dispatcher's first invocation, with the reason in its log, and no job is sent."""

    webhook_timeout_seconds: int = Field(validation_alias="WEBHOOK_TIMEOUT_SECONDS", ge=1)
    poll_first_interval_seconds: int = Field(validation_alias="POLL_FIRST_INTERVAL_SECONDS", ge=1)
    poll_backoff_rate: float = Field(validation_alias="POLL_BACKOFF_RATE", ge=1)
    poll_max_interval_seconds: int = Field(validation_alias="POLL_MAX_INTERVAL_SECONDS", ge=1)
    max_job_seconds: int = Field(validation_alias="MAX_JOB_SECONDS", ge=1, le=MAX_DEADLINE_SECONDS)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.webhook_timeout_seconds > self.max_job_seconds:
            raise ValueError(
                f"WebhookTimeoutSeconds ({self.webhook_timeout_seconds}) must not exceed MaxJobSeconds "
                f"({self.max_job_seconds}): a job would time out before it looked for its result"
            )
        if self.poll_first_interval_seconds > self.poll_max_interval_seconds:
            raise ValueError(
                f"PollFirstIntervalSeconds ({self.poll_first_interval_seconds}) must not exceed "
                f"PollMaxIntervalSeconds ({self.poll_max_interval_seconds})"
            )
        return self


class PlanningSettings(EnvSettings):
    default_model: str = Field(validation_alias="DEFAULT_MODEL", min_length=1)
    default_options: Json[dict[str, Any]] = Field(validation_alias="DEFAULT_OPTIONS")


class QueueSettings(StoreSettings):
    """Where the job queue and the plan's slots live, and how to wake the dispatcher."""

    admission_table: str = Field(validation_alias="ADMISSION_TABLE", min_length=1)
    dispatch_queue_url: str = Field(validation_alias="DISPATCH_QUEUE_URL", min_length=1)


class CostSettings(EnvSettings):
    """The price table that estimates fall back on (see lipsync.plan.cost)."""

    price_table_usd_per_second: str = Field("", validation_alias="PRICE_TABLE_USD_PER_SECOND")

    @field_validator("price_table_usd_per_second")
    @classmethod
    def _a_price_table(cls, value: str) -> str:
        from lipsync.plan.prices import PriceTable

        PriceTable.from_json(value)  # a bad table fails at cold start, with the reason
        return value


class BudgetSettings(EnvSettings):
    """`MonthlyBudgetUsd`: "off" (or empty) turns the budget guard off."""

    monthly_budget_usd: float | None = Field(None, validation_alias="MONTHLY_BUDGET_USD", ge=0)

    @field_validator("monthly_budget_usd", mode="before")
    @classmethod
    def _empty_is_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in {"", "off"} else value


class IntakeSettings(PlanningSettings, QueueSettings, CostSettings):
    media_bucket: str = Field(validation_alias="MEDIA_BUCKET", min_length=1)
    # Where estimates come from; without them, the price table alone.
    sync_api_base_url: str | None = Field(None, validation_alias="SYNC_API_BASE_URL", pattern=r"^https?://")
    sync_api_key_secret: str | None = Field(None, validation_alias="SYNC_API_KEY_SECRET", min_length=1)
    max_receive_count: int = Field(5, validation_alias="SUBMIT_MAX_RECEIVE_COUNT", ge=1)
    submit_queue_url: str | None = Field(None, validation_alias="SUBMIT_QUEUE_URL")  # for sooner retries
    job_retention_days: int = Field(90, validation_alias="JOB_RETENTION_DAYS", ge=1)


class PlanLimits(EnvSettings):
    """The user's sync.so plan, as this stack may use it. `SyncPlanConcurrency` is a number, or
    `auto`: the plan's own limit, as sync.so's account answer says (read by the dispatcher)."""

    concurrency: int | None = Field(validation_alias="SYNC_PLAN_CONCURRENCY", ge=1)
    creates_per_minute: int = Field(60, validation_alias="CREATE_RATE_PER_MINUTE", ge=1)
    transient_retries: int = Field(1, validation_alias="TRANSIENT_FAILURE_RETRIES", ge=0, le=5)

    @field_validator("concurrency", mode="before")
    @classmethod
    def _auto(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @property
    def follows_account(self) -> bool:
        return self.concurrency is None

    def slots(self, account_concurrency: int | None) -> int:
        """How many generations may be in flight: the number set, else the account's (1, the
        smallest plan, until the account has been read)."""
        return self.concurrency or account_concurrency or 1


class DispatchSettings(SyncApiSettings, QueueSettings, BudgetSettings):
    media_bucket: str = Field(validation_alias="MEDIA_BUCKET", min_length=1)
    webhook_token_key_secret: str = Field(validation_alias="WEBHOOK_TOKEN_KEY_SECRET", min_length=1)
    webhook_base_url: str = Field(validation_alias="WEBHOOK_BASE_URL", pattern=r"^https?://")
    public_api_url: str = Field("", validation_alias="PUBLIC_API_URL", pattern=r"^(https?://.+)?$")
    aws_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    presigned_url_seconds: int = Field(validation_alias="PRESIGNED_URL_SECONDS", ge=10, le=604800)
    state_machine_arn: str = Field(validation_alias="STATE_MACHINE_ARN", min_length=1)

    @property
    def webhook_url_base(self) -> str:
        """Tuning's PublicApiUrl (a custom domain), else this stack's stage URL as sync.so reaches
        it (behind an emulator, its execute-api route: see lipsync.endpoints)."""
        if self.public_api_url:
            return self.public_api_url
        return reachable_api_url(self.webhook_base_url, (self.aws_endpoint_url or "").strip() or None)


class WebhookSettings(StoreSettings):
    webhook_token_key_secret: str = Field(validation_alias="WEBHOOK_TOKEN_KEY_SECRET", min_length=1)
    webhook_signing_secrets: str = Field(validation_alias="WEBHOOK_SIGNING_SECRETS", min_length=1)


class FinalizeSettings(SyncApiSettings, QueueSettings):
    media_bucket: str = Field(validation_alias="MEDIA_BUCKET", min_length=1)


def read_secret(name: str, *, fresh: bool = False) -> str:
    """A secret's string value, cached for a few minutes; `fresh` skips the cache (after a 401)."""
    from aws_lambda_powertools.utilities import parameters  # only the paths that need secrets pay for it

    value = parameters.get_secret(name, max_age=SECRET_CACHE_SECONDS, force_fetch=fresh)
    return value if isinstance(value, str) else value.decode()


class TokenKeys:
    """The webhook token key: the current version, and the previous one (Secrets Manager's
    AWSPREVIOUS) for `overlap_seconds` after a rotation, so webhook URLs minted before it keep
    working until their jobs end. Read at most every few minutes."""

    def __init__(self, secret_id: str, client: Any = None, *, overlap_seconds: float = 72 * 3600) -> None:
        self._secret_id = secret_id
        self._client = client
        self._overlap = overlap_seconds
        self._keys: list[str] = []
        self._read_at = 0.0

    def current(self) -> str:
        return self.keys()[0]

    def keys(self) -> list[str]:
        import time

        if self._keys and time.monotonic() - self._read_at < SECRET_CACHE_SECONDS:
            return self._keys
        if self._client is None:
            import boto3

            self._client = boto3.client("secretsmanager")
        versions = self._client.list_secret_version_ids(SecretId=self._secret_id)["Versions"]
        current = next(v for v in versions if "AWSCURRENT" in v.get("VersionStages", []))
        previous = next((v for v in versions if "AWSPREVIOUS" in v.get("VersionStages", [])), None)
        keys = [self._value(current["VersionId"])]
        rotated = current.get("CreatedDate")
        if previous is not None and rotated is not None:
            from datetime import UTC, datetime

            if (datetime.now(UTC) - rotated).total_seconds() < self._overlap:
                keys.append(self._value(previous["VersionId"]))
        self._keys, self._read_at = keys, time.monotonic()
        return keys

    def _value(self, version_id: str) -> str:
        answer = self._client.get_secret_value(SecretId=self._secret_id, VersionId=version_id)
        return str(answer["SecretString"])


def secret_reader(name: str) -> Callable[[bool], str]:
    """`read_secret` for one secret, as the sync client's key provider."""

    def provide(fresh: bool = False) -> str:
        return read_secret(name, fresh=fresh)

    return provide
