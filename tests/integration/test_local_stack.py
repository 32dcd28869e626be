"""The one-machine stack (local/stack) against real local servers, with a small fixture template.

The fixture handlers in stack_fixtures/handlers record what they saw (environment,
events) so that each test can check what the stack really delivered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from moto.awslambda.models import LambdaFunction

from local.stack import FunctionError, HookNotActive, OneMachineStack, TemplateError
from local.stack import workers as stack_workers
from local.sync_emulator import EmulatorConfig

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "stack_fixtures"
FIXTURE_TEMPLATE = FIXTURES / "template.yaml"


@pytest.fixture(scope="module")
def stack() -> Iterator[OneMachineStack]:
    config = EmulatorConfig(api_key="k", webhook_secret="whsec_x", processing_seconds=1.0)
    with OneMachineStack(
        template_path=FIXTURE_TEMPLATE,
        parameter_overrides={"Greeting": "hi"},
        emulator_config=config,
        stack_name="fixture",
    ) as running:
        yield running


def _eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.1)


def _seen(stack: OneMachineStack, key: str) -> int:
    item = stack.client("dynamodb").get_item(TableName=stack.state["jobs_table"], Key={"pk": {"S": key}})
    return int(item.get("Item", {}).get("seen", {}).get("N", 0))


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
        RoleName=role.rsplit("/", 1)[1], PolicyName="ConsumerFunctionPolicy0"
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
    assert echo["PUBLIC_URL"] == f"{stack.front_door.url}/v1"  # the stack supplies PublicApiUrl
    assert "STEP_ONLY" not in echo


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

    return dict(_eventually(finished, timeout=20))


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

    moved = _eventually(dead_lettered, timeout=20)
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


def test_unknown_resource_type_is_an_error(tmp_path: Path) -> None:
    template = tmp_path / "template.yaml"
    template.write_text("Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n")
    with pytest.raises(TemplateError, match="AWS::SNS::Topic"):
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
        _eventually(state_file.exists, timeout=30)
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
        assert json.loads(queue["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 20
        table = real.client("dynamodb").describe_table(TableName=state["jobs_table"])["Table"]
        assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["status-updatedAt"]
        secrets = [r for r in resources.values() if r["Type"] == "AWS::SecretsManager::Secret"]
        assert len(secrets) == 3
        api_key = real.client("secretsmanager").get_secret_value(
            SecretId=resources["SyncApiKeySecret"]["Ref"]
        )
        assert api_key["SecretString"] == real.emulator.config.api_key
        assert set(real.workers) == {
            "SubmitFunction",
            "WebhookFunction",
            "StatusFunction",
            "ArmWebhookFunction",
            "ReconcileFunction",
            "FinalizeFunction",
        }
        globals_ = {
            "LOG_LEVEL",
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
            "POWERTOOLS_TRACE_DISABLED",
            "JOBS_TABLE",
        }
        env = {name: real.workers[name].spec.environment for name in real.workers}
        assert set(env["StatusFunction"]) == globals_
        assert set(env["WebhookFunction"]) == globals_ | {
            "WEBHOOK_TOKEN_KEY_SECRET",
            "WEBHOOK_SIGNING_SECRETS",
        }
        assert set(env["ReconcileFunction"]) == globals_ | {"SYNC_API_BASE_URL", "SYNC_API_KEY_SECRET"}
        assert env["SubmitFunction"]["WEBHOOK_TIMEOUT_SECONDS"] == "3"
        assert env["SubmitFunction"]["WEBHOOK_BASE_URL"] == state["api_url"]
        assert env["SubmitFunction"]["STATE_MACHINE_ARN"] == state["state_machine_arn"]
        assert env["SubmitFunction"]["SYNC_API_BASE_URL"] == state["sync_api_url"]
        for name in real.workers:
            configured = real.client("lambda").get_function(FunctionName=real.workers[name].spec.name)
            assert configured["Configuration"]["Environment"]["Variables"] == env[name]
        definition = real.client("stepfunctions").describe_state_machine(
            stateMachineArn=state["state_machine_arn"]
        )["definition"]
        assert "${" not in definition
        assert real.workers["FinalizeFunction"].spec.arn in definition
        alarms = real.client("cloudwatch").describe_alarms(AlarmNamePrefix="real-template-")["MetricAlarms"]
        assert [a["Dimensions"][0]["Value"] for a in alarms] == ["real-template-SubmitDeadLetterQueue"]
        assert sorted({r.api for r in real.provisioned.routes}) == ["Api"]
        auth = {(r.method, r.path): r.iam_auth for r in real.provisioned.routes}
        assert auth == {
            ("POST", "/webhooks/sync/{jobId}"): False,
            ("GET", "/jobs/{jobId}"): True,
            ("GET", "/jobs"): True,
        }
