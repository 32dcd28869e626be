"""The jobs table: the single source of truth for every job.

Every write is one atomic DynamoDB call. Status changes are conditional on moving
forward (`statusRank` only grows), so duplicate, late and out-of-order updates change
nothing, whatever their source.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from lipsync.jobs import HistoryEntry, Job, Source, status_rank, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

STATUS_INDEX = "status-updatedAt"


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

    def list_jobs(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Job], str | None]: ...


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


class DynamoJobStore:
    def __init__(self, table_name: str, client: DynamoDBClient | None = None) -> None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table_name
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()

    # ------------------------------------------------------------------ helpers
    def _item(self, values: dict[str, Any]) -> dict[str, Any]:
        return {key: self._serializer.serialize(_to_dynamo(value)) for key, value in values.items()}

    def _job(self, item: dict[str, Any]) -> Job:
        return Job.model_validate(
            {key: _from_dynamo(self._deserializer.deserialize(value)) for key, value in item.items()}
        )

    # ------------------------------------------------------------------ operations
    def create(self, job: Job, *, retention_days: int) -> tuple[bool, Job]:
        """Create the record once; on a duplicate return the stored one."""
        expires = datetime.now(UTC) + timedelta(days=retention_days)
        values = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        values |= {"statusRank": status_rank(job.status), "expiresAt": int(expires.timestamp())}
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._item(values),
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
            TableName=self._table, Key=self._item({"jobId": job_id}), ConsistentRead=True
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
        now = utc_now()
        entry = HistoryEntry(status=status, source=source, at=now, detail=detail)
        values = {
            "status": status,
            "statusRank": status_rank(status),
            "updatedAt": now,
            **(fields or {}),
        }
        names = {f"#f{index}": name for index, name in enumerate(values)}
        assignments = [f"#f{index} = :v{index}" for index in range(len(values))]
        expression = "SET " + ", ".join(
            [*assignments, "#history = list_append(if_not_exists(#history, :empty), :entry)"]
        )
        attribute_values = self._item({f":v{index}": value for index, value in enumerate(values.values())})
        attribute_values |= self._item(
            {":entry": [entry.model_dump(exclude_none=True)], ":empty": [], ":rank": status_rank(status)}
        )
        try:
            answer = self._client.update_item(
                TableName=self._table,
                Key=self._item({"jobId": job_id}),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(jobId) AND #rank < :rank",
                ExpressionAttributeNames={**names, "#history": "history", "#rank": "statusRank"},
                ExpressionAttributeValues=attribute_values,
                ReturnValues="ALL_NEW",
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return None
        return self._job(answer["Attributes"])

    def set_fields(self, job_id: str, fields: dict[str, Any]) -> Job:
        """Set fields that are not a status change (ids, tokens, output details); returns the new record."""
        values = {**fields, "updatedAt": utc_now()}
        names = {f"#f{index}": name for index, name in enumerate(values)}
        expression = "SET " + ", ".join(f"#f{index} = :v{index}" for index in range(len(values)))
        answer = self._client.update_item(
            TableName=self._table,
            Key=self._item({"jobId": job_id}),
            UpdateExpression=expression,
            ConditionExpression="attribute_exists(jobId)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=self._item(
                {f":v{i}": value for i, value in enumerate(values.values())}
            ),
            ReturnValues="ALL_NEW",
        )
        return self._job(answer["Attributes"])

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
                TableName=self._table,
                IndexName=STATUS_INDEX,
                KeyConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues=self._item({":status": status}),
                ScanIndexForward=False,
                **paging,
            )
        return self._client.scan(TableName=self._table, **paging)
