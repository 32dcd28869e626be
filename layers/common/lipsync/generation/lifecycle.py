"""The tasks of the JobLifecycle state machine (one execution per generation): reconcile (poll),
finalize (confirm, free the slot, copy the output, write the document) and stop (any other end
of an execution). Arming the webhook wait is in lipsync.generation.webhooks.

A job's status, error and generation come only from sync.so's answers to our own calls: every
final status here is read with `GET /v2/generate/{id}`. A GET that fails, whatever the code (a
404 right after a COMPLETED webhook happens), decides nothing: the job is polled again later.
Each task is idempotent (Step Functions may run any of them again) and says when to come back,
so no loop spins; the deadlines in lipsync.generation.deadlines bound them all.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import httpx
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from lipsync.generation.deadlines import WATCH_SECONDS
from lipsync.generation.output_copy import OutputUnavailableError, copy_output, download_client
from lipsync.jobs import transitions as t
from lipsync.jobs.documents import announce, write_waiting_document
from lipsync.jobs.model import (
    IN_FLIGHT,
    RECOVERABLE,
    Job,
    JobError,
    JobStatus,
    is_final,
    status_from_api,
    utc_now,
)
from lipsync.jobs.transitions import F, Move
from lipsync.plan.admission import free_slot
from lipsync.plan.budget import refund
from lipsync.syncso.client import SyncApiError
from lipsync.syncso.models import Generation

if TYPE_CHECKING:
    from lipsync.jobs.events import JobEvents
    from lipsync.jobs.store import JobStore
    from lipsync.plan.admission import Admission
    from lipsync.plan.kicks import Kicker
    from lipsync.storage import Storage
    from lipsync.syncso.client import SyncClient

OUTPUT_CONTENT_TYPE = "video/mp4"
MAX_POLLS = 5000  # far beyond any schedule within the watch window; a bound for the loop all the same
TRANSIENT_PREFIXES = ("generation_infra_", "controller_")
TRANSIENT_CODES = frozenset(
    {
        "generation_pipeline_failed",
        "generation_timeout",
        "generation_unknown_error",
        "generation_media_probe_timeout",
    }
)
# What a copy can fail with that a later try may not: sync.so, the network, S3.
COPY_ERRORS = (OutputUnavailableError, SyncApiError, httpx.HTTPError, ClientError, BotoCoreError)


def is_transient_failure(generation: Generation) -> bool:
    """A FAILED generation worth one more try (sync-api.md §8.3); a missing code counts."""
    if status_from_api(generation.status) != JobStatus.FAILED:
        return False
    code = generation.error_code
    return code is None or code in TRANSIENT_CODES or code.startswith(TRANSIENT_PREFIXES)


@dataclass
class Slots:
    """What the lifecycle needs of admission control: free a slot, put a job back in line."""

    admission: Admission
    kicker: Kicker
    transient_retries: int = 1


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# ---------------------------------------------------------------------------- recording GETs


Source = Literal["webhook", "poll", "finalize", "workflow"]


def record_generation(store: JobStore, job: Job, generation: Generation, source: Source, retries: int) -> Job:
    """Record what an authoritative GET said. A final answer finishes the job (a late one too,
    marked `late`), except a transient failure with a retry left: that one is confirmed
    (`apiStatus`, `confirmedAt`) and left for `finalize` to send again."""
    details: dict[str, Any] = {F.API_STATUS: generation.status}
    if generation.output_url and job.attempt is not None:
        details[F.OUTPUT_URL] = generation.output_url
    if generation.output_duration is not None:
        details[F.OUTPUT_DURATION] = generation.output_duration
    if error := JobError.from_generation(generation):
        details[F.ERROR] = error.stored()
    status = status_from_api(generation.status)
    ours = t.generation_is(generation.id)
    if not generation.is_terminal:
        if job.status == JobStatus.PENDING and status == JobStatus.PROCESSING:
            observed = store.apply(t.change(job, Move.OBSERVE, status, source, fields=details))
            if observed is not None:
                return observed
        return store.apply(t.note(job.job_id, details, when=ours)) or job
    details[F.CONFIRMED_AT] = utc_now()
    details[F.GENERATIONS] = _ledger(job, generation)
    if job.resubmissions < retries and is_transient_failure(generation):
        return store.apply(t.note(job.job_id, details, when=ours & t.in_flight())) or job
    details[F.FINISHED_AT] = utc_now()
    details[F.FINISHED_BY] = "webhook" if source in ("webhook", "finalize") else "polling"
    if job.status in RECOVERABLE:
        details[F.LATE] = True
    if status == JobStatus.COMPLETED:
        # Its ending is due once the output is copied: the sweep waits out the copy's whole window.
        due = datetime.now(UTC) + timedelta(seconds=WATCH_SECONDS)
        details[F.LANE_KEY] = t.lane_key(
            due.isoformat(timespec="milliseconds").replace("+00:00", "Z"), job.job_id
        )
    finished = store.apply(t.change(job, Move.FINISH, status, source, fields=details))
    return finished or store.get(job.job_id) or job


def _ledger(job: Job, generation: Generation) -> list[dict[str, Any]]:
    """The paid generations, with this one's final answer filled in."""
    entries = []
    for paid in job.generations:
        if paid.generation_id == generation.id:
            paid = paid.model_copy(
                update={
                    "api_status": generation.status,
                    "error_code": generation.error_code,
                    "finished_at": utc_now(),
                }
            )
        entries.append(paid.model_dump(by_alias=True, exclude_none=True))
    return entries


