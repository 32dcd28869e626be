"""The state machine's tasks: arm the webhook wait, reconcile with a GET, finalize, stop."""

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lipsync.generation.lifecycle import (
    OUTPUT_CONTENT_TYPE,
    ExecutionState,
    GenerationNotFinished,
    OutputNotCopiedYet,
    PollSchedule,
    Slots,
    finalize,
    is_transient_failure,
    reconcile,
    stop,
)
from lipsync.generation.webhooks import WebhookReceiver, arm_webhook_wait
from lipsync.jobs import transitions as t
from lipsync.jobs.model import Job, JobError, JobStatus
from lipsync.jobs.transitions import F
from lipsync.plan.admission import ClaimOutcome, Contention, SlotHolder
from lipsync.syncso.models import Generation
from lipsync.syncso.webhook_auth import job_token
from tests.fakes import FakeKicker, FakeStorage, FakeSyncApi, FakeWorkflow, current_key
from tests.tables import SeededStore, make_tables

JOB_ID = "0123456789abcdef0123456789abcdef"
AT = "2026-11-25T00:00:00.000Z"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OUTPUT_URL = "https://cdn.sync.example/out.mp4?sig=first"
FRESH_URL = "https://cdn.sync.example/out.mp4?sig=fresh"
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64


def job_store() -> SeededStore:
    return make_tables()[0]


def seed(store: SeededStore, status: str = "PENDING", **extra: Any) -> Job:
    """A job; a final one as polling left it (its status confirmed by a GET) unless `extra` says otherwise."""
    if status not in {"PENDING", "PROCESSING", "TIMED_OUT"}:
        extra = {"confirmedAt": AT, "apiStatus": status} | extra
    attempt: dict[str, Any] = {"key": f"{JOB_ID}.1", "sends": 1}
    if url := extra.pop("outputUrl", None):
        attempt["outputUrl"] = url
    return store.put(
        Job.model_validate(
            {
                "jobId": JOB_ID,
                "name": "campaign/a",
                "kind": "pair",
                "status": status,
                "bucket": "media-bucket",
                "model": "lipsync-2",
                "documentKey": "outputs/campaign/a.json",
                "outputKey": "outputs/campaign/a.mp4",
                "generationId": "gen-1",
                "createdAt": AT,
                "updatedAt": AT,
                "submittedAt": AT,
                "history": [{"status": status, "source": "dispatch", "at": AT}],
                "attempt": attempt,
            }
            | extra
        )
    )


def stored(store: SeededStore) -> Job:
    job = store.get(JOB_ID)
    assert job is not None
    return job


KICKER = FakeKicker()


def slots(retries: int = 1) -> Slots:
    """Admission over the same moto tables as `job_store()` (created once per test)."""
    return Slots(make_tables()[1], KICKER, retries)


def hold_slot(store: SeededStore, slot: int = 0) -> None:
    """The job holds plan slot `slot`, as dispatch left it."""
    admission = make_tables()[1]
    plan = admission.read()
    holder = SlotHolder(job_id=JOB_ID, since=0.0, lease_until=0.0)
    change = t.note(JOB_ID, {F.ATTEMPT_SLOT: slot})
    assert admission.claim(plan, slot, holder, 60, change) == ClaimOutcome.CLAIMED


# ---------------------------------------------------------------------------- arm


def test_arm_stores_the_token_and_waits() -> None:
    store, workflow = job_store(), FakeWorkflow()
    seed(store)
    assert arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1") == {
        "armed": True,
        "webhookAlreadyArrived": False,
    }
    assert stored(store).attempt.task_token == "task-1"  # type: ignore[union-attr]
    assert workflow.wakes == []


@pytest.mark.parametrize("early", ["COMPLETED", "FAILED", "REJECTED"])
def test_arm_wakes_the_workflow_itself_when_a_terminal_webhook_came_first(early: str) -> None:
    store, workflow = job_store(), FakeWorkflow()
    seed(store, webhookStatus=early, webhookGenerationId="gen-1")
    workflow.wait("task-1")
    assert arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1") == {
        "armed": True,
        "webhookAlreadyArrived": True,
    }
    assert workflow.wakes == [("task-1", {"webhookStatus": early})]
    assert workflow.waiting == set()


