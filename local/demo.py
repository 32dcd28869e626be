"""`make demo`: the whole pipeline on this machine, from an upload to the video in outputs/.

Starts the one-machine stack (moto provisioned from template.yaml + the sync.so emulator),
uploads a small generated pair to inputs/, prints the job's progress as it happens, and
says where the output video and the job document landed. Exits 0 only if the job COMPLETED.

    python -m local.demo [--scenario default|lost-webhook] [--out demo-output]
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
}
NAME = "demo clip"
TERMINAL = {"COMPLETED", "FAILED", "REJECTED", "TIMED_OUT", "INVALID"}


def say(message: str) -> None:
    print(message, flush=True)


def follow_job(stack: OneMachineStack, timeout: float) -> dict[str, Any] | None:
    """Print the job's status changes and its workflow's steps (execution history) as they happen."""
    table = stack.state["jobs_table"]
    dynamodb, sfn = stack.client("dynamodb"), stack.client("stepfunctions")
    shown_history = shown_steps = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = dynamodb.scan(TableName=table, ConsistentRead=True).get("Items", [])
        if items:
            job = _plain(items[0])
            for entry in job.get("history", [])[shown_history:]:
                detail = f" ({entry['detail']})" if entry.get("detail") else ""
                say(f"  {entry['at']}  job is {entry['status']:<10} (from {entry['source']}{detail})")
            shown_history = len(job.get("history", []))
            steps = _workflow_steps(sfn, stack.state["state_machine_arn"], job["jobId"])
            for at, step in steps[shown_steps:]:
                say(f"  {at}  workflow: {step}")
            shown_steps = len(steps)
            if job["status"] in TERMINAL and job.get("finalizedAt"):
                return job
        time.sleep(0.3)
    return None


def _workflow_steps(sfn: Any, state_machine_arn: str, job_id: str) -> list[tuple[str, str]]:
    arn = state_machine_arn.replace(":stateMachine:", ":execution:") + f":{job_id}"
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

    say(f"Starting the one-machine stack (scenario: {args.scenario}) ...")
    with (
        tempfile.TemporaryDirectory() as scratch,
        OneMachineStack(
            parameter_overrides=TIMINGS,
            emulator_config=EmulatorConfig(processing_seconds=2.0),
            stack_name="lipsync-demo",
        ) as stack,
    ):
        stack.emulator.set_scenario(SCENARIOS[args.scenario])
        bucket = stack.state["bucket"]
        s3 = stack.client("s3")
        video, audio = Path(scratch, "clip.mp4"), Path(scratch, "clip.wav")
        make_sample_video(video)
        make_sample_audio(audio)
        say(
            f"Uploading s3://{bucket}/inputs/{NAME}.mp4 ({video.stat().st_size} bytes) and .wav "
            f"({audio.stat().st_size} bytes) ..."
        )
        s3.upload_file(str(video), bucket, f"inputs/{NAME}.mp4")
        s3.upload_file(str(audio), bucket, f"inputs/{NAME}.wav")
        say("Job progress:")
        job = follow_job(stack, timeout=90)
        if job is None:
            say("The job did not finish in time.")
            return 1

        args.out.mkdir(parents=True, exist_ok=True)
        document_key = job["documentKey"]
        document_path = args.out / Path(document_key).name
        s3.download_file(bucket, document_key, str(document_path))
        say(f"Job {job['jobId']} ended {job['status']} (finished by {job.get('finishedBy', 'n/a')}).")
        say(f"  job document: s3://{bucket}/{document_key} -> {document_path}")
        if job["status"] != "COMPLETED" or "outputChecksum" not in job:
            say(json.dumps(job.get("error", {}), indent=2))
            return 1
        video_path = args.out / Path(job["outputKey"]).name
        s3.download_file(bucket, job["outputKey"], str(video_path))
        say(
            f"  output video: s3://{bucket}/{job['outputKey']} -> {video_path} "
            f"({video_path.stat().st_size} bytes, {job['outputChecksum']})"
        )
        calls = [
            f"{r['method']} {r['path'].split('/v2/')[1].split('/')[0]}" for r in stack.emulator.requests()
        ]
        say(f"  sync.so calls: {', '.join(calls)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
