"""Submit: S3 notifications from the submit queue -> sync.so generations and job executions.

Partial batch failures: a message whose submission hit a retryable sync.so error goes back to
the queue, invisible for the API's Retry-After (or a capped backoff), and is retried later.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import LifecycleTimings, SubmitSettings, read_secret
from lipsync.job_store import DynamoJobStore
from lipsync.observability import count, lambda_handler, logger
from lipsync.s3_events import created_objects
from lipsync.storage import S3Storage
from lipsync.submission import Submitter, retry_delay_seconds
from lipsync.sync_client import SyncClient, SyncRetryableError
from lipsync.workflow import StepFunctionsWorkflow

processor = BatchProcessor(event_type=EventType.SQS)


@cache
def submitter() -> Submitter:
    settings = SubmitSettings.from_env()
    return Submitter(
        settings=settings,
        timings=LifecycleTimings.model_validate(dict(os.environ)),
        store=DynamoJobStore(settings.jobs_table),
        storage=S3Storage(settings.media_bucket),
        sync=SyncClient(settings.sync_api_base_url, read_secret(settings.sync_api_key_secret)),
        workflow=StepFunctionsWorkflow(settings.state_machine_arn),
        token_key=read_secret(settings.webhook_token_key_secret),
    )


@cache
def sqs() -> Any:
    import boto3

    return boto3.client("sqs")


def queue_url(event_source_arn: str) -> str:
    _, _, _, region, account, name = event_source_arn.split(":", 5)
    return f"https://sqs.{region}.amazonaws.com/{account}/{name}"


def submit_record(record: SQSRecord) -> None:
    for created in created_objects(record.body):
        logger.append_keys(key=created.key)
        try:
            outcome, job = submitter().handle(created)
        except SyncRetryableError as error:
            delay = retry_delay_seconds(error, int(record.attributes.approximate_receive_count))
            sqs().change_message_visibility(
                QueueUrl=queue_url(record.event_source_arn),
                ReceiptHandle=record.receipt_handle,
                VisibilityTimeout=delay,
            )
            logger.warning("sync.so asked us to retry", extra={"reason": error.reason, "retry_in": delay})
            count("SubmitRetried")
            raise
        count(f"Jobs{outcome.capitalize()}")
        logger.info(
            "object processed",
            extra={
                "outcome": outcome,
                "job_id": job.job_id if job else None,
                "warnings": job.warnings if job else [],
            },
        )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=submit_record, processor=processor, context=context
    )
