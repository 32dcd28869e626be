"""Reconcile (polling): GET /v2/generate/{id}, record it, and tell the state machine when to look again."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import PlanLimits, SyncApiSettings, secret_reader
from lipsync.generation.lifecycle import ExecutionState, reconcile
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import count, lambda_handler, logger
from lipsync.syncso.client import SyncClient


@cache
def dependencies() -> tuple[DynamoJobStore, SyncClient, int]:
    settings = SyncApiSettings.from_env()
    retries = PlanLimits.model_validate(dict(os.environ)).transient_retries
    return (
        DynamoJobStore(settings.jobs_table),
        SyncClient(settings.sync_api_base_url, secret_reader(settings.sync_api_key_secret)),
        retries,
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, sync, retries = dependencies()
    state = ExecutionState.model_validate(event)
    logger.append_keys(job_id=state.job_id, generation_id=state.generation_id)
    result = reconcile(store, sync, state, retries)
    if result["terminal"]:
        count("RecoveredByPolling")  # polling, not a webhook, found the end
    if result["status"] == "UNKNOWN":
        count("UnknownApiStatus")
    logger.info("generation polled", extra=result)
    return result
