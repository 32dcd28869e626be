"""Finalize: copy a COMPLETED job's output into outputs/ and write outputs/<name>.json."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import FinalizeSettings, read_secret
from lipsync.job_store import DynamoJobStore
from lipsync.lifecycle import finalize
from lipsync.observability import lambda_handler, logger
from lipsync.storage import S3Storage
from lipsync.sync_client import SyncClient


@cache
def dependencies() -> tuple[DynamoJobStore, S3Storage, SyncClient]:
    settings = FinalizeSettings.from_env()
    return (
        DynamoJobStore(settings.jobs_table),
        S3Storage(settings.media_bucket),
        SyncClient(settings.sync_api_base_url, read_secret(settings.sync_api_key_secret)),
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, storage, sync = dependencies()
    logger.append_keys(job_id=event["jobId"])
    result = finalize(store, storage, sync, event["jobId"], workflow_error=event.get("workflowError"))
    logger.info("job finalized", extra=result)
    return result
