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

from lipsync.jobs.names import NAME_PREFIX
from lipsync.syncso.webhook_auth import job_token, sign
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
TERMINAL = {"COMPLETED", "FAILED", "REJECTED", "CANCELED", "UNKNOWN", "TIMED_OUT", "STOPPED", "INVALID"}


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


def start_stack(name: str, parameters: dict[str, str] | None = None, **emulator: Any) -> OneMachineStack:
    """A stack from the real template; the plan's concurrency is the same on both sides unless told."""
    overrides = {"SyncPlanConcurrency": "3"} | TIMINGS | (parameters or {})  # a Creator plan unless told
    settings: dict[str, Any] = {"webhook_secret": WEBHOOK_SECRET, "processing_seconds": 1.0} | emulator
    if "concurrency" not in settings:  # `auto` follows the emulator's own plan (3 unless told)
        plan = overrides.get("SyncPlanConcurrency", "3")
        settings["concurrency"] = 3 if plan == "auto" else int(plan)
    return OneMachineStack(
        parameter_overrides=overrides,
        emulator_config=EmulatorConfig(**settings),
        stack_name=name,
        schedule_period_seconds=2.0,  # the leak sweep, every 2 s instead of every minute
    ).start()


@pytest.fixture(scope="session")
def stack() -> Iterator[OneMachineStack]:
    running = start_stack("e2e")
    try:
        yield running
    finally:
        running.stop()


def finished(job: dict[str, Any]) -> bool:
    """Final and written out (finalize, dispatch and stop mark it; intake writes INVALID ones at once)."""
    return job["status"] in TERMINAL and ("finalizedAt" in job or job["status"] == "INVALID")


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
        for suffix, body in (("mp4", self.media.video), ("wav", self.media.audio)):
            self.put(f"inputs/{name}.{suffix}", body)
        return name

    def drop_manifest(self, stem: str, manifest: dict[str, Any] | bytes) -> str:
        name = f"{self.prefix}/{stem}"
        body = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
        self.put(f"jobs/{name}.json", body)
        return name

    # ------------------------------------------------------------------ jobs
    def jobs(self, name: str) -> list[dict[str, Any]]:
        """The job named `name`: the owner of its output name (lipsync.jobs.names), read by id (moto's
        Scan is slow: ~1 s per 200 items); a scan only for a job that has no name of its own."""
        deserializer = TypeDeserializer()
        table = self.stack.state["jobs_table"]

        def read(key: str) -> dict[str, Any] | None:
            answer = self.dynamodb.get_item(TableName=table, Key={"jobId": {"S": key}}, ConsistentRead=True)
            item = answer.get("Item")
            return {k: deserializer.deserialize(v) for k, v in item.items()} if item else None

        claim = read(NAME_PREFIX + name)
        if claim is not None:
            job = read(str(claim["owner"]))
            return [job] if job else []
        items = self.dynamodb.scan(
            TableName=table,
            ConsistentRead=True,
            FilterExpression="#n = :n",
            ExpressionAttributeNames={"#n": "name"},
            ExpressionAttributeValues={":n": {"S": name}},
        )["Items"]
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

    def execution_arn(self, name: str) -> str:
        return (
            str(self.stack.state["state_machine_arn"]).replace(":stateMachine:", ":execution:") + f":{name}"
        )

    def execution_history(self, execution_name: str) -> list[dict[str, Any]]:
        arn = self.execution_arn(execution_name)
        return self.sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]

    def execution_input(self, execution_name: str) -> dict[str, Any]:
        answer = self.sfn.describe_execution(executionArn=self.execution_arn(execution_name))
        return dict(json.loads(answer["input"]))

    # ------------------------------------------------------------------ sync.so side
    def api_calls(self, method: str, path_part: str = "") -> list[dict[str, Any]]:
        return [
            request
            for request in self.stack.emulator.requests()
            if request["method"] == method and path_part in request["path"]
        ]

    def generation_posts(self) -> list[dict[str, Any]]:
        """The creates (`POST /v2/generate` exactly: estimates are POSTs to /v2/generations/estimate)."""
        return [request for request in self.api_calls("POST") if request["path"] == "/v2/generate"]

    # ------------------------------------------------------------------ HTTP front door
    def signed_get(self, path: str) -> httpx.Response:
        url = f"{self.stack.state['api_url']}{path}"
        request = AWSRequest(method="GET", url=url)
        credentials = Credentials(
            self.stack.state["aws_access_key_id"], self.stack.state["aws_secret_access_key"]
        )
        SigV4Auth(credentials, "execute-api", self.stack.state["region"]).add_auth(request)
        # A cold status function on a busy 2-core machine can take seconds: the test is not about latency.
        return httpx.get(url, headers=dict(request.headers.items()), timeout=30)

    def deliver_webhook(self, job_id: str, payload: dict[str, Any]) -> int:
        """A delivery with valid credentials (the job's URL token and a current signature)."""
        body = json.dumps(payload).encode()
        token = job_token(self.token_key(), job_id)
        url = f"{self.stack.state['api_url']}/webhooks/sync/{job_id}?token={token}"
        signature = sign(WEBHOOK_SECRET, body, int(time.time()))
        return httpx.post(url, content=body, headers={"Sync-Signature": signature}, timeout=30).status_code

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
