"""Intake and dispatch against the real job store and admission table (moto, in process):
arrival order, slots, the create rate, leases, create outcomes and fresh inputs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lipsync.config import DispatchSettings, IntakeSettings, LifecycleTimings, PlanLimits
from lipsync.generation.deadlines import WATCH_SECONDS
from lipsync.generation.lifecycle import Slots
from lipsync.jobs import dynamo
from lipsync.jobs import transitions as t
from lipsync.jobs.events import JobEvents
from lipsync.jobs.model import Job, JobStatus
from lipsync.jobs.transitions import F, Move
from lipsync.plan.admission import SlotHolder
from lipsync.queue.dispatch import (
    ACCOUNT_REFRESH_SECONDS,
    LEASE_SECONDS,
    UNCERTAIN_WINDOW_SECONDS,
    Dispatcher,
    DispatchReport,
)
from lipsync.queue.intake import Intake
from lipsync.sweep import sweep
from lipsync.syncso.webhook_auth import job_token
from tests.fakes import FakeKicker, FakeStorage, FakeSyncApi, FakeWorkflow, current_key
from tests.tables import ADMISSION_TABLE, JOBS_TABLE, SeededStore, make_tables

BUCKET = "media-bucket"
TOKEN_KEY = "stack-token-key"
ENV = {
    "JOBS_TABLE": JOBS_TABLE,
    "ADMISSION_TABLE": ADMISSION_TABLE,
    "DISPATCH_QUEUE_URL": "https://sqs.example/dispatch",
    "SYNC_API_BASE_URL": "https://api.sync.example",
    "SYNC_API_KEY_SECRET": "sync-api-key",
    "MEDIA_BUCKET": BUCKET,
    "WEBHOOK_TOKEN_KEY_SECRET": "webhook-token-key",
    "WEBHOOK_BASE_URL": "https://hooks.example/v1",
    "DEFAULT_MODEL": "lipsync-2",
    "DEFAULT_OPTIONS": '{"sync_mode": "bounce", "temperature": 0.5}',
    "PRESIGNED_URL_SECONDS": "600",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:JobLifecycle",
}
TIMINGS = LifecycleTimings.model_validate(
    {
        "WEBHOOK_TIMEOUT_SECONDS": 600,
        "POLL_FIRST_INTERVAL_SECONDS": 15,
        "POLL_BACKOFF_RATE": 1.5,
        "POLL_MAX_INTERVAL_SECONDS": 120,
        "MAX_JOB_SECONDS": 3600,
    }
)


def api_error(status: int, code: str | None, message: str = "no", **extra: Any) -> httpx.Response:
    body = {"statusCode": status, "message": message, **extra} | ({"errorCode": code} if code else {})
    return httpx.Response(status, json=body)


@dataclass
class SyncScript:
    """sync.so for dispatch: answers POSTs from `replies` first, then 201s with fresh ids (an
    Idempotency-Key seen before gets its generation again); lists what it made, newest first."""

    replies: list[httpx.Response | Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    created: int = 0
    generations: list[dict[str, Any]] = field(default_factory=list)
    by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    account: dict[str, Any] | None = None  # GET /v2/account's answer (None: a 503)
    account_reads: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path == "/v2/account":
            self.account_reads += 1
            return httpx.Response(200, json=self.account) if self.account else httpx.Response(503)
        if request.method == "GET" and request.url.path == "/v2/generations":
            return httpx.Response(200, json=list(reversed(self.generations)))
        if request.method == "GET":
            generation_id = request.url.path.rsplit("/", 1)[-1]
            return httpx.Response(200, json={"id": generation_id, "status": "PROCESSING"})
        if self.replies:
            reply = self.replies.pop(0)
            return reply(request) if callable(reply) else reply
        return httpx.Response(201, json=self.create(request))

    def create(self, request: httpx.Request) -> dict[str, Any]:
        """What sync.so keeps for a create it accepted (the same one again for a known key)."""
        key = request.headers.get("Idempotency-Key", "")
        if key in self.by_key:
            return self.by_key[key]
        self.created += 1
        generation = {
            "id": f"gen-{self.created}",
            "status": "PENDING",
            "createdAt": "2026-11-29T10:00:00.000Z",
            "webhookUrl": json.loads(request.content).get("webhookUrl"),
        }
        self.generations.append(generation)
        self.by_key[key] = generation
        return generation


@dataclass
class World:
    store: SeededStore
    storage: FakeStorage
    workflow: FakeWorkflow
    kicker: FakeKicker
    script: SyncScript
    api: FakeSyncApi
    now: list[float]
    admission: Any = None
    keys: list[str] = field(default_factory=lambda: ["sk-test-key"])

    def intake(self) -> Intake:
        return Intake(IntakeSettings.from_env(ENV), self.store, self.storage, self.kicker)

    def dispatcher(
        self,
        concurrency: int | str = 3,
        per_minute: int = 60,
        retries: int = 1,
        *,
        budget: str = "",
        events: JobEvents | None = None,
    ) -> Dispatcher:
        limits = PlanLimits.model_validate(
            {
                "SYNC_PLAN_CONCURRENCY": concurrency,
                "CREATE_RATE_PER_MINUTE": per_minute,
                "TRANSIENT_FAILURE_RETRIES": retries,
            }
        )
        return Dispatcher(
            settings=DispatchSettings.from_env(ENV | {"MONTHLY_BUDGET_USD": budget}),
            limits=limits,
            timings=TIMINGS,
            store=self.store,
            admission=self.admission,
            storage=self.storage,
            sync=self.api.client(current_key(self.keys)),
            workflow=self.workflow,
            kicker=self.kicker,
            token_key=TOKEN_KEY,
            clock=lambda: self.now[0],
            events=events,
        )

    def sweep(self, concurrency: int = 3) -> DispatchReport:
        dispatcher = self.dispatcher(concurrency=concurrency)
        return sweep(dispatcher, self.api.client(), Slots(self.admission, self.kicker))

    def drop_pair(self, name: str, arrived: str) -> Job:
        self.storage.put(f"inputs/{name}.mp4", f"video {name}".encode())
        self.storage.put(f"inputs/{name}.wav", f"audio {name}".encode())
        event = self.storage.event(f"inputs/{name}.wav").model_copy(update={"event_time": arrived})
        outcome, job = self.intake().handle(event)
        assert outcome in ("queued", "duplicate")
        assert job is not None
        return job

    def job(self, name: str) -> Job:
        found = next((job for job in self.jobs() if job.name == name), None)
        assert found is not None, name
        return found

    def job_by_id(self, job_id: str) -> Job:
        found = self.store.get(job_id)
        assert found is not None, job_id
        return found

    def jobs(self) -> list[Job]:
        return [Job.model_validate(item) for item in self.store.items.values()]

    def posts(self) -> list[httpx.Request]:
        return self.api.posts()

    def held(self) -> dict[int, str]:
        return {slot: holder.job_id for slot, holder in self.admission.read().slots.items()}


@pytest.fixture
def world() -> World:
    store, admission = make_tables()
    script = SyncScript()
    return World(
        store,
        FakeStorage(BUCKET),
        FakeWorkflow(),
        FakeKicker(),
        script,
        FakeSyncApi(script),
        [1000.0],
        admission,
    )


def at(second: int) -> str:
    return f"2026-11-29T10:00:{second:02d}.000Z"


def sent(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


# ---------------------------------------------------------------------------- intake


def test_intake_queues_without_calling_sync_or_presigning(world: World) -> None:
    job = world.drop_pair("a", at(1))
    assert job.status == JobStatus.QUEUED
    assert world.api.requests == []
    assert job.request is not None
    assert "presigned" not in (job.request.text or "")
    assert world.store.queue_head(10) == [job.job_id]


def test_the_pair_arrives_with_its_later_upload_whichever_event_comes_first(world: World) -> None:
    world.storage.put("inputs/a.mp4")
    world.storage.put("inputs/a.wav")
    intake = world.intake()
    early = world.storage.event("inputs/a.mp4").model_copy(update={"event_time": at(1)})
    late = world.storage.event("inputs/a.wav").model_copy(update={"event_time": at(5)})
    intake.handle(early)
    _, job = intake.handle(late)
    assert job is not None
    assert job.arrived_at == at(5)
    assert (job.queue_key or "").startswith(at(5))


def test_an_object_whose_last_delivery_fails_leaves_an_error_document(world: World) -> None:
    world.storage.put("inputs/clip.mp4")
    key = world.intake().report_failure(world.storage.event("inputs/clip.mp4"), TimeoutError("dynamodb"))
    assert key == "outputs/clip.mp4.error.json"  # named after the file: never a job's document
    document = world.storage.documents[key]
    assert (document["object"], document["status"]) == ("inputs/clip.mp4", "NOT_PROCESSED")
    assert "dead-letter queue" in document["error"]["message"]


# ---------------------------------------------------------------------------- admission


def test_jobs_start_in_arrival_order_not_intake_order(world: World) -> None:
    for name, second in (("c", 3), ("a", 1), ("d", 4), ("b", 2)):
        world.drop_pair(name, at(second))
    dispatcher = world.dispatcher(concurrency=1)
    order = []
    for _ in range(4):
        dispatcher.run()
        (holder,) = world.held().values()
        job = world.store.get(holder)
        assert job is not None
        order.append(job.name)
        world.admission.release(job.slot or 0, job.job_id, duration=3.0)
    assert order == ["a", "b", "c", "d"]


def test_never_more_in_flight_than_the_plan_allows(world: World) -> None:
    for index in range(7):
        world.drop_pair(f"j{index}", at(index))
    world.dispatcher(concurrency=3).run()
    assert len(world.posts()) == 3
    assert len(world.held()) == 3
    assert sorted(job.status for job in world.jobs()) == ["PENDING"] * 3 + ["QUEUED"] * 4
    world.dispatcher(concurrency=3).run()  # a second kick with every slot busy does nothing
    assert len(world.posts()) == 3


def test_a_raised_plan_limit_applies_at_the_next_dispatch_and_a_lowered_one_drains(world: World) -> None:
    for index in range(6):
        world.drop_pair(f"j{index}", at(index))
    world.dispatcher(concurrency=1).run()
    assert len(world.held()) == 1
    world.dispatcher(concurrency=4).run()
    assert len(world.held()) == 4
    first = world.held()[0]
    world.admission.release(0, first, duration=1.0)
    world.dispatcher(concurrency=2).run()  # 3 still held, limit now 2: nothing new
    assert len(world.held()) == 3
    assert sum(job.status == "QUEUED" for job in world.jobs()) == 2


def test_creates_stay_under_the_rate_and_a_delayed_kick_resumes(world: World) -> None:
    for index in range(5):
        world.drop_pair(f"j{index}", at(index))
    world.dispatcher(concurrency=10, per_minute=2).run()
    assert len(world.posts()) == 2
    delay, _ = world.kicker.kicks[-1]
    assert 55 < delay <= 62
    world.now[0] += 62
    world.dispatcher(concurrency=10, per_minute=2).run()
    assert len(world.posts()) == 4


def test_the_body_is_presigned_at_dispatch_with_a_fresh_key_and_a_tokened_webhook(world: World) -> None:
    job = world.drop_pair("a", at(1))
    world.storage.signature = "signed-at-dispatch"
    world.dispatcher().run()
    (post,) = world.posts()
    body = sent(post)
    assert post.headers["Idempotency-Key"] == f"{job.job_id}.1"
    for item in body["input"]:
        assert parse_qs(urlsplit(item["url"]).query)["X-Amz-Signature"] == ["signed-at-dispatch"]
        assert parse_qs(urlsplit(item["url"]).query)["X-Amz-Expires"] == ["600"]
    token = parse_qs(urlsplit(body["webhookUrl"]).query)["token"][0]
    assert token == job_token(TOKEN_KEY, job.job_id)
    assert body["options"] == {"sync_mode": "bounce", "temperature": 0.5}
    recorded = world.job("a")
    assert (recorded.status, recorded.api_status, recorded.generation_id) == ("PENDING", "PENDING", "gen-1")
    assert [g.generation_id for g in recorded.generations] == ["gen-1"]
    assert world.workflow.starts[0][0] == job.job_id
    assert world.workflow.starts[0][1]["generationId"] == "gen-1"
    assert world.admission.read().slots[0].lease_until == 0


# ---------------------------------------------------------------------------- create outcomes


def test_a_429_from_another_client_puts_the_job_back_at_the_front_and_pauses(world: World) -> None:
    first = world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    world.script.replies.append(api_error(429, "concurrency_limit_reached", retryAfterSeconds=10))
    report = world.dispatcher().run()
    assert report.requeued == {"concurrency": 1}
    assert world.held() == {}
    assert world.job("a").status == "QUEUED"
    assert world.store.queue_head(1) == [first.job_id]  # still first in line
    assert len(world.posts()) == 1  # paused: b was not tried either
    world.now[0] += 5
    world.dispatcher().run()
    assert len(world.posts()) == 1
    world.now[0] += 6
    world.dispatcher().run()
    retried = world.posts()[1]
    assert retried.headers["Idempotency-Key"] == f"{first.job_id}.2"  # a new key after a definite no
    assert world.job("a").status == "PENDING"
    assert world.job("a").key_counter == 2


def test_repeated_429s_back_off_further_and_never_fail_the_job(world: World) -> None:
    world.drop_pair("a", at(1))
    for _ in range(6):
        world.script.replies.append(api_error(429, "rate_limit_exceeded"))
    pauses = []
    for _ in range(6):
        world.dispatcher().run()
        plan = world.admission.read()
        pauses.append(plan.paused_until - world.now[0])
        world.now[0] = plan.paused_until + 0.01
    assert pauses == sorted(pauses)
    assert world.job("a").status == "QUEUED"
    world.dispatcher().run()
    assert world.job("a").status == "PENDING"
    assert world.admission.read().throttle_streak == 0


@pytest.mark.parametrize(
    "reply",
    [
        api_error(409, "IDEMPOTENCY_REQUEST_IN_PROGRESS"),
        api_error(503, "IDEMPOTENCY_OUTCOME_UNKNOWN"),
        api_error(502, None),
        lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow", request=request)),
    ],
    ids=["409", "503-unknown", "502", "timeout"],
)
def test_an_uncertain_create_keeps_the_slot_and_retries_the_same_key_and_bytes(
    world: World, reply: httpx.Response | Callable[[httpx.Request], httpx.Response]
) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(reply)
    report = world.dispatcher().run()
    assert report.uncertain == 1
    job = world.job("a")
    assert job.status == "SUBMITTING"
    assert len(world.held()) == 1
    world.dispatcher().run()  # before the retry time: nothing
    assert len(world.posts()) == 1
    world.now[0] += 10
    world.dispatcher().run()
    first, second = world.posts()
    assert first.content == second.content
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert world.job("a").status == "PENDING"
    assert world.job("a").status != "REJECTED"


@pytest.mark.parametrize("status", [409, 503])
def test_an_uncertain_answer_naming_the_generation_is_adopted_without_another_post(
    world: World, status: int
) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(api_error(status, "IDEMPOTENCY_OUTCOME_UNKNOWN", generationId="gen-adopted"))
    report = world.dispatcher().run()
    assert report.adopted == 1
    job = world.job("a")
    assert (job.status, job.generation_id, job.api_status) == ("PROCESSING", "gen-adopted", "PROCESSING")
    assert len(world.posts()) == 1
    assert world.workflow.starts[0][1]["generationId"] == "gen-adopted"


def outage(request: httpx.Request) -> httpx.Response:
    return api_error(503, None)


def test_a_five_minute_outage_during_a_create_fails_nothing_and_pays_once(world: World) -> None:
    """Issue 14, item 7: 8 uncertain tries used to end FAILED create_outcome_unknown after 4-5 min."""
    world.drop_pair("a", at(1))
    world.script.replies.extend([outage] * 40)
    started = world.now[0]
    while world.now[0] - started < 1200:  # longer than the 8 tries (4-5 min) that used to fail it
        world.dispatcher().run()
        world.now[0] += 5
    assert world.job("a").status == "SUBMITTING"  # still trying, still holding its slot
    assert len(world.posts()) > 8
    world.script.replies.clear()
    world.now[0] += UNCERTAIN_BACKOFF + 1
    world.dispatcher().run()
    job = world.job("a")
    assert job.status == "PENDING"
    keys = {post.headers["Idempotency-Key"] for post in world.posts()}
    bodies = {post.content for post in world.posts()}
    assert keys == {f"{job.job_id}.1"}
    assert len(bodies) == 1
    assert world.script.created == 1


def test_a_create_that_stays_uncertain_for_the_whole_window_is_stopped_not_failed(world: World) -> None:
    world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    world.script.replies.extend([outage] * 1000)
    dispatcher = world.dispatcher(concurrency=1)
    started = world.now[0]
    while world.now[0] - started <= UNCERTAIN_WINDOW_SECONDS + UNCERTAIN_BACKOFF:
        dispatcher.run()
        world.now[0] += UNCERTAIN_BACKOFF
    job = world.job("a")
    assert job.status == "STOPPED"
    assert job.error is not None
    assert job.error.code == "create_outcome_unknown"
    assert "24 h" in job.error.message
    assert world.storage.documents["outputs/a.json"]["status"] == "STOPPED"
    assert world.job("b").status == "SUBMITTING"  # the freed slot went to the next job


UNCERTAIN_BACKOFF = 380  # the longest backoff between two sends of one uncertain create, jitter included


def test_a_crash_after_the_claim_is_re_driven_after_the_lease_with_the_same_bytes(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(lambda request: (_ for _ in ()).throw(RuntimeError("the Lambda died")))
    with pytest.raises(RuntimeError):
        world.dispatcher().run()
    world.dispatcher().run()  # another dispatcher within the lease: no second create in flight
    assert len(world.posts()) == 1
    world.now[0] += LEASE_SECONDS + 1
    world.dispatcher().run()
    first, second = world.posts()
    assert first.content == second.content
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
    assert world.job("a").status == "PENDING"


def test_two_dispatchers_never_claim_one_job_or_one_slot(world: World) -> None:
    world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    one, two = world.dispatcher(concurrency=1), world.dispatcher(concurrency=1)
    stale = world.admission.read()
    one.run()
    lost, _moved = two._claim(stale, 0, world.store.queue_head(5), world.now[0], DispatchReport())
    assert lost is None  # lost the race
    two.run()
    assert len(world.posts()) == 1
    assert len(world.held()) == 1


def test_a_422_rejects_the_job_with_the_apis_error_and_frees_the_slot(world: World) -> None:
    world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    world.script.replies.append(api_error(422, "generation_input_video_invalid", "bad video"))
    world.dispatcher(concurrency=1).run()
    a = world.job("a")
    assert a.status == "REJECTED"
    assert a.error is not None
    assert a.error.code == "generation_input_video_invalid"
    assert world.storage.documents["outputs/a.json"]["status"] == "REJECTED"
    assert world.job("b").status == "PENDING"  # the freed slot went to the next job


def test_a_401_with_a_rotated_key_requeues_and_the_next_create_uses_the_new_key(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(api_error(401, None, "Unauthorized"))
    dispatcher = world.dispatcher()  # its client holds the old key
    world.keys.append("sk-rotated")
    report = dispatcher.run()
    assert report.requeued.get("unauthorized") == 1
    assert report.paused is None
    dispatcher.run()
    assert world.posts()[-1].headers["x-api-key"] == "sk-rotated"
    assert world.job("a").status == "PENDING"


def test_a_401_with_the_same_key_pauses_dispatch_and_fails_nothing(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(api_error(401, None, "Unauthorized"))
    report = world.dispatcher().run()
    assert report.paused == "api_key_rejected"
    assert world.job("a").status == "QUEUED"
    plan = world.admission.read()
    assert plan.paused_until > world.now[0]
    world.dispatcher().run()
    assert len(world.posts()) == 1


def test_an_unknown_api_status_is_kept_verbatim_and_final(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(httpx.Response(201, json={"id": "gen-x", "status": "QUEUED"}))
    report = world.dispatcher().run()
    job = world.job("a")
    assert (job.status, job.api_status) == ("UNKNOWN", "QUEUED")
    assert report.unknown_statuses == ["QUEUED"]


# ---------------------------------------------------------------------------- the sweep


def test_the_sweep_frees_slots_of_jobs_that_are_no_longer_in_flight(world: World) -> None:
    for index in range(3):
        world.drop_pair(f"j{index}", at(index))
    world.dispatcher(concurrency=3).run()
    ended = world.job("j0")
    world.store.apply(t.change(ended, Move.FINISH, JobStatus.COMPLETED, "poll"))
    gone = world.job("j1")
    world.store._client.delete_item(TableName=JOBS_TABLE, Key=dynamo.item({"jobId": gone.job_id}))
    world.drop_pair("next", at(9))
    report = world.sweep(concurrency=3)
    assert report.released == 2
    assert world.job("next").status == "PENDING"
    assert len(world.held()) == 2


def test_the_sweep_frees_a_slot_held_past_every_bound_and_stops_a_job_nothing_followed(world: World) -> None:
    world.drop_pair("orphan", at(1))
    world.dispatcher(concurrency=1).run()
    world.now[0] += 2 * TIMINGS.max_job_seconds + 3601  # a workflow frees it at twice the deadline
    report = world.sweep(concurrency=1)
    assert report.released == 1
    assert world.held() == {}
    assert world.job("orphan").status == "PENDING"  # sync.so may still finish it: not ended
    world.store.apply(t.note(world.job("orphan").job_id, {F.ATTEMPT_SLOT: 0}))
    world.admission.claim(
        world.admission.read(),
        0,
        SlotHolder(job_id=world.job("orphan").job_id, since=1000.0),
        60,
        t.note(world.job("orphan").job_id, {}),
    )
    world.now[0] = 1000.0 + WATCH_SECONDS + 3601
    report = world.sweep(concurrency=1)
    assert report.released == 1
    job = world.job("orphan")
    assert job.status == "STOPPED"
    assert job.error is not None
    assert job.error.code == "job_abandoned"
    assert world.held() == {}
    assert world.storage.documents["outputs/orphan.json"]["status"] == "STOPPED"


def test_the_earliest_delayed_kick_wins(world: World) -> None:
    admission = world.admission
    assert admission.schedule_wake(1060.0, 1000.0)
    assert not admission.schedule_wake(1070.0, 1001.0)  # a later one is not needed: that run reschedules
    assert admission.schedule_wake(1010.0, 1002.0)  # an earlier one is
    assert admission.schedule_wake(1080.0, 1061.0)  # the pending one is over


def seed_queue(world: World, count: int) -> None:
    """`count` queued jobs, written directly (as `count` uploads would leave them), in arrival order."""
    template = world.drop_pair("template", at(0))
    world.store.apply(t.note(template.job_id, {}, clear=[F.LANE]))  # keep it out of line
    requests: list[Any] = []
    for index in range(count):
        arrived = f"2026-11-29T10:{index // 6000:02d}:{index // 100 % 60:02d}.{index % 100:03d}Z"
        job = template.model_copy(
            update={
                "job_id": f"{index:032x}",
                "name": f"bulk/{index}",
                "queue_key": f"{arrived}#{index:032x}",
            }
        )
        stored = job.model_dump(mode="json", by_alias=True, exclude_none=True) | {"queue": "queued"}
        requests.append({"PutRequest": {"Item": dynamo.item(stored)}})
    for start in range(0, len(requests), 25):
        world.store._client.batch_write_item(RequestItems={JOBS_TABLE: requests[start : start + 25]})


def dispatch_from_a_long_queue(world: World, count: int) -> None:
    """The head comes from the queue index (a Query per claim), never a Scan, whatever the length."""
    seed_queue(world, count)
    assert world.store.count_queued() == count
    calls: list[str] = []
    world.store._client.meta.events.register(
        "before-call.dynamodb.*", lambda model, **_: calls.append(model.name)
    )
    world.dispatcher(concurrency=3).run()
    assert "Scan" not in calls
    assert calls.count("Query") == 3  # one per claim
    assert [job.name for job in world.jobs() if job.status == "PENDING"] == ["bulk/0", "bulk/1", "bulk/2"]
    last = world.store.get(f"{count - 1:032x}")
    assert last is not None
    assert world.store.count_queued(before=last.queue_key) == count - 4  # its place in line: count - 3


def test_a_long_queue_dispatches_from_the_index_head_without_a_scan(world: World) -> None:
    dispatch_from_a_long_queue(world, 300)  # 10,000: tests/load/test_ten_thousand.py (make load)


# ---------------------------------------------------------------------------- issue 14: pay once


def created_then(error: Callable[[httpx.Request], httpx.Response], script: SyncScript) -> Reply:
    """sync.so creates the generation, but the answer is lost (the client sees `error` instead)."""

    def reply(request: httpx.Request) -> httpx.Response:
        script.create(request)
        return error(request)

    return reply


def read_timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("the answer came too late", request=request)


Reply = Callable[[httpx.Request], httpx.Response]


@pytest.mark.parametrize(
    "refusal",
    [
        api_error(429, "rate_limit_exceeded"),
        api_error(429, "concurrency_limit_reached", retryAfterSeconds=10),
        api_error(401, None, "Unauthorized"),
        api_error(402, "account_payment_required"),
    ],
    ids=["429-rate", "429-concurrency", "401", "402"],
)
def test_a_lost_answer_then_a_refusal_resends_the_same_key_and_pays_once(
    world: World, refusal: httpx.Response
) -> None:
    """Issue 14, item 2: the retry under the key met a 429 (or 401/402); the next claim used a new
    key and sync.so made a second, paid generation whose output was never copied."""
    world.drop_pair("a", at(1))
    world.script.replies.extend([created_then(read_timeout, world.script), refusal])
    for _ in range(12):
        world.dispatcher().run()
        world.now[0] = max(world.now[0], world.admission.read().paused_until) + UNCERTAIN_BACKOFF
    job = world.job("a")
    assert job.status == "PENDING"
    assert world.script.created == 1
    assert {post.headers["Idempotency-Key"] for post in world.posts()} == {f"{job.job_id}.1"}
    assert len({post.content for post in world.posts()}) == 1
    assert job.generation_id == "gen-1"


def test_a_refused_connection_is_a_definite_no_and_the_job_waits_in_line(world: World) -> None:
    world.drop_pair("a", at(1))

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    world.script.replies.append(refused)
    report = world.dispatcher().run()
    assert report.uncertain == 0
    assert report.requeued == {"not_sent": 1}
    assert report.paused == "sync_unreachable"
    job = world.job("a")
    assert (job.status, job.attempt) == ("QUEUED", None)
    world.now[0] = world.admission.read().paused_until + 0.1
    world.dispatcher().run()
    assert world.job("a").status == "PENDING"


def test_a_2xx_whose_body_is_not_a_generation_is_uncertain_and_never_fails_the_job(world: World) -> None:
    """Issue 14, item 10: a malformed 201 crashed dispatch; after the redrives a billed generation
    ended FAILED and was never followed."""
    world.drop_pair("a", at(1))

    def garbled(request: httpx.Request) -> httpx.Response:
        return httpx.Response(201, content=b"<html>gateway</html>")

    world.script.replies.append(created_then(garbled, world.script))
    report = world.dispatcher().run()
    assert report.uncertain == 1
    world.now[0] += UNCERTAIN_BACKOFF
    world.dispatcher().run()
    job = world.job("a")
    assert (job.status, job.generation_id, world.script.created) == ("PENDING", "gen-1", 1)


def test_an_uncertain_create_found_by_its_webhook_url_is_adopted_without_another_post(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.append(created_then(lambda request: api_error(500, None), world.script))
    world.dispatcher().run()
    world.now[0] += UNCERTAIN_BACKOFF
    report = world.dispatcher().run()
    assert report.adopted == 1
    assert len(world.posts()) == 1
    assert world.job("a").generation_id == "gen-1"


def test_inputs_that_died_while_a_create_was_uncertain_make_a_fresh_attempt(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.extend(
        [api_error(503, None), api_error(422, "generation_input_video_inaccessible", "inaccessible")]
    )
    world.dispatcher().run()
    world.now[0] += UNCERTAIN_BACKOFF
    report = world.dispatcher().run()
    assert report.requeued.get("inputs_expired") == 1
    job = world.job("a")
    assert job.status == "PENDING"  # claimed again at once, with new URLs under a new key
    assert world.posts()[-1].headers["Idempotency-Key"] == f"{job.job_id}.2"


# ---------------------------------------------------------------------------- issue 14: no job blocks another


def test_a_job_whose_record_cannot_be_stored_ends_invalid_and_the_queue_moves_on(world: World) -> None:
    """Issue 14, item 1: every claim of a job past DynamoDB's item limit was cancelled, read as
    contention, and retried for ever: nothing behind it ran."""
    big = world.drop_pair("big", at(1))
    bloated = big.model_copy(update={"warnings": ["x" * 1000] * 402})  # just under 400 KB
    world.store.put(bloated)
    world.drop_pair("next", at(2))
    report = world.dispatcher(concurrency=1).run()
    assert report.unservable == 1
    ended = world.job("big")
    assert ended.status == "INVALID"
    assert ended.error is not None
    assert "400 KB" in ended.error.message
    assert world.storage.documents["outputs/big.json"]["status"] == "INVALID"
    assert world.job("next").status == "PENDING"
    assert world.held() == {0: world.job("next").job_id}


class StuckAdmission:
    """The real admission, except that every claim meets contention (another dispatcher, always)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def claim(self, *args: Any, **kwargs: Any) -> Any:
        from lipsync.plan.admission import ClaimOutcome

        return ClaimOutcome.PLAN_CHANGED


