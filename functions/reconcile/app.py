"""Reconcile (polling): GET /v2/generate/{id}, record it, and tell the state machine when to look again."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.generation.lifecycle import ExecutionState, reconcile
from lipsync.generation.wiring import lifecycle_wiring
from lipsync.observability import count, lambda_handler, logger


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, storage, sync, slots, _events = lifecycle_wiring()
    state = ExecutionState.model_validate(event)
    logger.append_keys(job_id=state.job_id, generation_id=state.generation_id)
    result = reconcile(store, storage, sync, slots, state, slots.transient_retries)
    if result["terminal"]:
        count("RecoveredByPolling")  # polling, not a webhook, found the end
    if result["status"] == "UNKNOWN":
        count("UnknownApiStatus")
    logger.info("generation polled", extra=result)
    return result
