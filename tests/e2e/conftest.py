"""The whole pipeline on the one-machine stack, provisioned from the real template.yaml.

One stack serves the whole session (starting one costs a few seconds); each test uses its
own object names and resets the emulator's scenario and logs.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from boto3.dynamodb.types import TypeDeserializer
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from local.media import make_sample_audio, make_sample_video
from local.stack import OneMachineStack
from local.sync_emulator import EmulatorConfig

ROOT = Path(__file__).resolve().parents[2]
# Production timings scaled to seconds, as a user would override them (no test-only code paths).
TIMINGS = {
    "WebhookTimeoutSeconds": "4",
    "PollFirstIntervalSeconds": "1",
    "PollBackoffRate": "2",
    "PollMaxIntervalSeconds": "2",
    "MaxJobSeconds": "12",
}
WEBHOOK_SECRET = "whsec_e2e_secret"
TERMINAL = {"COMPLETED", "FAILED", "REJECTED", "TIMED_OUT", "INVALID"}


@dataclass(frozen=True)
class Media:
    video: bytes
    audio: bytes


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> Media:
    folder = tmp_path_factory.mktemp("media")
    make_sample_video(folder / "v.mp4")
    make_sample_audio(folder / "a.wav")
    return Media((folder / "v.mp4").read_bytes(), (folder / "a.wav").read_bytes())


@pytest.fixture(scope="session")
def stack() -> Iterator[OneMachineStack]:
    config = EmulatorConfig(webhook_secret=WEBHOOK_SECRET, processing_seconds=1.0, concurrency=3)
    with OneMachineStack(parameter_overrides=TIMINGS, emulator_config=config, stack_name="e2e") as running:
        yield running


def finished(job: dict[str, Any]) -> bool:
    """Terminal and written out: by finalize, or by submit for jobs sync.so never accepted."""
    return job["status"] in TERMINAL and ("finalizedAt" in job or "generationId" not in job)


class Pipeline:
    """What a test does to the stack, and what it reads back."""

    def __init__(self, stack: OneMachineStack, media: Media) -> None:
        self.stack = stack
        self.media = media
        self.bucket: str = stack.state["bucket"]
        self.s3 = stack.client("s3")
        self.dynamodb = stack.client("dynamodb")
        self.sfn = stack.client("stepfunctions")
        self.prefix = f"t{uuid.uuid4().hex[:8]}"

    # ------------------------------------------------------------------ input
    def put(self, key: str, body: bytes) -> dict[str, Any]:
        return self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)

    def drop_pair(self, stem: str) -> str:
        name = f"{self.prefix}/{stem}"
        self.put(f"inputs/{name}.mp4", self.media.video)
        self.put(f"inputs/{name}.wav", self.media.audio)
        return name

    def drop_manifest(self, stem: str, manifest: dict[str, Any] | bytes) -> str:
        name = f"{self.prefix}/{stem}"
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        self.put(f"jobs/{name}.json", body)
        return name

    # ------------------------------------------------------------------ jobs
    def jobs(self, name: str) -> list[dict[str, Any]]:
        items = self.dynamodb.scan(
            TableName=self.stack.state["jobs_table"],
            ConsistentRead=True,
            FilterExpression="#n = :n",
            ExpressionAttributeNames={"#n": "name"},
            ExpressionAttributeValues={":n": {"S": name}},
        )["Items"]
        deserializer = TypeDeserializer()
        return [{key: deserializer.deserialize(value) for key, value in item.items()} for item in items]

    def wait_job(
        self, name: str, until: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """The job named `name` once `until` holds (default: finished and its document written)."""
        check = until or finished
        deadline = time.monotonic() + timeout
        seen: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            seen = self.jobs(name)
            if seen and check(seen[0]):
                return seen[0]
            time.sleep(0.2)
        raise AssertionError(f"job {name!r} did not get there in {timeout} s; last seen: {seen}")

    def document(self, job_or_name: dict[str, Any] | str, timeout: float = 10) -> dict[str, Any]:
        """outputs/<name>.json; it is written just after the record, so give it a moment."""
        key = job_or_name["documentKey"] if isinstance(job_or_name, dict) else f"outputs/{job_or_name}.json"
        deadline = time.monotonic() + timeout
        while True:
            try:
                return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
            except self.s3.exceptions.NoSuchKey:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def versions(self, key: str) -> list[dict[str, Any]]:
        answer = self.s3.list_object_versions(Bucket=self.bucket, Prefix=key)
        return [version for version in answer.get("Versions", []) if version["Key"] == key]

    def execution_history(self, job_id: str) -> list[dict[str, Any]]:
        arn = self.stack.state["state_machine_arn"].replace(":stateMachine:", ":execution:") + f":{job_id}"
        return self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]

    # ------------------------------------------------------------------ sync.so side
    def api_calls(self, method: str, path_part: str = "") -> list[dict[str, Any]]:
        return [
            request
            for request in self.stack.emulator.requests()
            if request["method"] == method and path_part in request["path"]
        ]

    def generation_posts(self) -> list[dict[str, Any]]:
        return self.api_calls("POST", "/v2/generate")

    # ------------------------------------------------------------------ HTTP front door
    def signed_get(self, path: str) -> httpx.Response:
        url = f"{self.stack.state['api_url']}{path}"
        request = AWSRequest(method="GET", url=url)
        credentials = Credentials(
            self.stack.state["aws_access_key_id"], self.stack.state["aws_secret_access_key"]
        )
        SigV4Auth(credentials, "execute-api", self.stack.state["region"]).add_auth(request)
        return httpx.get(url, headers=dict(request.headers.items()))

    def token_key(self) -> str:
        secrets = self.stack.client("secretsmanager")
        arn = self.stack.workers["WebhookFunction"].environment()["WEBHOOK_TOKEN_KEY_SECRET"]
        return str(secrets.get_secret_value(SecretId=arn)["SecretString"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def pipeline(stack: OneMachineStack, media: Media) -> Iterator[Pipeline]:
    stack.emulator.reset()
    yield Pipeline(stack, media)
    stack.wait_idle(timeout=30)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """On a failure, attach the functions' logs: they are the only window into the workers."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    stack = item.funcargs.get("stack") if hasattr(item, "funcargs") else None
    if stack is None and hasattr(item, "funcargs") and "pipeline" in item.funcargs:
        stack = item.funcargs["pipeline"].stack
    if report.when == "call" and report.failed and stack is not None:
        for function in sorted(stack.workers):
            report.sections.append((f"{function} log (tail)", stack.function_logs(function)[-4000:]))
