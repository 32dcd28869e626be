"""The fault suite: the one-machine stack, the real state machine, and sync.so or AWS misbehaving.

Each case names what it injects, then checks the four things a user pays for: no job is lost (it
ends, and its ending is written), no second generation is created for one job (the emulator's own
record of what it made), the job ends with the right status, and its documents say so. The run's
figures (cases, faults injected, jobs lost, duplicate generations, outputs abandoned) are printed
at the end of the module and quoted in the README's Reliability table.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import pytest

from local.stack import OneMachineStack
from tests.e2e.conftest import Media, Pipeline, start_stack

pytestmark = pytest.mark.integration

CRASH = {
    "code": "AccessDeniedException",
    "message": "injected fault",
    "status": 400,
}  # not retried by botocore


@dataclass
class Ledger:
    """What the module's cases did and what it cost: the README's Reliability figures."""

    cases: int = 0
    faults: int = 0
    jobs: int = 0
    lost: int = 0
    duplicates: int = 0
    abandoned: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"fault suite: {self.cases} cases, {self.faults} faults injected, {self.jobs} jobs, "
            f"{self.lost} lost, {self.duplicates} duplicate generations, {self.abandoned} outputs abandoned"
        )


LEDGER = Ledger()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    print(f"\n{LEDGER.line()}", file=sys.stderr)


def generations_of(pipeline: Pipeline, job_id: str) -> list[dict[str, Any]]:
    """Every generation sync.so made under this job's keys (`<job id>.<n>`)."""
    return [
        generation
        for generation in pipeline.stack.emulator.stats()["generations"]
        if str(generation.get("idempotencyKey") or "").startswith(job_id)
    ]


def faults_so_far(pipeline: Pipeline) -> int:
    api = [
        r for r in pipeline.stack.emulator.requests() if r["path"].startswith("/v2/") and r["status"] >= 400
    ]
    hooks = [w for w in pipeline.stack.emulator.webhooks() if w["delivery"] != "deliver"]
    return len(api) + len(hooks) + sum(pipeline.stack.aws_fault_hits().values())


def settle(
    pipeline: Pipeline,
    names: list[str],
    status: str = "COMPLETED",
    *,
    timeout: float = 60,
    generations: int = 1,
) -> list[dict[str, Any]]:
    """Each job ends with `status`, its document says so, and sync.so made `generations` for it."""
    LEDGER.cases += 1
    ended = []
    for name in names:
        LEDGER.jobs += 1
        try:
            job = pipeline.wait_job(name, timeout=timeout)
        except AssertionError:
            LEDGER.lost += 1
            raise
        made = generations_of(pipeline, str(job["jobId"]))
        LEDGER.duplicates += max(0, len(made) - generations)
        if job["status"] == "COMPLETED" and not job.get("outputChecksum"):
            LEDGER.abandoned += 1
        assert job["status"] == status, job
        assert len(made) == generations, made
        assert pipeline.document(job)["status"] == status
        if status == "COMPLETED":
            key = str(job["outputKey"])
            assert pipeline.s3.head_object(Bucket=pipeline.bucket, Key=key)["ContentLength"] > 0
        ended.append(job)
    LEDGER.faults += faults_so_far(pipeline)
    return ended


