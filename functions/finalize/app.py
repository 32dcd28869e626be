"""Finalize: confirm the end with a GET, free the plan slot, copy a COMPLETED output into outputs/
and write outputs/<name>.json (or send a transient failure once more). With `workflowError`
(the state machine's RecordFailure), the job stops with that error instead."""

from __future__ import annotations

import os
from functools import cache
from typing import Any, NamedTuple

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import FinalizeSettings, PlanLimits, secret_reader
from lipsync.generation.lifecycle import ExecutionState, Slots, finalize, stop, workflow_error
from lipsync.jobs.events import EventBridgeJobEvents
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import count, lambda_handler, logger
from lipsync.plan.admission import DynamoAdmission
from lipsync.plan.kicks import SqsKicker
from lipsync.storage import S3Storage
from lipsync.syncso.client import SyncClient


class Wiring(NamedTuple):
    store: DynamoJobStore
    storage: S3Storage
    sync: SyncClient
    slots: Slots
    events: EventBridgeJobEvents


@cache
def wiring() -> Wiring:
    settings = FinalizeSettings.from_env()
    store = DynamoJobStore(settings.jobs_table)
    limits = PlanLimits.model_validate(dict(os.environ))
    return Wiring(
        store,
        S3Storage(settings.media_bucket),
        SyncClient(settings.sync_api_base_url, secret_reader(settings.sync_api_key_secret)),
        Slots(
            DynamoAdmission(settings.admission_table, store),
            SqsKicker(settings.dispatch_queue_url),
            limits.transient_retries,
        ),
        EventBridgeJobEvents.from_env(),
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, storage, sync, slots, events = wiring()
    logger.append_keys(job_id=event["jobId"], generation_id=event.get("generationId"))
    if failure := event.get("workflowError"):
        error = workflow_error(failure.get("Error"), failure.get("Cause"))
        result = stop(store, storage, sync, slots, event["jobId"], event.get("generationId"), error, events)
    else:
        result = finalize(store, storage, sync, slots, ExecutionState.model_validate(event), events=events)
        if result["status"] == "UNKNOWN":
            count("UnknownApiStatus")
    # The outcome metric (JobsFinished by Outcome) goes out with the document, once per job.
    logger.info("job finalized", extra=result)
    return result
