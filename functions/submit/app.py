"""Submit (intake): S3 notifications from the submit queue -> QUEUED jobs in the job queue.

It never creates a generation and never waits: every object becomes a job record (or an INVALID
one with its document) at once, with its cost estimate (sync.so's estimate endpoint, else the
price table), the S3 event is finished, and the dispatcher is woken. A message
fails (and is redelivered, then dead-lettered) only when AWS itself fails.
"""

from __future__ import annotations

from functools import cache, partial
from typing import Any

import httpx
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import IntakeSettings, secret_reader
from lipsync.jobs.events import EventBridgeJobEvents
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import count, lambda_handler, logger
from lipsync.plan.cost import CostEstimator
from lipsync.plan.kicks import SqsKicker
from lipsync.plan.prices import PriceTable
from lipsync.queue.intake import Intake
from lipsync.queue.redelivery import retry_sooner
from lipsync.s3_events import ObjectCreated, created_objects
from lipsync.storage import S3Storage
from lipsync.syncso.client import SyncClient

ESTIMATE_TIMEOUT = httpx.Timeout(3.0, connect=2.0)  # an estimate is worth little waiting: fall back

processor = BatchProcessor(event_type=EventType.SQS)


@cache
def sqs() -> Any:
    import boto3

    return boto3.client("sqs")


@cache
def intake() -> tuple[Intake, SqsKicker]:
    settings = IntakeSettings.from_env()
    kicker = SqsKicker(settings.dispatch_queue_url)
    store = DynamoJobStore(settings.jobs_table)
    sync = None
    if settings.sync_api_base_url and settings.sync_api_key_secret:
        sync = SyncClient(
            settings.sync_api_base_url, secret_reader(settings.sync_api_key_secret), timeout=ESTIMATE_TIMEOUT
        )
    estimator = CostEstimator(PriceTable.from_json(settings.price_table_usd_per_second), sync)
    storage = S3Storage(settings.media_bucket)
    return (
        Intake(settings, store, storage, kicker, EventBridgeJobEvents.from_env(), estimator),
        kicker,
    )


def intake_record(queued: list[str], record: SQSRecord) -> None:
    for created in created_objects(record.body):
        logger.append_keys(key=created.key)
        try:
            outcome, job = intake()[0].handle(created)
        except Exception as error:
            receives = int(record.attributes.approximate_receive_count)
            if receives >= intake()[0].max_receive_count:
                report_dead_letter(created, error)
            elif queue_url := IntakeSettings.from_env().submit_queue_url:
                retry_sooner(sqs(), queue_url, record.receipt_handle, receives)
            raise
        if outcome == "queued":
            queued.append(created.key)
        count(f"Jobs{outcome.capitalize()}")
        logger.info(
            "object processed",
            extra={
                "outcome": outcome,
                "job_id": job.job_id if job else None,
                "warnings": job.warnings if job else [],
            },
        )


def report_dead_letter(created: ObjectCreated, error: Exception) -> None:
    """Best effort: the message is going to the dead-letter queue (and its alarm) either way."""
    try:
        key = intake()[0].report_failure(created, error)
    except Exception:
        logger.exception("could not write the error document for a dead-lettered object")
        return
    count("IntakeDeadLettered")
    logger.error("object dead-lettered", extra={"error_document": key, "error": type(error).__name__})


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    queued: list[str] = []
    answer = process_partial_response(
        event=event, record_handler=partial(intake_record, queued), processor=processor, context=context
    )
    if queued:  # one kick per batch: the dispatcher takes as many jobs as fit
        intake()[1].kick(0, "jobs queued")
    return answer