def test_arm_does_not_wake_for_a_non_terminal_webhook_status() -> None:
    store, workflow = job_store(), FakeWorkflow()
    seed(store, "PROCESSING", webhookStatus="PROCESSING", webhookGenerationId="gen-1")
    assert arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1")["webhookAlreadyArrived"] is False
    assert workflow.wakes == []


@pytest.mark.parametrize("webhook_first", [True, False])
def test_webhook_and_arm_converge_in_either_order(webhook_first: bool) -> None:
    store, workflow = job_store(), FakeWorkflow()
    seed(store)
    workflow.wait("task-1")
    hooks = WebhookReceiver(store, workflow, lambda: ["key"], lambda: [])
    body = json.dumps({"id": "gen-1", "status": "FAILED", "error_code": "boom"}).encode()

    def deliver() -> None:
        hooks.receive(JOB_ID, job_token("key", JOB_ID), None, body)

    def arm() -> None:
        arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1")

    for step in (deliver, arm) if webhook_first else (arm, deliver):
        step()
    assert workflow.waiting == set()  # the wait is over
    assert [token for token, _ in workflow.wakes] == ["task-1"]  # by exactly one side


# ---------------------------------------------------------------------------- reconcile


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def state(
    attempt: int = 0,
    webhook: dict[str, Any] | None = None,
    deadline: datetime = NOW + timedelta(days=3650),
    *,
    slot_release_at: datetime | None = None,
    watch_until: datetime | None = None,
) -> ExecutionState:
    return ExecutionState.model_validate(
        {
            "jobId": JOB_ID,
            "generationId": "gen-1",
            "webhookTimeoutSeconds": 600,
            "poll": {
                "firstIntervalSeconds": 10,
                "backoffRate": 2,
                "maxIntervalSeconds": 60,
                "lateCheckSeconds": 300,
                "deadline": iso(deadline),
                "slotReleaseAt": iso(slot_release_at or deadline + timedelta(hours=1)),
                "watchUntil": iso(watch_until or deadline + timedelta(hours=47)),
            },
            "reconcile": {"attempt": attempt, "terminal": False, "late": False, "nextWaitSeconds": 10},
            "webhook": webhook or {},
        }
    )


def poll(
    store: SeededStore, api: FakeSyncApi, execution: ExecutionState, moment: datetime = NOW
) -> dict[str, Any]:
    """Reconcile, as the state machine calls it."""
    return reconcile(store, FakeStorage(), api.client(), slots(), execution, 1, clock(moment))


def got(status: str, **extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"id": "gen-1", "status": status, "createdAt": AT, **extra})


COMPLETED = got("COMPLETED", outputUrl=OUTPUT_URL, outputDuration=12.5)
WOKEN = {"status": "COMPLETED", "source": "webhook"}
TIMED_OUT_WAIT = {"Error": "States.Timeout", "Cause": "no webhook"}


def clock(moment: datetime = NOW) -> Callable[[], datetime]:
    return lambda: moment


def answer(status: str | None, terminal: bool, attempt: int, wait: int, late: bool = False) -> dict[str, Any]:
    return {"status": status, "terminal": terminal, "late": late, "attempt": attempt, "nextWaitSeconds": wait}


def test_reconcile_records_a_completed_generation_it_polled() -> None:
    store, api = job_store(), FakeSyncApi(COMPLETED)
    seed(store, "PROCESSING")
    assert poll(store, api, state(0)) == answer("COMPLETED", True, 1, 1)
    (request,) = api.requests
    assert (request.method, request.url.path) == ("GET", "/v2/generate/gen-1")
    job = stored(store)
    assert job.attempt is not None
    assert (job.status, job.attempt.output_url, job.output_duration) == ("COMPLETED", OUTPUT_URL, 12.5)
    assert (job.finished_by, job.history[-1].source) == ("polling", "poll")
    assert job.finished_at is not None
    assert job.confirmed_at is not None
    assert job.late is None
    assert "outputUrl" not in json.dumps(job.public_view())


@pytest.mark.parametrize(
    ("attempt", "webhook"),
    [(0, {}), (0, TIMED_OUT_WAIT), (3, WOKEN), (1, {})],
)
def test_reconcile_says_polling_when_no_webhook_woke_this_look(attempt: int, webhook: dict[str, Any]) -> None:
    store, api = job_store(), FakeSyncApi(COMPLETED)
    seed(store, "PROCESSING")
    assert poll(store, api, state(attempt, webhook))["terminal"] is True
    job = stored(store)
    assert (job.status, job.finished_by, job.history[-1].source) == ("COMPLETED", "polling", "poll")


