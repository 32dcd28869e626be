"""The job lifecycle through the real state machine: every way a job can end.

Each path checks the job record, the output object, the job document and the sync.so
emulator's request log.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from lipsync.syncso.webhook_auth import job_token, sign
from tests.e2e.conftest import WEBHOOK_SECRET, Pipeline, sha256

pytestmark = pytest.mark.integration


def gets(pipeline: Pipeline, job: dict[str, Any]) -> list[dict[str, Any]]:
    return pipeline.api_calls("GET", f"/v2/generate/{job['generationId']}")


def states_entered(pipeline: Pipeline, job: dict[str, Any]) -> list[str]:
    return [
        event["stateEnteredEventDetails"]["name"]
        for event in pipeline.execution_history(job["executionName"])
        if event["type"].endswith("StateEntered")
    ]


def assert_output_copied(pipeline: Pipeline, job: dict[str, Any]) -> None:
    key = job["outputKey"]
    (version,) = pipeline.versions(key)  # exactly one object written
    head = pipeline.s3.head_object(Bucket=pipeline.bucket, Key=key)
    body = pipeline.s3.get_object(Bucket=pipeline.bucket, Key=key)["Body"].read()
    assert body[4:8] == b"ftyp"
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {
        "job-id": job["jobId"],
        "generation-id": job["generationId"],
        "model": "lipsync-2",
    }
    tags = pipeline.s3.get_object_tagging(Bucket=pipeline.bucket, Key=key)["TagSet"]
    assert tags == [{"Key": "sha256", "Value": sha256(body)}]
    assert job["outputChecksum"] == f"sha256:{sha256(body)}"
    assert version["VersionId"] == job["outputVersionId"]


def assert_document(pipeline: Pipeline, job: dict[str, Any], status: str) -> dict[str, Any]:
    assert len(pipeline.versions(job["documentKey"])) == 1  # exactly one document written
    document = pipeline.document(job)
    assert document["status"] == status
    assert document["jobId"] == job["jobId"]
    assert document["generationId"] == job["generationId"]
    for private in ("request", "attempt", "taskToken", "outputUrl"):
        assert private not in document
    assert "X-Amz-Signature" not in json.dumps(document)
    assert document["timings"]["totalSeconds"] >= 0
    assert document["history"][0]["status"] == "QUEUED"
    assert document["generations"][-1]["generationId"] == job["generationId"]
    return document


def test_webhook_on_time_finishes_without_polling(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("on-time")
    job = pipeline.wait_job(name)
    assert (job["status"], job["finishedBy"]) == ("COMPLETED", "webhook")
    assert len(gets(pipeline, job)) == 1  # the confirmation only
    assert states_entered(pipeline, job) == ["AwaitWebhook", "Finalize"]  # 2 state transitions
    assert_output_copied(pipeline, job)
    document = assert_document(pipeline, job, "COMPLETED")
    assert document["finishedBy"] == "webhook"
    assert document["outputKey"] == f"outputs/{name}.mp4"
    assert document["outputDuration"] > 0
    assert [(entry["status"], entry["source"]) for entry in document["history"]] == [
        ("QUEUED", "intake"),
        ("SUBMITTING", "dispatch"),
        ("PENDING", "dispatch"),
        ("COMPLETED", "finalize"),  # read with a GET after the webhook woke the execution
    ]
    # Every task is idempotent: finalize again, and still one output object and one document.
    again = pipeline.stack.invoke("FinalizeFunction", pipeline.execution_input(job["executionName"]))
    assert again == {"status": "COMPLETED", "outputKey": job["outputKey"]}
    assert len(pipeline.versions(job["outputKey"])) == 1
    assert len(pipeline.versions(job["documentKey"])) == 1
    assert len(gets(pipeline, job)) == 1


def test_a_dropped_webhook_is_recovered_by_polling(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": "drop", "processingSeconds": 8})
    name = pipeline.drop_pair("lost")
    job = pipeline.wait_job(name)
    assert (job["status"], job["finishedBy"]) == ("COMPLETED", "polling")
    entered = states_entered(pipeline, job)
    assert entered[0] == "AwaitWebhook"
    assert entered.count("WaitBeforePoll") >= 1  # at least one poll found it still running
    assert len(gets(pipeline, job)) == entered.count("Reconcile")
    assert [entry["source"] for entry in job["history"]][-1] == "poll"
    assert_output_copied(pipeline, job)
    assert_document(pipeline, job, "COMPLETED")


def test_a_webhook_before_the_token_is_armed_still_wakes_the_job(pipeline: Pipeline) -> None:
    # The generation finishes at once and its webhook goes out while sync.so's 201 is still on its
    # way (latency): the webhook lands before dispatch records the generation, so before the token.
    pipeline.stack.emulator.set_scenario({"processingSeconds": 0, "latencySeconds": 1.5})
    name = pipeline.drop_pair("early")
    job = pipeline.wait_job(name)
    assert (job["status"], job["finishedBy"]) == ("COMPLETED", "webhook")
    armed = [
        json.loads(line)
        for line in pipeline.stack.function_logs("ArmWebhookFunction").splitlines()
        if line.startswith("{") and '"webhook wait armed"' in line
    ]
    assert [entry["webhookAlreadyArrived"] for entry in armed if entry["job_id"] == job["jobId"]] == [True]
    assert len(gets(pipeline, job)) == 1
    assert "WaitBeforePoll" not in states_entered(pipeline, job)
    assert_output_copied(pipeline, job)
    assert_document(pipeline, job, "COMPLETED")


@pytest.mark.parametrize("mode", ["duplicate", "reorder"])
def test_duplicate_and_reordered_webhooks_change_nothing(pipeline: Pipeline, mode: str) -> None:
    pipeline.stack.emulator.set_scenario({"webhook": mode})
    name = pipeline.drop_pair(mode)
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    deadline = time.monotonic() + 10
    answered: list[dict[str, Any]] = []
    while len(answered) < 2 and time.monotonic() < deadline:  # the second delivery may still be on its way
        answered = [
            hook
            for hook in pipeline.stack.emulator.webhooks()
            if hook["generationId"] == job["generationId"] and hook.get("responseStatus")
        ]
        time.sleep(0.1)
    assert [hook["responseStatus"] for hook in answered] == [200, 200]
    job = pipeline.jobs(name)[0]
    statuses = [entry["status"] for entry in job["history"]]
    assert statuses == ["QUEUED", "SUBMITTING", "PENDING", "COMPLETED"]
    assert_output_copied(pipeline, job)
    assert_document(pipeline, job, "COMPLETED")


def test_a_failed_generation_is_recorded_with_the_api_error_and_nothing_copied(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario(
        {
            "outcome": "FAILED",
            "outcomeErrorCode": "generation_face_not_detected",  # permanent: never sent again
            "outcomeError": "No face.",
        }
    )
    name = pipeline.drop_pair("failed")
    job = pipeline.wait_job(name)
    assert job["status"] == "FAILED"
    document = assert_document(pipeline, job, "FAILED")
    assert document["error"] == {"code": "generation_face_not_detected", "message": "No face."}
    assert pipeline.versions(f"outputs/{name}.mp4") == []
    assert len(pipeline.generation_posts()) == 1


def test_a_rejected_generation_without_a_webhook_is_found_by_polling(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"outcome": "REJECTED", "outcomeErrorCode": "generation_rejected"})
    name = pipeline.drop_pair("rejected")
    job = pipeline.wait_job(name)
    assert (job["status"], job["finishedBy"]) == ("REJECTED", "polling")
    assert pipeline.stack.emulator.webhooks() == []  # sync.so sends none for REJECTED here
    document = assert_document(pipeline, job, "REJECTED")
    assert document["error"]["code"] == "generation_rejected"
    assert pipeline.versions(f"outputs/{name}.mp4") == []


def test_an_expired_output_url_is_refreshed_through_download(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"outputUrlTtlSeconds": 0})
    name = pipeline.drop_pair("expired")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    assert len(pipeline.api_calls("GET", f"/v2/generations/{job['generationId']}/download")) == 1
    assert_output_copied(pipeline, job)
    assert_document(pipeline, job, "COMPLETED")


def test_a_job_that_never_finishes_times_out_and_stays_watched(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"outcome": "NEVER", "webhook": "drop"})
    name = pipeline.drop_pair("never")
    job = pipeline.wait_job(name, until=lambda j: j["status"] == "TIMED_OUT", timeout=40)
    document = pipeline.document(job)
    assert document["status"] == "TIMED_OUT"
    assert document["error"]["code"] == "job_timed_out"
    assert "keeps looking" in document["error"]["message"]
    assert "finalizedAt" not in job  # not over: sync.so may still finish it
    assert pipeline.versions(f"outputs/{name}.mp4") == []
    arn = pipeline.execution_arn(job["executionName"])
    assert pipeline.sfn.describe_execution(executionArn=arn)["status"] == "RUNNING"
    entered = states_entered(pipeline, job)
    assert 2 <= entered.count("Reconcile") <= 12  # bounded polling, capped backoff
    assert entered[-1] == "AwaitLateSignal"  # low-rate checks, a webhook still wakes it
    # An operator aborts the workflow: the dispatcher ends the job from the execution's end.
    pipeline.sfn.stop_execution(executionArn=arn, error="Operator", cause="stopped by hand")
    stopped = pipeline.wait_job(name, timeout=30)
    assert stopped["status"] == "STOPPED"
    assert pipeline.document(stopped)["status"] == "STOPPED"


def test_finalize_is_retried_after_a_failure_mid_copy(pipeline: Pipeline) -> None:
    pipeline.stack.emulator.set_scenario({"outputDownloadFailures": 1})
    name = pipeline.drop_pair("mid-copy")
    job = pipeline.wait_job(name)
    assert job["status"] == "COMPLETED"
    history = pipeline.execution_history(job["executionName"])
    failures = [event for event in history if event["type"] == "TaskFailed"]
    assert len(failures) == 1
    details = failures[0]["taskFailedEventDetails"]
    assert details["error"] == "OutputNotCopiedYet"  # Step Functions' Retry comes back for it
    assert "peer closed connection" in details["cause"]  # the download broke off halfway
    assert states_entered(pipeline, job).count("Finalize") == 1  # retried inside the state
    assert_output_copied(pipeline, job)  # one object, the whole file
    assert_document(pipeline, job, "COMPLETED")


class _Recorder(BaseHTTPRequestHandler):
    hits: list[str] = []  # noqa: RUF012 - shared on purpose: the test reads it

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"\x00\x00\x00\x18ftypFORGED")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_forged_webhook_changes_nothing_and_its_url_is_never_fetched(pipeline: Pipeline) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    evil_url = f"http://127.0.0.1:{server.server_address[1]}/evil.mp4"
    try:
        pipeline.stack.emulator.set_scenario({"processingSeconds": 3})
        name = pipeline.drop_pair("forged")
        job = pipeline.wait_job(name, until=lambda j: "generationId" in j)
        url = f"{pipeline.stack.state['api_url']}/webhooks/sync/{job['jobId']}"
        body = json.dumps({"id": job["generationId"], "status": "COMPLETED", "outputUrl": evil_url}).encode()
        signature = sign(WEBHOOK_SECRET, body, int(time.time()))
        forged = httpx.post(f"{url}?token={'f' * 64}", content=body, headers={"Sync-Signature": signature})
        assert forged.status_code == 403
        assert pipeline.jobs(name)[0]["history"][: len(job["history"])] == job["history"]

        # Even a delivery with valid credentials is only a signal: the output comes from the GET's URL.
        token = job_token(pipeline.token_key(), job["jobId"])
        assert (
            httpx.post(
                f"{url}?token={token}", content=body, headers={"Sync-Signature": signature}
            ).status_code
            == 200
        )
        finished = pipeline.wait_job(name)
        assert finished["status"] == "COMPLETED"
        assert_output_copied(pipeline, finished)
        assert _Recorder.hits == []
    finally:
        server.shutdown()
