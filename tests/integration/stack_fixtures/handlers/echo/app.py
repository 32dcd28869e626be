"""Answers an API Gateway proxy event with the event and the names of its environment variables."""

import json
import os
from typing import Any

import shared_util


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = {"event": event, "env": sorted(os.environ), "layer": shared_util.describe()}
    return {
        "statusCode": 201,
        "headers": {"Content-Type": "application/json", "X-Echo": "yes"},
        "multiValueHeaders": {"X-Multi": ["a", "b"]},
        "body": json.dumps(body),
    }
