"""The job queue and admission control on a one-slot plan, through the real template, functions,
state machine and emulator: arrival order, every ending frees the slot, leaks are swept, URLs are
fresh, webhooks are only signals, and transient faults (429s, throttles, a rotated key) fail nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from local.stack import OneMachineStack
from tests.e2e.conftest import Media, Pipeline, start_stack

pytestmark = pytest.mark.integration

PRESIGN_SECONDS = 10


@pytest.fixture(scope="module")
def one_slot() -> Iterator[OneMachineStack]:
    # Our plan allows one generation; the emulator allows two, so a generation we stopped following
    # (an aborted execution) does not block the next one there. Short-lived input URLs on purpose.
    running = start_stack(
        "e2e-queue",
        {"SyncPlanConcurrency": "1", "PresignedUrlSeconds": str(PRESIGN_SECONDS)},
        concurrency=2,
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def pipeline(one_slot: OneMachineStack, media: Media) -> Iterator[Pipeline]:
    one_slot.emulator.reset()
    yield Pipeline(one_slot, media)
    one_slot.wait_idle(timeout=30)


def resource(pipeline: Pipeline, logical_id: str) -> str:
    return str(pipeline.stack.provisioned.resources[logical_id]["Ref"])


def names_in_create_order(pipeline: Pipeline, names: list[str]) -> list[str]:
    by_generation = {job["generationId"]: name for name in names for job in pipeline.jobs(name)}
    return [
        by_generation[g["id"]]
        for g in pipeline.stack.emulator.stats()["generations"]
        if g["id"] in by_generation
    ]


def test_jobs_start_in_arrival_order_one_at_a_time_and_show_their_place(pipeline: Pipeline) -> None:
    names = []
    for stem in ("first", "second", "third", "fourth"):
        names.append(pipeline.drop_pair(stem))
        time.sleep(0.05)  # distinct upload times
    last = pipeline.wait_job(names[-1], until=lambda job: job["status"] == "QUEUED")
    view = pipeline.signed_get(f"/jobs/{last['jobId']}").json()
    assert view["status"] == "QUEUED"
    assert 1 <= view["placeInLine"] <= 3
    assert view["etaSeconds"] > 0
    queue = pipeline.signed_get("/queue").json()
    assert (queue["slots"], queue["inFlight"]) == (1, 1)
    assert queue["queued"] >= 1
    for name in names:
        assert pipeline.wait_job(name, timeout=60)["status"] == "COMPLETED"
    assert names_in_create_order(pipeline, names) == names
    stats = pipeline.stack.emulator.stats()
    assert stats["maxActive"] == 1
    assert stats["createRequests"] == len(names)  # one POST per job: no 429s to spend
    assert pipeline.signed_get("/queue").json()["queued"] == 0


def test_an_aborted_execution_still_writes_the_ending_and_frees_the_slot(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": "drop", "processingSeconds": 30})
    stuck = pipeline.drop_pair("aborted")
    job = pipeline.wait_job(stuck, until=lambda j: j["status"] == "PENDING" and "executionName" in j)
    pipeline.stack.emulator.set_scenario({"webhook": "deliver", "processingSeconds": 1})
    waiting = pipeline.drop_pair("behind")
    assert pipeline.wait_job(waiting, until=lambda j: j["status"] == "QUEUED")["status"] == "QUEUED"
    pipeline.sfn.stop_execution(executionArn=pipeline.execution_arn(job["executionName"]), cause="operator")
    ended = pipeline.wait_job(stuck, timeout=30)
    assert ended["status"] == "STOPPED"
    # AWS reports ABORTED; moto reports an execution stopped during a task-token wait as FAILED.
    assert ended["error"]["code"] in ("workflow_aborted", "workflow_failed")
    assert pipeline.document(stuck)["status"] == "STOPPED"
    assert pipeline.wait_job(waiting, timeout=30)["status"] == "COMPLETED"


def test_a_leaked_slot_is_freed_by_the_sweep(pipeline: Pipeline) -> None:
    admission = resource(pipeline, "AdmissionTable")
    pipeline.dynamodb.update_item(
        TableName=admission,
        Key={"id": {"S": "plan"}},
        UpdateExpression="SET slot_0 = :ghost",
        ExpressionAttributeValues={
            ":ghost": {"M": {"jobId": {"S": "ghost-job"}, "since": {"N": "0"}, "leaseUntil": {"N": "0"}}}
        },
    )
    name = pipeline.drop_pair("after-leak")
    assert pipeline.wait_job(name, timeout=30)["status"] == "COMPLETED"


def test_a_job_that_waits_longer_than_its_url_lifetime_still_succeeds(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"processingSeconds": PRESIGN_SECONDS + 3})
    ahead = pipeline.drop_pair("long")
    pipeline.wait_job(ahead, until=lambda j: j["status"] == "PENDING")
    pipeline.stack.emulator.set_scenario({"processingSeconds": 1})
    patient = pipeline.drop_pair("patient")
    job = pipeline.wait_job(patient, timeout=60)
    assert job["status"] == "COMPLETED"
    queued_for = time.mktime(time.strptime(job["submittedAt"][:19], "%Y-%m-%dT%H:%M:%S")) - time.mktime(
        time.strptime(job["createdAt"][:19], "%Y-%m-%dT%H:%M:%S")
    )
    assert queued_for > PRESIGN_SECONDS  # an upload-time URL would have expired by now


def test_a_lying_webhook_cannot_fail_a_completed_job(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": "drop", "processingSeconds": 3})
    name = pipeline.drop_pair("lied-to")
    job = pipeline.wait_job(name, until=lambda j: "taskToken" in j.get("attempt", {}))
    lie = {"id": job["generationId"], "status": "FAILED", "error_code": "generation_pipeline_failed"}
    assert pipeline.deliver_webhook(job["jobId"], lie) == 200
    finished = pipeline.wait_job(name, timeout=40)
    assert finished["status"] == "COMPLETED"  # the GET decided
    assert finished["webhookStatus"] == "FAILED"  # the claim is kept as a signal
    assert pipeline.s3.head_object(Bucket=pipeline.bucket, Key=finished["outputKey"])["ContentLength"] > 0


def test_a_webhook_for_a_queued_job_changes_nothing(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"processingSeconds": 3})
    pipeline.drop_pair("busy")
    name = pipeline.drop_pair("still-queued")
    job = pipeline.wait_job(name, until=lambda j: j["status"] == "QUEUED")
    claim = {"id": "gen-from-nowhere", "status": "COMPLETED"}
    assert pipeline.deliver_webhook(job["jobId"], claim) == 200
    after = pipeline.jobs(name)[0]
    assert (after["status"], after.get("generationId"), after["history"]) == ("QUEUED", None, job["history"])
    assert after["webhookStatus"] == "COMPLETED"
    assert pipeline.wait_job(name, timeout=30)["status"] == "COMPLETED"


def test_a_429_from_another_client_sends_the_job_back_to_the_front(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario(
        {
            "createFailures": [
                {"status": 429, "errorCode": "concurrency_limit_reached", "count": 2, "retryAfterSeconds": 1}
            ]
        }
    )
    first = pipeline.drop_pair("throttled")
    time.sleep(0.05)
    second = pipeline.drop_pair("after-throttle")
    for name in (first, second):
        assert pipeline.wait_job(name, timeout=40)["status"] == "COMPLETED"
    assert names_in_create_order(pipeline, [first, second]) == [first, second]
    posts = pipeline.generation_posts()
    assert [post["status"] for post in posts] == [429, 429, 201, 201]


def test_a_dynamodb_throttle_in_reconcile_is_retried_not_a_failure(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": "drop", "processingSeconds": 2})
    # The SDK tries 3 times (AWS_MAX_ATTEMPTS), then the state machine's Retry takes over: two
    # invocations fail, the third succeeds.
    pipeline.stack.inject_aws_fault(
        "ReconcileFunction", "dynamodb:GetItem", count=7, code="ProvisionedThroughputExceededException"
    )
    name = pipeline.drop_pair("throttled-db")
    job = pipeline.wait_job(name, timeout=60)
    assert job["status"] == "COMPLETED"
    assert pipeline.stack.aws_fault_hits()[("ReconcileFunction", "dynamodb:GetItem")] == 7
    failures = [e for e in pipeline.execution_history(job["executionName"]) if e["type"] == "TaskFailed"]
    assert len(failures) == 2  # the Lambda did fail, and the state machine retried it
    assert all("ProvisionedThroughputExceeded" in f["taskFailedEventDetails"]["error"] for f in failures)


def test_a_transient_failure_is_sent_once_more_and_every_generation_is_listed(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario(
        {"outcome": "FAILED", "outcomeErrorCode": "generation_pipeline_failed", "outcomeError": "crashed"}
    )
    name = pipeline.drop_pair("transient")
    job = pipeline.wait_job(name, timeout=60)
    assert job["status"] == "FAILED"
    assert job["resubmissions"] == 1
    posts = pipeline.generation_posts()
    assert [post["headers"]["idempotency-key"] for post in posts] == [
        f"{job['jobId']}.1",
        f"{job['jobId']}.2",
    ]
    document = pipeline.document(name)
    assert [g["apiStatus"] for g in document["generations"]] == ["FAILED", "FAILED"]
    assert len({g["generationId"] for g in document["generations"]}) == 2


def test_a_download_that_keeps_breaking_is_tried_again_with_waits_until_it_works(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"outputDownloadFailures": 4})
    name = pipeline.drop_pair("undownloadable")
    job = pipeline.wait_job(name, timeout=120)
    assert job["status"] == "COMPLETED"  # sync.so's word
    assert "error" not in job
    assert job["outputChecksum"].startswith("sha256:")
    assert pipeline.document(name)["outputChecksum"] == job["outputChecksum"]
    history = pipeline.execution_history(job["executionName"])
    retried = [e for e in history if e["type"] == "TaskFailed"]
    assert len(retried) == 4
    assert {e["taskFailedEventDetails"]["error"] for e in retried} == {"OutputNotCopiedYet"}
    execution = pipeline.sfn.describe_execution(executionArn=pipeline.execution_arn(job["executionName"]))
    assert execution["status"] == "SUCCEEDED"


def test_an_api_key_rotated_during_a_job_fails_nothing(pipeline: Pipeline) -> None:
    # Last in the module: the functions keep the rotated key until their next 401.
    pipeline.stack.emulator.set_scenario({"processingSeconds": 3})
    running = pipeline.drop_pair("during-rotation")
    pipeline.wait_job(running, until=lambda j: j["status"] == "PENDING")
    secrets = pipeline.stack.client("secretsmanager")
    secrets.put_secret_value(SecretId=resource(pipeline, "SyncApiKeySecret"), SecretString="sk-rotated")
    pipeline.stack.emulator.rotate_api_key("sk-rotated")
    later = pipeline.drop_pair("after-rotation")
    try:
        for name in (running, later):
            assert pipeline.wait_job(name, timeout=60)["status"] == "COMPLETED"
    finally:
        secrets.put_secret_value(SecretId=resource(pipeline, "SyncApiKeySecret"), SecretString="sk-emulator")
        pipeline.stack.emulator.rotate_api_key("sk-emulator")
