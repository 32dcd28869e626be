"""SQS consumer: counts every record it sees in the table; bodies starting with "fail" fail."""

import json
import os
import urllib.parse
from typing import Any

import boto3

TABLE = boto3.resource("dynamodb").Table(os.environ["TABLE"])


def _keys(body: str) -> list[str]:
    try:
        document = json.loads(body)
    except ValueError:
        return [body]
    if isinstance(document, dict) and "Records" in document:  # an S3 notification
        return ["s3:" + urllib.parse.unquote_plus(r["s3"]["object"]["key"]) for r in document["Records"]]
    if isinstance(document, dict) and document.get("Event") == "s3:TestEvent":
        return ["s3:TestEvent"]
    return [body]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    failures = []
    for record in event["Records"]:
        print(f"record {record['messageId']}: {record['body'][:60]}")
        for key in _keys(record["body"]):
            TABLE.update_item(
                Key={"pk": key},
                UpdateExpression="ADD seen :one SET kind = :kind, lastRecord = :record",
                ExpressionAttributeValues={":one": 1, ":kind": "consumer", ":record": json.dumps(record)},
            )
        if record["body"].startswith("fail"):
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}
