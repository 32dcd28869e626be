"""Every function, every event file, through `sam local invoke` in Docker; then `sam local start-api`.

The commands are events/README.md's, run verbatim. The stack listens on Docker's bridge address
(at the CLI's ports, so events/env.json is right). In these tests the containers are the pipeline's
intake and dispatcher: the stack's own SQS pollers and schedules are stopped after it starts, so
every job here was queued and dispatched by a function running in a container. The state machine's
tasks and the API behind the emulator's webhooks still run in the stack.
"""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from lipsync.jobs.names import NAME_PREFIX
from local.media import make_sample_audio, make_sample_video
from local.stack import SAM_LOCAL_PORTS, OneMachineStack
from local.sync_emulator import EmulatorConfig
from tests.waiting import eventually

from .conftest import ROOT, Shell, invocation

EVENTS = ROOT / "events"
START_API_PORT = 3001
# Each container start costs seconds; the image build and the stack come before these run.
pytestmark = pytest.mark.timeout(600)
FUNCTIONS = {
    "SubmitFunction",
    "DispatchFunction",
    "WebhookFunction",
    "StatusFunction",
    "ArmWebhookFunction",
    "ReconcileFunction",
    "FinalizeFunction",
}


def answer_of(result: subprocess.CompletedProcess[str]) -> Any:
    """The function's answer: the last line sam local invoke prints on stdout."""
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    details = f"rc {result.returncode}\n{result.stdout}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, details
    assert lines, details
    return json.loads(lines[-1])


def invoke(shell: Shell, commands: list[str], function: str, event: str) -> Any:
    return answer_of(shell.run(invocation(commands, function, event)))


def invoke_all(shell: Shell, commands: list[str], calls: list[tuple[str, str]]) -> list[Any]:
    """Independent invocations, four containers at a time (they mostly wait on container start)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda call: invoke(shell, commands, *call), calls))


def background_line(commands: list[str], prefix: str) -> str:
    lines = [c for c in commands if c.startswith(prefix) and c.endswith("&")]
    assert len(lines) == 1, f"events/README.md needs one `{prefix} … &` line"
    return lines[0]


# ---------------------------------------------------------------------------------------- the doc
def test_the_commands_cover_every_function_and_every_event_file(commands: list[str]) -> None:
    events = {p.name for p in EVENTS.glob("*.json")} - {"env.json", "sample-manifest.json"}
    covered = {
        (shlex.split(c)[3], shlex.split(c)[-1].removeprefix("events/"))
        for c in commands
        if c.startswith("sam local invoke ")
    }
    assert {function for function, _ in covered} == FUNCTIONS
    assert {event for _, event in covered} == events


def test_the_stack_command_serves_env_json(shell: Shell, commands: list[str], tmp_path: Path) -> None:
    """`python -m local.stack --host 172.17.0.1 …` as documented: it listens where containers reach
    it and writes the environment events/env.json holds."""
    line = background_line(commands, "python -m local.stack ")
    args = shlex.split(line[:-1])
    state_file = ROOT / args[args.index("--state-file") + 1]
    env_file = ROOT / args[args.index("--env-file") + 1]
    process = shell.start(line, tmp_path / "stack.log")
    try:
        eventually(
            lambda: (state_file.exists() and env_file.exists()) or process.poll() is not None,
            timeout=90,
            what="the stack",
        )
        assert process.poll() is None, (tmp_path / "stack.log").read_text()
        state = json.loads(state_file.read_text())
        assert state["aws_endpoint_url"] == "http://172.17.0.1:4566"
        assert state["sync_api_url"] == "http://172.17.0.1:8089"
        assert json.loads(env_file.read_text()) == json.loads((EVENTS / "env.json").read_text())
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert not state_file.exists()


# ------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def stack(cleanup_containers: None) -> Iterator[OneMachineStack]:
    running = OneMachineStack(
        stack_name="lipsync-local",
        ports=SAM_LOCAL_PORTS,
        emulator_config=EmulatorConfig(processing_seconds=1.0),
    ).start()
    try:
        # The containers are the intake and the dispatcher here (see the module's docstring).
        for poller in running.pollers:
            poller.stop()
        if running.event_sources is not None:
            running.event_sources.stop()
        yield running
    finally:
        running.stop()


def jobs(stack: OneMachineStack) -> dict[str, dict[str, Any]]:
    """The job records by name (the table also holds the `name:<stem>` claims, which have no status)."""
    items = stack.client("dynamodb").scan(TableName=stack.state["jobs_table"])["Items"]
    return {item["name"]["S"]: item for item in items if not item["jobId"]["S"].startswith(NAME_PREFIX)}


@pytest.fixture(scope="module")
def queued(
    stack: OneMachineStack, shell: Shell, commands: list[str], tmp_path_factory: Any
) -> dict[str, Any]:
    """The sample pair's media and the sample manifest uploaded, then the submit events in containers."""
    folder = tmp_path_factory.mktemp("media")
    make_sample_video(folder / "v.mp4")
    make_sample_audio(folder / "a.wav")
    s3, bucket = stack.client("s3"), stack.state["bucket"]
    s3.upload_file(str(folder / "v.mp4"), bucket, "inputs/sample clip.mp4")
    s3.upload_file(str(folder / "a.wav"), bucket, "inputs/sample clip.wav")
    s3.put_object(
        Bucket=bucket, Key="jobs/sample-manifest.json", Body=(EVENTS / "sample-manifest.json").read_bytes()
    )
    names = [
        "submit-pair-video.json",
        "submit-pair-audio.json",
        "submit-manifest.json",
        "submit-test-event.json",
    ]
    answers = invoke_all(shell, commands, [("SubmitFunction", name) for name in names])
    return dict(zip(names, answers, strict=True))