def s3_event(pipeline: Pipeline, key: str, version_id: str, etag: str) -> str:
    """The notification S3 sends for one created object version (the key URL-encoded, as S3 does)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "eventTime": "2026-12-01T00:00:00.000Z",
        "s3": {
            "bucket": {"name": pipeline.bucket},
            "object": {"key": quote_plus(key), "versionId": version_id, "eTag": etag},
        },
    }
    return json.dumps({"Records": [record]})


def renamed_from(pipeline: Pipeline, name: str, timeout: float = 30) -> str:
    """The name a job got because another line of jobs holds `name` (its `renamedFrom`)."""
    deadline = time.monotonic() + timeout
    while True:
        items = pipeline.dynamodb.scan(
            TableName=pipeline.stack.state["jobs_table"],
            FilterExpression="renamedFrom = :n",
            ExpressionAttributeValues={":n": {"S": name}},
        )["Items"]
        if items:
            (item,) = items
            return str(item["documentKey"]["S"]).removeprefix("outputs/").removesuffix(".json")
        assert time.monotonic() < deadline, f"no job was renamed from {name}"
        time.sleep(0.3)


def send_events(pipeline: Pipeline, bodies: list[str]) -> None:
    sqs = pipeline.stack.client("sqs")
    for body in bodies:
        sqs.send_message(QueueUrl=pipeline.stack.state["submit_queue_url"], MessageBody=body)


# ---------------------------------------------------------------------------- paying once


def test_a_lost_create_answer_then_a_429_pays_once(pipeline: Pipeline) -> None:
    """Injects: sync.so creates the generation but answers after the client's timeout (10 s), then
    a gateway 429 on the retry. Issue 14, item 2 measured 2 paid generations here."""
    pipeline.stack.emulator.set_scenario(
        {
            "createFailures": [
                {"status": 504, "afterCreate": True, "delaySeconds": 10},
                {"status": 429, "errorCode": "rate_limit_exceeded", "retryAfterSeconds": 1},
            ]
        }
    )
    name = pipeline.drop_pair("lost-answer")
    (job,) = settle(pipeline, [name], timeout=90)
    keys = {post["headers"]["idempotency-key"] for post in pipeline.generation_posts()}
    assert keys == {f"{job['jobId']}.1"}


def test_429_and_5xx_storms_pay_once_per_job(pipeline: Pipeline) -> None:
    """Injects: 4 rate 429s, 2 concurrency 429s, 3 500s and 2 lost answers (503 after the create)."""
    pipeline.stack.emulator.set_scenario(
        {
            "createFailures": [
                {"status": 429, "errorCode": "rate_limit_exceeded", "count": 4, "retryAfterSeconds": 1},
                {"status": 500, "count": 2},
                {"status": 503, "afterCreate": True, "count": 2},
                {"status": 429, "errorCode": "concurrency_limit_reached", "count": 2, "retryAfterSeconds": 1},
                {"status": 500, "count": 1},
            ]
        }
    )
    names = [pipeline.drop_pair(f"storm-{index}") for index in range(3)]
    settle(pipeline, names, timeout=90)


@pytest.mark.parametrize("mode", ["unavailable", "drop"])
def test_a_sync_outage_during_creates_and_polls_fails_nothing(pipeline: Pipeline, mode: str) -> None:
    """Injects: sync.so unreachable for 12 s (every /v2 call answers 503, or the connection drops
    without an answer) while jobs are created and polled (webhooks dropped)."""
    pipeline.stack.emulator.set_scenario({"webhook": "drop"})
    early = pipeline.drop_pair(f"outage-{mode}-polled")
    pipeline.wait_job(early, until=lambda job: job["status"] in ("PENDING", "PROCESSING"), timeout=30)
    pipeline.stack.emulator.set_scenario({"outage": {"seconds": 12, "mode": mode}})
    names = [early, *(pipeline.drop_pair(f"outage-{mode}-{index}") for index in range(2))]
    settle(pipeline, names, timeout=120)


# ---------------------------------------------------------------------------- no paid output abandoned


@pytest.mark.parametrize("webhook", ["deliver", "drop"])
def test_a_generation_that_outlives_its_deadline_is_still_copied(pipeline: Pipeline, webhook: str) -> None:
    """Injects: a generation that takes 20 s against a 12 s deadline (MaxJobSeconds), its webhook
    delivered late or never. Issue 14, item 3: TIMED_OUT was final and the output was never copied."""
    pipeline.stack.emulator.set_scenario({"processingSeconds": 20, "webhook": webhook})
    name = pipeline.drop_pair(f"late-{webhook}")
    overdue = pipeline.wait_job(name, until=lambda job: job["status"] == "TIMED_OUT", timeout=40)
    plan = pipeline.dynamodb.get_item(
        TableName=pipeline.stack.state["outputs"]["AdmissionTableName"], Key={"id": {"S": "plan"}}
    )["Item"]
    holders = [value["M"]["jobId"]["S"] for key, value in plan.items() if key.startswith("slot_")]
    assert overdue["jobId"] in holders  # sync.so still counts it: so does the plan
    assert pipeline.document(overdue)["status"] == "TIMED_OUT"
    (job,) = settle(pipeline, [name], timeout=60)
    assert job["late"] is True
    assert pipeline.document(job)["late"] is True


def test_a_404_right_after_the_webhook_does_not_fail_a_completed_job(pipeline: Pipeline) -> None:
    """Injects: two 404s on GET /v2/generate/{id} just as the COMPLETED webhook arrives (item 12)."""
    pipeline.stack.emulator.set_scenario(
        {"getFailures": [{"status": 404, "errorCode": "generation_not_found", "count": 2}]}
    )
    settle(pipeline, [pipeline.drop_pair("glitch")])


def test_expired_output_urls_and_broken_downloads_still_deliver(pipeline: Pipeline) -> None:
    """Injects: an output URL that is already expired, and two downloads that break off halfway."""
    pipeline.stack.emulator.set_scenario({"outputUrlTtlSeconds": 0, "outputDownloadFailures": 2})
    settle(pipeline, [pipeline.drop_pair("expired")])


@pytest.mark.parametrize(
    "scenario",
    [
        {"webhook": "drop"},
        {"webhookDelaySeconds": 6},
        {"webhook": "duplicate"},
        {"webhook": "reorder"},
        {"webhookStatuses": ["PENDING", "PROCESSING", "COMPLETED"], "processingSeconds": 0},
    ],
    ids=["dropped", "delayed", "duplicated", "reordered", "early"],
)
def test_webhooks_that_misbehave_change_nothing_but_the_timing(
    pipeline: Pipeline, scenario: dict[str, Any]
) -> None:
    """Injects: the webhook dropped, delayed past the webhook timeout, duplicated, reordered (the end,
    then a stale PROCESSING), or early (every status, the end before the create is recorded)."""
    pipeline.stack.emulator.set_scenario(scenario)
    settle(pipeline, [pipeline.drop_pair("hooks")])


# ---------------------------------------------------------------------------- crashes and AWS errors


@pytest.mark.parametrize(
    ("function", "operation"),
    [
        ("SubmitFunction", "dynamodb:TransactWriteItems"),  # intake: creating the record
        ("SubmitFunction", "sqs:SendMessage"),  # intake: the kick after queueing
        ("DispatchFunction", "dynamodb:TransactWriteItems"),  # dispatch: the claim
        ("DispatchFunction", "states:StartExecution"),  # dispatch: after the POST, before the record
        ("DispatchFunction", "dynamodb:UpdateItem"),  # dispatch: recording the generation
        ("FinalizeFunction", "s3:PutObject"),  # finalize: the copy (and the document)
        ("FinalizeFunction", "events:PutEvents"),  # finalize: the Job Finished event
        ("FinalizeFunction", "dynamodb:UpdateItem"),  # finalize: recording the end
    ],
)
def test_a_crash_at_each_step_loses_nothing_and_pays_once(
    pipeline: Pipeline, function: str, operation: str
) -> None:
    """Injects: the function's next call of the operation fails (a crash at that step); the work is
    picked up by a retry, a redelivery, a lease that runs out, or the sweep."""
    pipeline.stack.inject_aws_fault(function, operation, count=1, **CRASH)  # type: ignore[arg-type]
    name = pipeline.drop_pair("crash")
    settle(pipeline, [name], timeout=90)
    assert pipeline.stack.aws_fault_hits().get((function, operation)) == 1


def test_a_refused_create_whose_document_failed_is_written_by_the_sweep(pipeline: Pipeline) -> None:
    """Injects: a 422 on create, then an S3 error on the dispatcher's document write (item 8: the job
    ended REJECTED with no outputs/<name>.json and no Job Finished event, for good)."""
    pipeline.stack.emulator.set_scenario(
        {"createFailures": [{"status": 422, "errorCode": "generation_input_video_invalid"}]}
    )
    pipeline.stack.inject_aws_fault("DispatchFunction", "s3:PutObject", count=1, **CRASH)  # type: ignore[arg-type]
    settle(pipeline, [pipeline.drop_pair("refused")], "REJECTED", generations=0, timeout=60)


# ---------------------------------------------------------------------------- events, uploads, names


def test_s3_events_delivered_up_to_five_times_out_of_order_make_one_job(pipeline: Pipeline) -> None:
    """Injects: each of a pair's two S3 events delivered 1-5 times, shuffled."""
    name = pipeline.drop_pair("redelivered")
    job = pipeline.wait_job(name, until=lambda j: j["status"] != "QUEUED", timeout=30)
    events = [
        s3_event(pipeline, ref["key"], ref["versionId"], ref["etag"])
        for ref in job["inputs"]
        for _ in range(random.randint(1, 5))
    ]
    random.shuffle(events)
    send_events(pipeline, events)
    settle(pipeline, [name])
    time.sleep(2)  # the redeliveries are processed: still one job, one generation
    assert len(generations_of(pipeline, str(job["jobId"]))) == 1


