"""Finalize: confirm the end with a GET, free the plan slot, copy a COMPLETED output into outputs/
and write outputs/<name>.json (or send a transient failure once more). GenerationNotFinished sends
the state machine back to polling; OutputNotCopiedYet is retried by its Retry, with growing waits."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.generation.lifecycle import ExecutionState, finalize
from lipsync.generation.wiring import lifecycle_wiring
from lipsync.observability import count, lambda_handler, logger


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, storage, sync, slots, events = lifecycle_wiring()
    state = ExecutionState.model_validate(event)
    logger.append_keys(job_id=state.job_id, generation_id=state.generation_id)
    result = finalize(store, storage, sync, slots, state, events=events)
    if result["status"] == "UNKNOWN":
        count("UnknownApiStatus")
    # The outcome metric (JobsFinished by Outcome) goes out with the document, once per job.
    logger.info("finalize", extra=result)
    return result