def test_finalize_confirms_a_webhook_reported_end_and_keeps_the_get_details() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(COMPLETED)
    # The webhook only signalled; nothing has read the end back from sync.so yet.
    seed(store, "PROCESSING", webhookStatus="COMPLETED", webhookGenerationId="gen-1")
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    result = finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert result["outputKey"] == "outputs/campaign/a.mp4"
    (request,) = api.requests
    assert request.url.path == "/v2/generate/gen-1"
    job = stored(store)
    assert (job.status, job.output_duration, job.finished_by) == ("COMPLETED", 12.5, "webhook")
    assert job.finished_at is not None
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO


def test_finalize_after_a_premature_webhook_hands_over_to_polling() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(got("PROCESSING"))
    seed(store, "PROCESSING", webhookStatus="COMPLETED", webhookGenerationId="gen-1")
    with pytest.raises(GenerationNotFinished):
        finalize(store, storage, api.client(), slots(), state(), now=clock())
    assert storage.objects == {}
    assert storage.documents == {}
    assert stored(store).confirmed_at is None


def test_reconcile_records_a_failed_generation_with_its_error() -> None:
    store = job_store()
    api = FakeSyncApi(got("FAILED", error="No face.", errorCode="generation_face_not_detected"))
    seed(store)
    assert poll(store, api, state())["status"] == "FAILED"
    job = stored(store)
    assert job.error is not None
    assert (job.status, job.error.code, job.error.message) == (
        "FAILED",
        "generation_face_not_detected",
        "No face.",
    )


@pytest.mark.parametrize(
    ("attempt", "seconds_left", "expected"),
    [
        (0, 3600, 10),
        (1, 3600, 20),
        (2, 3600, 40),
        (3, 3600, 60),  # 80, capped
        (12, 3600, 60),
        (1, 25, 20),
        (2, 25, 25),  # never past the deadline
        (0, 0.5, 1),
    ],
)
def test_reconcile_of_a_running_generation_schedules_the_next_look(
    attempt: int, seconds_left: float, expected: int
) -> None:
    store, api = job_store(), FakeSyncApi(got("PROCESSING"))
    seed(store)
    result = poll(store, api, state(attempt, deadline=NOW + timedelta(seconds=seconds_left)))
    assert result == answer("PROCESSING", False, attempt + 1, expected)
    job = stored(store)
    assert (job.status, job.history[-1].source) == ("PROCESSING", "poll")


def test_reconcile_of_the_same_running_status_twice_changes_nothing_but_returns_the_schedule() -> None:
    store, api = job_store(), FakeSyncApi(got("PROCESSING"))
    seed(store)
    poll(store, api, state(0))
    history = stored(store).history
    assert poll(store, api, state(1))["attempt"] == 2
    assert stored(store).history == history


def test_poll_schedule_follows_first_times_rate_to_the_power_of_attempt() -> None:
    schedule = PollSchedule.model_validate(
        {
            "firstIntervalSeconds": 5,
            "backoffRate": 1.5,
            "maxIntervalSeconds": 30,
            "deadline": NOW + timedelta(days=1),
        }
    )
    # 5 x 1.5^n seconds, rounded up (Wait takes whole seconds), capped at 30.
    assert [schedule.wait_after(attempt, NOW) for attempt in range(7)] == [5, 8, 12, 17, 26, 30, 30]


def test_a_terminal_answer_past_the_deadline_is_still_recorded_as_such() -> None:
    store, api = job_store(), FakeSyncApi(COMPLETED)
    seed(store)
    result = poll(store, api, state(7, deadline=NOW - timedelta(minutes=5)))
    assert result["status"] == "COMPLETED"
    assert stored(store).status == "COMPLETED"


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectTimeout("slow", request=request)


