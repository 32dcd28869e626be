"""Dispatch: the next queued job gets a free plan slot and one `POST /v2/generate`.

`Dispatcher.run` is what a kick does. It loops a bounded number of times:

1. read the plan (one GetItem); if dispatch is paused or the create rate is spent, arrange a
   delayed kick and stop;
2. send again a create whose lease ran out (a crash, or an answer that left the outcome unknown),
   with the same key and the same bytes; else
3. take the queue's head (one Query on the queue index), presign its inputs now, and claim a
   slot for it in one transaction (plan item + job record: QUEUED -> SUBMITTING, with the body
   and Idempotency-Key fixed in the job's attempt before the POST);
4. POST, then act on the answer:
   - 201 (or an id named by an uncertain answer): start the generation's execution and record it;
   - sync.so certainly took nothing (a 429, a 401, an account 402, a refused connection): if no
     earlier send of this attempt is in doubt, the job goes back to the queue's front and the
     slot is freed in one transaction; if one is, the job keeps its slot, key and bytes and
     sends them again after the pause. Dispatch pauses for the hint or a backoff;
   - uncertain (409 idempotency conflict, 503, 5xx, a timeout, a body that is not a generation):
     adopt the generationId if given, else keep the slot and send the same key and bytes again
     after a backoff, for up to `UNCERTAIN_WINDOW_SECONDS`; looking the generation up by its
     webhook URL before each resend. A job that may have been created is never FAILED for lack
     of an answer: after the window it is STOPPED with `create_outcome_unknown`;
   - any other 4xx: the job ends REJECTED with the API's error.

A claim cancelled for another reason than contention never loops: a job that moved on is
skipped, one over the budget is held, one whose record cannot be stored ends INVALID. A run that
made no progress does not kick itself again.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from pydantic import ValidationError

from lipsync.generation.workflow import execution_input
from lipsync.jobs import transitions as t
from lipsync.jobs.blobs import BlobCorruptError, stash, unstash
from lipsync.jobs.documents import announce, write_waiting_document
from lipsync.jobs.model import (
    IN_FLIGHT,
    ITEM_LIMIT_BYTES,
    Attempt,
    Job,
    JobError,
    JobStatus,
    PaidGeneration,
    is_known_api_status,
    record_bytes,
    status_from_api,
    utc_now,
)
from lipsync.jobs.transitions import F, Lane, Move
from lipsync.plan.admission import ClaimOutcome, Contention, PlanState, SlotHolder
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
from lipsync.syncso.models import Generation, is_terminal
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

MAX_STEPS = 25  # claims and re-sends per kick; the next kick continues
HEAD_BATCH = 5
HELD_BATCH = 100  # held jobs looked at per sweep (a minute); the next sweep takes the next ones
RECORD_HEADROOM_BYTES = 16 * 1024  # what the generation's record adds after the claim (ledger, URLs, history)
LEASE_SECONDS = 30.0  # longer than one create call (8 s timeout) with margin
UNCERTAIN_WINDOW_SECONDS = 24 * 3600.0  # how long a create whose outcome is unknown is sent again
UNCERTAIN_BACKOFF_CAP_SECONDS = 300.0
LOOKUP_PAGES = 3  # pages of GET /v2/generations (newest first) searched for an uncertain create
LOOKUP_PAGE_SIZE = 50
AUTH_PAUSE_SECONDS = 300.0
ACCOUNT_PAUSE_SECONDS = 900.0
ACCOUNT_REFRESH_SECONDS = 900.0  # SyncPlanConcurrency auto: how often the account is read again
# Any 402 is about the account (billing, credits, a hold: account_payment_required, account_on_hold,
# free_tier_generations_exhausted, or a code this version does not know), never about the job:
# dispatch pauses until the user fixes it, and no queued job fails.
INACCESSIBLE_INPUT = re.compile(r"generation_input_\w+_inaccessible")


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
    unservable: int = 0  # jobs whose request cannot be stored or read back: INVALID
    stopped: int = 0  # creates given up after the uncertain window
    released: int = 0  # by the sweep
    announced: int = 0  # endings the sweep wrote because their writer did not
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
        token_key: Callable[[], str] | str,
        clock: Callable[[], float] = time.time,
        events: JobEvents | None = None,
    ) -> None:
        self._events = events
        self._settings = settings
        self._guard = BudgetGuard(settings.monthly_budget_usd)
        self.limits = limits
        self.timings = timings
        self.store = store
        self.admission = admission
        self.storage = storage
        self._sync = sync
        self._workflow = workflow
        self.kicker = kicker
        self._token_key = token_key if callable(token_key) else (lambda: str(token_key))
        self.clock = clock

    @property
    def events(self) -> JobEvents | None:
        return self._events

    # ------------------------------------------------------------------ the loop
    def run(self, seconds: float = 40.0) -> DispatchReport:
        """Dispatch what fits, for at most `seconds` (the caller's time left, with a margin)."""
        report = DispatchReport()
        until = self.clock() + seconds
        progress = False
        for _ in range(MAX_STEPS):
            now = self.clock()
            if now > until:
                break
            plan = self.admission.read()
            if plan.paused_until > now:
                self._wake_at(plan.paused_until, now)
                report.stopped_because = f"paused ({plan.pause_reason})"
                return report
            if self.limits.follows_account and now - plan.account_read_at >= ACCOUNT_REFRESH_SECONDS:
                plan = self._read_account(plan, now)
            stale = plan.expired_lease(now)
            slot = None if stale else plan.free_slot(self.limits.slots(plan.account_concurrency))
            if stale is None and slot is None:
                report.stopped_because = "every slot is busy"
                return report
            wait = plan.rate_wait(now, self.limits.creates_per_minute)
            if wait > 0:
                self._wake_at(now + wait, now)
                report.stopped_because = "create rate"
                return report
            if stale is not None:
                progress |= self._redrive(plan, *stale, report)
                continue
            if slot is None:  # unreachable: `stale` was None
                return report
            head = self.store.queue_head(HEAD_BATCH)
            if not head:
                report.stopped_because = "queue empty"
                return report
            claimed, moved = self._claim(plan, slot, head, now, report)
            progress |= moved
            if claimed is not None:
                progress = True
                self._create(plan, claimed, slot, report)
        report.stopped_because = "time or step budget"
        if progress:  # a run that got nowhere waits for the next event (a kick, the sweep)
            self.kicker.kick(0, "continue")
        return report

    def _read_account(self, plan: PlanState, now: float) -> PlanState:
        """SyncPlanConcurrency `auto`: the plan's limit from sync.so's account (every 15 minutes,
        and again after an answer about the account). A failed read keeps what was known."""
        concurrency: int | None = None
        with contextlib.suppress(SyncApiError):
            concurrency = self._sync.get_account().concurrency_limit()
        self.admission.record_account(concurrency, now)
        known = concurrency or plan.account_concurrency
        return plan.model_copy(update={"account_concurrency": known, "account_read_at": now})

    def _account_changed(self, error: SyncApiError) -> None:
        """A 402, a 403 or a concurrency 429 may mean the plan changed: trust a limit the answer
        names, and read the account again at the next run."""
        if self.limits.follows_account:
            self.admission.record_account(error.concurrency_limit, self.clock(), stale=True)

    def _wake_at(self, at: float, now: float) -> None:
        if self.admission.schedule_wake(at, now):
            self.kicker.kick(at - now, "delayed")

    # ------------------------------------------------------------------ claiming
    def _webhook_url(self, job_id: str) -> str:
        return f"{self._settings.webhook_url_base.rstrip('/')}/webhooks/sync/{job_id}?" + urlencode(
            {"token": job_token(self._token_key(), job_id)}
        )

    def _claim(
        self, plan: PlanState, slot: int, head: list[str], now: float, report: DispatchReport
    ) -> tuple[Job | None, bool]:
        """Claim the first job of `head` that is still queued and fits the budget (holding those that
        do not, ending those that cannot be served). Returns the claimed job (None when the plan or
        the month's spend changed meanwhile) and whether any job was moved on the way."""
        month = month_of(now)
        spent = self.admission.month_spend(month) if self._guard.monthly_usd is not None else 0.0
        moved = False
        for job_id in head:
            job = self.store.get(job_id)
            if job is None or job.status != JobStatus.QUEUED:
                continue
            charge = self._guard.admit(job, month, spent)
            if isinstance(charge, str):
                held = self._hold(job, charge)
                report.held += held
                moved |= bool(held)
                continue
            try:
                attempt = self._new_attempt(job, slot, now)
            except (BlobCorruptError, ValidationError, ValueError) as error:
                moved |= self._unservable(job, f"its request could not be read back: {error}", report)
                continue
            if record_bytes(job, attempt) + RECORD_HEADROOM_BYTES > ITEM_LIMIT_BYTES:
                moved |= self._unservable(job, "its record would exceed DynamoDB's 400 KB item limit", report)
                continue
            change = t.change(
                job,
                Move.CLAIM,
                JobStatus.SUBMITTING,
                "dispatch",
                fields={
                    F.ATTEMPT: attempt.model_dump(by_alias=True, exclude_none=True),
                    F.KEY_COUNTER: job.key_counter + 1,
                    **charge.job_fields(charge.usd),
                },
                detail=f"slot {slot}",
            )
            holder = SlotHolder(job_id=job_id, since=now, lease_until=now + LEASE_SECONDS)
            outcome = self.admission.claim(
                plan, slot, holder, self.limits.creates_per_minute, change, charge=charge
            )
            if outcome == ClaimOutcome.CLAIMED:
                report_charge(charge)
                return job.model_copy(
                    update={
                        "status": JobStatus.SUBMITTING,
                        "attempt": attempt,
                        "key_counter": job.key_counter + 1,
                        "budget_month": charge.month,
                        "charged_usd": round(charge.usd, 4),
                    }
                ), moved
            if outcome == ClaimOutcome.JOB_MOVED:
                continue  # another dispatcher took it, or it changed: the next one
            if outcome == ClaimOutcome.TOO_LARGE:
                moved |= self._unservable(job, "its record would exceed DynamoDB's 400 KB item limit", report)
                continue
            return None, moved  # the plan or the month's spend changed: read them again
        return None, moved

    def _new_attempt(self, job: Job, slot: int, now: float) -> Attempt:
        """A fresh create: the body with inputs presigned now (so the URLs live from dispatch, not
        from upload), under a new key, fixed before the first send."""
        if job.request is None:
            raise ValueError("the job has no request")
        template = RequestTemplate.model_validate_json(unstash(self.storage, job.request))
        body = template.render(
            self.storage, self._settings.presigned_url_seconds, self._webhook_url(job.job_id)
        )
        # JSON text, sent as is on every try of this create (DynamoDB would turn 30.0 into 30).
        text = json.dumps(body, ensure_ascii=False)
        return Attempt(
            key=f"{job.job_id}.{job.key_counter + 1}",
            body=stash(self.storage, job.job_id, text),
            slot=slot,
            lease_id=uuid.uuid4().hex,
            lease_until=now + LEASE_SECONDS,
            sends=1,
            first_sent_at=now,
        )

    def _unservable(self, job: Job, why: str, report: DispatchReport) -> bool:
        """A queued job whose request cannot be sent: INVALID with its document; the queue moves on."""
        error = JobError(code="request_unservable", message=f"the job cannot be sent to sync.so: {why}")
        ended = self.store.apply(
            t.change(
                job,
                Move.UNSERVABLE,
                JobStatus.INVALID,
                "dispatch",
                fields={F.ERROR: error.stored(), F.FINISHED_AT: utc_now()},
                detail="request_unservable",
            )
        )
        if ended is None:
            return False
        report.unservable += 1
        announce(self.store, self.storage, ended, self._events)
        return True

    # ------------------------------------------------------------------ sending again
    def _redrive(self, plan: PlanState, slot: int, holder: SlotHolder, report: DispatchReport) -> bool:
        """A create whose lease ran out: send it again with the same key and bytes, or tidy the slot.
        True if anything was done."""
        job = self.store.get(holder.job_id)
        if job is None or job.slot != slot or job.status not in IN_FLIGHT:
            self.admission.release(slot, holder.job_id, duration=None)
            return True
        if job.status != JobStatus.SUBMITTING or job.attempt is None:
            # Recorded, but the slot's lease was not settled.
            return self.admission.set_lease(slot, job.job_id, 0)
        now = self.clock()
        attempt = job.attempt
        if attempt.uncertain_since is not None:
            found = self._look_up(job)
            if found is not None:
                report.adopted += 1
                self._accepted(plan, job, slot, found, report)
                return True
            if now - attempt.uncertain_since > UNCERTAIN_WINDOW_SECONDS:
                self._give_up(job, slot, report)
                return True
        lease = uuid.uuid4().hex
        renew = t.note(
            job.job_id,
            {
                F.ATTEMPT_LEASE: lease,
                F.ATTEMPT_LEASE_UNTIL: now + LEASE_SECONDS,
                F.ATTEMPT_SENDS: attempt.sends + 1,
            },
            when=t.status_is(JobStatus.SUBMITTING) & t.lease_is(attempt.lease_id),
        )
        renewed = SlotHolder(job_id=job.job_id, since=holder.since, lease_until=now + LEASE_SECONDS)
        outcome = self.admission.claim(plan, slot, renewed, self.limits.creates_per_minute, renew, renew=True)
        if outcome != ClaimOutcome.CLAIMED:
            return False
        resent = attempt.model_copy(update={"lease_id": lease, "sends": attempt.sends + 1})
        self._create(plan, job.model_copy(update={"attempt": resent}), slot, report)
        return True

    def _look_up(self, job: Job) -> Generation | None:
        """The generation an uncertain create made, found by its webhook URL (ours alone names the
        job) among the newest generations; None when not found or sync.so cannot be asked."""
        marker = f"/webhooks/sync/{job.job_id}?"
        since = (job.attempt.first_sent_at if job.attempt else None) or 0.0
        cursor: str | None = None
        try:
            for _ in range(LOOKUP_PAGES):
                page = self._sync.list_generations(limit=LOOKUP_PAGE_SIZE, cursor=cursor)
                for generation in page:
                    if generation.webhook_url and marker in generation.webhook_url:
                        return generation
                older = [g for g in page if g.created_at and _epoch(g.created_at) < since - 120]
                if len(page) < LOOKUP_PAGE_SIZE or older:
                    return None
                cursor = page[-1].id
        except SyncApiError:
            return None
        return None

    def _give_up(self, job: Job, slot: int, report: DispatchReport) -> None:
        """No answer for the whole window: STOPPED (not FAILED: it may exist), its estimate kept."""
        attempt = job.attempt
        error = JobError(
            code="create_outcome_unknown",
            message=(
                f"sync.so never said whether it created the generation: {attempt.sends if attempt else 0} "
                f"tries under one Idempotency-Key over {UNCERTAIN_WINDOW_SECONDS / 3600:.0f} h "
                f"(last: {(attempt.last_error if attempt else None) or 'no answer'}). If it did, it is "
                "billed: look for it in sync.so's dashboard"
            ),
        )
        change = t.change(
            job,
            Move.ABANDON_CREATE,
            JobStatus.STOPPED,
            "dispatch",
            fields={F.ERROR: error.stored(), F.FINISHED_AT: utc_now(), F.FINISHED_BY: "dispatch"},
            detail=error.code,
        )
        if self._release(slot, job, change):
            report.stopped += 1
            self._announce(job.job_id)

    # ------------------------------------------------------------------ creating
    def _create(self, plan: PlanState, job: Job, slot: int, report: DispatchReport) -> None:
        attempt = job.attempt
        if attempt is None or attempt.body is None:
            raise ValueError(f"job {job.job_id} holds a slot without a request to send")
        try:
            generation = self._sync.create_generation(
                unstash(self.storage, attempt.body), idempotency_key=attempt.key
            )
        except SyncRetryableError as error:
            self._retryable(plan, job, slot, error, report)
        except SyncPermanentError as error:
            self._permanent(plan, job, slot, error, report)
        else:
            self._accepted(plan, job, slot, generation, report)

    def _retryable(
        self, plan: PlanState, job: Job, slot: int, error: SyncRetryableError, report: DispatchReport
    ) -> None:
        if error.reason == "unauthorized":
            self._not_taken(job, slot, "unauthorized", error, report, pause_seconds=0.0)
            if not error.key_changed:  # the freshly read key is the rejected one: wait for a new key
                self._pause(AUTH_PAUSE_SECONDS, "api_key_rejected", plan.throttle_streak, report)
            else:
                self.kicker.kick(0, "api key rotated")
            return
        if error.reason in ("concurrency", "rate_limit", "not_sent"):
            # The plan is busier than our own slots say (another client shares it), or sync.so cannot
            # be reached: wait at the front.
            streak = plan.throttle_streak + 1
            pause = error.retry_after_seconds or backoff_seconds(streak)
            self._not_taken(job, slot, error.reason, error, report, pause_seconds=pause)
            reason = "sync_unreachable" if error.reason == "not_sent" else error.reason
            self._pause(pause, reason, streak, report)
            if error.reason != "not_sent":
                report.throttle(throttle_kind(error))
            if error.reason == "concurrency":
                self._account_changed(error)
            return
        generation_id = error.body.generation_id if error.body else None
        if generation_id:
            report.adopted += 1
            self._accepted(plan, job, slot, self._adopt(generation_id), report)
            return
        report.uncertain += 1
        attempt = job.attempt
        sends = attempt.sends if attempt else 1
        self._send_later(
            job,
            slot,
            self.clock() + backoff_seconds(sends, cap=UNCERTAIN_BACKOFF_CAP_SECONDS),
            error,
            uncertain=True,
        )

    def _permanent(
        self, plan: PlanState, job: Job, slot: int, error: SyncPermanentError, report: DispatchReport
    ) -> None:
        attempt = job.attempt
        if error.status_code == 402:
            code = error.error_code or "payment_required"
            self._not_taken(job, slot, "account", error, report, pause_seconds=ACCOUNT_PAUSE_SECONDS)
            self._pause(ACCOUNT_PAUSE_SECONDS, f"account: {code}", plan.throttle_streak, report)
            self._account_changed(error)
            return
        if error.status_code == 403:
            self._account_changed(error)  # and the request is refused as before
        if attempt is not None and attempt.uncertain and INACCESSIBLE_INPUT.fullmatch(error.error_code or ""):
            # The same key and bytes, sent again long after the first try: its presigned URLs died, so
            # sync.so created nothing under this key. A fresh attempt (new URLs, new key) is safe.
            self._requeue(job, slot, "inputs_expired", error, report)
            return
        self._refuse(job, slot, JobError.from_api(error), report)

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
        started = datetime.now(UTC)
        run = execution_input(job, generation.id, self.timings, started)
        # Started before the record: a crash in between is re-driven (same key: the same generation).
        self._workflow.start(name, run)
        now = utc_now()
        key = job.attempt.key if job.attempt else ""
        paid = PaidGeneration(generation_id=generation.id, idempotency_key=key, submitted_at=now)
        if not is_known_api_status(generation.status):
            report.unknown_statuses.append(generation.status)
        ledger = [g.model_dump(by_alias=True, exclude_none=True) for g in job.generations]
        if all(g.generation_id != generation.id for g in job.generations):
            ledger.append(paid.model_dump(by_alias=True))
        recorded = self.store.apply(
            t.change(
                job,
                Move.ACCEPT,
                status_from_api(generation.status),
                "dispatch",
                fields={
                    F.GENERATION_ID: generation.id,
                    F.API_STATUS: generation.status,
                    F.SUBMITTED_AT: now,
                    F.EXECUTION_NAME: name,
                    F.DEADLINE_AT: run["poll"]["deadline"],
                    F.GENERATIONS: ledger,
                },
                detail=f"generation {generation.id}",
            )
        )
        if recorded is not None:
            self._wake_if_the_webhook_came_first(recorded, generation.id)
            self.admission.set_lease(slot, job.job_id, 0)
            report.created.append(job.job_id)
            if plan.throttle_streak:
                self.admission.clear_throttle()

    def _wake_if_the_webhook_came_first(self, job: Job, generation_id: str) -> None:
        """The webhook, and the execution's arm task, both came before this record: neither could
        tell the generation was the job's, so the record wakes the wait (its GET decides)."""
        token = job.attempt.task_token if job.attempt else None
        if (
            token
            and job.webhook_generation_id == generation_id
            and is_terminal(job.webhook_status or "PENDING")
        ):
            self._workflow.wake(token, {"webhookStatus": job.webhook_status})

    # ------------------------------------------------------------------ answers that took nothing
    def _not_taken(
        self,
        job: Job,
        slot: int,
        reason: str,
        error: SyncApiError,
        report: DispatchReport,
        *,
        pause_seconds: float,
    ) -> None:
        """sync.so did not take this send. With no earlier send in doubt the job goes back in line;
        with one in doubt it keeps its slot, its key and its bytes, and sends them again after the
        pause (a new key could pay twice)."""
        attempt = job.attempt
        if attempt is not None and attempt.uncertain:
            at = self.clock() + max(pause_seconds, backoff_seconds(attempt.sends))
            self._send_later(job, slot, at, error, uncertain=True)
            report.requeue(f"{reason}_kept")
            return
        self._requeue(job, slot, reason, error, report)

    def _send_later(self, job: Job, slot: int, at: float, error: SyncApiError, *, uncertain: bool) -> None:
        """Keep the slot; the same key and bytes go again at `at` (the slot's lease)."""
        attempt = job.attempt
        if attempt is None:
            return
        fields: dict[str, Any] = {F.ATTEMPT_LEASE_UNTIL: at, F.ATTEMPT_LAST_ERROR: error.message[:500]}
        if uncertain and attempt.uncertain_since is None:
            fields[F.ATTEMPT_UNCERTAIN_SINCE] = self.clock()
        kept = self.store.apply(
            t.note(job.job_id, fields, when=t.status_is(JobStatus.SUBMITTING) & t.lease_is(attempt.lease_id))
        )
        if kept is not None and self.admission.set_lease(slot, job.job_id, at):
            self._wake_at(at, self.clock())

    def _requeue(self, job: Job, slot: int, reason: str, error: SyncApiError, report: DispatchReport) -> None:
        """A definite non-creation: back to the front of the line (its arrival is unchanged), with a
        fresh body and key next time, and the slot freed in the same transaction."""
        change = t.change(job, Move.REQUEUE, JobStatus.QUEUED, "dispatch", detail=reason)
        if self._release(slot, job, change, charge_back=True):
            report.requeue(reason)

    def _refuse(self, job: Job, slot: int, error: JobError, report: DispatchReport) -> None:
        """REJECTED: a refused create costs nothing."""
        change = t.change(
            job,
            Move.REFUSE,
            JobStatus.REJECTED,
            "dispatch",
            fields={F.ERROR: error.stored(), F.FINISHED_AT: utc_now(), F.COST_USD: 0.0, F.CHARGED_USD: 0.0},
            detail=error.code,
        )
        if self._release(slot, job, change, charge_back=True):
            report.rejected += 1
            self._announce(job.job_id)

    def _release(self, slot: int, job: Job, change: t.Change, *, charge_back: bool = False) -> bool:
        """Free the slot with the job's change. On contention nothing is written: the lease runs out
        and the create is sent again with the same key, which decides anew."""
        try:
            released = self.admission.release(
                slot, job.job_id, job=change, duration=None, charge=refund(job) if charge_back else None
            )
        except Contention:
            return False
        if released:
            self.kicker.kick(0, "slot freed")
        return released

    def _announce(self, job_id: str) -> None:
        ended = self.store.get(job_id)
        if ended is not None:
            announce(self.store, self.storage, ended, self._events)

    def _pause(self, seconds: float, reason: str, streak: int, report: DispatchReport) -> None:
        now = self.clock()
        self.admission.pause(now + seconds, reason, streak)
        report.paused = reason
        self._wake_at(now + seconds, now)

    # ------------------------------------------------------------------ the budget guard
    def _hold(self, job: Job, reason: str) -> int:
        """QUEUED -> BUDGET_HOLD: out of the line, its place kept in the `held` lane."""
        held = self.store.apply(
            t.change(
                job,
                Move.HOLD,
                JobStatus.BUDGET_HOLD,
                "dispatch",
                fields={F.HOLD_REASON: reason},
                detail="monthly budget",
            )
        )
        if held is None:
            return 0
        write_waiting_document(self.storage, held)
        report_held()
        return 1

    def release_held(self) -> int:
        """Back to the queue, in arrival order, every held job whose estimate now fits."""
        now = self.clock()
        month = month_of(now)
        spent = self.admission.month_spend(month)
        unheld = 0
        for job_id in self.store.queue_head(HELD_BATCH, lane=Lane.HELD):
            job = self.store.get(job_id)
            if job is None or job.status != JobStatus.BUDGET_HOLD or not self._guard.fits(job, spent):
                continue
            released = self.store.apply(
                t.change(job, Move.UNHOLD, JobStatus.QUEUED, "dispatch", detail="the budget allows it")
            )
            if released is not None:
                write_waiting_document(self.storage, released)
                spent += estimate_usd(job)
                unheld += 1
        report_budget(self._guard, spent, self.store.count_queued(lane=Lane.HELD))
        return unheld


def _epoch(moment: str) -> float:
    try:
        return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
