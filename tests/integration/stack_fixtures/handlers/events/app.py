"""Target of the fixture's schedules and EventBridge rule, and a probe for injected AWS faults.

An event with "calls" makes those AWS calls and reports each outcome (botocore's retry
count, or the error code that reached the handler); any other event is recorded in the
table under "event:<key>" (the Input's key, the execution's name, or the detail-type).
"""

import json
import os
from typing import Any

import boto3
from botocore.exceptions import ClientError

TABLE = os.environ["TABLE"]
DYNAMODB = boto3.client("dynamodb")
S3 = boto3.client("s3")
SFN = boto3.client("stepfunctions")


def _call(name: str) -> dict[str, Any]:
    key = {"pk": {"S": "probe"}}
    try:
        if name == "dynamodb:UpdateItem":
            answer = DYNAMODB.update_item(
                TableName=TABLE,
                Key=key,
                UpdateExpression="ADD seen :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
        elif name == "dynamodb:GetItem":
            answer = DYNAMODB.get_item(TableName=TABLE, Key=key)
        elif name == "s3:PutObject":
            answer = S3.put_object(Bucket=os.environ["BUCKET"], Key="probe/object.txt", Body=b"probe")
        elif name == "states:StartExecution":
            answer = SFN.start_execution(
                stateMachineArn=os.environ["OUTCOMES_ARN"], input='{"outcome": "ok"}'
            )
        else:
            raise ValueError(name)
    except ClientError as error:
        return {
            "ok": False,
            "code": error.response["Error"]["Code"],
            "message": error.response["Error"].get("Message"),
            "status": error.response["ResponseMetadata"]["HTTPStatusCode"],
            "retries": error.response["ResponseMetadata"].get("RetryAttempts"),
        }
    return {"ok": True, "retries": answer["ResponseMetadata"]["RetryAttempts"]}


def handler(event: dict[str, Any], context: Any) -> Any:
    if "calls" in event:
        return {name: _call(name) for name in event["calls"]}
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    key = event.get("key") or (event.get("detail") or {}).get("name") or event.get("detail-type")
    DYNAMODB.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"event:{key}"}},
        UpdateExpression="ADD seen :one SET lastEvent = :event",
        ExpressionAttributeValues={":one": {"N": "1"}, ":event": {"S": json.dumps(event)}},
    )
    return {"recorded": key}
