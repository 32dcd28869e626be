"""`make demo`: the whole pipeline on this machine, from an upload to the video in outputs/.

Starts the one-machine stack (moto provisioned from template.yaml + the sync.so emulator),
uploads a small generated pair to inputs/, prints the job's progress as it happens, and
says where the output video and the job document landed. Exits 0 only if the job COMPLETED.

    python -m local.demo [--scenario default|lost-webhook|bulk] [--out demo-output]

`bulk` drops several pairs at once on a one-slot plan: they wait their turn in the job queue and
finish in the order they arrived.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from local.media import make_sample_audio, make_sample_video
from local.stack import OneMachineStack
from local.sync_emulator import EmulatorConfig

# Production timings scaled down to seconds (template parameters, overridden as a user would).
TIMINGS = {
    "WebhookTimeoutSeconds": "8",
    "PollFirstIntervalSeconds": "1",
    "PollBackoffRate": "1.5",
    "PollMaxIntervalSeconds": "3",
    "MaxJobSeconds": "60",
}
SCENARIOS: dict[str, dict[str, Any]] = {
    "default": {},
    # sync.so's webhook never arrives: after WebhookTimeoutSeconds the job polls with backoff.
    "lost-webhook": {"webhook": "drop", "processingSeconds": 12},
    "bulk": {},
}
NAME = "demo clip"
BULK_PAIRS = 4
TERMINAL = {"COMPLETED", "FAILED", "REJECTED", "CANCELED", "UNKNOWN", "TIMED_OUT", "STOPPED", "INVALID"}


def say(message: str) -> None:
    print(message, flush=True)


def follow_jobs(stack: OneMachineStack, count: int, timeout: float, steps: bool) -> list[dict[str, Any]]:
    """Print each job's status changes (and, with `steps`, its workflow's steps) as they happen,
    until `count` jobs have ended and been written out; returns them in the order they ended."""
    table = stack.state["jobs_table"]
    dynamodb, sfn = stack.client("dynamodb"), stack.client("stepfunctions")
    shown: dict[str, int] = {}
    shown_steps: dict[str, int] = {}
    ended: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(ended) < count:
        items = dynamodb.scan(TableName=table, ConsistentRead=True).get("Items", [])
        jobs = [_plain(item) for item in items if "status" in item]  # not the output-name claims
        for job in sorted(jobs, key=lambda j: str(j.get("queueKey") or j["createdAt"])):
            label = f"{job['name']:<14}" if count > 1 else "job"
            for entry in job.get("history", [])[shown.get(job["jobId"], 0) :]:
                detail = f" ({entry['detail']})" if entry.get("detail") else ""
                say(f"  {entry['at']}  {label} is {entry['status']:<10} (from {entry['source']}{detail})")
            shown[job["jobId"]] = len(job.get("history", []))
            if steps and job.get("executionName"):
                found = _workflow_steps(sfn, stack.state["state_machine_arn"], job["executionName"])
                for at, step in found[shown_steps.get(job["jobId"], 0) :]:
                    say(f"  {at}  workflow: {step}")
                shown_steps[job["jobId"]] = len(found)
            written = job["status"] in TERMINAL and job.get("finalizedAt")
            if written and all(done["jobId"] != job["jobId"] for done in ended):
                ended.append(job)
        time.sleep(0.3)
    return ended


def _workflow_steps(sfn: Any, state_machine_arn: str, execution_name: str) -> list[tuple[str, str]]:
    arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{execution_name}"
    try:
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    except sfn.exceptions.ExecutionDoesNotExist:
        return []
    steps = []
    for event in events:
        at = event["timestamp"].astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if event["type"].endswith("StateEntered"):
            steps.append((at, f"-> {event['stateEnteredEventDetails']['name']}"))
        elif event["type"] == "TaskTimedOut":
            steps.append((at, "   no webhook in time: falling back to polling"))
    return steps


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in item.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="where to save the results")
    args = parser.parse_args(argv)
    bulk = args.scenario == "bulk"
    plan = {"SyncPlanConcurrency": "1"} if bulk else {}

    say(f"Starting the one-machine stack (scenario: {args.scenario}) ...")
    with (
        tempfile.TemporaryDirectory() as scratch,
        OneMachineStack(
            parameter_overrides=TIMINGS | plan,
            emulator_config=EmulatorConfig(processing_seconds=2.0, concurrency=1 if bulk else 3),
            stack_name="lipsync-demo",
        ) as stack,
    ):
        stack.emulator.set_scenario(SCENARIOS[args.scenario])
        bucket = stack.state["bucket"]
        s3 = stack.client("s3")
        video, audio = Path(scratch, "clip.mp4"), Path(scratch, "clip.wav")
        make_sample_video(video)
        make_sample_audio(audio)
        names = [f"bulk/clip-{index}" for index in range(1, BULK_PAIRS + 1)] if bulk else [NAME]
        if bulk:
            say(f"A one-slot plan: {len(names)} pairs dropped at once wait their turn in the job queue.")
        for name in names:
            say(f"Uploading s3://{bucket}/inputs/{name}.mp4 ({video.stat().st_size} bytes) and .wav ...")
            s3.upload_file(str(video), bucket, f"inputs/{name}.mp4")
            s3.upload_file(str(audio), bucket, f"inputs/{name}.wav")
        say("Job progress:")
        ended = follow_jobs(stack, len(names), timeout=120, steps=not bulk)
        if len(ended) < len(names):
            say("The jobs did not finish in time.")
            return 1
        args.out.mkdir(parents=True, exist_ok=True)
        failures = 0
        for job in ended:
            failures += not _save(stack, job, args.out)
        if bulk:
            say(f"Finished in arrival order: {', '.join(job['name'] for job in ended)}")
        calls = [
            f"{r['method']} {r['path'].split('/v2/')[1].split('/')[0]}" for r in stack.emulator.requests()
        ]
        say(f"  sync.so calls: {', '.join(calls)}")
        say(f"  most generations in flight at sync.so: {stack.emulator.stats()['maxActive']}")
    return 1 if failures else 0


def _save(stack: OneMachineStack, job: dict[str, Any], out: Path) -> bool:
    """Download the job's document (and video); True if it COMPLETED with its output."""
    bucket, s3 = stack.state["bucket"], stack.client("s3")
    document_key = job["documentKey"]
    document_path = out / document_key.removeprefix("outputs/")
    document_path.parent.mkdir(parents=True, exist_ok=True)
    s3.download_file(bucket, document_key, str(document_path))
    finisher = job.get("finishedBy", "n/a")
    say(f"Job {job['name']} ({job['jobId']}) ended {job['status']} (finished by {finisher}).")
    say(f"  job document: s3://{bucket}/{document_key} -> {document_path}")
    say(f"  {_cost_line(job)}")
    if job["status"] != "COMPLETED" or "outputChecksum" not in job:
        say(json.dumps(job.get("error", {}), indent=2))
        return False
    video_path = out / job["outputKey"].removeprefix("outputs/")
    s3.download_file(bucket, job["outputKey"], str(video_path))
    say(
        f"  output video: s3://{bucket}/{job['outputKey']} -> {video_path} "
        f"({video_path.stat().st_size} bytes, {job['outputChecksum']})"
    )
    return True


def _cost_line(job: dict[str, Any]) -> str:
    """The job's estimate (made at intake) and what it cost (from the output's duration)."""
    estimate = job.get("estimate") or {}
    if not estimate:
        return "cost: no estimate"
    source = "sync.so's estimate endpoint" if estimate.get("source") == "api" else "the price table"
    line = (
        f"cost: estimated ${float(estimate['usd']):.4f} for {float(estimate['seconds']):g} s of output "
        f"(from the {estimate['basis']}, by {source})"
    )
    cost = job.get("costUsd")
    return line + (f"; cost ${float(cost):.4f}" if cost is not None else "; cost not known")


if __name__ == "__main__":
    sys.exit(main())