NOT_FOUND = httpx.Response(
    404, json={"statusCode": 404, "errorCode": "generation_not_found", "message": "no"}
)
FORBIDDEN = httpx.Response(403, json={"statusCode": 403, "message": "Forbidden"})
UNAUTHORIZED = httpx.Response(401, json={"message": "Unauthorized", "statusCode": 401})


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(502, text="bad gateway"),
        httpx.Response(429),
        time_out,
        NOT_FOUND,
        FORBIDDEN,
        UNAUTHORIZED,
        httpx.Response(200, text="<html>not json</html>"),
    ],
    ids=["502", "429", "timeout", "404", "403", "401", "garbled-200"],
)
def test_a_get_that_fails_decides_nothing_and_the_schedule_moves_on(
    reply: httpx.Response | Callable[..., Any],
) -> None:
    """Issue 14, items 10 and 12: a failed poll did not advance the attempt, and one 403/404 (a glitch
    right after a COMPLETED webhook) ended the job FAILED, its output never copied."""
    store, api = job_store(), FakeSyncApi(reply)
    seed(store)
    before = stored(store)
    assert poll(store, api, state(2)) == answer("PENDING", False, 3, 40)
    after = stored(store)
    assert (after.status, after.error, after.history) == (before.status, before.error, before.history)


def test_a_404_glitch_after_a_completed_webhook_still_ends_with_the_output_copied() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(NOT_FOUND, COMPLETED)
    seed(store, "PROCESSING", webhookStatus="COMPLETED", webhookGenerationId="gen-1")
    with pytest.raises(GenerationNotFinished):
        finalize(store, storage, api.client(), slots(), state(), now=clock())
    assert stored(store).status == "PROCESSING"
    assert poll(store, api, state(1))["terminal"] is True
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    assert (
        finalize(store, storage, api.client(), slots(), state(), http=cdn.client())["status"] == "COMPLETED"
    )
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO
    assert storage.documents["outputs/campaign/a.json"]["status"] == "COMPLETED"


# ---------------------------------------------------------------------------- past the deadline


def test_past_the_deadline_the_job_is_timed_out_but_watched_and_keeps_its_slot() -> None:
    """Issue 14, item 3: TIMED_OUT was final, freed the slot while sync.so still counted the
    generation, and a completion a minute later was never copied."""
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(got("PROCESSING"))
    seed(store, "PROCESSING")
    hold_slot(store)
    execution = state(7, deadline=NOW - timedelta(seconds=1))
    result = reconcile(store, storage, api.client(), slots(), execution, 1, clock())
    assert result == answer("TIMED_OUT", False, 8, 300, late=True)
    job = stored(store)
    assert job.status == JobStatus.TIMED_OUT
    assert job.error is not None
    assert job.error.code == "job_timed_out"
    assert "keeps looking" in job.error.message
    assert job.finished_at is None
    assert job.slot == 0
    assert make_tables()[1].read().slots[0].job_id == JOB_ID
    assert storage.documents["outputs/campaign/a.json"]["status"] == "TIMED_OUT"  # no event: not over


def test_a_timed_out_job_that_completes_later_is_copied_and_marked_late() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("PROCESSING"), COMPLETED)
    seed(store, "PROCESSING")
    hold_slot(store)
    past = state(7, deadline=NOW - timedelta(seconds=1))
    reconcile(store, storage, api.client(), slots(), past, 1, clock())
    assert poll(store, api, past, NOW + timedelta(minutes=1))["terminal"] is True
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    result = finalize(store, storage, api.client(), slots(), past, http=cdn.client())
    assert result["status"] == "COMPLETED"
    job = stored(store)
    assert (job.status, job.late, job.finished_by) == ("COMPLETED", True, "polling")
    assert job.slot is None
    assert make_tables()[1].read().slots == {}
    document = storage.documents["outputs/campaign/a.json"]
    assert (document["status"], document["late"]) == ("COMPLETED", True)
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO


def test_a_timed_out_job_gives_its_slot_back_once_sync_so_has_had_as_long_again() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(got("PROCESSING"))
    seed(store, "TIMED_OUT")
    hold_slot(store)
    execution = state(9, deadline=NOW - timedelta(hours=2), slot_release_at=NOW - timedelta(seconds=1))
    assert reconcile(store, storage, api.client(), slots(), execution, 1, clock())["late"] is True
    assert make_tables()[1].read().slots == {}
    job = stored(store)
    assert (job.status, job.slot) == ("TIMED_OUT", None)


def test_a_job_with_no_final_answer_by_the_end_of_its_watch_is_stopped() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(got("PROCESSING"))
    seed(store, "TIMED_OUT")
    execution = state(300, deadline=NOW - timedelta(hours=47), watch_until=NOW - timedelta(seconds=1))
    assert reconcile(store, storage, api.client(), slots(), execution, 1, clock())["terminal"] is True
    job = stored(store)
    assert job.status == "STOPPED"
    assert job.error is not None
    assert "stopped watching" in job.error.message
    assert finalize(store, storage, api.client(), slots(), execution)["status"] == "STOPPED"
    assert storage.documents["outputs/campaign/a.json"]["status"] == "STOPPED"
    assert len(api.requests) == 1  # finalize does not ask again: the watch is over


