"""The one-machine stack (local/stack) against real local servers, with a small fixture template.

The fixture handlers in stack_fixtures/handlers record what they saw (environment,
events) so that each test can check what the stack really delivered.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import boto3
import httpx
import pytest
from botocore import parsers
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HeadersDict
from botocore.config import Config
from botocore.credentials import Credentials
from moto.awslambda.models import LambdaFunction

from lipsync.config import environment
from local.stack import FunctionError, HookNotActive, OneMachineStack, TemplateError
from local.stack import workers as stack_workers
from local.stack.aws_middleware import AwsMiddleware, _service_model
from local.stack.events import STATUS_CHANGE, AsyncInvoker, matches
from local.stack.provision import RuleSource, ScheduleSource, SqsSource
from local.stack.sqs_poller import SqsPoller
from local.sync_emulator import EmulatorConfig
from tests.waiting import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "stack_fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"


@pytest.fixture(scope="module")
def stack() -> Iterator[OneMachineStack]:
    config = EmulatorConfig(api_key="sk-fixture-key", webhook_secret="whsec_fixture", processing_seconds=1.0)
    with OneMachineStack(
        template_path=FIXTURE_TEMPLATE,
        parameter_overrides={"Greeting": "hi"},
        emulator_config=config,
        stack_name="fixture",
    ) as running:
        yield running


def _seen(stack: OneMachineStack, key: str) -> int:
    item = stack.client("dynamodb").get_item(TableName=stack.state["jobs_table"], Key={"pk": {"S": key}})
    return int(item.get("Item", {}).get("seen", {}).get("N", 0))


def _recorded(stack: OneMachineStack, key: str) -> dict[str, Any] | None:
    """The last event the fixture's EventsFunction recorded under `key`, with its count as "_seen"."""
    table = stack.state["jobs_table"]
    item = stack.client("dynamodb").get_item(TableName=table, Key={"pk": {"S": f"event:{key}"}}).get("Item")
    if not item:
        return None
    return {**json.loads(item["lastEvent"]["S"]), "_seen": int(item["seen"]["N"])}


def _invoke_together(stack: OneMachineStack, function: str, events: list[dict[str, Any]]) -> list[Any]:
    with ThreadPoolExecutor(len(events)) as pool:
        return list(pool.map(lambda event: stack.invoke(function, event), events))


def _most_at_once(results: list[dict[str, Any]]) -> int:
    """The most handler runs that overlapped, from the start/end times the handlers recorded."""
    # An end sorts before a start at the same instant: touching is not overlapping.
    moments = sorted([(r["started"], 1) for r in results] + [(r["ended"], -1) for r in results])
    running = peak = 0
    for _, step in moments:
        running += step
        peak = max(peak, running)
    return peak


def _signed_get(url: str, secret: str) -> httpx.Response:
    request = AWSRequest(method="GET", url=url, headers={"Host": httpx.URL(url).netloc.decode()})
    SigV4Auth(Credentials("testing", secret), "execute-api", "us-east-1").add_auth(request)
    return httpx.get(url, headers=dict(request.headers))


