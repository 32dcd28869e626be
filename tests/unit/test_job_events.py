"""`Job Finished` events: one per job from every writer of a final document, through EventBridge
(moto in process: a rule on the bus delivers to an SQS queue, as a downstream consumer would)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import httpx
import pytest

from lipsync.config import IntakeSettings
from lipsync.generation.lifecycle import finalize, stop
from lipsync.jobs.events import DETAIL_TYPE, SOURCE, EventBridgeJobEvents, JobEventPublishError, job_summary
from lipsync.jobs.model import JobError
from lipsync.queue.intake import Intake
from tests.fakes import FakeKicker, FakeStorage, FakeSyncApi
from tests.unit.test_dispatch import ENV, World, api_error, at
from tests.unit.test_dispatch import world as world  # the fixture
from tests.unit.test_lifecycle import (
    JOB_ID,
    OUTPUT_URL,
    VIDEO,
    Cdn,
    completed_job,
    got,
    job_store,
    seed,
    slots,
    state,
    stored,
)


class RecordingJobEvents:
    """The fake adapter: what would have been published, in order."""

    def __init__(self, fail: int = 0) -> None:
        self.published: list[dict[str, Any]] = []
        self._fail = fail

    def job_finished(self, document: dict[str, Any]) -> None:
        if self._fail:
            self._fail -= 1
            raise JobEventPublishError("EventBridge is down")
        self.published.append(job_summary(document))


def subscribed_queue(bus: str = "default") -> tuple[Any, str]:
    """An SQS queue that a rule on `bus` fills with every `Job Finished` event."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    if bus != "default":
        events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=f"finished-{bus}")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    pattern = {"source": [SOURCE], "detail-type": [DETAIL_TYPE]}
    events.put_rule(Name="finished", EventBusName=bus, EventPattern=json.dumps(pattern))
    events.put_targets(Rule="finished", EventBusName=bus, Targets=[{"Id": "queue", "Arn": arn}])
    return sqs, url


def received(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(message["Body"]) for message in messages]


@pytest.mark.parametrize("bus", ["default", "jobs"])
def test_an_event_reaches_a_rule_on_the_bus(bus: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sqs, url = subscribed_queue(bus)
    monkeypatch.setenv("JOB_EVENT_BUS", bus)
    document = {
        "jobId": JOB_ID,
        "name": "campaign/a",
        "status": "FAILED",
        "documentKey": "outputs/campaign/a.json",
        "outputKey": "outputs/campaign/a.mp4",  # no checksum: the video is not there
        "error": {"code": "generation_face_not_detected", "message": "no face"},
        "history": [{"status": "FAILED"}],
        "timings": {"generationSeconds": 12.5},
        "estimate": {"usd": 0.24, "model": "lipsync-2", "seconds": 4, "basis": "audio"},
        "costUsd": 0.0,
    }
    EventBridgeJobEvents.from_env().job_finished(document)
    (event,) = received(sqs, url)
    assert (event["source"], event["detail-type"]) == (SOURCE, DETAIL_TYPE)
    assert event["detail"] == {
        "jobId": JOB_ID,
        "name": "campaign/a",
        "status": "FAILED",
        "documentKey": "outputs/campaign/a.json",
        "error": {"code": "generation_face_not_detected", "message": "no face"},
        "costUsd": 0.0,
        "estimatedCostUsd": 0.24,
        "timings": {"generationSeconds": 12.5},
    }


def test_a_refused_event_is_an_error_not_a_silent_loss() -> None:
    class Refusing:
        def put_events(self, **_: Any) -> dict[str, Any]:
            return {"FailedEntryCount": 1, "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "x"}]}

    with pytest.raises(JobEventPublishError, match="InternalFailure"):
        EventBridgeJobEvents("default", client=Refusing()).job_finished({"jobId": JOB_ID, "status": "FAILED"})


def test_finalize_publishes_one_event_however_often_it_runs() -> None:
    store, storage, api, events = job_store(), FakeStorage(), FakeSyncApi(), RecordingJobEvents()
    completed_job(store)
    for _ in range(2):
        cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
        finalize(store, storage, api.client(), slots(), state(), http=cdn.client(), events=events)
    (event,) = events.published
    assert event["jobId"] == JOB_ID
    assert event["status"] == "COMPLETED"
    assert event["outputKey"] == "outputs/campaign/a.mp4"
    assert event["generationId"] == "gen-1"
    assert event["timings"] == {"queuedSeconds": 0.0}  # the seeded job was created and sent at once


def test_a_failed_publish_leaves_the_job_unfinalized_and_the_retry_publishes() -> None:
    """At least once: no mark before the event is out."""
    store, storage, api, events = job_store(), FakeStorage(), FakeSyncApi(), RecordingJobEvents(fail=1)
    seed(store, "FAILED", error={"code": "generation_face_not_detected", "message": "no face"})
    with pytest.raises(JobEventPublishError):
        finalize(store, storage, api.client(), slots(), state(), http=Cdn({}).client(), events=events)
    assert stored(store).finalized_at is None
    finalize(store, storage, api.client(), slots(), state(), http=Cdn({}).client(), events=events)
    assert stored(store).finalized_at is not None
    assert [event["status"] for event in events.published] == ["FAILED"]


def test_stop_publishes_the_stopped_job_once() -> None:
    store, storage, events = job_store(), FakeStorage(), RecordingJobEvents()
    api = FakeSyncApi(got("PROCESSING"), got("PROCESSING"))
    seed(store, "PROCESSING")
    error = JobError(code="workflow_aborted", message="the job's workflow failed: aborted")
    for _ in range(2):
        stop(store, storage, api.client(), slots(), JOB_ID, "gen-1", error, events)
    (event,) = events.published
    assert (event["status"], event["error"]["code"], event["finishedBy"]) == (
        "STOPPED",
        "workflow_aborted",
        "workflow",
    )


def test_intake_publishes_an_invalid_job_once_even_when_the_event_is_redelivered() -> None:
    store, storage, events = job_store(), FakeStorage(ENV["MEDIA_BUCKET"]), RecordingJobEvents()
    intake = Intake(IntakeSettings.from_env(ENV), store, storage, FakeKicker(), events)
    storage.put("jobs/broken.json", b"{not json")
    for _ in range(2):
        outcome, job = intake.handle(storage.event("jobs/broken.json"))
        assert outcome == "invalid"
    (event,) = events.published
    assert event["status"] == "INVALID"
    assert job is not None
    assert event["jobId"] == job.job_id
    assert "outputKey" not in event


def test_the_dispatcher_publishes_a_rejected_job(world: World) -> None:
    events = RecordingJobEvents()
    world.drop_pair("a", at(1))
    world.script.replies.append(api_error(422, "generation_input_video_invalid", "bad video"))
    dispatcher = world.dispatcher(events=events)
    dispatcher.run()
    (event,) = events.published
    assert (event["status"], event["error"]["code"]) == ("REJECTED", "generation_input_video_invalid")
    assert world.job("a").finalized_at is not None
