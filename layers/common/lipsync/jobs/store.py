"""The jobs table: the single source of truth for every job, and the job queue.

Every write is one atomic DynamoDB call (or one item of a transaction, see lipsync.plan.admission).
Status changes made by `advance` are conditional on moving forward (`statusRank` only
grows), so duplicate, late and out-of-order updates change nothing. The two ways back,
a job returned to the queue after a 429 or a transient failure, are explicit `Update`s with
their own conditions.

The queue is a sparse index: a QUEUED job carries `queue` (the index's partition) and
`queueKey` (`<arrival time>#<job id>`, its sort key). The dispatcher reads the head with one
Query; nothing ever scans.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from lipsync.jobs.model import HistoryEntry, Job, Source, status_rank, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATUS_INDEX = "status-updatedAt"
QUEUE_INDEX = "queue-order"
QUEUE_PARTITION = "queued"
HELD_PARTITION = "held"  # BUDGET_HOLD jobs, in the same arrival order


@dataclass
class Update:
    """One conditional update of a job record: run alone, or as one item of a transaction."""

    job_id: str
    set: dict[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()
    condition: str = "attribute_exists(jobId)"  # over #names from `names` and :values from `values`
    names: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    history: HistoryEntry | None = None

    def to_status(self, status: str, source: Source, detail: str | None = None) -> Update:
        self.set |= {"status": status, "statusRank": status_rank(status)}
        self.history = HistoryEntry(status=status, source=source, at=utc_now(), detail=detail)
        return self


def queue_key(arrived_at: str, job_id: str) -> str:
    return f"{arrived_at}#{job_id}"


class JobStore(Protocol):
    def create(self, job: Job, *, retention_days: int) -> tuple[bool, Job]: ...

    def get(self, job_id: str) -> Job | None: ...

    def advance(
        self,
        job_id: str,
        status: str,
        source: Source,
        *,
        fields: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> Job | None: ...

    def set_fields(self, job_id: str, fields: dict[str, Any]) -> Job: ...

    def apply(self, update: Update) -> Job | None: ...

    def list_jobs(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]: ...

    def queue_head(self, limit: int, *, partition: str = QUEUE_PARTITION) -> list[str]: ...

    def count_queued(self, before: str | None = None, *, partition: str = QUEUE_PARTITION) -> int: ...


def _to_dynamo(value: Any) -> Any:
    # DynamoDB numbers must be Decimal; a JSON round trip converts nested floats too.
    return json.loads(json.dumps(value), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {key: _from_dynamo(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(item) for item in value]
    return value


class Codec:
    """Python values <-> DynamoDB attribute values (shared with the admission table)."""

    def __init__(self) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    def item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {key: self._serializer.serialize(_to_dynamo(value)) for key, value in values.items()}

    def plain(self, item: dict[str, Any]) -> dict[str, Any]:
        return {key: _from_dynamo(self._deserializer.deserialize(value)) for key, value in item.items()}


class DynamoJobStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self.table = table_name
        self.codec = Codec()

    def _job(self, item: dict[str, Any]) -> Job:
        return Job.model_validate(self.codec.plain(item))

    # ------------------------------------------------------------------ operations
    def create(self, job: Job, *, retention_days: int) -> tuple[bool, Job]:
        """Create the record once; on a duplicate return the stored one. A QUEUED job joins the queue."""
        expires = datetime.now(UTC) + timedelta(days=retention_days)
        values = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        values |= {"statusRank": status_rank(job.status), "expiresAt": int(expires.timestamp())}
        if job.queue_key:
            values["queue"] = QUEUE_PARTITION
        try:
            self._client.put_item(
                TableName=self.table,
                Item=self.codec.item(values),
                ConditionExpression="attribute_not_exists(jobId)",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            existing = self.get(job.job_id)
            if existing is None:  # deleted in between: extremely unlikely, try once more
                return self.create(job, retention_days=retention_days)
            return False, existing
        return True, job

    def get(self, job_id: str) -> Job | None:
        answer = self._client.get_item(
            TableName=self.table, Key=self.codec.item({"jobId": job_id}), ConsistentRead=True
        )
        return self._job(answer["Item"]) if "Item" in answer else None

    def advance(
        self,
        job_id: str,
        status: str,
        source: Source,
        *,
        fields: dict[str, Any] | None = None,
        detail: str | None = None,
    ) -> Job | None:
        """Move the job to `status` if that is forward; return the new record, or None if nothing changed."""
        update = Update(
            job_id,
            set=dict(fields or {}),
            condition="attribute_exists(jobId) AND #rank < :rank",
            names={"#rank": "statusRank"},
            values={":rank": status_rank(status)},
        ).to_status(status, source, detail)
        return self.apply(update)

    def set_fields(self, job_id: str, fields: dict[str, Any]) -> Job:
        """Set fields that are not a status change (ids, tokens, output details); returns the new record."""
        job = self.apply(Update(job_id, set=fields))
        if job is None:
            raise LookupError(f"job {job_id} does not exist")
        return job

    def apply(self, update: Update) -> Job | None:
        """Run one conditional update; the new record, or None when the condition did not hold."""
        try:
            answer = self._client.update_item(**self.update_request(update), ReturnValues="ALL_NEW")
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return self._job(answer["Attributes"])

    def update_request(self, update: Update) -> dict[str, Any]:
        """The UpdateItem parameters for `update` (also a TransactWriteItems `Update`)."""
        values = {**update.set, "updatedAt": utc_now()}
        names = {f"#f{index}": name for index, name in enumerate(values)}
        clauses = [f"#f{index} = :v{index}" for index in range(len(values))]
        attribute_values = {f":v{index}": value for index, value in enumerate(values.values())}
        if update.history is not None:
            clauses.append("#history = list_append(if_not_exists(#history, :empty), :entry)")
            names["#history"] = "history"
            attribute_values |= {":entry": [update.history.model_dump(exclude_none=True)], ":empty": []}
        expression = "SET " + ", ".join(clauses)
        if update.remove:
            removed = {f"#r{index}": name for index, name in enumerate(update.remove)}
            names |= removed
            expression += " REMOVE " + ", ".join(removed)
        return {
            "TableName": self.table,
            "Key": self.codec.item({"jobId": update.job_id}),
            "UpdateExpression": expression,
            "ConditionExpression": update.condition,
            "ExpressionAttributeNames": names | update.names,
            "ExpressionAttributeValues": self.codec.item(attribute_values | update.values),
        }

    # ------------------------------------------------------------------ the queue
    def queue_head(self, limit: int, *, partition: str = QUEUE_PARTITION) -> list[str]:
        """The ids of the first `limit` queued (or held) jobs, in arrival order (the index is eventually
        consistent: a caller re-checks each job's status before claiming it)."""
        answer = self._client.query(
            TableName=self.table,
            IndexName=QUEUE_INDEX,
            KeyConditionExpression="#queue = :queue",
            ExpressionAttributeNames={"#queue": "queue"},
            ExpressionAttributeValues=self.codec.item({":queue": partition}),
            ScanIndexForward=True,
            Limit=limit,
        )
        return [str(self.codec.plain(item)["jobId"]) for item in answer.get("Items", [])]

    def count_queued(self, before: str | None = None, *, partition: str = QUEUE_PARTITION) -> int:
        """How many jobs wait (ahead of queue key `before`, if given): a keys-only COUNT query."""
        condition = "#queue = :queue" + (" AND #key < :before" if before else "")
        names = {"#queue": "queue"} | ({"#key": "queueKey"} if before else {})
        values = {":queue": partition} | ({":before": before} if before else {})
        total, start = 0, None
        while True:
            paging: dict[str, Any] = {"ExclusiveStartKey": start} if start else {}
            page = self._client.query(
                TableName=self.table,
                IndexName=QUEUE_INDEX,
                KeyConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=self.codec.item(values),
                Select="COUNT",
                **paging,
            )
            total += int(page.get("Count", 0))
            start = page.get("LastEvaluatedKey")
            if not start:
                return total

    # ------------------------------------------------------------------ listing
    def list_jobs(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]:
        """Newest first by status (the GSI), or every job (a scan) when no status is given."""
        from botocore.exceptions import ClientError

        paging: dict[str, Any] = {"Limit": limit}
        if cursor:
            paging["ExclusiveStartKey"] = json.loads(base64.urlsafe_b64decode(cursor.encode()))
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
                ExpressionAttributeValues=self.codec.item({":status": status}),
                ScanIndexForward=False,
                **paging,
            )
        return self._client.scan(TableName=self.table, **paging)
