"""Status routes (IAM-authenticated): GET /jobs/{jobId} and GET /jobs?status=&limit=&cursor=."""

from __future__ import annotations

from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field, ValidationError

from lipsync.config import StoreSettings
from lipsync.job_store import DynamoJobStore
from lipsync.observability import lambda_handler

app = APIGatewayRestResolver()


class ListQuery(BaseModel):
    status: str | None = Field(default=None, pattern=r"^[A-Z_]{3,20}$")
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = Field(default=None, max_length=2048)


@cache
def store() -> DynamoJobStore:
    return DynamoJobStore(StoreSettings.from_env().jobs_table)


@app.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    job = store().get(job_id)
    if job is None:
        raise NotFoundError(f"no job {job_id}")
    return job.public_view()


@app.get("/jobs")
def list_jobs() -> dict[str, Any]:
    try:
        query = ListQuery.model_validate(app.current_event.query_string_parameters or {})
    except ValidationError as error:
        first = error.errors()[0]
        raise BadRequestError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from error
    try:
        jobs, cursor = store().list_jobs(status=query.status, limit=query.limit, cursor=query.cursor)
    except ValueError as error:  # a cursor that we did not hand out
        raise BadRequestError("cursor is not valid; use the nextCursor of a previous answer") from error
    return {"jobs": [job.public_view() for job in jobs], "nextCursor": cursor}


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
