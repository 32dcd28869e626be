"""AwaitWebhook's task: store the execution's task token on the job (see lipsync.generation.webhooks)."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import StoreSettings
from lipsync.generation.webhooks import arm_webhook_wait
from lipsync.generation.workflow import StepFunctionsWorkflow
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import lambda_handler, logger


@cache
def dependencies() -> tuple[DynamoJobStore, StepFunctionsWorkflow]:
    return DynamoJobStore(StoreSettings.from_env().jobs_table), StepFunctionsWorkflow()


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    store, workflow = dependencies()
    logger.append_keys(job_id=event["jobId"])
    result = arm_webhook_wait(store, workflow, event["jobId"], event["generationId"], event["taskToken"])
    logger.info("webhook wait armed", extra=result)
    return result