# ---------------------------------------------------------------------- provisioning
def test_resources_are_provisioned_from_the_template(stack: OneMachineStack) -> None:
    s3, sqs = stack.client("s3"), stack.client("sqs")
    bucket = stack.state["bucket"]
    assert bucket == "fixture-media"
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicAcls"]
    queue = sqs.get_queue_attributes(QueueUrl=stack.state["submit_queue_url"], AttributeNames=["All"])
    attributes = queue["Attributes"]
    assert attributes["VisibilityTimeout"] == "1"
    assert json.loads(attributes["RedrivePolicy"])["maxReceiveCount"] == 2
    assert json.loads(attributes["Policy"])["Statement"][0]["Action"] == "sqs:SendMessage"
    table = stack.client("dynamodb").describe_table(TableName=stack.state["jobs_table"])["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["kind-pk"]
    ttl = stack.client("dynamodb").describe_time_to_live(TableName=stack.state["jobs_table"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expiresAt"
    secret_arn = stack.state["resources"]["Secret"]["Ref"]
    secret = stack.client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    assert len(secret) == 40
    assert secret.isalnum()
    definition = stack.client("stepfunctions").describe_state_machine(
        stateMachineArn=stack.state["state_machine_arn"]
    )["definition"]
    assert "${" not in definition
    assert stack.workers["StepFunction"].spec.arn in definition
    role = stack.client("lambda").get_function(FunctionName="fixture-ConsumerFunction")["Configuration"][
        "Role"
    ]
    policy = stack.client("iam").get_role_policy(
        RoleName=role.rsplit("/", 1)[1], PolicyName="ConsumerFunctionRolePolicy0"
    )
    assert policy["PolicyDocument"]["Statement"][0]["Action"] == "dynamodb:UpdateItem"


def test_notifications_fire_only_for_the_prefix(stack: OneMachineStack) -> None:
    s3 = stack.client("s3")
    s3.put_object(Bucket=stack.state["bucket"], Key="other/b.txt", Body=b"x")
    s3.put_object(Bucket=stack.state["bucket"], Key="in/my file.txt", Body=b"x")
    stack.wait_idle(timeout=15)
    assert _seen(stack, "s3:in/my file.txt") == 1
    assert _seen(stack, "s3:other/b.txt") == 0


def test_environment_is_resolved_per_function(stack: OneMachineStack) -> None:
    result = stack.invoke("StepFunction", {"action": "env"})
    env, spec = result["env"], stack.workers["StepFunction"].spec
    assert env["TABLE"] == stack.state["jobs_table"]
    assert env["GREETING"] == "hi"  # the override, not the default
    assert env["STEP_ONLY"] == "1"
    assert env["SUFFIX"] == "-on"
    assert env["QUEUE_NAME"] == "fixture-Queue"
    assert env["BUCKET_FROM_SPLIT"] == "fixture-media"
    assert env["SECRET_ARN"].startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:")
    assert "ECHO_ONLY" not in env
    assert "CONSUMER_ONLY" not in env
    assert "HOME" not in env  # nothing leaks from the stack's own environment
    assert env["AWS_ENDPOINT_URL"] == stack.endpoint_url
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == spec.name == "fixture-StepFunction"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["PYTHONPATH"].split(os.pathsep) == [str(FIXTURES / "handlers/steps"), str(FIXTURES / "layer")]
    assert result["cwd"] == str(FIXTURES / "handlers/steps")
    assert result["layer"] == "layer-ok"
    context = result["context"]
    assert context["function_name"] == spec.name
    assert context["invoked_function_arn"] == spec.arn
    assert context["memory_limit_in_mb"] == 256
    assert 0 < context["remaining_ms"] <= 2000
    echo = stack.workers["EchoFunction"].environment()
    assert echo["ECHO_ONLY"] == "1"
    assert "STEP_ONLY" not in echo
    consumer = stack.workers["ConsumerFunction"].environment()
    # The stack supplies Tuning's SyncApiBaseUrl and PublicApiUrl (its emulator, its front door).
    tuning = json.loads(consumer["TUNING"])
    assert tuning == {"SyncApiBaseUrl": stack.emulator.url, "PublicApiUrl": f"{stack.front_door.url}/v1"}


def test_worker_starts_cold_once_then_stays_warm(stack: OneMachineStack) -> None:
    worker = stack.workers["StepFunction"]
    first = stack.invoke("StepFunction", {"action": "report"})
    second = stack.invoke("StepFunction", {"action": "report"})
    assert first["pid"] == second["pid"]
    assert second["invocations"] == first["invocations"] + 1
    cold_starts = worker.cold_starts
    stack.invoke("StepFunction", {"action": "report"})
    assert worker.cold_starts == cold_starts
    logs = stack.function_logs("StepFunction")
    assert "START RequestId:" in logs
    assert "REPORT RequestId:" in logs


def test_timeout_kills_and_restarts_the_worker(stack: OneMachineStack) -> None:
    before = stack.invoke("StepFunction", {"action": "report"})
    with pytest.raises(FunctionError) as failure:
        stack.invoke("StepFunction", {"action": "sleep", "seconds": 5})
    assert failure.value.error_type == "Sandbox.Timedout"
    assert "Task timed out after 2.00 seconds" in failure.value.error_message
    after = stack.invoke("StepFunction", {"action": "report"})
    assert after["pid"] != before["pid"]
    assert after["invocations"] == 1  # a cold start
    assert "Task timed out after 2.00 seconds" in stack.function_logs("StepFunction")


def test_crash_is_an_error_and_the_next_invoke_restarts(stack: OneMachineStack) -> None:
    with pytest.raises(FunctionError) as failure:
        stack.invoke("StepFunction", {"action": "crash"})
    assert failure.value.error_type == "Runtime.ExitError"
    assert stack.invoke("StepFunction", {"action": "report"})["invocations"] == 1


def test_exception_is_lambdas_error_payload(stack: OneMachineStack) -> None:
    with pytest.raises(FunctionError) as failure:
        stack.invoke("StepFunction", {"action": "raise", "message": "no luck"})
    assert failure.value.error_type == "BoomError"
    assert failure.value.error_message == "no luck"
    assert any("app.py" in frame for frame in failure.value.payload["stackTrace"])


def _run_execution(stack: OneMachineStack, payload: dict[str, Any]) -> dict[str, Any]:
    sfn = stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.state["state_machine_arn"], name=str(uuid.uuid4()), input=json.dumps(payload)
    )["executionArn"]

    def finished() -> dict[str, Any] | None:
        description = sfn.describe_execution(executionArn=arn)
        return None if description["status"] == "RUNNING" else dict(description)

    return dict(eventually(finished, timeout=20))


def test_step_functions_catch_matches_the_error_type(stack: OneMachineStack) -> None:
    execution = _run_execution(stack, {"action": "raise", "message": "caught"})
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["error"]["Error"] == "BoomError"


def test_step_functions_retry_matches_the_error_type(stack: OneMachineStack) -> None:
    execution = _run_execution(stack, {"action": "flaky", "key": "retry-once"})
    assert execution["status"] == "SUCCEEDED"
    result = json.loads(execution["output"])["result"]
    assert result["action"] == "flaky"
    assert result["env"]["AWS_LAMBDA_FUNCTION_NAME"] == "fixture-StepFunction"  # the real handler ran


def test_invoking_without_the_hook_fails_loudly(
    stack: OneMachineStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LambdaFunction, "_invoke_lambda", stack_workers._original_invoke_lambda)
    with pytest.raises(HookNotActive):
        stack.invoke("StepFunction", {"action": "report"})


# ---------------------------------------------------------------------- parallel invocations
def test_concurrent_invocations_run_in_parallel_subprocesses(stack: OneMachineStack) -> None:
    worker = stack.workers["ParallelFunction"]
    assert worker.concurrency == 4  # the stack's default
    first, second = sorted(
        _invoke_together(stack, "ParallelFunction", [{"action": "sleep", "seconds": 1}] * 2),
        key=lambda r: r["started"],
    )
    assert second["started"] < first["ended"]  # the second ran while the first slept
    assert first["pid"] != second["pid"]


def test_invocations_beyond_the_limit_wait_for_a_free_worker(stack: OneMachineStack) -> None:
    worker = stack.workers["ParallelFunction"]
    results = _invoke_together(stack, "ParallelFunction", [{"action": "sleep", "seconds": 1}] * 6)
    assert [r["action"] for r in results] == ["sleep"] * 6  # waiting is not an error
    assert _most_at_once(results) <= 4
    assert worker.peak_concurrency == 4
    assert len({r["pid"] for r in results}) == worker.cold_starts == 4
    assert stack.function_logs("ParallelFunction").count("INIT_START") == 4  # one log for all of them


def test_reserved_concurrency_of_one_serialises(stack: OneMachineStack) -> None:
    worker = stack.workers["SerialFunction"]
    assert worker.concurrency == 1
    configured = stack.client("lambda").get_function_concurrency(FunctionName=worker.spec.name)
    assert configured["ReservedConcurrentExecutions"] == 1
    first, second = sorted(
        _invoke_together(stack, "SerialFunction", [{"action": "sleep", "seconds": 0.5}] * 2),
        key=lambda r: r["started"],
    )
    assert second["started"] >= first["ended"]
    assert first["pid"] == second["pid"]
    assert worker.cold_starts == 1
    assert worker.peak_concurrency == 1


def test_a_timeout_kills_only_its_own_subprocess(stack: OneMachineStack) -> None:
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(stack.invoke, "StepFunction", {"action": "sleep", "seconds": 5})
        eventually(lambda: stack.workers["StepFunction"].running == 1)
        quick = stack.invoke("StepFunction", {"action": "report"})  # another subprocess, meanwhile
        with pytest.raises(FunctionError) as failure:
            slow.result()
    assert failure.value.error_type == "Sandbox.Timedout"
    again = stack.invoke("StepFunction", {"action": "report"})
    assert again["pid"] == quick["pid"]  # the quick one's subprocess survived the timeout
    assert again["invocations"] == quick["invocations"] + 1


# ---------------------------------------------------------------------- front door
def test_front_door_builds_the_proxy_event(stack: OneMachineStack) -> None:
    api = stack.state["api_url"]
    response = httpx.post(f"{api}/echo/abc?x=1&x=2&y=z", content=b'{"hello": 1}', headers={"X-Test": "t"})
    assert response.status_code == 201
    assert response.headers["X-Echo"] == "yes"
    assert response.headers.get_list("X-Multi") == ["a", "b"]
    body = response.json()
    event = body["event"]
    assert event["resource"] == "/echo/{name}"
    assert event["path"] == "/echo/abc"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"name": "abc"}
    assert event["queryStringParameters"] == {"x": "2", "y": "z"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["z"]}
    assert event["headers"]["X-Test"] == "t"
    assert event["multiValueHeaders"]["X-Test"] == ["t"]
    assert event["stageVariables"] is None
    assert event["body"] == '{"hello": 1}'
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["resourcePath"] == "/echo/{name}"
    assert context["stage"] == "v1"
    assert context["path"] == "/v1/echo/abc"
    assert context["accountId"] == "123456789012"
    assert context["apiId"] == stack.state["resources"]["Api"]["Ref"]
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userArn"] is None
    assert "ECHO_ONLY" in body["env"]


def test_front_door_base64_encodes_binary_bodies(stack: OneMachineStack) -> None:
    response = httpx.post(f"{stack.state['api_url']}/echo/bin", content=b"\xff\x00\xfe")
    event = response.json()["event"]
    assert event["isBase64Encoded"] is True
    assert event["body"] == "/wD+"


def test_front_door_rejects_unknown_routes_and_large_bodies(stack: OneMachineStack) -> None:
    api = stack.state["api_url"]
    for response in (
        httpx.get(f"{api}/nope"),
        httpx.get(f"{api}/echo/abc"),
        httpx.post(f"{stack.front_door.url}/x"),
    ):
        assert response.status_code == 403
        assert response.json() == {"message": "Missing Authentication Token"}
    too_big = httpx.post(f"{api}/echo/big", content=b"x" * (10 * 1024 * 1024 + 1))
    assert too_big.status_code == 413


def test_front_door_verifies_sigv4_on_iam_routes(stack: OneMachineStack) -> None:
    url = f"{stack.state['api_url']}/private?q=1"
    missing = httpx.get(url)
    assert missing.status_code == 403
    assert missing.json() == {"message": "Missing Authentication Token"}
    wrong = _signed_get(url, "not-the-secret")
    assert wrong.status_code == 403
    assert wrong.json()["message"].startswith("The request signature we calculated does not match")
    signed = _signed_get(url, "testing")
    assert signed.status_code == 201
    identity = signed.json()["event"]["requestContext"]["identity"]
    assert identity["accessKey"] == "testing"
    assert identity["userArn"] == "arn:aws:iam::123456789012:user/testing"


# ---------------------------------------------------------------------- SQS poller
def test_partial_batch_failure_redelivers_only_the_failed_message_then_dead_letters_it(
    stack: OneMachineStack,
) -> None:
    sqs, queue = stack.client("sqs"), stack.state["submit_queue_url"]
    sqs.send_message(
        QueueUrl=queue,
        MessageBody="ok-1",
        MessageAttributes={"a": {"DataType": "String", "StringValue": "v"}},
    )
    sqs.send_message(QueueUrl=queue, MessageBody="fail-1")
    dead_letter_queue = stack.state["dead_letter_queue_url"]

    def dead_lettered() -> list[dict[str, Any]]:
        return list(sqs.receive_message(QueueUrl=dead_letter_queue, WaitTimeSeconds=1).get("Messages", []))

    moved = eventually(dead_lettered, timeout=20)
    assert [m["Body"] for m in moved] == ["fail-1"]
    assert _seen(stack, "ok-1") == 1  # deleted after the first batch
    assert _seen(stack, "fail-1") == 2  # maxReceiveCount deliveries, then the DLQ
    item = stack.client("dynamodb").get_item(TableName=stack.state["jobs_table"], Key={"pk": {"S": "ok-1"}})
    record = json.loads(item["Item"]["lastRecord"]["S"])
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == stack.state["resources"]["Queue"]["Arn"]
    assert record["awsRegion"] == "us-east-1"
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(record["attributes"])
    assert record["messageAttributes"]["a"]["stringValue"] == "v"
    assert record["messageAttributes"]["a"]["dataType"] == "String"
    assert record["md5OfBody"]


def _test_queue(stack: OneMachineStack, name: str, batch_size: int = 1, window: int = 0) -> SqsSource:
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName=f"fixture-test-{name}", Attributes={"VisibilityTimeout": "30"})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return SqsSource("Recorder", arn, url, batch_size, False, None, True, maximum_batching_window=window)