def test_late_checks_never_wait_past_the_end_of_the_watch() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi(got("PROCESSING"))
    seed(store, "TIMED_OUT")
    execution = state(3, deadline=NOW - timedelta(hours=1), watch_until=NOW + timedelta(seconds=42))
    assert reconcile(store, storage, api.client(), slots(), execution, 1, clock())["nextWaitSeconds"] == 42


# ---------------------------------------------------------------------------- finalize

Route = httpx.Response | Callable[[httpx.Request], httpx.Response]


class Cdn:
    """The output host: answers by full URL and counts GETs."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.requested: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requested.append(url)
        route = self.routes.get(url, httpx.Response(404))
        return route(request) if callable(route) else route

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


class BrokenStream(httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield VIDEO[:100]
        raise httpx.ReadError("connection reset")


def completed_job(store: SeededStore, **extra: Any) -> Job:
    return seed(store, "COMPLETED", outputUrl=OUTPUT_URL, finishedBy="webhook", **extra)


def test_finalize_copies_a_completed_output_and_writes_the_document() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    completed_job(store)
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    result = finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert result == {"status": "COMPLETED", "outputKey": "outputs/campaign/a.mp4"}
    digest = hashlib.sha256(VIDEO).hexdigest()
    output = storage.objects["outputs/campaign/a.mp4"]
    assert output.body == VIDEO
    assert output.content_type == OUTPUT_CONTENT_TYPE == "video/mp4"
    assert output.metadata == {
        "job-id": JOB_ID,
        "generation-id": "gen-1",
        "model": "lipsync-2",
    }
    assert output.tags == {"sha256": digest}
    job = stored(store)
    assert job.output_checksum == f"sha256:{digest}"
    assert (job.output_version_id, job.output_size) == (output.version_id, len(VIDEO))
    assert job.finalized_at is not None
    document = storage.documents["outputs/campaign/a.json"]
    assert document["status"] == "COMPLETED"
    assert document["outputChecksum"] == f"sha256:{digest}"
    assert "cdn.sync.example" not in json.dumps(document)
    assert api.requests == []  # the recorded URL worked: no fresh one needed


@pytest.mark.parametrize("expired", [httpx.Response(403, text="AccessDenied"), httpx.Response(410)])
def test_an_expired_output_url_is_replaced_by_a_fresh_one(expired: httpx.Response) -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(httpx.Response(200, text=f'"{FRESH_URL}"\n'))
    completed_job(store)
    cdn = Cdn({OUTPUT_URL: expired, FRESH_URL: httpx.Response(200, content=VIDEO)})
    assert (
        finalize(store, storage, api.client(), slots(), state(), http=cdn.client())["outputKey"]
        == "outputs/campaign/a.mp4"
    )
    (request,) = api.requests
    assert (request.method, request.url.path) == ("GET", "/v2/generations/gen-1/download")
    assert cdn.requested == [OUTPUT_URL, FRESH_URL]
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO
    assert stored(store).output_checksum == f"sha256:{hashlib.sha256(VIDEO).hexdigest()}"


def test_a_missing_output_url_asks_for_a_fresh_one() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(httpx.Response(200, text=FRESH_URL))
    seed(store, "COMPLETED")
    cdn = Cdn({FRESH_URL: httpx.Response(200, content=VIDEO)})
    finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO


def test_finalize_twice_uploads_once_and_writes_the_document_once() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    completed_job(store)
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    first = finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    second = finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert first == second
    assert storage.writes == ["outputs/campaign/a.mp4", "outputs/campaign/a.json"]
    assert cdn.requested == [OUTPUT_URL]


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("FAILED", "generation_face_not_detected"),
        ("REJECTED", "generation_input_validation_failed"),
        ("STOPPED", "job_timed_out"),
    ],
)
def test_other_ends_write_the_document_with_the_error_and_upload_nothing(status: str, code: str) -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    seed(store, status, error={"code": code, "message": "it went wrong"})
    cdn = Cdn({})
    result = finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert result == {"status": status, "outputKey": None}
    assert "outputs/campaign/a.mp4" not in storage.objects
    assert cdn.requested == []
    assert storage.documents["outputs/campaign/a.json"]["error"] == {"code": code, "message": "it went wrong"}
    assert storage.documents["outputs/campaign/a.json"]["status"] == status


def test_a_workflow_error_stops_a_job_that_sync_so_has_not_finished() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("PROCESSING"))
    seed(store, "PROCESSING")
    error = JobError(code="workflow_lambda.unknown", message="the job's workflow failed: reconcile crashed")
    assert stop(store, storage, api.client(), slots(), JOB_ID, "gen-1", error)["status"] == "STOPPED"
    job = stored(store)
    assert job.status == "STOPPED"
    assert job.error is not None
    assert "reconcile crashed" in job.error.message
    assert (job.history[-1].status, job.history[-1].source) == ("STOPPED", "workflow")
    assert storage.documents["outputs/campaign/a.json"]["status"] == "STOPPED"


def test_a_workflow_error_takes_the_final_status_from_a_get_when_sync_so_finished() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("FAILED", errorCode="generation_face_not_detected", error="no face"))
    seed(store, "PROCESSING")
    stop(
        store, storage, api.client(), slots(), JOB_ID, "gen-1", JobError(code="workflow_aborted", message="x")
    )
    job = stored(store)
    assert (job.status, job.api_status) == ("FAILED", "FAILED")
    assert job.error is not None
    assert job.error.code == "generation_face_not_detected"


def test_a_workflow_error_does_not_change_a_final_job() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    seed(store, "REJECTED", error={"code": "bad_input", "message": "no"})
    stop(store, storage, api.client(), slots(), JOB_ID, "gen-1", JobError(code="X", message="Y"))
    job = stored(store)
    assert job.status == "REJECTED"
    assert job.error is not None
    assert job.error.code == "bad_input"
    assert api.requests == []


def test_an_old_executions_end_does_not_touch_a_resubmitted_job() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    seed(store, "PENDING", generationId="gen-2")
    stop(
        store, storage, api.client(), slots(), JOB_ID, "gen-1", JobError(code="workflow_aborted", message="x")
    )
    assert stored(store).status == "PENDING"
    assert storage.documents == {}


class FailingStorage(FakeStorage):
    """S3 refuses writes to the output (a throttle, an outage) while `failures` last."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def upload(self, key: str, body: Any, **kwargs: Any) -> Any:
        if key.endswith(".mp4") and self.failures > 0:
            self.failures -= 1
            from botocore.exceptions import ClientError

            raise ClientError(
                {"Error": {"Code": "SlowDown", "Message": "Reduce your request rate"}}, "PutObject"
            )
        return super().upload(key, body, **kwargs)


