"""`make load`: a bulk drop on the one-machine stack, measured.

Drops N input pairs at once into a stack whose plan allows `--slots` concurrent generations
(both sides: the template parameter and the sync.so emulator), with generation time scaled
down, waits until every job has ended and prints what the issue's targets are about:

    jobs completed, dead letters, distinct generations, POSTs per job, the most generations
    in flight at sync.so, slot utilisation, drain time against the ideal ceil(N/slots) x T,
    and p50/p95 from upload to output.

    python -m local.load [--pairs 200] [--slots 3] [--generation-seconds 15] [--json]

Each slot turnover (webhook, confirming GET, slot freed, kick, next POST, execution started) costs
about a second on this 2-core machine, where one Python process runs moto and the emulator; the
default generation time keeps that overhead in proportion to a real 30-120 s generation.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from local.media import make_sample_audio, make_sample_video
from local.stack import OneMachineStack
from local.sync_emulator import EmulatorConfig

TIMINGS = {
    "WebhookTimeoutSeconds": "30",
    "PollFirstIntervalSeconds": "2",
    "PollBackoffRate": "1.5",
    "PollMaxIntervalSeconds": "5",
    "MaxJobSeconds": "300",
}


@dataclass
class LoadReport:
    pairs: int
    slots: int
    generation_seconds: float
    completed: int
    statuses: dict[str, int]
    dead_letters: int
    generations: int
    duplicate_generations: int
    create_requests: int
    posts_per_job: float
    estimates_per_job: float  # intake's calls to the estimate endpoint (not generations)
    rejected_429: dict[str, int]
    max_in_flight: int
    busy_slot_seconds: float
    drain_seconds: float
    ideal_seconds: float
    utilisation: float
    p50_seconds: float
    p95_seconds: float

    def lines(self) -> list[str]:
        return [
            f"jobs completed              {self.completed}/{self.pairs}   (statuses: {self.statuses})",
            f"dead-letter messages        {self.dead_letters}",
            f"distinct generations        {self.generations}   (duplicates: {self.duplicate_generations})",
            f"POSTs per job               {self.posts_per_job:.3f}   ({self.create_requests} creates; "
            f"429s: {self.rejected_429})",
            f"estimate calls per job      {self.estimates_per_job:.3f}   (free; 2 when a pair's events race)",
            f"most in flight at sync.so   {self.max_in_flight}   (plan: {self.slots})",
            f"slot utilisation            {self.utilisation:.1%}   "
            f"({self.busy_slot_seconds:.0f} busy slot-s / {self.slots} x {self.drain_seconds:.0f} s)",
            f"drain time                  {self.drain_seconds:.1f} s   (ideal ceil(N/{self.slots}) x T = "
            f"{self.ideal_seconds:.0f} s, +{self.drain_seconds / self.ideal_seconds - 1:.1%})",
            f"upload -> output            p50 {self.p50_seconds:.1f} s, p95 {self.p95_seconds:.1f} s",
        ]


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _jobs(stack: OneMachineStack) -> list[dict[str, Any]]:
    from boto3.dynamodb.types import TypeDeserializer

    deserializer = TypeDeserializer()
    pages = stack.client("dynamodb").get_paginator("scan").paginate(TableName=stack.state["jobs_table"])
    return [
        {key: deserializer.deserialize(value) for key, value in item.items()}
        for page in pages
        for item in page.get("Items", [])
        if "status" in item  # job records, not their output-name claims
    ]


def _documents(stack: OneMachineStack) -> int:
    pages = (
        stack.client("s3")
        .get_paginator("list_objects_v2")
        .paginate(Bucket=stack.state["bucket"], Prefix="outputs/load/")
    )
    return sum(1 for page in pages for item in page.get("Contents", []) if item["Key"].endswith(".json"))


def run_load(
    stack: OneMachineStack, pairs: int, slots: int, generation_seconds: float, timeout: float
) -> LoadReport:
    """Drop `pairs` pairs into a running stack and measure until every job has ended."""
    bucket, s3 = stack.state["bucket"], stack.client("s3")
    with tempfile.TemporaryDirectory() as scratch:
        video, audio = Path(scratch, "v.mp4"), Path(scratch, "a.wav")
        make_sample_video(video)
        make_sample_audio(audio)
        video_bytes, audio_bytes = video.read_bytes(), audio.read_bytes()
    uploaded: dict[str, float] = {}

    def drop(index: int) -> None:
        name = f"load/{index:04d}"
        s3.put_object(Bucket=bucket, Key=f"inputs/{name}.mp4", Body=video_bytes)
        s3.put_object(Bucket=bucket, Key=f"inputs/{name}.wav", Body=audio_bytes)
        uploaded[name] = time.time()

    started = time.time()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(drop, range(pairs)))
    deadline = time.monotonic() + timeout
    # Every ending writes outputs/load/<name>.json; counting them is far lighter than scanning jobs.
    while time.monotonic() < deadline and _documents(stack) < pairs:
        time.sleep(2)
    jobs = [job for job in _jobs(stack) if job["name"].startswith("load/")]
    stats = stack.emulator.stats()
    estimates = sum(1 for r in stack.emulator.requests() if r["path"] == "/v2/generations/estimate")
    sqs = stack.client("sqs")
    dead = int(
        sqs.get_queue_attributes(
            QueueUrl=stack.state["dead_letter_queue_url"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]["ApproximateNumberOfMessages"]
    )
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job["status"]] = statuses.get(job["status"], 0) + 1
    generations = stats["generations"]
    busy = sum((g["endedAt"] or time.time()) - g["createdAt"] for g in generations)
    finished = [job for job in jobs if "finalizedAt" in job]
    last_output = max((_epoch(job["finalizedAt"]) for job in finished), default=time.time())
    drain = last_output - started
    latencies = sorted(
        _epoch(job["finalizedAt"]) - uploaded[job["name"]] for job in finished if job["name"] in uploaded
    )
    ideal = math.ceil(pairs / slots) * generation_seconds
    completed = statuses.get("COMPLETED", 0)
    return LoadReport(
        pairs=pairs,
        slots=slots,
        generation_seconds=generation_seconds,
        completed=completed,
        statuses=statuses,
        dead_letters=dead,
        generations=len(generations),
        duplicate_generations=len(generations) - len({job.get("generationId") for job in jobs} - {None}),
        create_requests=stats["createRequests"],
        posts_per_job=stats["createRequests"] / pairs,
        estimates_per_job=estimates / pairs,
        rejected_429={"concurrency": stats["rejected"]["concurrency"], "rate": stats["rejected"]["rate"]},
        max_in_flight=stats["maxActive"],
        busy_slot_seconds=busy,
        drain_seconds=drain,
        ideal_seconds=ideal,
        utilisation=busy / (slots * drain) if drain > 0 else 0.0,
        p50_seconds=statistics.median(latencies) if latencies else math.nan,
        p95_seconds=latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)] if latencies else math.nan,
    )


def load_stack(slots: int, generation_seconds: float, name: str = "lipsync-load") -> OneMachineStack:
    """A stack whose plan allows `slots` generations, on both sides of the API."""
    return OneMachineStack(
        parameter_overrides=TIMINGS | {"SyncPlanConcurrency": str(slots)},
        emulator_config=EmulatorConfig(processing_seconds=generation_seconds, concurrency=slots),
        stack_name=name,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--slots", type=int, default=3)
    parser.add_argument("--generation-seconds", type=float, default=15.0)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    print(
        f"Dropping {args.pairs} pairs on a {args.slots}-slot plan, "
        f"{args.generation_seconds:g} s per generation ...",
        flush=True,
    )
    with load_stack(args.slots, args.generation_seconds) as stack:
        report = run_load(stack, args.pairs, args.slots, args.generation_seconds, args.timeout)
    print(json.dumps(asdict(report), indent=2) if args.json else "\n".join(report.lines()))
    return 0 if report.completed == args.pairs else 1


if __name__ == "__main__":
    sys.exit(main())
