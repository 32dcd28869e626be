"""The project's DynamoDB tables, created in moto (in-process, no sockets) exactly as template.yaml
declares them, for unit tests of the code that relies on their conditions and transactions."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import boto3

from lipsync.jobs import dynamo
from lipsync.jobs.model import Job, is_final
from lipsync.jobs.store import DynamoJobStore
from lipsync.jobs.transitions import Lane
from lipsync.plan.admission import DynamoAdmission
from local.stack.template import load_template

ROOT = Path(__file__).resolve().parents[1]
JOBS_TABLE = "jobs"
ADMISSION_TABLE = "admission"
TABLE_KEYS = ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes", "BillingMode")


@cache
def _definition(logical_id: str) -> dict[str, Any]:
    properties = load_template(ROOT / "template.yaml")["Resources"][logical_id]["Properties"]
    return {key: properties[key] for key in TABLE_KEYS if key in properties}


class SeededStore(DynamoJobStore):
    """The real store, plus test helpers: seed a record as stored, and read raw items."""

    def put(self, job: Job) -> Job:
        values = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        if job.queue_key and job.status == "QUEUED":
            values["queue"] = Lane.QUEUED
        elif job.queue_key and job.status == "BUDGET_HOLD":
            values["queue"] = Lane.HELD
        elif job.queue_key and is_final(job.status) and not job.finalized_at:
            values["queue"] = Lane.ENDED
        self._client.put_item(TableName=self.table, Item=dynamo.item(values))
        found = self.get(job.job_id)
        if found is None:
            raise LookupError(job.job_id)
        return found

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        pages = self._client.get_paginator("scan").paginate(TableName=self.table)
        return {
            str(plain["jobId"]): plain
            for page in pages
            for plain in (dynamo.plain(item) for item in page.get("Items", []))
            if "status" in plain
        }


def make_tables() -> tuple[SeededStore, DynamoAdmission]:
    """Create both tables (inside an active `mock_aws`) and return the store and admission over them."""
    client = boto3.client("dynamodb", region_name="us-east-1")
    existing = set(client.list_tables()["TableNames"])
    for name, logical_id in ((JOBS_TABLE, "JobsTable"), (ADMISSION_TABLE, "AdmissionTable")):
        if name not in existing:
            client.create_table(TableName=name, **_definition(logical_id))
    store = SeededStore(JOBS_TABLE, client)
    return store, DynamoAdmission(ADMISSION_TABLE, store, client)