def test_a_run_that_made_no_progress_does_not_kick_itself_again(world: World) -> None:
    world.drop_pair("a", at(1))
    world.admission = StuckAdmission(world.admission)
    report = world.dispatcher().run()
    assert report.stopped_because == "time or step budget"
    assert "continue" not in {reason for _, reason in world.kicker.kicks}


def test_history_stays_bounded_however_often_a_job_goes_back_in_line(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.extend(api_error(429, "rate_limit_exceeded") for _ in range(150))
    for _ in range(150):
        world.dispatcher().run()
        world.now[0] = world.admission.read().paused_until + 0.01
    job = world.job("a")
    assert job.status == "QUEUED"
    assert len(job.history) <= t.HISTORY_LIMIT + 1
    assert any("folded" in (entry.detail or "") for entry in job.history)
    assert job.history[0].source == "intake"
    item = world.store._client.get_item(TableName=JOBS_TABLE, Key=dynamo.item({"jobId": job.job_id}))["Item"]
    assert len(json.dumps(item)) < 40_000


def test_a_large_manifest_stays_out_of_the_record_and_is_sent_whole(world: World) -> None:
    """Issue 14, item 1: a 230 KB manifest (per-frame bounding boxes) plus its rendered body passed
    DynamoDB's 400 KB item limit; now both live in the bucket by key and checksum."""
    world.storage.put("footage/a.mp4", b"video")
    world.storage.put("voice/a.wav", b"audio")
    boxes = [[10 + i % 50, 20, 300, 400] for i in range(12_000)]
    manifest = {
        "input": [{"type": "video", "url": "footage/a.mp4"}, {"type": "audio", "url": "voice/a.wav"}],
        "options": {"active_speaker_detection": {"bounding_boxes": boxes}},
    }
    body = json.dumps(manifest).encode()
    assert 200_000 < len(body) < 256 * 1024
    world.storage.put("jobs/big.json", body)
    outcome, job = world.intake().handle(world.storage.event("jobs/big.json"))
    assert outcome == "queued"
    assert job is not None
    assert job.request is not None
    assert job.request.s3_key is not None
    assert job.request.text is None
    world.dispatcher().run()
    (post,) = world.posts()
    assert len(sent(post)["options"]["active_speaker_detection"]["bounding_boxes"]) == 12_000
    stored = world.job("big")
    assert stored.status == "PENDING"
    item = world.store._client.get_item(TableName=JOBS_TABLE, Key=dynamo.item({"jobId": stored.job_id}))[
        "Item"
    ]
    assert len(json.dumps(item)) < 20_000


class RacingWorkflow(FakeWorkflow):
    """An execution whose arm task, and the generation's webhook, both run before dispatch records
    the generation (the start returns only after them)."""

    def __init__(self, world: World) -> None:
        super().__init__()
        self.world = world

    def start(self, name: str, execution_input: dict[str, Any]) -> None:
        super().start(name, execution_input)
        from lipsync.generation.webhooks import WebhookReceiver, arm_webhook_wait

        job_id, generation_id = execution_input["jobId"], execution_input["generationId"]
        arm_webhook_wait(self.world.store, self, job_id, generation_id, self.wait("task-early"))
        hooks = WebhookReceiver(self.world.store, self, lambda: [TOKEN_KEY], lambda: [])
        body = json.dumps({"id": generation_id, "status": "COMPLETED"}).encode()
        assert not hooks.receive(job_id, job_token(TOKEN_KEY, job_id), None, body).woke_workflow


def test_a_webhook_and_an_arm_task_that_beat_the_record_are_woken_by_it(world: World) -> None:
    world.drop_pair("a", at(1))
    world.workflow = RacingWorkflow(world)
    world.dispatcher().run()
    assert world.job("a").status == "PENDING"
    assert world.workflow.wakes == [("task-early", {"webhookStatus": "COMPLETED"})]
    assert world.workflow.waiting == set()


@pytest.mark.parametrize("code", ["account_payment_required", "credits_exhausted", None])
def test_any_402_pauses_dispatch_and_fails_no_job(world: World, code: str | None) -> None:
    """Issue 16: a 402 code the pipeline did not know failed every queued job; any 402 is the account's."""
    world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    world.script.replies.append(api_error(402, code, "Payment Required"))
    report = world.dispatcher().run()
    assert report.paused == f"account: {code or 'payment_required'}"
    assert {world.job("a").status, world.job("b").status} == {"QUEUED"}
    assert world.script.created == 0
    # Once the account is fixed (the pause ends), the jobs go in arrival order.
    world.now[0] = world.admission.read().paused_until + 0.1
    world.dispatcher().run()
    assert world.job("a").status == "PENDING"


def account(concurrency: int) -> dict[str, Any]:
    return {
        "account": None,
        "organization": {"plan": {"name": "x"}, "limits": {"concurrentGenerations": concurrency}},
    }


def in_flight(world: World) -> int:
    return len(world.admission.read().slots)


def test_auto_concurrency_follows_the_account_and_reads_it_again_later(world: World) -> None:
    for index in range(4):
        world.drop_pair(f"j{index}", at(index + 1))
    world.script.account = account(2)
    world.dispatcher(concurrency="auto").run()
    assert in_flight(world) == 2  # the account's limit, not the default 1
    assert world.script.account_reads == 1
    world.dispatcher(concurrency="auto").run()
    assert world.script.account_reads == 1  # read at most every 15 minutes
    world.script.account = account(3)  # the plan was upgraded
    world.now[0] += ACCOUNT_REFRESH_SECONDS
    world.dispatcher(concurrency="auto").run()
    assert (world.script.account_reads, in_flight(world)) == (2, 3)


def test_auto_concurrency_is_one_until_the_account_answers(world: World) -> None:
    world.drop_pair("a", at(1))
    world.drop_pair("b", at(2))
    world.dispatcher(concurrency="auto").run()  # GET /v2/account answers 503
    assert in_flight(world) == 1  # the smallest plan, never over-assumed


def test_a_concurrency_429_naming_the_limit_lowers_it_and_the_account_is_read_again(world: World) -> None:
    for index in range(3):
        world.drop_pair(f"j{index}", at(index + 1))
    world.script.account = account(3)
    limited = api_error(429, "concurrency_limit_reached", retryAfterSeconds=5)
    limited.headers["X-Sync-Concurrency-Limit"] = "1"
    world.script.replies.extend([httpx.Response(201, json={"id": "gen-x", "status": "PENDING"}), limited])
    world.dispatcher(concurrency="auto").run()
    plan = world.admission.read()
    assert plan.account_concurrency == 1
    assert plan.account_read_at == 0.0  # the next run reads the account again
    world.now[0] = plan.paused_until + 0.1
    world.dispatcher(concurrency="auto").run()
    assert world.script.account_reads == 2


def test_a_number_set_for_the_plan_never_reads_the_account(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.account = account(15)
    world.dispatcher(concurrency=1).run()
    assert world.script.account_reads == 0