def reset(request: httpx.Request) -> httpx.Response:
    raise httpx.RemoteProtocolError("server disconnected", request=request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


@pytest.mark.parametrize(
    "broken",
    [
        httpx.Response(200, stream=BrokenStream()),
        httpx.Response(503, text="unavailable"),
        reset,
        refused,
        time_out,
    ],
    ids=["reset-mid-download", "cdn-5xx", "protocol-error", "connect-error", "timeout"],
)
def test_a_failed_download_comes_back_later_with_a_wait_and_a_second_run_succeeds(broken: Route) -> None:
    """Issue 14, item 6: transport errors escaped Finalize to RecordFailure, which ended the job
    COMPLETED + output_copy_failed minutes after the first error; now the copy is tried again later."""
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    completed_job(store)
    with pytest.raises(OutputNotCopiedYet):
        finalize(store, storage, api.client(), slots(), state(), http=Cdn({OUTPUT_URL: broken}).client())
    assert storage.objects == {}
    assert storage.documents == {}
    job = stored(store)
    assert (job.output_checksum, job.finalized_at) == (None, None)
    later = finalize(
        store,
        storage,
        api.client(),
        slots(),
        state(),
        http=Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)}).client(),
    )
    assert later["status"] == "COMPLETED"
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO
    assert storage.documents["outputs/campaign/a.json"]["status"] == "COMPLETED"


