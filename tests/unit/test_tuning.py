"""The Tuning parameter: one optional JSON object under the environment, over the defaults."""

from __future__ import annotations

import pytest

from lipsync.config import TUNABLES, LifecycleTimings, TuningError, environment, parse_tuning


def test_without_tuning_every_tunable_has_its_default() -> None:
    env = environment({})
    assert env["WEBHOOK_TIMEOUT_SECONDS"] == "600"
    assert env["SYNC_API_BASE_URL"] == "https://api.sync.so"
    assert LifecycleTimings.from_env({}).max_job_seconds == 21600
    assert set(env) == {variable for variable, _ in TUNABLES.values()}


def test_tuning_overrides_the_defaults_and_the_environment_overrides_tuning() -> None:
    tuning = (
        '{"WebhookTimeoutSeconds": 900, "PriceTableUsdPerSecond": {"lipsync-2": 0.04}, "LogLevel": "DEBUG"}'
    )
    env = environment({"TUNING": tuning, "POWERTOOLS_LOG_LEVEL": "ERROR"})
    assert env["WEBHOOK_TIMEOUT_SECONDS"] == "900"  # numbers as their JSON text
    assert env["PRICE_TABLE_USD_PER_SECOND"] == '{"lipsync-2": 0.04}'  # objects too
    assert env["POWERTOOLS_LOG_LEVEL"] == "ERROR"  # the environment's own value wins (sam local's env.json)
    assert LifecycleTimings.from_env({"TUNING": tuning}).webhook_timeout_seconds == 900


@pytest.mark.parametrize(
    ("tuning", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "must be a JSON object, not list"),
        ('{"WebhookTimeout": 5}', "unknown key(s) WebhookTimeout; known: SyncApiBaseUrl,"),
    ],
)
def test_a_bad_tuning_says_what_to_fix(tuning: str, message: str) -> None:
    with pytest.raises(TuningError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_tuning(tuning)


def test_a_tuned_value_is_still_checked_by_its_settings() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must not exceed MaxJobSeconds"):
        LifecycleTimings.from_env({"TUNING": '{"WebhookTimeoutSeconds": 7200, "MaxJobSeconds": 3600}'})