def test_stale_redeliveries_after_a_reupload_make_no_mixed_jobs(pipeline: Pipeline, media: Media) -> None:
    """Injects: the first upload's events delivered again after the user uploaded the pair anew
    (item 4: each stale event paired with its partner's latest version: two more paid jobs)."""
    name = pipeline.drop_pair("reuploaded")
    first = pipeline.wait_job(name)
    pipeline.put(f"inputs/{name}.mp4", media.video + b"\0")  # a new take of both files
    pipeline.put(f"inputs/{name}.wav", media.audio + b"\0")
    renamed = renamed_from(pipeline, name)  # the first job COMPLETED: its outputs stay its own
    send_events(pipeline, [s3_event(pipeline, r["key"], r["versionId"], r["etag"]) for r in first["inputs"]])
    (second,) = settle(pipeline, [renamed])
    time.sleep(3)  # the stale events are processed: they start nothing
    made = pipeline.stack.emulator.stats()["generations"]
    mine = {g["idempotencyKey"].split(".")[0] for g in made if g.get("idempotencyKey")}
    assert mine == {first["jobId"], second["jobId"]}
    assert [ref["versionId"] for ref in second["inputs"]] != [ref["versionId"] for ref in first["inputs"]]


def test_the_same_pair_uploaded_again_is_not_paid_again(pipeline: Pipeline, media: Media) -> None:
    """Injects: the same files uploaded twice (item 15)."""
    name = pipeline.drop_pair("twice")
    (job,) = settle(pipeline, [name])
    pipeline.put(f"inputs/{name}.mp4", media.video)
    pipeline.put(f"inputs/{name}.wav", media.audio)
    pipeline.wait_job(name, until=lambda j: j.get("reupload", {}).get("count") == 1, timeout=30)
    assert "not run (or paid for) again" in pipeline.document(job)["reupload"]["note"]
    assert len(generations_of(pipeline, str(job["jobId"]))) == 1