def test_an_s3_write_failure_in_finalize_is_tried_again_later() -> None:
    store, storage, api = job_store(), FailingStorage(failures=1), FakeSyncApi()
    completed_job(store)
    cdn = Cdn({OUTPUT_URL: httpx.Response(200, content=VIDEO)})
    with pytest.raises(OutputNotCopiedYet):
        finalize(store, storage, api.client(), slots(), state(), http=cdn.client())
    assert finalize(store, storage, api.client(), slots(), state(), http=cdn.client())["outputKey"]
    assert storage.objects["outputs/campaign/a.mp4"].body == VIDEO


def test_an_output_that_cannot_be_copied_by_the_end_of_the_watch_still_writes_the_ending() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(httpx.Response(503, text="download broken"))
    seed(store, "COMPLETED")  # no output URL recorded: /download is asked, and it keeps failing
    over = state(deadline=NOW - timedelta(hours=48), watch_until=NOW - timedelta(seconds=1))
    result = finalize(store, storage, api.client(), slots(), over, http=Cdn({}).client(), now=clock())
    assert result == {"status": "COMPLETED", "outputKey": None}
    document = storage.documents["outputs/campaign/a.json"]
    assert document["error"]["code"] == "output_copy_failed"


def test_stop_after_a_failed_copy_still_writes_the_document() -> None:
    # The workflow died while the copy kept failing. sync.so completed it, so it stays COMPLETED,
    # and outputs/<name>.json says the output could not be copied (invariant 4).
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    completed_job(store)
    error = JobError(code="workflow_outputunavailableerror", message="not downloadable")
    stop(store, storage, api.client(), slots(), JOB_ID, "gen-1", error)
    document = storage.documents["outputs/campaign/a.json"]
    assert document["status"] == "COMPLETED"
    assert document["error"]["code"] == "output_copy_failed"


# ---------------------------------------------------------------------------- slots, resubmission, bounds


def test_finalize_frees_the_slot_before_copying_and_wakes_the_dispatcher() -> None:
    store, storage, api = job_store(), FakeStorage(), FakeSyncApi()
    completed_job(store)
    hold_slot(store)
    kicks = len(KICKER.kicks)
    cdn = Cdn({OUTPUT_URL: httpx.Response(503)})  # the copy fails: the slot is free all the same
    with pytest.raises(OutputNotCopiedYet):
        finalize(store, storage, api.client(), slots(), state(), http=cdn.client(), now=clock())
    assert make_tables()[1].read().slots == {}
    assert stored(store).slot is None
    assert len(KICKER.kicks) == kicks + 1
    assert make_tables()[1].read().durations  # the generation's time feeds the ETAs


@pytest.mark.parametrize(
    "code",
    [
        None,
        "generation_pipeline_failed",
        "generation_timeout",
        "generation_infra_storage_error",
        "controller_x",
    ],
)
def test_a_confirmed_transient_failure_goes_back_to_the_queue_once(code: str | None) -> None:
    store, storage = job_store(), FakeStorage()
    failed = {"errorCode": code} if code else {}
    api = FakeSyncApi(got("FAILED", error="boom", **failed))
    seed(
        store,
        "PROCESSING",
        generations=[{"generationId": "gen-1", "idempotencyKey": f"{JOB_ID}.1", "submittedAt": AT}],
        queueKey=f"{AT}#{JOB_ID}",
    )
    hold_slot(store)
    result = finalize(store, storage, api.client(), slots(retries=1), state())
    assert result == {"status": "QUEUED", "outputKey": None}
    job = stored(store)
    assert (job.status, job.resubmissions, job.generation_id, job.attempt) == ("QUEUED", 1, None, None)
    assert store.queue_head(5) == [JOB_ID]
    assert [(g.generation_id, g.api_status) for g in job.generations] == [("gen-1", "FAILED")]
    assert make_tables()[1].read().slots == {}
    assert storage.documents == {}  # not over yet