# ---------------------------------------------------------------------------- the schedule


class PollSchedule(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    first_interval_seconds: int = Field(alias="firstIntervalSeconds", ge=1)
    backoff_rate: float = Field(alias="backoffRate", ge=1)
    max_interval_seconds: int = Field(alias="maxIntervalSeconds", ge=1)
    late_check_seconds: int = Field(600, alias="lateCheckSeconds", ge=1)
    deadline: datetime
    slot_release_at: datetime | None = Field(None, alias="slotReleaseAt")
    watch_until: datetime | None = Field(None, alias="watchUntil")

    def wait_after(self, attempt: int, now: datetime) -> int:
        """Capped exponential backoff, never past the deadline (so the last look is on time); past
        it, the late checks' interval."""
        remaining = (self.deadline - now).total_seconds()
        if remaining <= 0:
            return self.late_check_seconds
        interval = min(self.first_interval_seconds * self.backoff_rate**attempt, self.max_interval_seconds)
        return max(1, math.ceil(min(interval, remaining)))

    def watch_end(self) -> datetime:
        return self.watch_until or self.deadline


class ExecutionState(BaseModel):
    """The part of the execution state the tasks read."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    job_id: str = Field(alias="jobId")
    generation_id: str = Field(alias="generationId")
    poll: PollSchedule
    reconcile: dict[str, Any] = Field(default_factory=dict)

    @property
    def attempt(self) -> int:
        return int(self.reconcile.get("attempt", 0))


def _poll_answer(
    status: str | None, terminal: bool, attempt: int, wait: int = 1, *, late: bool = False
) -> dict[str, Any]:
    # Never 0: after a failed poll the state machine waits the last answer's interval (no spin).
    wait = max(1, wait)
    return {"status": status, "terminal": terminal, "late": late, "attempt": attempt, "nextWaitSeconds": wait}


def _clock(now: Callable[[], datetime] | None) -> Callable[[], datetime]:
    return now or (lambda: datetime.now(UTC))


# ---------------------------------------------------------------------------- reconcile


def reconcile(
    store: JobStore,
    storage: Storage,
    sync: SyncClient,
    slots: Slots,
    state: ExecutionState,
    retries: int,
    now: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Poll: GET the generation (the authority), record what it says, and say when to look again."""
    clock = _clock(now)
    job = store.get(state.job_id)
    attempt = state.attempt + 1
    if job is not None and _not_recorded_yet(job) and clock() < state.poll.watch_end():
        return _poll_answer(job.status, False, attempt, state.poll.wait_after(state.attempt, clock()))
    if job is None or job.generation_id != state.generation_id or job.confirmed_at or is_final(job.status):
        # Gone, settled, or moved on to another generation: finalize wraps up.
        return _poll_answer(job.status if job else None, True, attempt)
    generation: Generation | None = None
    with contextlib.suppress(SyncApiError):  # a GET that failed decides nothing: look again later
        generation = sync.get_generation(state.generation_id)
    if generation is not None:
        job = record_generation(store, job, generation, "poll", retries)
        if generation.is_terminal:
            return _poll_answer(job.status, True, attempt)
    return _keep_watching(store, storage, slots, job, state, clock(), attempt)


def _not_recorded_yet(job: Job) -> bool:
    """The execution started; the dispatcher has not recorded the generation yet (it will, or its
    lease runs out and the create is sent again under the same key: the same generation)."""
    return job.status == JobStatus.SUBMITTING and job.generation_id is None


def _keep_watching(
    store: JobStore,
    storage: Storage,
    slots: Slots,
    job: Job,
    state: ExecutionState,
    moment: datetime,
    attempt: int,
) -> dict[str, Any]:
    schedule = state.poll
    if moment >= schedule.watch_end() or attempt >= MAX_POLLS:
        stopped = _stop_watching(store, job, schedule)
        return _poll_answer(stopped.status, True, attempt)
    if moment < schedule.deadline:
        return _poll_answer(job.status, False, attempt, schedule.wait_after(state.attempt, moment))
    if job.status in (JobStatus.PENDING, JobStatus.PROCESSING):
        job = _time_out(store, storage, job, schedule)
    if schedule.slot_release_at and moment >= schedule.slot_release_at and job.slot is not None:
        job = free_slot(slots.admission, slots.kicker, job)  # sync.so has had as long again: let it go
    left = math.ceil((schedule.watch_end() - moment).total_seconds())
    return _poll_answer(job.status, False, attempt, max(1, min(schedule.late_check_seconds, left)), late=True)


def _time_out(store: JobStore, storage: Storage, job: Job, schedule: PollSchedule) -> Job:
    """Past the deadline: TIMED_OUT, still watched; its document says so (no event: it has not ended)."""
    until = schedule.watch_end().isoformat(timespec="seconds")
    deadline = schedule.deadline.isoformat(timespec="seconds")
    error = JobError(
        code="job_timed_out",
        message=f"no final status from sync.so by its deadline {deadline}; sync.so may still finish it: "
        f"the pipeline keeps looking until {until} and copies the output then",
    )
    timed_out = store.apply(
        t.change(job, Move.TIME_OUT, JobStatus.TIMED_OUT, "poll", fields={F.ERROR: error.stored()})
    )
    if timed_out is None:
        return store.get(job.job_id) or job
    write_waiting_document(storage, timed_out)
    return timed_out


def _stop_watching(store: JobStore, job: Job, schedule: PollSchedule) -> Job:
    if is_final(job.status):
        return job
    hours = (schedule.watch_end() - schedule.deadline).total_seconds() / 3600
    error = JobError(
        code="job_timed_out",
        message=f"sync.so gave no final status by {schedule.watch_end().isoformat(timespec='seconds')} "
        f"({hours:.0f} h past the job's deadline): the pipeline stopped watching it",
    )
    fields = {F.ERROR: error.stored(), F.FINISHED_AT: utc_now(), F.FINISHED_BY: "polling"}
    stopped = store.apply(
        t.change(job, Move.STOP, JobStatus.STOPPED, "poll", fields=fields, detail=error.code)
    )
    return stopped or store.get(job.job_id) or job


# ---------------------------------------------------------------------------- finalize


class GenerationNotFinished(Exception):
    """sync.so did not confirm the end now (a webhook was early, or the GET failed): poll instead."""


class OutputNotCopiedYet(Exception):
    """The copy failed for now; the state machine's Retry tries again later, until the watch ends."""


def finalize(
    store: JobStore,
    storage: Storage,
    sync: SyncClient,
    slots: Slots,
    state: ExecutionState,
    http: httpx.Client | None = None,
    now: Callable[[], datetime] | None = None,
    events: JobEvents | None = None,
) -> dict[str, Any]:
    """Confirm the end with a GET (if polling has not), free the slot, send a transient failure
    again or copy a COMPLETED output into outputs/, and write outputs/<name>.json.

    Raises GenerationNotFinished (the state machine polls) or OutputNotCopiedYet (its Retry comes
    back with growing waits); past the watch window a copy that keeps failing is given up, and
    the document says so."""
    clock = _clock(now)
    job = store.get(state.job_id)
    if job is not None and _not_recorded_yet(job):
        raise GenerationNotFinished("the dispatcher has not recorded the generation yet")
    if job is None or job.generation_id != state.generation_id:
        return {"status": job.status if job else None, "outputKey": None}  # gone, or an old execution
    if job.confirmed_at is None and not is_final(job.status):
        try:
            generation = sync.get_generation(state.generation_id)
        except SyncApiError as error:
            raise GenerationNotFinished(f"sync.so could not confirm the end now: {error.message}") from error
        job = record_generation(store, job, generation, "finalize", slots.transient_retries)
        if not generation.is_terminal:
            raise GenerationNotFinished(f"a webhook said the job ended; sync.so says {generation.status}")
    if not is_final(job.status):
        _resubmit(store, slots, job)
        return {"status": JobStatus.QUEUED, "outputKey": None}
    job = free_slot(slots.admission, slots.kicker, job, duration=_seconds(job.submitted_at, job.confirmed_at))
    if job.status == JobStatus.COMPLETED and not job.output_checksum:
        try:
            with http or download_client() as client:
                job = _copy_output(store, storage, sync, job, client)
        except COPY_ERRORS as error:
            if clock() < state.poll.watch_end():
                raise OutputNotCopiedYet(
                    f"the output could not be copied yet ({type(error).__name__}): {error}"
                ) from error
            failure = JobError(code="output_copy_failed", message=f"the output could not be copied: {error}")
            job = (
                store.apply(
                    t.note(job.job_id, {F.ERROR: failure.stored()}, when=t.status_is(JobStatus.COMPLETED))
                )
                or job
            )
    job = announce(store, storage, job, events)
    return {"status": job.status, "outputKey": job.output_key if job.output_checksum else None}


def _resubmit(store: JobStore, slots: Slots, job: Job) -> None:
    """A confirmed transient failure: back to the front of the line for one more generation (a new
    key and freshly presigned inputs at dispatch), the slot freed and the failed generation's
    estimate refunded (nothing was produced) in the same transaction."""
    code = job.error.code if job.error else None
    change = t.change(
        job,
        Move.RESUBMIT,
        JobStatus.QUEUED,
        "finalize",
        fields={F.RESUBMISSIONS: job.resubmissions + 1},
        detail=f"transient {code or 'failure'}",
    )
    duration = _seconds(job.submitted_at, job.confirmed_at)
    done = job.slot is not None and slots.admission.release(
        job.slot, job.job_id, job=change, duration=duration, charge=refund(job)
    )
    if not done and not slots.admission.settle(change, refund(job)):
        return  # sent again before (a retried task): nothing more to do
    slots.kicker.kick(0, "resubmitted")


def _copy_output(store: JobStore, storage: Storage, sync: SyncClient, job: Job, http: httpx.Client) -> Job:
    """Stream the output into outputs/ (see lipsync.generation.output_copy) and record its checksum."""
    generation_id, key = job.generation_id, job.output_key
    if not (generation_id and key):
        raise OutputUnavailableError(f"job {job.job_id} has no generation or output key to copy")
    copied = copy_output(
        http,
        job.attempt.output_url if job.attempt else None,
        lambda: sync.download_url(generation_id),  # the recorded URL expired (or was never recorded)
        storage,
        key,
        content_type=OUTPUT_CONTENT_TYPE,
        metadata={"job-id": job.job_id, "generation-id": generation_id, "model": job.model or ""},
    )
    fields = {
        F.OUTPUT_CHECKSUM: f"sha256:{copied.sha256}",
        F.OUTPUT_VERSION_ID: copied.info.version_id,
        F.OUTPUT_SIZE: copied.info.size,
    }
    return store.apply(t.note(job.job_id, fields, when=t.status_is(JobStatus.COMPLETED))) or job


# ---------------------------------------------------------------------------- any other end


def stop(
    store: JobStore,
    storage: Storage,
    sync: SyncClient,
    slots: Slots,
    job_id: str,
    generation_id: str | None,
    error: JobError,
    events: JobEvents | None = None,
) -> dict[str, Any]:
    """An execution ended without finalizing (it failed, timed out or was aborted): settle the job
    from a GET if sync.so has finished it, else mark it STOPPED (we no longer follow it); then free
    the slot and write the document. Idempotent."""
    job = store.get(job_id)
    if job is None or (generation_id and job.generation_id != generation_id):
        return {"status": job.status if job else None, "outputKey": None}  # nothing of this execution's
    if job.generation_id and not is_final(job.status):
        # If sync.so cannot tell us now, the job stops with the workflow's error.
        with contextlib.suppress(SyncApiError):
            job = record_generation(store, job, sync.get_generation(job.generation_id), "workflow", 0)
    if job.status in IN_FLIGHT and job.status != JobStatus.SUBMITTING:
        fields = {F.ERROR: error.stored(), F.FINISHED_AT: utc_now(), F.FINISHED_BY: "workflow"}
        job = store.apply(
            t.change(job, Move.STOP, JobStatus.STOPPED, "workflow", fields=fields, detail=error.code)
        ) or (store.get(job_id) or job)
    elif job.status == JobStatus.COMPLETED and not job.output_checksum and job.error is None:
        note = JobError(code="output_copy_failed", message=f"the output was not copied: {error.message}")
        job = (
            store.apply(t.note(job.job_id, {F.ERROR: note.stored()}, when=t.status_is(JobStatus.COMPLETED)))
            or job
        )
    job = free_slot(slots.admission, slots.kicker, job)
    if is_final(job.status):
        job = announce(store, storage, job, events)
    return {"status": job.status, "outputKey": job.output_key if job.output_checksum else None}


def workflow_error(error: str | None, cause: Any) -> JobError:
    """A Step Functions error and cause as the job's error (the message, not the stack trace)."""
    return JobError(
        code=f"workflow_{(error or 'failed').lower()}",
        message="the job's workflow failed: " + _cause_text(cause),
    )


def _cause_text(cause: Any) -> str:
    """A Lambda failure's Cause is its error payload as JSON: keep the message, not the stack trace."""
    try:
        payload = json.loads(cause)
    except (TypeError, ValueError, RecursionError):
        return str(cause or "")[:500]
    return str(payload.get("errorMessage", payload) if isinstance(payload, dict) else payload)[:500]
