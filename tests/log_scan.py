"""The log scan: every line any one-machine stack's functions logged during the test run is checked
for secrets, tokens and signed URLs before the stack stops (its logs go with it).

Registered once, as a plugin, by tests/conftest.py; the session fails if anything is found.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from local.stack import OneMachineStack

# What must never be written, whatever its value: signed URLs (S3's and the emulator's), the
# webhook URL's token, and sync.so's secret formats.
PATTERNS = {
    "a presigned S3 URL": re.compile(r"X-Amz-(Signature|Credential)=", re.IGNORECASE),
    "a signed output URL": re.compile(r"[?&]signature=[0-9a-f]{16,}"),
    "a webhook URL token": re.compile(r"token=[0-9a-f]{64}"),
    "a webhook signing secret": re.compile(r"whsec_[A-Za-z0-9_]+"),
}


@dataclass
class Scan:
    stacks: int = 0
    lines: int = 0
    findings: list[str] = field(default_factory=list)


SCAN = Scan()


def _known_secrets(stack: OneMachineStack) -> dict[str, str]:
    """The values this stack's secrets and tokens have (each must appear in no log)."""
    found = {
        "the sync.so API key": stack.emulator.config.api_key,
        "the emulator's current API key": stack.emulator.engine.api_key,
        "the webhook signing secret": stack.emulator.config.webhook_secret,
    }
    secrets = stack.client("secretsmanager")
    for logical_id, resource in stack.state.get("resources", {}).items():
        if resource.get("Type") == "AWS::SecretsManager::Secret":
            try:
                value = secrets.get_secret_value(SecretId=resource["Ref"])["SecretString"]
            except Exception:  # noqa: S112 - a secret a test deleted: nothing to look for
                continue
            if len(value) >= 12:  # the empty signing-secrets JSON is no secret
                found[f"secret {logical_id}"] = value
    dynamodb = stack.client("dynamodb")
    table = stack.state.get("jobs_table")
    if table:
        for page in dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page.get("Items", []):
                token = item.get("attempt", {}).get("M", {}).get("taskToken", {}).get("S")
                if token:
                    found[f"job {item['jobId']['S']}'s task token"] = token
    return found


def scan(stack: OneMachineStack) -> list[str]:
    """What in the stack's function logs is a secret."""
    if not stack.workers:
        return []
    # A value of a few characters (a fixture's key "k") would match any text: not a secret to look for.
    secrets = {name: value for name, value in _known_secrets(stack).items() if value and len(value) >= 8}
    findings = []
    for function in sorted(stack.workers):
        text = stack.function_logs(function)
        for what, value in secrets.items():
            if value in text:
                findings.append(f"{stack.stack_name}/{function}: {what}")
        for what, pattern in PATTERNS.items():
            if match := pattern.search(text):
                findings.append(f"{stack.stack_name}/{function}: {what} ({match.group(0)[:24]}...)")
    return findings


@pytest.fixture(scope="session", autouse=True)
def scan_every_stack() -> Iterator[None]:
    """Scan each stack's logs as it stops; fail the session on anything found."""
    original = OneMachineStack.stop

    def stop(self: OneMachineStack, *args: Any, **kwargs: Any) -> None:
        try:
            SCAN.findings.extend(scan(self))
            if self.workers:
                SCAN.stacks += 1
                SCAN.lines += sum(self.function_logs(function).count("\n") for function in self.workers)
        except Exception as error:
            if self.workers:
                SCAN.findings.append(f"{self.stack_name}: the log scan itself failed: {error!r}")
        original(self, *args, **kwargs)

    OneMachineStack.stop = stop  # type: ignore[method-assign]
    try:
        yield
    finally:
        OneMachineStack.stop = original  # type: ignore[method-assign]
    assert not SCAN.findings, SCAN.findings


# The figures reach the terminal summary: under xdist each worker sends its own to the controller.
def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["log_scan"] = [SCAN.stacks, SCAN.lines, len(SCAN.findings)]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    stacks, lines, findings = getattr(node, "workeroutput", {}).get("log_scan", [0, 0, 0])
    SCAN.stacks += stacks
    SCAN.lines += lines
    SCAN.findings.extend(["(a worker's finding)"] * findings)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCAN.stacks:
        terminalreporter.write_line(
            f"log scan: {SCAN.lines} lines from {SCAN.stacks} stacks, {len(SCAN.findings)} findings"
        )