def test_submit_in_containers_queues_a_job_per_pair_and_manifest(
    stack: OneMachineStack, queued: dict[str, Any]
) -> None:
    for name, answer in queued.items():
        assert answer == {"batchItemFailures": []}, name  # the S3 test event included: ignored
    records = jobs(stack)
    assert sorted(records) == ["sample clip", "sample-manifest"]
    assert {record["status"]["S"] for record in records.values()} == {"QUEUED"}


def test_a_job_dispatched_from_a_container_completes(
    stack: OneMachineStack, queued: dict[str, Any], shell: Shell, commands: list[str]
) -> None:
    """The dispatcher in a container presigns the inputs at the bridge address; the emulator on the
    host fetches them (at create and when processing starts), and the jobs complete. The template's
    default plan has one slot, so the second job goes once the first has freed it."""

    def completed(count: int) -> Callable[[], bool]:
        return lambda: sum(j["status"]["S"] == "COMPLETED" for j in jobs(stack).values()) >= count

    for count in (1, 2):
        answer = invoke(shell, commands, "DispatchFunction", "dispatch-kick.json")
        assert answer["created"] == 1, (count, answer)
        eventually(completed(count), timeout=90, what=f"{count} job(s) COMPLETED")
    posts = [r for r in stack.emulator.requests() if r["method"] == "POST" and r["path"] == "/v2/generate"]
    assert len(posts) == 2
    for post in posts:
        for item in post["body"]["input"]:
            url = unquote(item["url"])
            # Presigned in the container (the stack's own dispatcher is stopped) at the bridge address.
            assert url.startswith("http://172.17.0.1:4566/")
    done = eventually(
        lambda: (r := jobs(stack)) and all(j["status"]["S"] == "COMPLETED" for j in r.values()) and r,
        timeout=90,
        what="both jobs COMPLETED",
    )
    assert len(done) == 2
    # Finalize records COMPLETED, frees the slot, then copies the output and writes the document.
    outputs = {"outputs/sample clip.mp4", "outputs/sample clip.json", "outputs/sample-manifest.mp4"}
    outputs |= {"outputs/sample-manifest.json"}
    s3 = stack.client("s3")
    eventually(
        lambda: outputs <= {o["Key"] for o in s3.list_objects_v2(Bucket=stack.state["bucket"])["Contents"]},
        timeout=90,
        what="the outputs and the job documents",
    )
    # The status function in a container reads the records (the event lists COMPLETED jobs).
    listed = invoke(shell, commands, "StatusFunction", "status-list-jobs.json")
    assert listed["statusCode"] == 200
    assert {job["name"] for job in json.loads(listed["body"])["jobs"]} == {"sample clip", "sample-manifest"}


def test_the_other_events_in_containers(
    stack: OneMachineStack, queued: dict[str, Any], shell: Shell, commands: list[str]
) -> None:
    calls = [
        ("DispatchFunction", "dispatch-sweep.json"),
        ("DispatchFunction", "dispatch-execution-ended.json"),
        ("StatusFunction", "status-get-job.json"),
        ("StatusFunction", "status-queue.json"),
        ("WebhookFunction", "webhook-completed.json"),
        ("ArmWebhookFunction", "arm-webhook.json"),
        ("ReconcileFunction", "reconcile.json"),
        ("FinalizeFunction", "finalize.json"),
    ]
    sweep, ended, get_job, queue, webhook, arm, reconcile, finalize = invoke_all(shell, commands, calls)
    assert sweep["stoppedBecause"]
    assert ended["status"] is None  # an execution of no job: nothing to end, nothing breaks
    assert get_job["statusCode"] == 404
    assert json.loads(queue["body"])["slots"] == 1  # SyncPlanConcurrency: the smallest plan by default
    assert webhook["statusCode"] == 403
    assert json.loads(webhook["body"]) == {"message": "the webhook URL's token is not valid for this job"}
    # Step Functions task inputs for a job this stack does not have: arming stores nothing and wakes
    # the execution at once, polling says there is nothing left to watch, finalizing has nothing to do.
    assert arm == {"armed": False, "webhookAlreadyArrived": False}
    assert (reconcile["status"], reconcile["terminal"]) == (None, True)
    assert finalize == {"status": None, "outputKey": None}


def test_start_api_serves_the_webhook_and_the_status_routes(
    stack: OneMachineStack, queued: dict[str, Any], shell: Shell, commands: list[str], tmp_path: Path
) -> None:
    line = background_line(commands, "sam local start-api ")
    process = shell.start(line, tmp_path / "start-api.log")
    try:

        def listening() -> bool:
            assert process.poll() is None, (tmp_path / "start-api.log").read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", START_API_PORT)) == 0

        eventually(listening, timeout=90, what="sam local start-api")
        base = f"http://127.0.0.1:{START_API_PORT}"
        with httpx.Client(base_url=base, timeout=120) as client:
            webhook = client.post("/webhooks/sync/sample-job", params={"token": "forged"}, json={"id": "x"})
            assert webhook.status_code == 403
            # AWS_IAM is not enforced by sam local: unsigned requests reach the function.
            queue = client.get("/queue")
            assert queue.status_code == 200
            assert queue.json()["slots"] == 1
            listed = client.get("/jobs", params={"limit": 5})
            assert listed.status_code == 200
            job_id = listed.json()["jobs"][0]["jobId"]
            one = client.get(f"/jobs/{job_id}")
            assert one.status_code == 200
            assert one.json()["jobId"] == job_id
            assert client.get("/jobs/no-such-job").status_code == 404
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