class _BatchRecorder:
    """An invoker for SqsPoller that records batches and how many ran at once."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.batches: list[list[str]] = []
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def __call__(self, function: str, event: dict[str, Any]) -> tuple[Any, bool]:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        time.sleep(self.seconds)
        with self._lock:
            self.running -= 1
            self.batches.append([r["body"] for r in event["Records"]])
        return None, False


def test_sqs_batches_run_in_parallel_up_to_the_maximum_concurrency(stack: OneMachineStack) -> None:
    assert [p.concurrency for p in stack.pollers] == [2]  # the Consumer's ScalingConfig.MaximumConcurrency
    sqs, source = stack.client("sqs"), _test_queue(stack, "parallel")
    for index in range(6):
        sqs.send_message(QueueUrl=source.queue_url, MessageBody=f"m{index}")
    recorder = _BatchRecorder(0.5)
    poller = SqsPoller(source, sqs, recorder, concurrency=2)
    poller.start()
    try:
        eventually(lambda: len(recorder.batches) == 6, timeout=20)
    finally:
        poller.stop()
    assert recorder.peak == poller.peak_in_flight == 2
    assert sorted(body for batch in recorder.batches for body in batch) == [f"m{i}" for i in range(6)]
    attributes = sqs.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["All"])["Attributes"]
    assert (
        attributes["ApproximateNumberOfMessages"]
        == attributes["ApproximateNumberOfMessagesNotVisible"]
        == "0"
    )


@pytest.mark.parametrize(("window", "expected"), [(1, [["a", "b"]]), (0, [["a"], ["b"]])])
def test_sqs_batching_window(stack: OneMachineStack, window: int, expected: list[list[str]]) -> None:
    sqs, source = stack.client("sqs"), _test_queue(stack, f"window-{window}", batch_size=10, window=window)
    recorder = _BatchRecorder(0)
    poller = SqsPoller(source, sqs, recorder, concurrency=1)
    poller.start()
    try:
        sqs.send_message(QueueUrl=source.queue_url, MessageBody="a")
        time.sleep(0.4)
        sqs.send_message(QueueUrl=source.queue_url, MessageBody="b")
        eventually(lambda: sum(map(len, recorder.batches)) == 2)
    finally:
        poller.stop()
    assert recorder.batches == expected


# ---------------------------------------------------------------------- EventBridge: schedules and rules
def test_event_pattern_matching() -> None:
    pattern = {
        "source": ["aws.states"],
        "detail-type": [STATUS_CHANGE],
        "detail": {"status": ["FAILED", "TIMED_OUT", "ABORTED"], "stateMachineArn": ["arn:one"]},
    }
    detail: dict[str, Any] = {"status": "ABORTED", "stateMachineArn": "arn:one", "error": None}
    event: dict[str, Any] = {"source": "aws.states", "detail-type": STATUS_CHANGE, "detail": detail}
    assert matches(pattern, event)
    assert not matches(pattern, {**event, "detail": {**detail, "status": "SUCCEEDED"}})
    assert not matches(pattern, {**event, "detail": {**detail, "stateMachineArn": "arn:two"}})
    assert not matches(pattern, {**event, "source": "aws.events"})
    assert not matches(pattern, {k: v for k, v in event.items() if k != "detail"})  # a missing field
    assert matches({"a": {"b": {"c": [1, 2]}}}, {"a": {"b": {"c": 2, "d": "x"}}, "e": 3})  # any depth
    assert matches({"tags": ["x"]}, {"tags": ["w", "x"]})  # an array in the event: any element


def test_async_invocations_are_retried_twice_then_dropped() -> None:
    calls: list[str] = []

    def flaky(function: str, event: Any) -> tuple[Any, bool]:
        calls.append(event["name"])
        if event["name"] == "always" or calls.count(event["name"]) < 3:
            return {"errorType": "Boom"}, True
        return "ok", False

    invoker = AsyncInvoker(flaky, retry_delay=0.01)
    try:
        recovered = invoker.submit("Fn", "test", {"name": "third-time"})
        dropped = invoker.submit("Fn", "test", {"name": "always"})
        assert recovered.done.wait(5)
        assert dropped.done.wait(5)
    finally:
        invoker.stop()
    assert (recovered.attempts, recovered.errored, recovered.result, recovered.dropped) == (
        3,
        False,
        "ok",
        False,
    )
    assert (dropped.attempts, dropped.errored, dropped.dropped) == (3, True, True)


def _start_outcome(stack: OneMachineStack, outcome: str) -> str:
    arn = stack.client("stepfunctions").start_execution(
        stateMachineArn=stack.state["resources"]["Outcomes"]["Ref"],
        name=f"{outcome}-{uuid.uuid4()}",
        input=json.dumps({"outcome": outcome}),
    )["executionArn"]
    return str(arn)


def test_execution_status_changes_reach_the_rules_target(stack: OneMachineStack) -> None:
    sfn, sources = stack.client("stepfunctions"), stack.event_sources
    assert sources is not None
    assert sources.watcher is not None
    watcher = sources.watcher
    succeeded, failed, stopped = (_start_outcome(stack, o) for o in ("ok", "fail", "wait"))
    eventually(lambda: watcher.status_seen(stopped) == "RUNNING")
    sfn.stop_execution(executionArn=stopped)

    for arn, status in ((failed, "FAILED"), (stopped, "ABORTED")):
        name = arn.rsplit(":", 1)[1]
        event = eventually(lambda: _recorded(stack, name))  # noqa: B023 - used right away
        assert {
            k: event[k] for k in ("version", "detail-type", "source", "account", "region", "resources")
        } == {
            "version": "0",
            "detail-type": "Step Functions Execution Status Change",
            "source": "aws.states",
            "account": "123456789012",
            "region": "us-east-1",
            "resources": [arn],
        }
        uuid.UUID(event["id"])
        assert event["time"].endswith("Z")
        detail = event["detail"]
        assert detail["executionArn"] == arn
        assert detail["stateMachineArn"] == stack.state["resources"]["Outcomes"]["Ref"]
        assert detail["name"] == name
        assert detail["status"] == status
        assert json.loads(detail["input"]) == {"outcome": "fail" if status == "FAILED" else "wait"}
        assert detail["inputDetails"] == {"included": True}
        assert isinstance(detail["startDate"], int)
        assert isinstance(detail["stopDate"], int)
        assert detail["stopDate"] >= detail["startDate"]
        assert detail["output"] is None
        assert detail["outputDetails"] is None
        expected = ("Doomed", "asked to fail") if status == "FAILED" else (None, None)
        assert (detail["error"], detail["cause"]) == expected

    eventually(lambda: watcher.status_seen(succeeded) == "SUCCEEDED")
    time.sleep(3 * watcher.interval)  # a few more polls: nothing is delivered twice
    assert _recorded(stack, succeeded.rsplit(":", 1)[1]) is None  # the pattern leaves SUCCEEDED out
    assert not [d for d in sources.invoker.deliveries if d.event.get("resources") == [succeeded]]
    for arn in (failed, stopped):
        assert (_recorded(stack, arn.rsplit(":", 1)[1]) or {})["_seen"] == 1


def test_disabled_schedules_are_provisioned_but_do_not_fire(stack: OneMachineStack) -> None:
    assert stack.event_sources is not None
    assert stack.event_sources.timers == []
    events = stack.client("events")
    for schedule in stack.provisioned.schedules:
        assert events.describe_rule(Name=schedule.rule_name)["State"] == "DISABLED"
    # SAM names each event's rule <function><event>.
    assert {r["event"] for r in stack.state["event_rules"]} == {
        "EventsFunctionTick",
        "EventsFunctionRaw",
        "EventsFunctionEnded",
    }


def test_schedules_fire_their_input_or_the_scheduled_event() -> None:
    with OneMachineStack(
        FIXTURE_TEMPLATE, {"SchedulesEnabled": "true"}, stack_name="schedules", schedule_period_seconds=0.3
    ) as running:
        events, function = running.client("events"), running.workers["EventsFunction"].spec
        tick, raw = sorted(running.provisioned.schedules, key=lambda s: s.event != "EventsFunctionTick")
        rule = events.describe_rule(Name=tick.rule_name)
        assert (rule["ScheduleExpression"], rule["State"]) == ("rate(1 minute)", "ENABLED")
        (target,) = events.list_targets_by_rule(Rule=tick.rule_name)["Targets"]
        assert target["Arn"] == function.arn
        assert json.loads(target["Input"]) == {"key": "tick"}

        eventually(lambda: (_recorded(running, "tick") or {}).get("_seen", 0) >= 2)
        assert (_recorded(running, "tick") or {})["key"] == "tick"
        scheduled = eventually(lambda: _recorded(running, "Scheduled Event"))
        assert scheduled["source"] == "aws.events"
        assert scheduled["resources"] == [raw.rule_arn]
        assert scheduled["detail"] == {}
        assert (scheduled["account"], scheduled["region"], scheduled["version"]) == (
            "123456789012",
            "us-east-1",
            "0",
        )

        sources = running.event_sources
        assert sources is not None
        failing = sources.invoker.submit("EventsFunction", "test", {"fail": True})
        assert failing.done.wait(15)
        assert (failing.attempts, failing.dropped) == (3, True)  # Lambda's two async retries
        assert failing.result["errorMessage"] == "asked to fail"

        assert sources.watcher is not None
        running_arn = running.client("stepfunctions").start_execution(
            stateMachineArn=running.state["resources"]["Outcomes"]["Ref"], input='{"outcome": "wait"}'
        )["executionArn"]
        eventually(lambda: sources.watcher.status_seen(running_arn) == "RUNNING")  # type: ignore[union-attr]
    # Shutdown aborts the running execution after the watcher stopped: no event for it.
    assert not [d for d in sources.invoker.deliveries if d.source.startswith("rule:")]


# ---------------------------------------------------------------------- moto middleware
def _s3_error(response: httpx.Response) -> tuple[str | None, str | None]:
    error = ElementTree.fromstring(response.content)  # noqa: S314 - the local stack's own answer
    return error.findtext("Code"), error.findtext("Message")


def _start_of_a_second() -> None:
    """Sign right after a second begins: X-Amz-Date and Expires count whole seconds."""
    time.sleep(1.02 - time.time() % 1)


def test_presigned_urls_expire(stack: OneMachineStack) -> None:
    bucket = stack.state["bucket"]
    stack.client("s3").put_object(Bucket=bucket, Key="presigned/a.txt", Body=b"hello")
    for version in ("s3v4", "s3"):  # SigV4 (X-Amz-Expires) and SigV2 (Expires), botocore's us-east-1 default
        s3 = boto3.client(
            "s3",
            endpoint_url=stack.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(signature_version=version),
        )
        _start_of_a_second()
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "presigned/a.txt"}, ExpiresIn=1
        )
        assert ("X-Amz-Expires=1" in url) == (version == "s3v4")
        fresh = httpx.get(url)
        assert (fresh.status_code, fresh.content) == (200, b"hello")
        time.sleep(2)
        expired = httpx.get(url)
        assert expired.status_code == 403, version
        assert _s3_error(expired) == ("AccessDenied", "Request has expired")
    week = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "presigned/a.txt"}, ExpiresIn=5
    )
    assert httpx.get(week).status_code == 200  # SigV2 has no one-week limit
    v4 = boto3.client(
        "s3",
        endpoint_url=stack.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4"),
    )
    too_long = v4.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "presigned/a.txt"}, ExpiresIn=604801
    )
    rejected = httpx.get(too_long)
    assert rejected.status_code == 400
    assert _s3_error(rejected)[0] == "AuthorizationQueryParametersError"


def test_injected_aws_faults_hit_only_the_named_function(stack: OneMachineStack) -> None:
    calls = ["dynamodb:UpdateItem", "dynamodb:GetItem", "s3:PutObject", "states:StartExecution"]
    assert stack.workers["EventsFunction"].environment()["AWS_SDK_UA_APP_ID"] == "EventsFunction"
    hits_before, calls_before = stack.aws_fault_hits(), stack.aws_calls()
    stack.inject_aws_fault(
        "EventsFunction", "dynamodb:UpdateItem", count=2, code="ProvisionedThroughputExceededException"
    )
    stack.inject_aws_fault(
        "EventsFunction", "dynamodb:GetItem", code="ResourceNotFoundException", message="gone"
    )
    stack.inject_aws_fault(
        "EventsFunction", "s3:PutObject", status=403, code="AccessDenied", message="denied"
    )
    stack.inject_aws_fault("EventsFunction", "states:StartExecution", code="ExecutionLimitExceeded")
    # Requests that are not the function's pass: the stack's own client has no app id.
    stack.client("dynamodb").get_item(TableName=stack.state["jobs_table"], Key={"pk": {"S": "probe"}})

    result = stack.invoke("EventsFunction", {"calls": calls})
    assert result["dynamodb:UpdateItem"] == {"ok": True, "retries": 2}  # botocore retried both throttles
    assert {k: result["dynamodb:GetItem"][k] for k in ("ok", "code", "message", "status")} == {
        "ok": False,
        "code": "ResourceNotFoundException",
        "message": "gone",
        "status": 400,
    }
    assert (result["s3:PutObject"]["code"], result["s3:PutObject"]["status"]) == ("AccessDenied", 403)
    assert result["s3:PutObject"]["message"] == "denied"
    assert result["states:StartExecution"]["code"] == "ExecutionLimitExceeded"
    assert result["states:StartExecution"]["message"] == "Rate exceeded"

    def delta(now: dict[tuple[str, str], int], before: dict[tuple[str, str], int]) -> dict[str, int]:
        return {
            op: now.get(("EventsFunction", op), 0) - before.get(("EventsFunction", op), 0) for op in calls
        }

    assert delta(stack.aws_fault_hits(), hits_before) == dict(zip(calls, [2, 1, 1, 1], strict=True))
    assert delta(stack.aws_calls(), calls_before) == dict(zip(calls, [3, 1, 1, 1], strict=True))
    again = stack.invoke("EventsFunction", {"calls": calls})  # the faults are spent
    assert all(outcome == {"ok": True, "retries": 0} for outcome in again.values())

    with pytest.raises(ValueError, match="no operation"):
        stack.inject_aws_fault("EventsFunction", "dynamodb:UpdateItme")
    with pytest.raises(KeyError):
        stack.inject_aws_fault("NoSuchFunction", "dynamodb:UpdateItem")
    stack.inject_aws_fault("EventsFunction", "dynamodb:GetItem")
    stack.clear_aws_faults()
    assert stack.invoke("EventsFunction", {"calls": ["dynamodb:GetItem"]})["dynamodb:GetItem"]["ok"]


@pytest.mark.parametrize(
    ("service", "operation", "method", "path", "target", "status", "code"),
    [
        (
            "dynamodb",
            "GetItem",
            "POST",
            "/",
            "DynamoDB_20120810.GetItem",
            400,
            "ProvisionedThroughputExceededException",
        ),
        (
            "sqs",
            "SendMessage",
            "POST",
            "/",
            "AmazonSQS.SendMessage",
            400,
            "RequestThrottled",
        ),  # query-compatible
        (
            "states",
            "StartExecution",
            "POST",
            "/",
            "AWSStepFunctions.StartExecution",
            400,
            "ExecutionLimitExceeded",
        ),
        (
            "lambda",
            "Invoke",
            "POST",
            "/2015-03-31/functions/fn/invocations",
            None,
            429,
            "TooManyRequestsException",
        ),
        ("s3", "PutObject", "PUT", "/bucket/some/key.txt", None, 503, "SlowDown"),
        ("iam", "GetRole", "POST", "/", None, 400, "Throttling"),  # query protocol: Action in the body
    ],
)
def test_fault_answers_parse_as_botocore_expects(
    service: str, operation: str, method: str, path: str, target: str | None, status: int, code: str
) -> None:
    """Each protocol's error shape, read back by the installed botocore's own response parser."""
    forwarded: list[bytes] = []

    def moto(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        forwarded.append(environ["wsgi.input"].read())
        start_response("200 OK", [])
        return [b""]

    middleware = AwsMiddleware(moto)
    middleware.inject_fault("Fn", f"{service}:{operation}", count=1, status=status, code=code, message="m")
    form = service == "iam"
    body = b"Action=GetRole&RoleName=r&Version=2010-05-08" if form else b"{}"
    scope = f"testing/20260101/us-east-1/{service}/aws4_request"
    answers: list[tuple[str, list[tuple[str, str]], bytes]] = []
    started: list[tuple[Any, ...]] = []  # start_response's arguments
    for _ in range(2):  # the fault, then moto
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "HTTP_USER_AGENT": "Boto3/1.0 md/Botocore#1.0 app/Fn",
            "HTTP_AUTHORIZATION": f"AWS4-HMAC-SHA256 Credential={scope}, SignedHeaders=host, Signature=0",
            "CONTENT_TYPE": "application/x-www-form-urlencoded" if form else "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            **({"HTTP_X_AMZ_TARGET": target} if target else {}),
        }
        content = b"".join(middleware(environ, lambda *args: started.append(args)))
        answers.append((started[-1][0], started[-1][1], content))
    (fault_status, headers, content), (moto_status, _, _) = answers
    assert fault_status.startswith(f"{status} ")
    model = _service_model(service)
    error = parsers.create_parser(model.protocol).parse(
        {"status_code": status, "headers": HeadersDict(headers), "body": content},
        model.operation_model(operation).output_shape,
    )["Error"]
    assert (error["Code"], error["Message"]) == (code, "m")
    assert moto_status == "200 OK"
    assert forwarded == [body]  # only the second request reached moto, with its body intact
    assert middleware.fault_hits() == {("Fn", f"{service}:{operation}"): 1}
    assert middleware.calls() == {("Fn", f"{service}:{operation}"): 2}


# ---------------------------------------------------------------------- failures
def test_missing_handler_module_fails_at_provisioning(stack: OneMachineStack) -> None:
    broken = OneMachineStack(FIXTURE_TEMPLATE, {"StepHandler": "missing.handler"}, stack_name="broken-module")
    with pytest.raises(TemplateError, match=r"StepFunction.*Handler 'missing.handler'"):
        broken.start()


def test_missing_handler_function_fails_at_invoke(stack: OneMachineStack) -> None:
    with OneMachineStack(
        FIXTURE_TEMPLATE, {"StepHandler": "app.nope"}, stack_name="broken-function"
    ) as broken:
        with pytest.raises(FunctionError) as failure:
            broken.invoke("StepFunction", {})
        assert failure.value.error_type == "Runtime.HandlerNotFound"


def test_ref_to_a_missing_parameter_names_it(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: !Ref Nope\n"
    )
    with pytest.raises(TemplateError, match="Unresolvable Ref 'Nope'"):
        OneMachineStack(template, stack_name="missing-ref").start()


def test_parameter_without_value_names_it(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Parameters:\n  Needed:\n    Type: String\nResources: {}\n")
    with pytest.raises(TemplateError, match="Parameter 'Needed' has no value"):
        OneMachineStack(template, stack_name="missing-parameter").start()


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("{Type: Schedule, Properties: {Schedule: rate(30 seconds)}}", "EventBridge has no seconds"),
        ("{Type: Schedule, Properties: {Schedule: rate(1 minutes)}}", "1 takes the singular unit"),
        ("{Type: Schedule, Properties: {Schedule: 'cron(0 12 * * ? *)'}}", "only rate"),
        (
            "{Type: Schedule, Properties: {Schedule: rate(1 minute), Input: '{not json'}}",
            "Input must be a JSON",
        ),
        (
            "{Type: EventBridgeRule, Properties: {Pattern: {source: [x]}, EventBusName: other}}",
            "default event bus",
        ),
        ("{Type: SQS, Properties: {Queue: !GetAtt Queue.Arn, BatchSize: 20}}", "BatchSize must be"),
        (
            "{Type: SQS, Properties: {Queue: !GetAtt Queue.Arn, ScalingConfig: {MaximumConcurrency: 1}}}",
            "2..1000",
        ),
        (
            "{Type: Kinesis, Properties: {Stream: arn:aws:kinesis:us-east-1:123456789012:stream/s, "
            "StartingPosition: LATEST}}",
            "only SQS event sources",
        ),
    ],
)
def test_event_sources_aws_would_reject_are_errors(tmp_path: Path, event: str, message: str) -> None:
    template = tmp_path / "template.yaml"
    template.write_text(
        textwrap.dedent(
            f"""\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              Queue:
                Type: AWS::SQS::Queue
              Fn:
                Type: AWS::Serverless::Function
                Properties:
                  CodeUri: {FIXTURES / "handlers" / "steps"}
                  Handler: app.handler
                  Runtime: python3.12
                  Events:
                    Trigger: {event}
            """
        )
    )
    with pytest.raises(TemplateError, match=message):
        # A name of its own: a stack that fails while another runs leaves its resources in moto.
        OneMachineStack(template, stack_name=f"bad-event-{uuid.uuid4().hex[:8]}").start()


def test_unknown_resource_type_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Resources:\n  Network:\n    Type: AWS::EC2::VPC\n")
    with pytest.raises(TemplateError, match="Network: resource type 'AWS::EC2::VPC'"):
        OneMachineStack(template, stack_name="unknown-type").start()


# ---------------------------------------------------------------------- state file, CLI, real template
def test_state_file_is_written_and_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    with OneMachineStack(FIXTURE_TEMPLATE, stack_name="stateful", state_file=state_file) as running:
        state = json.loads(state_file.read_text())
        assert state == json.loads(json.dumps(running.state))
        for key in (
            "aws_endpoint_url",
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "bucket",
            "jobs_table",
            "api_url",
            "sync_api_url",
            "state_machine_arn",
            "submit_queue_url",
            "dead_letter_queue_url",
            "emulator_admin_url",
        ):
            assert state[key], key
        assert state["api_url"] == f"{running.front_door.url}/v1"
        assert state["sync_api_url"] == running.emulator.url
        assert httpx.get(f"{state['emulator_admin_url']}/health").json() == {"status": "ok"}
    assert not state_file.exists()


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.stack",
            "--state-file",
            str(state_file),
            "--template",
            str(FIXTURE_TEMPLATE),
            "--stack-name",
            "cli",
            "--parameter-overrides",
            "Greeting=yo",
            "--sync-processing-seconds",
            "0.5",
            *("--aws-port", "0", "--api-port", "0", "--sync-port", "0"),  # any free ports
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(state_file.exists, timeout=30)
        state = json.loads(state_file.read_text())
        assert state["parameters"]["Greeting"] == "yo"
        response = httpx.post(f"{state['api_url']}/echo/cli", content=b"{}")
        assert response.status_code == 201
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert "aws --region us-east-1 --endpoint-url" in output
    assert not state_file.exists()


def test_real_template_provisions(stack: OneMachineStack) -> None:
    with OneMachineStack(
        ROOT / "template.yaml",
        {"WebhookTimeoutSeconds": "3"},
        check_handlers=False,
        stack_name="real-template",
    ) as real:
        state, resources = real.state, real.state["resources"]
        # Event sources, whatever the template names them: every Schedule/EventBridgeRule event is
        # a rule in moto targeting its function; SQS mappings poll with their ScalingConfig.
        assert real.event_sources is not None
        events, machines = real.client("events"), real.event_sources.watcher
        sources: list[ScheduleSource | RuleSource] = [*real.provisioned.schedules, *real.provisioned.rules]
        for source in sources:
            assert events.describe_rule(Name=source.rule_name)["Arn"] == source.rule_arn
            (target,) = events.list_targets_by_rule(Rule=source.rule_name)["Targets"]
            assert target["Arn"] == real.workers[source.function].spec.arn
        for rule in real.provisioned.rules:
            for arn in rule.pattern.get("detail", {}).get("stateMachineArn", []):
                assert machines is not None
                assert arn in machines.state_machine_arns
        for poller in real.pollers:
            limit = poller.source.maximum_concurrency or real.workers[poller.source.function].concurrency
            assert poller.concurrency == limit
        s3 = real.client("s3")
        assert state["bucket"] == f"lipsync-media-{real.stack_id.rsplit('/', 1)[1]}"
        notifications = s3.get_bucket_notification_configuration(Bucket=state["bucket"])[
            "QueueConfigurations"
        ]
        prefixes = sorted(n["Filter"]["Key"]["FilterRules"][0]["Value"] for n in notifications)
        assert prefixes == ["inputs/", "jobs/"]
        queue = real.client("sqs").get_queue_attributes(
            QueueUrl=state["submit_queue_url"], AttributeNames=["All"]
        )
        assert "Policy" in queue["Attributes"]
        assert json.loads(queue["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 5
        table = real.client("dynamodb").describe_table(TableName=state["jobs_table"])["Table"]
        assert sorted(i["IndexName"] for i in table["GlobalSecondaryIndexes"]) == [
            "queue-order",
            "status-updatedAt",
        ]
        secrets = [r for r in resources.values() if r["Type"] == "AWS::SecretsManager::Secret"]
        assert len(secrets) == 3
        api_key = real.client("secretsmanager").get_secret_value(
            SecretId=resources["SyncApiKeySecret"]["Ref"]
        )
        assert api_key["SecretString"] == real.emulator.config.api_key
        assert set(real.workers) == {
            "SubmitFunction",
            "DispatchFunction",
            "WebhookFunction",
            "StatusFunction",
            "ArmWebhookFunction",
            "ReconcileFunction",
            "FinalizeFunction",
        }
        globals_ = {
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
            "POWERTOOLS_TRACE_DISABLED",
            "AWS_RETRY_MODE",
            "AWS_MAX_ATTEMPTS",
            "JOBS_TABLE",
            "ADMISSION_TABLE",
            "DISPATCH_QUEUE_URL",
            "SYNC_PLAN_CONCURRENCY",
            "TUNING",
        }
        env = {name: real.workers[name].spec.environment for name in real.workers}
        assert set(env["StatusFunction"]) == globals_
        assert set(env["WebhookFunction"]) == globals_ | {
            "WEBHOOK_TOKEN_KEY_SECRET",
            "WEBHOOK_SIGNING_SECRETS",
        }
        assert set(env["ReconcileFunction"]) == globals_ | {"MEDIA_BUCKET", "SYNC_API_KEY_SECRET"}
        dead_letters = real.workers["DispatchFunction"].spec.dead_letter_arn
        assert dead_letters == state["resources"]["DispatchDeadLetterQueue"]["Arn"]
        # What the functions read: Tuning (the stack's emulator and front door, the test's timing)
        # over the defaults; the template's own stage URL stays underneath PublicApiUrl.
        dispatch = environment(env["DispatchFunction"])
        assert dispatch["WEBHOOK_TIMEOUT_SECONDS"] == "3"
        assert dispatch["PUBLIC_API_URL"] == state["api_url"]
        assert ".execute-api." in dispatch["WEBHOOK_BASE_URL"]
        assert dispatch["STATE_MACHINE_ARN"] == state["state_machine_arn"]
        assert dispatch["SYNC_API_BASE_URL"] == state["sync_api_url"]
        # Intake asks sync.so for estimates only (it never creates a generation).
        assert environment(env["SubmitFunction"])["SYNC_API_BASE_URL"] == state["sync_api_url"]
        assert environment(env["SubmitFunction"])["PRICE_TABLE_USD_PER_SECOND"].startswith('{"lipsync-2"')
        assert dispatch["MONTHLY_BUDGET_USD"] == "off"
        for name in real.workers:
            configured = real.client("lambda").get_function(FunctionName=real.workers[name].spec.name)
            assert configured["Configuration"]["Environment"]["Variables"] == env[name]
        definition = real.client("stepfunctions").describe_state_machine(
            stateMachineArn=state["state_machine_arn"]
        )["definition"]
        assert "${" not in definition
        assert real.workers["FinalizeFunction"].spec.arn in definition
        alarms = real.client("cloudwatch").describe_alarms(AlarmNamePrefix="real-template-")["MetricAlarms"]
        assert sorted(a["AlarmName"].removeprefix("real-template-") for a in alarms) == [
            "BudgetHoldAlarm",
            "DispatchDeadLetterAlarm",
            "DispatchPausedAlarm",
            "FailedJobRateAlarm",
            "OldestQueuedJobAlarm",
            "RejectedWebhooksAlarm",
            "SubmitDeadLetterAlarm",
        ]
        assert sorted({r.api for r in real.provisioned.routes}) == ["Api"]
        auth = {(r.method, r.path): r.iam_auth for r in real.provisioned.routes}
        assert auth == {
            ("POST", "/webhooks/sync/{jobId}"): False,
            ("GET", "/jobs/{jobId}"): True,
            ("GET", "/jobs"): True,
            ("GET", "/queue"): True,
        }
