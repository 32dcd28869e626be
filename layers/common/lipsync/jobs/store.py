"""The jobs table: the single source of truth for every job, the job queue, and output names.

Writes are `Change`s from `lipsync.jobs.transitions` (one conditional UpdateItem each, or one
item of a transaction that lipsync.plan.admission runs with the plan's slots), and the create
of a record, atomic with the claim of its output names (`lipsync.jobs.names`).

Lanes are a sparse index: a job in a lane carries `queue` (the index's partition: `queued`,
`held` or `ended`) and `queueKey` (`<time>#<job id>`, its sort key). The dispatcher reads the
queue's head with one Query, the sweep reads `ended` jobs whose ending was not announced yet;
nothing ever scans except the unfiltered job listing.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Attr, Key

from lipsync.jobs import dynamo
from lipsync.jobs.model import Job
from lipsync.jobs.names import NAME_PREFIX, NameClaim
from lipsync.jobs.transitions import Change, F, Lane

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATUS_INDEX = "status-updatedAt"
QUEUE_INDEX = "queue-order"


@dataclass(frozen=True)
class Created:
    job: Job


@dataclass(frozen=True)
class Exists:
    job: Job  # the record already stored under the id


@dataclass(frozen=True)
class NamesTaken:
    stems: list[str]  # output names another line of jobs holds


CreateResult = Created | Exists | NamesTaken


class JobStore(Protocol):
    def create(self, job: Job, *, retention_days: int, names: Sequence[NameClaim] = ...) -> CreateResult: ...

    def get(self, job_id: str) -> Job | None: ...

    def name_owner(self, stem: str) -> str | None: ...

    def apply(self, change: Change) -> Job | None: ...

    def request(self, change: Change) -> dict[str, Any]: ...

    def list_jobs(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]: ...

    def queue_head(self, limit: int, *, lane: Lane = ...) -> list[str]: ...

    def count_queued(self, before: str | None = None, *, lane: Lane = ...) -> int: ...

    def lane_before(self, lane: Lane, before: str, limit: int) -> list[str]: ...


class DynamoJobStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self.table = table_name

    def _job(self, attributes: dict[str, Any]) -> Job:
        return Job.model_validate(dynamo.plain(attributes))

    # ------------------------------------------------------------------ records
    def create(self, job: Job, *, retention_days: int, names: Sequence[NameClaim] = ()) -> CreateResult:
        """Create the record once, with its output names if no other line of jobs holds them."""
        expires = int((datetime.now(UTC) + timedelta(days=retention_days)).timestamp())
        values = job.model_dump(mode="json", by_alias=True, exclude_none=True) | {"expiresAt": expires}
        if job.queue_key and job.status in ("QUEUED", "INVALID"):
            values["queue"] = Lane.QUEUED if job.status == "QUEUED" else Lane.ENDED
        new = dynamo.condition(Attr("jobId").not_exists())
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": dynamo.item(values),
            "ConditionExpression": new.text,
            "ExpressionAttributeNames": new.names,
        }
        items: list[Any] = [{"Put": put}]
        for claim in names:
            held = dynamo.condition(Attr("jobId").not_exists() | Attr("lineage").eq(claim.lineage))
            items.append(
                {
                    "Put": {
                        "TableName": self.table,
                        "Item": dynamo.item(claim.item() | {"expiresAt": expires}),
                        "ConditionExpression": held.text,
                        "ExpressionAttributeNames": held.names,
                        "ExpressionAttributeValues": held.values,
                    }
                }
            )
        try:
            if len(items) == 1:
                self._client.put_item(**put)
            else:
                self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.ConditionalCheckFailedException:
            return self._existing(job)
        except self._client.exceptions.TransactionCanceledException as error:
            codes = dynamo.cancellation_codes(error)
            if codes and codes[0] == "ConditionalCheckFailed":
                return self._existing(job)
            taken = [
                claim.stem
                for claim, code in zip(names, codes[1:], strict=False)
                if code == "ConditionalCheckFailed"
            ]
            if taken:
                return NamesTaken(taken)
            raise  # a conflict with another writer: the caller's retry (SQS redelivery) tries again
        return Created(job)

    def _existing(self, job: Job) -> CreateResult:
        existing = self.get(job.job_id)
        if existing is None:  # deleted in between: extremely unlikely, the redelivery tries again
            raise LookupError(f"job {job.job_id} vanished while it was being created")
        return Exists(existing)

    def name_owner(self, stem: str) -> str | None:
        """The job that owns output name `stem` (lipsync.jobs.names), if any."""
        answer = self._client.get_item(
            TableName=self.table, Key=dynamo.item({"jobId": NAME_PREFIX + stem}), ConsistentRead=True
        )
        owner = dynamo.plain(answer.get("Item", {})).get("owner")
        return str(owner) if owner else None

    def get(self, job_id: str) -> Job | None:
        answer = self._client.get_item(
            TableName=self.table, Key=dynamo.item({"jobId": job_id}), ConsistentRead=True
        )
        item = answer.get("Item")
        return self._job(item) if item and "status" in item else None

    def apply(self, change: Change) -> Job | None:
        """Run one conditional update; the new record, or None when the condition did not hold."""
        try:
            answer = self._client.update_item(**self.request(change), ReturnValues="ALL_NEW")
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return self._job(answer["Attributes"])

    def request(self, change: Change) -> dict[str, Any]:
        """The UpdateItem parameters of `change` (also a TransactWriteItems `Update`)."""
        append = {"history": change.history} if change.history else None
        update = dynamo.update(change.set, change.remove, append)
        guard = dynamo.condition(change.condition)
        return {
            "TableName": self.table,
            "Key": dynamo.item({"jobId": change.job_id}),
            "UpdateExpression": update.text,
            "ConditionExpression": guard.text,
            "ExpressionAttributeNames": update.names | guard.names,
            "ExpressionAttributeValues": update.values | guard.values,
        }

    # ------------------------------------------------------------------ lanes
    def queue_head(self, limit: int, *, lane: Lane = Lane.QUEUED) -> list[str]:
        """The ids of the first `limit` jobs of a lane, in order (the index is eventually consistent:
        a caller re-checks each job's status before acting on it)."""
        return self._lane(lane, None, limit)

    def lane_before(self, lane: Lane, before: str, limit: int) -> list[str]:
        """The first `limit` jobs of a lane whose key sorts before `before` (e.g. ended before a time)."""
        return self._lane(lane, before, limit)

    def _lane_query(self, lane: Lane, before: str | None) -> dict[str, Any]:
        """A Query of one lane of the queue-order index (the part ahead of key `before`, if given)."""
        in_lane = Key(F.LANE).eq(str(lane))
        built = dynamo.condition(in_lane & Key(F.LANE_KEY).lt(before) if before else in_lane, key=True)
        return {
            "TableName": self.table,
            "IndexName": QUEUE_INDEX,
            "KeyConditionExpression": built.text,
            "ExpressionAttributeNames": built.names,
            "ExpressionAttributeValues": built.values,
        }

    def _lane(self, lane: Lane, before: str | None, limit: int) -> list[str]:
        answer = self._client.query(**self._lane_query(lane, before), ScanIndexForward=True, Limit=limit)
        return [str(dynamo.plain(item)["jobId"]) for item in answer.get("Items", [])]

    def count_queued(self, before: str | None = None, *, lane: Lane = Lane.QUEUED) -> int:
        """How many jobs are in a lane (ahead of key `before`, if given): a keys-only COUNT query."""
        total, start = 0, None
        while True:
            paging: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = self._client.query(**self._lane_query(lane, before), Select="COUNT", **paging)
            total += int(page.get("Count", 0))
            start = page.get("LastEvaluatedKey")
            if not start:
                return total

    # ------------------------------------------------------------------ listing
    def list_jobs(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """Newest first by status (the GSI), or every job (a scan) when no status is given.
        ValueError for a cursor this store did not hand out."""
        from botocore.exceptions import ClientError

        paging: dict[str, Any] = {"Limit": limit}
        if cursor:
            paging["ExclusiveStartKey"] = decode_cursor(cursor)
        try:
            answer = self._page(status, paging)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ValidationException":
                raise ValueError("the cursor does not fit this query") from error
            raise
        last = answer.get("LastEvaluatedKey")
        next_cursor = base64.urlsafe_b64encode(json.dumps(last).encode()).decode() if last else None
        return [self._job(item) for item in answer.get("Items", [])], next_cursor

    def _page(self, status: str | None, paging: dict[str, Any]) -> Any:
        if status:
            return self._client.query(
                TableName=self.table,
                IndexName=STATUS_INDEX,
                KeyConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=dynamo.item({":status": status}),
                ScanIndexForward=False,
                **paging,
            )
        # Output-name claims share the table; only job records have a status.
        return self._client.scan(
            TableName=self.table,
            FilterExpression="attribute_exists(#status)",
            ExpressionAttributeNames={"#status": "status"},
            **paging,
        )


def decode_cursor(cursor: str) -> dict[str, Any]:
    """A listing cursor back to DynamoDB's start key; ValueError for anything else."""
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, UnicodeError, ValueError, RecursionError) as error:
        raise ValueError("the cursor is not one this API handed out") from error
    valid = isinstance(decoded, dict) and all(
        isinstance(name, str)
        and isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)) in ("S", "N")
        and isinstance(next(iter(value.values())), str)
        for name, value in decoded.items()
    )
    if not valid or not decoded:
        raise ValueError("the cursor is not one this API handed out")
    return dict(decoded)