def test_a_pair_and_a_manifest_of_one_name_write_distinct_outputs(pipeline: Pipeline, media: Media) -> None:
    """Injects: inputs/<name>.* and jobs/<name>.json at once (item 9: both wrote outputs/<name>.*)."""
    name = pipeline.drop_pair("twin")
    pipeline.put(f"media/{name}.mp4", media.video)
    pipeline.put(f"media/{name}.wav", media.audio)
    manifest = {
        "input": [
            {"type": "video", "url": f"media/{name}.mp4"},
            {"type": "audio", "url": f"media/{name}.wav"},
        ]
    }
    pipeline.put(f"jobs/{name}.json", json.dumps(manifest).encode())
    pair = pipeline.wait_job(name)
    renamed = renamed_from(pipeline, name)
    other = pipeline.wait_job(renamed)
    assert {pair["outputKey"], other["outputKey"]} == {f"outputs/{name}.mp4", f"outputs/{renamed}.mp4"}
    settle(pipeline, [name, renamed])


def test_a_manifest_nested_too_deeply_gets_an_invalid_document_not_the_dead_letter_queue(
    pipeline: Pipeline,
) -> None:
    """Injects: a manifest nested 100,000 levels deep (item 11)."""
    depth = 100_000
    body = (
        b'{"input": [{"type": "video", "url": "https://x.example/v.mp4", "x": '
        + b"[" * depth
        + b"]" * depth
        + b"}]}"
    )
    name = pipeline.drop_manifest("deep", body)
    (job,) = settle(pipeline, [name], "INVALID", generations=0)
    assert "levels deep" in job["error"]["message"]
    dead = pipeline.stack.client("sqs").get_queue_attributes(
        QueueUrl=pipeline.stack.state["dead_letter_queue_url"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert dead["Attributes"]["ApproximateNumberOfMessages"] == "0"


# ---------------------------------------------------------------------------- one job never blocks the rest


@pytest.fixture(scope="module")
def one_slot() -> Iterator[OneMachineStack]:
    running = start_stack("faults-one-slot", {"SyncPlanConcurrency": "1"})
    try:
        yield running
    finally:
        running.stop()


def test_a_large_manifest_never_blocks_the_queue(one_slot: OneMachineStack, media: Media) -> None:
    """Injects: a 230 KB manifest (per-frame bounding boxes) ahead of three pairs on a 1-slot plan
    (item 1: none of the four had a document after 5 minutes)."""
    one_slot.emulator.reset()
    pipeline = Pipeline(one_slot, media)
    pipeline.put(f"media/{pipeline.prefix}/v.mp4", media.video)
    pipeline.put(f"media/{pipeline.prefix}/a.wav", media.audio)
    boxes = [[10 + i % 50, 20, 300, 400] for i in range(12_000)]
    manifest = {
        "input": [
            {"type": "video", "url": f"media/{pipeline.prefix}/v.mp4"},
            {"type": "audio", "url": f"media/{pipeline.prefix}/a.wav"},
        ],
        "options": {"active_speaker_detection": {"bounding_boxes": boxes}},
    }
    body = json.dumps(manifest).encode()
    assert 200_000 < len(body) < 256 * 1024
    big = pipeline.drop_manifest("big", body)
    pairs = [pipeline.drop_pair(f"after-{index}") for index in range(3)]
    settle(pipeline, [big, *pairs], timeout=90)
    (post,) = [p for p in pipeline.generation_posts() if "bounding_boxes" in json.dumps(p["body"] or {})]
    assert len(post["body"]["options"]["active_speaker_detection"]["bounding_boxes"]) == 12_000
    one_slot.wait_idle(timeout=30)
