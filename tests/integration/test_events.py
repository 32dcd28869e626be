"""events/*.json and events/env.json, as `sam local invoke` would use them, against the real handlers.

sam local needs Docker, which these machines lack; the same files drive the handlers through the
one-machine stack instead, provisioned from template.yaml under the CLI's stack name.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.media import make_sample_audio, make_sample_video
from local.stack import SAM_LOCAL_PORTS, OneMachineStack

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"


def event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture(scope="module")
def stack() -> Iterator[OneMachineStack]:
    with OneMachineStack(stack_name="lipsync-local") as running:
        yield running


def wait_for_posts(stack: OneMachineStack, count: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The creates sync.so received, once there are `count` (intake queues the jobs; dispatch creates)."""
    deadline = time.monotonic() + timeout
    while True:
        posts = [
            r for r in stack.emulator.requests() if r["method"] == "POST" and r["path"] == "/v2/generate"
        ]
        if len(posts) >= count or time.monotonic() > deadline:
            return posts
        time.sleep(0.2)


def test_env_json_is_what_the_template_provisions(stack: OneMachineStack) -> None:
    expected = stack.sam_local_env(SAM_LOCAL_PORTS)
    assert json.loads((EVENTS / "env.json").read_text()) == expected, (
        "events/env.json is stale; regenerate it: python -m local.stack --host 172.17.0.1 "
        "--state-file /tmp/s.json --env-file events/env.json (then Ctrl-C)"
    )


def test_events_name_the_local_stack_resources(stack: OneMachineStack) -> None:
    body = json.loads(event("submit-pair-video.json")["Records"][0]["body"])
    assert body["Records"][0]["s3"]["bucket"]["name"] == stack.state["bucket"]
    source_arn = event("submit-manifest.json")["Records"][0]["eventSourceARN"]
    assert source_arn == stack.provisioned.sqs_sources[0].queue_arn


def test_submit_events_start_jobs(stack: OneMachineStack, tmp_path: Path) -> None:
    s3 = stack.client("s3")
    bucket = stack.state["bucket"]
    make_sample_video(tmp_path / "v.mp4")
    make_sample_audio(tmp_path / "a.wav")
    s3.upload_file(str(tmp_path / "v.mp4"), bucket, "inputs/sample clip.mp4")
    s3.upload_file(str(tmp_path / "a.wav"), bucket, "inputs/sample clip.wav")
    s3.put_object(
        Bucket=bucket, Key="jobs/sample-manifest.json", Body=(EVENTS / "sample-manifest.json").read_bytes()
    )

    for name in (
        "submit-pair-video.json",
        "submit-pair-audio.json",
        "submit-manifest.json",
        "submit-test-event.json",
    ):
        assert stack.invoke("SubmitFunction", event(name)) == {"batchItemFailures": []}, name
    stack.wait_idle(timeout=30)

    jobs = stack.client("dynamodb").scan(TableName=stack.state["jobs_table"])["Items"]
    names = sorted(item["name"]["S"] for item in jobs if "status" in item)  # not the output-name claims
    assert names == ["sample clip", "sample-manifest"]
    posts = wait_for_posts(stack, 2)
    assert len(posts) == 2  # the notifications and the sample events were the same two jobs
    manifest_post = next(post for post in posts if post["body"]["options"]["sync_mode"] == "cut_off")
    assert manifest_post["body"]["model"] == "lipsync-2"


def test_webhook_event_shows_the_token_check(stack: OneMachineStack) -> None:
    answer = stack.invoke("WebhookFunction", event("webhook-completed.json"))
    assert answer["statusCode"] == 403
    assert json.loads(answer["body"]) == {"message": "the webhook URL's token is not valid for this job"}


def test_dispatch_events(stack: OneMachineStack) -> None:
    assert stack.invoke("DispatchFunction", event("dispatch-kick.json"))["stoppedBecause"]
    assert stack.invoke("DispatchFunction", event("dispatch-sweep.json"))["stoppedBecause"]
    # An execution of a job that does not exist: nothing to end, and nothing breaks.
    assert stack.invoke("DispatchFunction", event("dispatch-execution-ended.json"))["status"] is None


def test_status_events(stack: OneMachineStack) -> None:
    queue = stack.invoke("StatusFunction", event("status-queue.json"))
    assert queue["statusCode"] == 200
    assert json.loads(queue["body"])["slots"] == 1  # SyncPlanConcurrency's default: the smallest plan
    missing = stack.invoke("StatusFunction", event("status-get-job.json"))
    assert missing["statusCode"] == 404
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = stack.invoke("StatusFunction", event("status-list-jobs.json"))
        assert listed["statusCode"] == 200
        if json.loads(listed["body"])["jobs"]:
            break
        time.sleep(0.5)
    jobs = json.loads(listed["body"])["jobs"]
    assert {job["status"] for job in jobs} == {"COMPLETED"}