class ContendedAdmission:
    """The real admission, but every release meets another writer (a TransactionConflict)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def release(self, *args: Any, **kwargs: Any) -> bool:
        raise Contention("the plan changed meanwhile")


def test_a_resubmission_that_meets_contention_fails_the_task_for_its_retry() -> None:
    """Issue 14, item 5: `_resubmit` ignored a failed release: the job stayed in flight holding its
    slot until the sweep failed it an hour past its deadline."""
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("FAILED", errorCode="generation_pipeline_failed"))
    seed(store, "PROCESSING")
    hold_slot(store)
    contended = Slots(ContendedAdmission(make_tables()[1]), KICKER, 1)
    with pytest.raises(Contention):
        finalize(store, storage, api.client(), contended, state())
    assert stored(store).status == "PROCESSING"  # nothing written: Step Functions' Retry runs it again
    result = finalize(store, storage, api.client(), slots(retries=1), state())
    assert result["status"] == "QUEUED"
    assert make_tables()[1].read().slots == {}


def test_a_second_transient_failure_past_the_retry_budget_is_final() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("FAILED", errorCode="generation_pipeline_failed", error="boom"))
    seed(store, "PROCESSING", resubmissions=1)
    assert finalize(store, storage, api.client(), slots(retries=1), state())["status"] == "FAILED"
    assert storage.documents["outputs/campaign/a.json"]["status"] == "FAILED"


@pytest.mark.parametrize("code", ["generation_input_video_inaccessible", "generation_face_not_detected"])
def test_a_permanent_failure_is_never_sent_again(code: str) -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("FAILED", errorCode=code, error="no"))
    seed(store, "PROCESSING")
    assert finalize(store, storage, api.client(), slots(retries=3), state())["status"] == "FAILED"
    assert not is_transient_failure(Generation(id="g", status="FAILED", errorCode=code))


def test_reconcile_leaves_a_transient_failure_for_finalize_to_resubmit() -> None:
    store, api = job_store(), FakeSyncApi(got("FAILED", errorCode="generation_unknown_error"))
    seed(store, "PROCESSING")
    assert poll(store, api, state())["terminal"] is True
    job = stored(store)
    assert (job.status, job.api_status) == ("PROCESSING", "FAILED")
    assert job.confirmed_at is not None


def test_reconcile_of_a_settled_job_answers_without_another_get() -> None:
    store, api = job_store(), FakeSyncApi()
    seed(store, "COMPLETED")
    assert poll(store, api, state())["terminal"] is True
    assert api.requests == []


def test_a_rotated_api_key_is_read_again_and_the_poll_succeeds() -> None:
    store = job_store()
    keys = ["sk-old"]
    api = FakeSyncApi(
        lambda request: (
            httpx.Response(401, json={"message": "Unauthorized", "statusCode": 401})
            if request.headers["x-api-key"] == "sk-old"
            else got("PROCESSING")
        )
    )
    seed(store)
    client = api.client(current_key(keys))
    keys.append("sk-new")
    result = reconcile(store, FakeStorage(), client, slots(), state(), 1, clock())
    assert result["status"] == "PROCESSING"
    assert [request.headers["x-api-key"] for request in api.requests] == ["sk-old", "sk-new"]


def test_an_unknown_final_status_is_kept_verbatim_and_never_read_as_ours() -> None:
    store, storage = job_store(), FakeStorage()
    api = FakeSyncApi(got("QUEUED"))  # named like the pipeline's own status
    seed(store, "PROCESSING")
    assert poll(store, api, state())["terminal"] is True
    job = stored(store)
    assert (job.status, job.api_status) == ("UNKNOWN", "QUEUED")
    finalize(store, storage, api.client(), slots(), state())
    assert storage.documents["outputs/campaign/a.json"]["apiStatus"] == "QUEUED"


def test_arm_for_a_job_that_moved_on_wakes_the_wait_at_once() -> None:
    store, workflow = job_store(), FakeWorkflow()
    seed(store, "PENDING", generationId="gen-2")
    workflow.wait("task-1")
    assert arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1")["armed"] is False
    assert workflow.waiting == set()


# ---------------------------------------------------------------------------- the execution before the record


def test_an_execution_that_runs_ahead_of_the_dispatchers_record_waits_for_it() -> None:
    """The execution starts just before dispatch records its generation (so a crash in between is
    re-driven). Its tasks must not take the missing record for a job that moved on: that ended the
    execution and left the job in flight with nothing following it."""
    store, storage, workflow = job_store(), FakeStorage(), FakeWorkflow()
    seed(store, "SUBMITTING", generationId=None)
    workflow.wait("task-1")
    assert arm_webhook_wait(store, workflow, JOB_ID, "gen-1", "task-1")["armed"] is True
    assert workflow.wakes == []  # still waiting
    api = FakeSyncApi(COMPLETED)
    assert poll(store, api, state(2))["terminal"] is False
    with pytest.raises(GenerationNotFinished):
        finalize(store, storage, api.client(), slots(), state())
    assert stored(store).status == "SUBMITTING"
