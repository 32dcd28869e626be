"""The stack's API as a caller reaches it: at AWS as is, behind an AWS emulator at its execute-api route."""

from __future__ import annotations

import pytest

from lipsync.config import DispatchSettings
from lipsync.endpoints import aws_endpoint, reachable_api_url

STAGE_URL = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1"


@pytest.mark.parametrize(
    ("url", "endpoint", "reached"),
    [
        (STAGE_URL, None, STAGE_URL),  # AWS itself
        (STAGE_URL, "http://127.0.0.1:4566", "http://127.0.0.1:4566/_aws/execute-api/a1b2c3d4e5/v1"),
        (STAGE_URL + "/jobs", "http://ms:4566/", "http://ms:4566/_aws/execute-api/a1b2c3d4e5/v1/jobs"),
        ("https://lipsync.example.com/v1", "http://127.0.0.1:4566", "https://lipsync.example.com/v1"),
        (
            "https://a1.execute-api.cn-north-1.amazonaws.com.cn/v1",
            "http://e:1",
            "http://e:1/_aws/execute-api/a1/v1",
        ),
        ("http://127.0.0.1:9000/v1", "http://127.0.0.1:4566", "http://127.0.0.1:9000/v1"),  # a front door
    ],
)
def test_reachable_api_url(url: str, endpoint: str | None, reached: str) -> None:
    assert reachable_api_url(url, endpoint) == reached


@pytest.mark.parametrize(
    ("value", "endpoint"), [(None, None), ("", None), ("  ", None), ("http://e:1/", "http://e:1")]
)
def test_aws_endpoint_is_none_unless_set(value: str | None, endpoint: str | None) -> None:
    assert aws_endpoint({} if value is None else {"AWS_ENDPOINT_URL": value}) == endpoint


def test_the_dispatcher_hands_sync_so_the_emulators_route() -> None:
    environ = {
        "JOBS_TABLE": "jobs",
        "ADMISSION_TABLE": "admission",
        "SYNC_PLAN_CONCURRENCY": "1",
        "SYNC_API_BASE_URL": "https://api.sync.so",
        "SYNC_API_KEY_SECRET": "key",
        "DISPATCH_QUEUE_URL": "https://sqs/q",
        "MEDIA_BUCKET": "media",
        "WEBHOOK_TOKEN_KEY_SECRET": "token-key",
        "WEBHOOK_BASE_URL": STAGE_URL,
        "PRESIGNED_URL_SECONDS": "3600",
        "STATE_MACHINE_ARN": "arn:aws:states:eu-west-1:123456789012:stateMachine:x",
    }
    assert DispatchSettings.from_env(environ).webhook_url_base == STAGE_URL
    behind = DispatchSettings.from_env(environ | {"AWS_ENDPOINT_URL": "http://127.0.0.1:4566"})
    assert behind.webhook_url_base == "http://127.0.0.1:4566/_aws/execute-api/a1b2c3d4e5/v1"
