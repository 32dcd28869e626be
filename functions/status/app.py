"""Status routes (IAM-authenticated): GET /jobs/{jobId}, GET /jobs?status=&limit=&cursor= and GET /queue."""

from __future__ import annotations

import time
from functools import cache
from typing import Any, NamedTuple

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError

from lipsync.config import PlanLimits, QueueSettings
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import lambda_handler
from lipsync.plan.admission import DynamoAdmission
from lipsync.queue.status import queue_summary, queued_view

app = APIGatewayRestResolver()


class ListQuery(BaseModel):
    status: str | None = Field(default=None, pattern=r"^[A-Z_]{3,20}$")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


class Wiring(NamedTuple):
    store: DynamoJobStore
    admission: DynamoAdmission
    limits: PlanLimits


@cache
def wiring() -> Wiring:
    settings = QueueSettings.from_env()
    store = DynamoJobStore(settings.jobs_table)
    return Wiring(store, DynamoAdmission(settings.admission_table, store), PlanLimits.from_env())


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    store, admission, limits = wiring()
    job = store.get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return queued_view(job, store, admission, limits)


@app.get("/jobs")
def list_jobs() -> dict[str, Any]:
    try:
        query = ListQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as error:
        first = error.errors()[0]
        raise BadRequestError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from error
    try:
        jobs, cursor = wiring().store.list_jobs(status=query.status, limit=query.limit, cursor=query.cursor)
    except ValueError as error:  # a cursor that we did not hand out
        raise BadRequestError("cursor is not valid; use the nextCursor of a previous answer") from error
    return {"jobs": [job.public_view() for job in jobs], "nextCursor": cursor}


@app.get("/queue")
def get_queue() -> dict[str, Any]:
    store, admission, limits = wiring()
    return queue_summary(store, admission, limits, time.time())


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
