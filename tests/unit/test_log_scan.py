"""The log scan (tests/log_scan.py) finds what it is meant to find: it is no test that cannot fail."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import boto3
import pytest

from local.sync_emulator import EmulatorConfig
from tests.log_scan import scan


class StubStack:
    """What the scan reads of a stack: its workers' logs, the emulator, its resources and table."""

    def __init__(self, logs: dict[str, str]) -> None:
        config = EmulatorConfig(api_key="sk-live-secret-key", webhook_secret="whsec_topsecret")
        self.emulator = SimpleNamespace(config=config, engine=SimpleNamespace(api_key="sk-rotated-secret"))
        self.workers = dict.fromkeys(logs)
        self.stack_name = "stub"
        self._logs = logs
        secrets = boto3.client("secretsmanager", region_name="us-east-1")
        arn = secrets.create_secret(Name="token-key", SecretString="t0ken-key-value-64")["ARN"]
        self.state: dict[str, Any] = {
            "resources": {"WebhookTokenKey": {"Type": "AWS::SecretsManager::Secret", "Ref": arn}}
        }

    def function_logs(self, function: str) -> str:
        return self._logs[function]

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name="us-east-1")  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("line", "what"),
    [
        ('{"message": "create", "key": "sk-live-secret-key"}', "the sync.so API key"),
        ("401 with sk-rotated-secret", "the emulator's current API key"),
        ("signing with whsec_topsecret", "the webhook signing secret"),
        ("hmac key t0ken-key-value-64", "secret WebhookTokenKey"),
        ("GET https://b.s3.amazonaws.com/k?X-Amz-Signature=abc", "a presigned S3 URL"),
        ("https://x/out.mp4?expires=1&signature=" + "a" * 64, "a signed output URL"),
        ("https://api/webhooks/sync/j?token=" + "f" * 64, "a webhook URL token"),
    ],
)
def test_the_scan_reports_each_kind_of_secret(line: str, what: str) -> None:
    findings = scan(StubStack({"DispatchFunction": f"START\n{line}\nEND\n"}))  # type: ignore[arg-type]
    assert any(what in finding for finding in findings), findings


def test_ordinary_lines_pass() -> None:
    logs = {
        "SubmitFunction": '{"level":"INFO","message":"object processed","job_id":"0123","outcome":"queued"}\n'
    }
    assert scan(StubStack(logs)) == []  # type: ignore[arg-type]


def test_a_value_too_short_to_be_a_secret_is_not_searched_for() -> None:
    """A fixture's one-letter key would match every log; the patterns and real-length values still apply."""
    stack = StubStack({"SubmitFunction": "kicking the dispatcher\n"})
    stack.emulator.config = EmulatorConfig(api_key="k", webhook_secret="whsec_topsecret")
    assert scan(stack) == []  # type: ignore[arg-type]
    stack._logs["SubmitFunction"] += "with sk-rotated-secret\n"
    assert scan(stack) == ["stub/SubmitFunction: the emulator's current API key"]  # type: ignore[arg-type]
