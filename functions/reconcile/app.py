"""Reconcile (polling): GET /v2/generate/{id}, record it, and tell the state machine when to look again."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import SyncApiSettings, read_secret
from lipsync.job_store import DynamoJobStore
from lipsync.lifecycle import ReconcileState, reconcile
from lipsync.observability import count, lambda_handler, logger
from lipsync.sync_client import SyncClient


@cache
def dependencies() -> tuple[DynamoJobStore, SyncClient]:
    settings = SyncApiSettings.from_env()
    return DynamoJobStore(settings.jobs_table), SyncClient(
        settings.sync_api_base_url, read_secret(settings.sync_api_key_secret)
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, sync = dependencies()
    state = ReconcileState.model_validate(event)
    logger.append_keys(job_id=state.job_id, generation_id=state.generation_id)
    result = reconcile(store, sync, state)
    if result["terminal"]:
        count("RecoveredByPolling")  # polling, not a webhook, found the end
        count(f"JobsEnded{str(result['status']).title().replace('_', '')}")
    logger.info("generation polled", extra=result)
    return result
