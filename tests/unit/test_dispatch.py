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
from lipsync.jobs.events import JobEvents
from lipsync.jobs.model import Job, JobStatus
from lipsync.jobs.store import Update
from lipsync.queue.dispatch import LEASE_SECONDS, MAX_UNCERTAIN_CREATES, Dispatcher, DispatchReport
from lipsync.queue.intake import Intake
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
    """sync.so for dispatch: answers POSTs from `replies` first, then 201s with fresh ids."""

    replies: list[httpx.Response | Callable[[httpx.Request], httpx.Response]] = field(default_factory=list)
    created: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            generation_id = request.url.path.rsplit("/", 1)[-1]
            return httpx.Response(200, json={"id": generation_id, "status": "PROCESSING"})
        if self.replies:
            reply = self.replies.pop(0)
            return reply(request) if callable(reply) else reply
        self.created += 1
        return httpx.Response(201, json={"id": f"gen-{self.created}", "status": "PENDING"})


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
        concurrency: int = 3,
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
    assert "presigned" not in (job.request_template or "")
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


def test_a_create_that_stays_uncertain_ends_failed_after_its_budget(world: World) -> None:
    world.drop_pair("a", at(1))
    world.script.replies.extend(api_error(503, None) for _ in range(MAX_UNCERTAIN_CREATES))
    for _ in range(MAX_UNCERTAIN_CREATES + 1):
        world.dispatcher().run()
        world.now[0] += 200
    job = world.job("a")
    assert job.status == "FAILED"
    assert job.error is not None
    assert job.error.code == "create_outcome_unknown"
    assert len(world.posts()) == MAX_UNCERTAIN_CREATES
    assert world.held() == {}
    assert "outputs/a.json" in world.storage.documents


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
    lost = two._claim(stale, 0, world.store.queue_head(5), world.now[0], DispatchReport())
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
    world.store.advance(ended.job_id, "COMPLETED", "poll")
    gone = world.job("j1")
    world.store._client.delete_item(TableName=JOBS_TABLE, Key=world.store.codec.item({"jobId": gone.job_id}))
    world.drop_pair("next", at(9))
    report = world.dispatcher(concurrency=3).sweep()
    assert report.released == 2
    assert world.job("next").status == "PENDING"
    assert len(world.held()) == 2


def test_the_sweep_stops_a_job_nothing_followed_past_its_deadline(world: World) -> None:
    world.drop_pair("orphan", at(1))
    world.dispatcher(concurrency=1).run()
    world.now[0] += TIMINGS.max_job_seconds + 3601
    report = world.dispatcher(concurrency=1).sweep()
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
    world.store.apply(Update(template.job_id, remove=("queue",)))  # keep it out of line
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
        stored = job.model_dump(mode="json", by_alias=True, exclude_none=True) | {
            "statusRank": 0,
            "queue": "queued",
        }
        requests.append({"PutRequest": {"Item": world.store.codec.item(stored)}})
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
