"""`sam deploy` of the unmodified built template into MiniStack, then the README's smoke test
(`lipsync --stack NAME submit … && lipsync --stack NAME watch …`) through the deployed stack:
intake, dispatch, Step Functions, sync.so's webhook through API Gateway, Finalize, `outputs/`.

Known MiniStack gaps (see the README's testing section), designed around rather than hidden:
- `TimeoutSecondsPath` is ignored, so the webhook timeout never fires and the polling fallback
  cannot run there: that step is a strict xfail (it starts passing, and failing the suite, the day
  MiniStack implements it); the one-machine stack covers polling in tests/e2e.
- IAM is not enforced by default (AUTH=true is reported in the README, not run here).
- `Ref` of a Secrets Manager secret is its name, not its ARN: the functions get names, which the
  SDK accepts, so nothing here depends on it.
- Functions run on MiniStack's own interpreter, so a dependency missing from the layer could go
  unnoticed here: tests/e2e/test_build.py imports every built handler with only its code, the
  layer and the runtime's packages, and tests/samlocal runs them in a python3.12 Lambda image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from local.media import make_sample_audio, make_sample_video
from tests.deploy.conftest import API_KEY, STACK_NAME, Deployed
from tests.waiting import eventually

pytestmark = pytest.mark.integration


def submit_pair(deployed: Deployed, name: str) -> dict[str, Any]:
    video = make_sample_video(deployed.workdir / f"{name}.mp4", seconds=1.0)
    audio = make_sample_audio(deployed.workdir / f"{name}.wav", seconds=1.0)
    result = deployed.lipsync("--json", "submit", str(video), str(audio), "--name", name)
    return dict(json.loads(result.stdout))


def test_the_unmodified_built_template_deploys(deployed: Deployed) -> None:
    assert f"Successfully created/updated stack - {STACK_NAME}" in deployed.deploy_output
    cloudformation = deployed.ministack.client("cloudformation")
    (stack,) = cloudformation.describe_stacks(StackName=STACK_NAME)["Stacks"]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    resources = cloudformation.describe_stack_resources(StackName=STACK_NAME)["StackResources"]
    assert {resource["ResourceStatus"] for resource in resources} == {"CREATE_COMPLETE"}
    print(f"\nsam deploy: {len(resources)} resources CREATE_COMPLETE in MiniStack", file=sys.stderr)
    assert {"MediaBucketName", "ApiUrl", "JobsTableName", "WebhookUrlPrefix"} <= set(deployed.outputs)


def test_deployed_functions_keep_the_emulators_endpoint(deployed: Deployed) -> None:
    """Globals declare AWS_ENDPOINT_URL as AWS::NoValue: CloudFormation drops it, so MiniStack
    injects its own (an empty value would hide it and send the functions to the real AWS)."""
    lambda_client = deployed.ministack.client("lambda")
    functions = [
        function
        for page in lambda_client.get_paginator("list_functions").paginate()
        for function in page["Functions"]
        if function["FunctionName"].startswith(f"{STACK_NAME}-")
    ]
    assert len(functions) == 7
    for function in functions:
        variables = function.get("Environment", {}).get("Variables", {})
        assert "AWS_ENDPOINT_URL" not in variables, function["FunctionName"]
        assert variables["JOBS_TABLE"], function["FunctionName"]


def test_a_pair_completes_through_the_deployed_stack(deployed: Deployed, tmp_path: Path) -> None:
    submitted = submit_pair(deployed, "smoke")
    job_id = submitted["jobId"]
    assert submitted["outputKey"] == "outputs/smoke.mp4"
    deployed.lipsync("watch", job_id, "--interval", "1", "--timeout", "120")
    document = deployed.object_json("outputs/smoke.json")
    assert (document["jobId"], document["status"], document["finishedBy"]) == (job_id, "COMPLETED", "webhook")
    assert [generation["generationId"] for generation in document["generations"]] == [
        document["generationId"]
    ]
    # sync.so's webhook reached the deployed API Gateway at the emulator's execute-api route.
    deliveries = [
        hook for hook in deployed.emulator.webhooks() if hook["generationId"] == document["generationId"]
    ]
    assert deliveries, deployed.emulator.webhooks()
    assert {hook["responseStatus"] for hook in deliveries} == {200}
    assert all("/_aws/execute-api/" in hook["url"] for hook in deliveries), deliveries
    # The rest of the command line against the deployed stack.
    fetched = json.loads(deployed.lipsync("--json", "fetch", job_id, str(tmp_path)).stdout)
    assert Path(fetched["files"]["video"]).stat().st_size > 0
    status = json.loads(deployed.lipsync("--json", "status", job_id).stdout)
    assert status["status"] == "COMPLETED"
    listed = json.loads(deployed.lipsync("--json", "list").stdout)
    assert job_id in {job["jobId"] for job in listed["jobs"]}
    queue = json.loads(deployed.lipsync("--json", "queue").stdout)
    assert queue["slots"] == 1
    assert "COMPLETED" in deployed.lipsync("logs", job_id).stdout
    assert deployed.lipsync("cost").returncode == 0


@pytest.mark.xfail(
    strict=True,
    reason="MiniStack ignores TimeoutSecondsPath: the webhook timeout never fires, so a job whose "
    "webhook is lost waits for ever there (the one-machine stack covers polling, tests/e2e)",
)
def test_a_lost_webhook_falls_back_to_polling(deployed: Deployed) -> None:
    deployed.emulator.set_scenario({"webhook": "drop"})
    try:
        job_id = submit_pair(deployed, "lost-webhook")["jobId"]
    finally:
        deployed.emulator.set_scenario({"webhook": None})
    # WebhookTimeoutSeconds is 5 in this deploy: polling would complete the job within 20 s.
    result = deployed.lipsync("watch", job_id, "--interval", "1", "--timeout", "20", check=False)
    assert result.returncode == 0, result.stderr


def function_logs(deployed: Deployed) -> str:
    logs = deployed.ministack.client("logs")
    groups = [
        group["logGroupName"]
        for page in logs.get_paginator("describe_log_groups").paginate()
        for group in page["logGroups"]
        if STACK_NAME in group["logGroupName"]
    ]
    lines: list[str] = []
    for group in groups:
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group):
            lines.extend(event["message"] for event in page["events"])
    return "\n".join(lines)


def test_the_functions_logged_no_error_and_no_secret(deployed: Deployed) -> None:
    eventually(lambda: deployed.object_json("outputs/smoke.json"), timeout=5, what="the smoke job")
    functions = function_logs(deployed)
    assert '"service":"lipsync-pipeline"' in functions  # the functions' own lines were read
    logged = functions + deployed.ministack.log()
    assert "Traceback" not in logged
    assert '"level":"ERROR"' not in logged
    assert API_KEY not in logged
    assert "token=" not in logged  # a webhook URL's token
