"""Dispatch: the next queued job gets a free plan slot and one `POST /v2/generate`.

`Dispatcher.run` is what a kick does. It loops a bounded number of times:

1. read the plan (one GetItem); if dispatch is paused or the create rate is spent, arrange a
   delayed kick and stop;
2. re-drive a create whose lease expired (a crash, or an uncertain answer to retry), else
3. take the queue's head (one Query on the queue index), presign its inputs now, and claim a
   slot for it in one transaction (plan item + job record: QUEUED -> SUBMITTING, with the body
   and Idempotency-Key fixed before the POST);
4. POST, then act on the answer:
   - 201: start the generation's execution, record the generation (status from the answer);
   - a 429 (another client is using the plan) or a 401: the job goes back to the queue's front
     and the slot is freed in one transaction; dispatch pauses for the hint or a backoff;
   - uncertain (409 idempotency conflict, 503, 5xx, timeout): adopt the generationId if given,
     else keep the slot and retry later with the same key and the same bytes;
   - any other 4xx: the job ends REJECTED with the API's error.

Per dispatched job: reads 1 GetItem (plan) + 1 Query (head) + 1 GetItem (job); writes one
2-item transaction (claim) + 1 UpdateItem (record) + 1 UpdateItem (settle the slot's lease).
`sweep` (scheduled) frees slots whose job is no longer in flight and then runs.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from lipsync.generation.lifecycle import Slots, stop
from lipsync.generation.workflow import execution_input
from lipsync.jobs.documents import write_job_document, write_waiting_document
from lipsync.jobs.model import (
    IN_FLIGHT,
    Job,
    JobError,
    JobStatus,
    PaidGeneration,
    is_known_api_status,
    status_from_api,
    utc_now,
)
from lipsync.jobs.store import HELD_PARTITION, QUEUE_PARTITION, Update
from lipsync.plan.admission import PlanState, SlotHolder
from lipsync.plan.budget import (
    BudgetGuard,
    estimate_usd,
    month_of,
    refund,
    report_budget,
    report_charge,
    report_held,
)
from lipsync.queue.planning import RequestTemplate
from lipsync.syncso.client import SyncApiError, SyncPermanentError, SyncRetryableError
from lipsync.syncso.models import Generation
from lipsync.syncso.webhook_auth import job_token

if TYPE_CHECKING:
    from lipsync.config import DispatchSettings, LifecycleTimings, PlanLimits
    from lipsync.generation.workflow import Workflow
    from lipsync.jobs.events import JobEvents
    from lipsync.jobs.store import JobStore
    from lipsync.plan.admission import Admission
    from lipsync.plan.kicks import Kicker
    from lipsync.storage import Storage
    from lipsync.syncso.client import SyncClient

MAX_STEPS = 25  # claims and re-drives per kick; the next kick continues
ABANDONED_AFTER_SECONDS = 3600.0  # past MaxJobSeconds, a job in flight that nothing finished is stopped
HEAD_BATCH = 5
HELD_BATCH = 100  # held jobs looked at per sweep (a minute); the next sweep takes the next ones
LEASE_SECONDS = 30.0  # longer than one create call (8 s timeout) with margin
MAX_UNCERTAIN_CREATES = 8  # tries of one create whose outcome stays unknown
AUTH_PAUSE_SECONDS = 300.0
ACCOUNT_PAUSE_SECONDS = 900.0
# 402s about the account (not this job): wait for the user to fix billing, do not fail the job.
ACCOUNT_ERROR_CODES = frozenset(
    {"account_payment_required", "account_on_hold", "free_tier_generations_exhausted", None}
)


def backoff_seconds(attempt: int, first: float = 2.0, cap: float = 120.0) -> float:
    base = min(cap, first * 2.0 ** max(0, attempt - 1))
    return base + random.uniform(0, base / 4)  # nosec B311 # noqa: S311 - jitter, not security


def throttle_kind(error: SyncRetryableError) -> str:
    """A 429's kind for the metrics: the plan's concurrency, the create rate, or anything else."""
    if error.reason == "concurrency":
        return "concurrency"
    return "rate" if error.error_code in (None, "rate_limit_exceeded") else "other"


@dataclass
class DispatchReport:
    """What one run did (the handler turns it into metrics and a log line)."""

    created: list[str] = field(default_factory=list)
    requeued: dict[str, int] = field(default_factory=dict)  # reason -> jobs put back at the front
    throttled: dict[str, int] = field(default_factory=dict)  # 429 kind (concurrency, rate, other) -> creates
    uncertain: int = 0
    adopted: int = 0
    rejected: int = 0
    released: int = 0  # by the sweep
    held: int = 0  # jobs put in BUDGET_HOLD
    unheld: int = 0  # held jobs released to the queue by the sweep
    unknown_statuses: list[str] = field(default_factory=list)
    paused: str | None = None
    stopped_because: str = ""

    def requeue(self, reason: str) -> None:
        self.requeued[reason] = self.requeued.get(reason, 0) + 1

    def throttle(self, kind: str) -> None:
        self.throttled[kind] = self.throttled.get(kind, 0) + 1

    def log_fields(self) -> dict[str, Any]:
        """For the log line (`created` is a reserved LogRecord attribute, hence `dispatched`)."""
        fields = {name: value for name, value in self.__dict__.items() if value} | {
            "dispatched": self.created
        }
        fields.pop("created", None)
        return fields


class Dispatcher:
    def __init__(
        self,
        settings: DispatchSettings,
        limits: PlanLimits,
        timings: LifecycleTimings,
        store: JobStore,
        admission: Admission,
        storage: Storage,
        sync: SyncClient,
        workflow: Workflow,
        kicker: Kicker,
        token_key: str,
        clock: Callable[[], float] = time.time,
        events: JobEvents | None = None,
    ) -> None:
        self._events = events
        self._settings = settings
        self._guard = BudgetGuard(settings.monthly_budget_usd)
        self._limits = limits
        self._timings = timings
        self._store = store
        self._admission = admission
        self._storage = storage
        self._sync = sync
        self._workflow = workflow
        self._kicker = kicker
        self._token_key = token_key
        self._clock = clock

    # ------------------------------------------------------------------ the loop
    def run(self, seconds: float = 40.0) -> DispatchReport:
        """Dispatch what fits, for at most `seconds` (the caller's time left, with a margin)."""
        report = DispatchReport()
        until = self._clock() + seconds
        for _ in range(MAX_STEPS):
            now = self._clock()
            if now > until:
                break
            plan = self._admission.read()
            if plan.paused_until > now:
                self._wake_at(plan.paused_until, now)
                report.stopped_because = f"paused ({plan.pause_reason})"
                return report
            stale = plan.expired_lease(now)
            slot = None if stale else plan.free_slot(self._limits.concurrency)
            if stale is None and slot is None:
                report.stopped_because = "every slot is busy"
                return report
            wait = plan.rate_wait(now, self._limits.creates_per_minute)
            if wait > 0:
                self._wake_at(now + wait, now)
                report.stopped_because = "create rate"
                return report
            if stale is not None:
                self._redrive(plan, *stale, report)
                continue
            if slot is None:  # unreachable: `stale` was None
                return report
            head = self._store.queue_head(HEAD_BATCH)
            if not head:
                report.stopped_because = "queue empty"
                return report
            job = self._claim(plan, slot, head, now, report)
            if job is not None:
                self._create(plan, job, slot, report)
        report.stopped_because = "time or step budget"
        self._kicker.kick(0, "continue")
        return report

    def _wake_at(self, at: float, now: float) -> None:
        if self._admission.schedule_wake(at, now):
            self._kicker.kick(at - now, "delayed")

    # ------------------------------------------------------------------ claiming
    def _webhook_url(self, job_id: str) -> str:
        return f"{self._settings.webhook_base_url.rstrip('/')}/webhooks/sync/{job_id}?" + urlencode(
            {"token": job_token(self._token_key, job_id)}
        )

    def _claim(
        self, plan: PlanState, slot: int, head: list[str], now: float, report: DispatchReport
    ) -> Job | None:
        """Claim the first job of `head` that is still queued and fits the budget (holding those
        that do not); None when the plan or the month's spend changed meanwhile."""
        month = month_of(now)
        spent = self._admission.month_spend(month) if self._guard.monthly_usd is not None else 0.0
        for job_id in head:
            job = self._store.get(job_id)
            if job is None or job.status != JobStatus.QUEUED or not job.request_template:
                continue  # the index lags behind the table
            charge = self._guard.admit(job, month, spent)
            if isinstance(charge, str):
                report.held += self._hold(job, charge)
                continue
            template = RequestTemplate.model_validate_json(job.request_template)
            # Presigned now, so the URLs live from dispatch, not from upload.
            body = template.render(
                self._storage, self._settings.presigned_url_seconds, self._webhook_url(job_id)
            )
            counter = job.key_counter + 1
            fields = {
                "requestBody": _json_text(body),
                "idempotencyKey": f"{job_id}.{counter}",  # a new key for every fresh body
                "keyCounter": counter,
                "createAttempts": 1,
                "leaseId": uuid.uuid4().hex,
                "leaseUntil": now + LEASE_SECONDS,
                "slot": slot,
                **charge.job_fields(charge.usd),
            }
            update = Update(
                job_id,
                set=fields,
                remove=("queue",),
                condition="#status = :queued",
                names={"#status": "status"},
                values={":queued": JobStatus.QUEUED},
            ).to_status(JobStatus.SUBMITTING, "dispatch", detail=f"slot {slot}")
            holder = SlotHolder(job_id=job_id, since=now, lease_until=now + LEASE_SECONDS)
            if not self._admission.claim(
                plan, slot, holder, self._limits.creates_per_minute, update, charge=charge
            ):
                return None
            report_charge(charge)
            return Job.model_validate(
                job.model_dump(by_alias=True) | fields | {"status": JobStatus.SUBMITTING}
            )
        return None

    def _redrive(self, plan: PlanState, slot: int, holder: SlotHolder, report: DispatchReport) -> None:
        """A create whose lease ran out: try it again with the same key and bytes, or tidy the slot."""
        job = self._store.get(holder.job_id)
        if job is None or job.slot != slot or job.status not in IN_FLIGHT:
            self._admission.release(slot, holder.job_id, duration=None)
            return
        if job.status != JobStatus.SUBMITTING:  # recorded, but the slot's lease was not settled
            self._admission.set_lease(slot, job.job_id, 0)
            return
        if job.create_attempts >= MAX_UNCERTAIN_CREATES:
            self._end(
                job,
                slot,
                JobStatus.FAILED,
                JobError(
                    code="create_outcome_unknown",
                    message=(
                        f"sync.so never confirmed whether the job was created ({job.create_attempts} tries; "
                        f"last: {job.last_error or 'no answer'})"
                    ),
                ),
            )
            return
        now = self._clock()
        lease = uuid.uuid4().hex
        update = Update(
            job.job_id,
            set={
                "leaseId": lease,
                "leaseUntil": now + LEASE_SECONDS,
                "createAttempts": job.create_attempts + 1,
            },
            condition="#status = :submitting AND leaseId = :lease",
            names={"#status": "status"},
            values={":submitting": JobStatus.SUBMITTING, ":lease": job.lease_id},
        )
        renewed = SlotHolder(job_id=job.job_id, since=holder.since, lease_until=now + LEASE_SECONDS)
        if self._admission.claim(plan, slot, renewed, self._limits.creates_per_minute, update, renew=True):
            job = job.model_copy(update={"lease_id": lease, "create_attempts": job.create_attempts + 1})
            self._create(plan, job, slot, report)

    # ------------------------------------------------------------------ creating
    def _create(self, plan: PlanState, job: Job, slot: int, report: DispatchReport) -> None:
        if not (job.request_body and job.idempotency_key):
            raise ValueError(f"job {job.job_id} holds a slot without a request to send")
        try:
            generation = self._sync.create_generation(job.request_body, idempotency_key=job.idempotency_key)
        except SyncRetryableError as error:
            self._retryable(plan, job, slot, error, report)
        except SyncPermanentError as error:
            if error.status_code == 402 and error.error_code in ACCOUNT_ERROR_CODES:
                self._back_to_queue(job, slot, "account", error)
                self._pause(
                    ACCOUNT_PAUSE_SECONDS, f"account: {error.error_code}", plan.throttle_streak, report
                )
                report.requeue("account")
                return
            self._end(job, slot, JobStatus.REJECTED, JobError.from_api(error))
            report.rejected += 1
        else:
            self._accepted(plan, job, slot, generation, report)

    def _retryable(
        self, plan: PlanState, job: Job, slot: int, error: SyncRetryableError, report: DispatchReport
    ) -> None:
        if error.reason == "unauthorized":
            self._back_to_queue(job, slot, "api_key_rejected", error)
            report.requeue("unauthorized")
            if not error.key_changed:  # the freshly read key is the rejected one: wait for a new key
                self._pause(AUTH_PAUSE_SECONDS, "api_key_rejected", plan.throttle_streak, report)
            else:
                self._kicker.kick(0, "api key rotated")
            return
        if error.reason in ("concurrency", "rate_limit"):
            # The plan is busier than our own slots say (another client shares it): wait at the front.
            streak = plan.throttle_streak + 1
            self._back_to_queue(job, slot, error.reason, error)
            self._pause(error.retry_after_seconds or backoff_seconds(streak), error.reason, streak, report)
            report.requeue(error.reason)
            report.throttle(throttle_kind(error))
            return
        generation_id = error.body.generation_id if error.body else None
        if generation_id:
            report.adopted += 1
            self._accepted(plan, job, slot, self._adopt(generation_id), report)
            return
        report.uncertain += 1
        retry_at = self._clock() + backoff_seconds(job.create_attempts)
        kept = self._store.apply(
            Update(
                job.job_id,
                set={"leaseUntil": retry_at, "lastError": error.message},
                condition="leaseId = :lease",
                values={":lease": job.lease_id},
            )
        )
        if kept is not None and self._admission.set_lease(slot, job.job_id, retry_at):
            self._wake_at(retry_at, self._clock())

    def _adopt(self, generation_id: str) -> Generation:
        """The generation an uncertain answer named: ask sync.so for its status."""
        try:
            return self._sync.get_generation(generation_id)
        except SyncApiError:
            # It exists (sync.so named it) and has not been seen to end: in flight until a GET says more.
            return Generation(id=generation_id, status="PENDING")

    def _accepted(
        self, plan: PlanState, job: Job, slot: int, generation: Generation, report: DispatchReport
    ) -> None:
        name = job.next_execution_name()
        # Started before the record: a crash in between is re-driven (same key: the same generation).
        self._workflow.start(name, execution_input(job.job_id, generation.id, self._timings))
        now = utc_now()
        paid = PaidGeneration(
            generation_id=generation.id, idempotency_key=job.idempotency_key or "", submitted_at=now
        )
        if not is_known_api_status(generation.status):
            report.unknown_statuses.append(generation.status)
        recorded = self._store.apply(
            Update(
                job.job_id,
                set={
                    "generationId": generation.id,
                    "apiStatus": generation.status,
                    "submittedAt": now,
                    "executionName": name,
                    "generations": [g.model_dump(by_alias=True, exclude_none=True) for g in job.generations]
                    + [paid.model_dump(by_alias=True)],
                },
                remove=("leaseId", "leaseUntil", "requestBody", "lastError"),
                condition="#status = :submitting AND leaseId = :lease",
                names={"#status": "status"},
                values={":submitting": JobStatus.SUBMITTING, ":lease": job.lease_id},
            ).to_status(status_from_api(generation.status), "dispatch", detail=f"generation {generation.id}")
        )
        if recorded is not None:
            self._admission.set_lease(slot, job.job_id, 0)
            report.created.append(job.job_id)
            if plan.throttle_streak:
                self._admission.clear_throttle()

    # ------------------------------------------------------------------ giving the slot back
    def _back_to_queue(self, job: Job, slot: int, reason: str, error: SyncApiError) -> None:
        """A definite non-creation: back to the front of the line (its arrival is unchanged), with a
        fresh body and key next time, and the slot freed in the same transaction."""
        update = Update(
            job.job_id,
            set={"queue": QUEUE_PARTITION, "lastError": error.message},
            remove=(
                "requestBody",
                "idempotencyKey",
                "leaseId",
                "leaseUntil",
                "slot",
                "budgetMonth",
                "chargedUsd",
            ),
            condition="#status = :submitting AND leaseId = :lease",
            names={"#status": "status"},
            values={":submitting": JobStatus.SUBMITTING, ":lease": job.lease_id},
        ).to_status(JobStatus.QUEUED, "dispatch", detail=reason)
        self._admission.release(slot, job.job_id, job=update, duration=None, charge=refund(job))

    def _end(self, job: Job, slot: int, status: JobStatus, error: JobError) -> None:
        # A refused create costs nothing; a create whose outcome stayed unknown keeps its estimate.
        charge = refund(job) if status == JobStatus.REJECTED else None
        costs = {"costUsd": 0.0, "chargedUsd": 0.0} if charge else {}
        update = Update(
            job.job_id,
            set={"error": error.stored(), "finishedAt": utc_now(), **costs},
            remove=("requestBody", "leaseId", "leaseUntil", "slot"),
            condition="#status = :submitting AND leaseId = :lease",
            names={"#status": "status"},
            values={":submitting": JobStatus.SUBMITTING, ":lease": job.lease_id},
        ).to_status(status, "dispatch", detail=error.code)
        if self._admission.release(slot, job.job_id, job=update, duration=None, charge=charge):
            ended = self._store.get(job.job_id)
            if ended is not None:
                write_job_document(self._storage, ended, self._events)
                self._store.set_fields(job.job_id, {"finalizedAt": utc_now()})
            self._kicker.kick(0, "slot freed")

    def _pause(self, seconds: float, reason: str, streak: int, report: DispatchReport) -> None:
        now = self._clock()
        self._admission.pause(now + seconds, reason, streak)
        report.paused = reason
        self._wake_at(now + seconds, now)

    # ------------------------------------------------------------------ the sweep
    def sweep(self, seconds: float = 40.0) -> DispatchReport:
        """Free every slot whose job is not in flight on it any more (whatever ended it), stop jobs
        that nothing follows any more (past their deadline by an hour), then run."""
        plan = self._admission.read()
        released = 0
        abandoned_before = self._clock() - self._timings.max_job_seconds - ABANDONED_AFTER_SECONDS
        for slot, holder in plan.slots.items():
            job = self._store.get(holder.job_id)
            if job is None or job.slot != slot or job.status not in IN_FLIGHT:
                released += self._admission.release(slot, holder.job_id, duration=None)
            elif job.status != JobStatus.SUBMITTING and holder.since < abandoned_before:
                error = JobError(code="job_abandoned", message="no workflow followed the job to its end")
                stop(
                    self._store,
                    self._storage,
                    self._sync,
                    Slots(self._admission, self._kicker),
                    job.job_id,
                    None,
                    error,
                )
                released += 1
        unheld = self._release_held()
        report = self.run(seconds)
        report.released, report.unheld = released, unheld
        return report

    # ------------------------------------------------------------------ the budget guard
    def _hold(self, job: Job, reason: str) -> int:
        """QUEUED -> BUDGET_HOLD: out of the line, its place kept in the `held` partition."""
        held = self._store.apply(
            Update(
                job.job_id,
                set={"queue": HELD_PARTITION, "holdReason": reason},
                condition="#status = :queued",
                names={"#status": "status"},
                values={":queued": JobStatus.QUEUED},
            ).to_status(JobStatus.BUDGET_HOLD, "dispatch", detail="monthly budget")
        )
        if held is None:
            return 0
        write_waiting_document(self._storage, held)
        report_held()
        return 1

    def _release_held(self) -> int:
        """Back to the queue, in arrival order, every held job whose estimate now fits."""
        now = self._clock()
        month = month_of(now)
        spent = self._admission.month_spend(month)
        unheld = 0
        for job_id in self._store.queue_head(HELD_BATCH, partition=HELD_PARTITION):
            job = self._store.get(job_id)
            if job is None or job.status != JobStatus.BUDGET_HOLD or not self._guard.fits(job, spent):
                continue
            released = self._store.apply(
                Update(
                    job.job_id,
                    set={"queue": QUEUE_PARTITION},
                    remove=("holdReason",),
                    condition="#status = :held",
                    names={"#status": "status"},
                    values={":held": JobStatus.BUDGET_HOLD},
                ).to_status(JobStatus.QUEUED, "dispatch", detail="the budget allows it")
            )
            if released is not None:
                write_waiting_document(self._storage, released)
                spent += estimate_usd(job)
                unheld += 1
        report_budget(self._guard, spent, self._store.count_queued(partition=HELD_PARTITION))
        return unheld


def _json_text(body: dict[str, Any]) -> str:
    # JSON text, sent as is on every try of this create (DynamoDB would turn 30.0 into 30).
    return json.dumps(body, ensure_ascii=False)
