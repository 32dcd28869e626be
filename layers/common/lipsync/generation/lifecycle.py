"""The tasks of the JobLifecycle state machine (one execution per generation): reconcile (poll),
finalize (confirm, free the slot, copy the output, write the document) and stop (any other end
of an execution). Arming the webhook wait is in lipsync.webhooks.

A job's status, error and generation come only from sync.so's answers to our own calls: every
final status here is read with `GET /v2/generate/{id}`. Each task is idempotent (Step Functions
may run any of them again) and every one of them ends: deadlines and attempt budgets bound them.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lipsync.generation.output_copy import (
    OutputUnavailableError as OutputUnavailableError,
)  # raised by finalize
from lipsync.generation.output_copy import copy_output, download_client
from lipsync.jobs.documents import write_job_document
from lipsync.jobs.model import (
    IN_FLIGHT,
    Job,
    JobError,
    JobStatus,
    is_final,
    status_from_api,
    utc_now,
)
from lipsync.jobs.store import QUEUE_PARTITION, Update
from lipsync.plan.admission import free_slot
from lipsync.plan.budget import refund
from lipsync.syncso.client import SyncPermanentError, SyncRetryableError
from lipsync.syncso.models import Generation

if TYPE_CHECKING:
    from lipsync.jobs.events import JobEvents
    from lipsync.jobs.store import JobStore
    from lipsync.plan.admission import Admission
    from lipsync.plan.kicks import Kicker
    from lipsync.storage import Storage
    from lipsync.syncso.client import SyncClient

OUTPUT_CONTENT_TYPE = "video/mp4"
MAX_POLLS = 2000  # far beyond any schedule within MaxJobSeconds; a bound for the loop all the same
TRANSIENT_PREFIXES = ("generation_infra_", "controller_")
TRANSIENT_CODES = frozenset(
    {
        "generation_pipeline_failed",
        "generation_timeout",
        "generation_unknown_error",
        "generation_media_probe_timeout",
    }
)


def is_transient_failure(generation: Generation) -> bool:
    """A FAILED generation worth one more try (sync-api.md §8.3); a missing code counts."""
    if status_from_api(generation.status) != JobStatus.FAILED:
        return False
    code = generation.error_code
    return code is None or code in TRANSIENT_CODES or code.startswith(TRANSIENT_PREFIXES)


class JobNotFoundError(LookupError):
    pass


class GenerationNotFinished(Exception):
    """A webhook said the generation ended, but sync.so's GET says it has not: poll instead."""


@dataclass
class Slots:
    """What the lifecycle needs of admission control: free a slot, put a job back in line."""

    admission: Admission
    kicker: Kicker
    transient_retries: int = 1


def _load(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    if job is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    return job


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


# ---------------------------------------------------------------------------- recording GETs


Source = Literal["webhook", "poll", "finalize", "workflow"]


def record_generation(store: JobStore, job: Job, generation: Generation, source: Source, retries: int) -> Job:
    """Record what an authoritative GET said. A final answer finishes the job, except a transient
    failure with a retry left: that one is confirmed (`apiStatus`, `confirmedAt`) but left for
    `finalize` to send again."""
    details: dict[str, Any] = {"apiStatus": generation.status}
    if generation.output_url:
        details["outputUrl"] = generation.output_url
    if generation.output_duration is not None:
        details["outputDuration"] = generation.output_duration
    if error := JobError.from_generation(generation):
        details["error"] = error.stored()
    if not generation.is_terminal:
        return store.advance(job.job_id, status_from_api(generation.status), source, fields=details) or (
            store.set_fields(job.job_id, details)
        )
    details["confirmedAt"] = utc_now()
    details["generations"] = _ledger(job, generation)
    if job.resubmissions < retries and is_transient_failure(generation):
        return store.set_fields(job.job_id, details)
    finished = {
        "finishedAt": utc_now(),
        "finishedBy": "webhook" if source in ("webhook", "finalize") else "polling",
    }
    ended = store.advance(job.job_id, status_from_api(generation.status), source, fields=details | finished)
    return ended or store.set_fields(job.job_id, details)


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


# ---------------------------------------------------------------------------- reconcile


class PollSchedule(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    first_interval_seconds: int = Field(alias="firstIntervalSeconds", ge=1)
    backoff_rate: float = Field(alias="backoffRate", ge=1)
    max_interval_seconds: int = Field(alias="maxIntervalSeconds", ge=1)
    deadline: datetime

    def wait_after(self, attempt: int, now: datetime) -> int:
        """Capped exponential backoff, never past the deadline (so the last look is on time)."""
        interval = min(self.first_interval_seconds * self.backoff_rate**attempt, self.max_interval_seconds)
        remaining = (self.deadline - now).total_seconds()
        return max(1, math.ceil(min(interval, remaining)))


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


def _poll_answer(status: str, terminal: bool, attempt: int, wait: int = 0) -> dict[str, Any]:
    return {"status": status, "terminal": terminal, "attempt": attempt, "nextWaitSeconds": wait}


def reconcile(
    store: JobStore,
    sync: SyncClient,
    state: ExecutionState,
    retries: int,
    now: Callable[[], datetime] | None = None,
) -> dict[str, Any]:
    """Poll: GET the generation (the authority), record what it says, and say when to look again."""
    clock = now or (lambda: datetime.now(UTC))
    job = _load(store, state.job_id)
    if job.generation_id != state.generation_id or job.confirmed_at:
        # Already settled (or the job moved on to another generation): let finalize wrap up.
        return _poll_answer(job.status, True, state.attempt)
    past_deadline = clock() >= state.poll.deadline or state.attempt >= MAX_POLLS
    try:
        generation = sync.get_generation(state.generation_id)
    except SyncRetryableError:
        if past_deadline:
            return _time_out(store, job, state)
        raise  # the state machine's Retry backs off (a 401 after a key rotation lands here too)
    except SyncPermanentError as error:  # e.g. 404: sync.so says there is no such generation
        store.advance(
            job.job_id, JobStatus.FAILED, "poll", fields={"error": JobError.from_api(error).stored()}
        )
        return _poll_answer(JobStatus.FAILED, True, state.attempt)
    recorded = record_generation(store, job, generation, "poll", retries)
    if generation.is_terminal:
        return _poll_answer(recorded.status, True, state.attempt)
    if past_deadline:
        return _time_out(store, recorded, state)
    return _poll_answer(
        recorded.status, False, state.attempt + 1, state.poll.wait_after(state.attempt, clock())
    )


def _time_out(store: JobStore, job: Job, state: ExecutionState) -> dict[str, Any]:
    error = JobError(
        code="job_timed_out", message=f"no final status from sync.so by {state.poll.deadline.isoformat()}"
    )
    fields = {
        "error": error.stored(),
        "finishedAt": utc_now(),
        "finishedBy": "polling",
        "confirmedAt": utc_now(),
    }
    store.advance(job.job_id, JobStatus.TIMED_OUT, "poll", fields=fields)
    return _poll_answer(JobStatus.TIMED_OUT, True, state.attempt)


# ---------------------------------------------------------------------------- finalize


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
    again or copy a COMPLETED output into outputs/, and write outputs/<name>.json."""
    clock = now or (lambda: datetime.now(UTC))
    job = _load(store, state.job_id)
    if job.generation_id != state.generation_id:
        return {"status": job.status, "outputKey": None}  # an old execution: the job has moved on
    if job.confirmed_at is None:
        job = _confirm(store, sync, job, slots.transient_retries)
    if not is_final(job.status):
        return _resubmit(store, slots, job)
    job = free_slot(slots.admission, slots.kicker, job, duration=_seconds(job.submitted_at, job.confirmed_at))
    if job.status == JobStatus.COMPLETED and not job.output_checksum:
        try:
            with http or download_client() as client:
                job = _copy_output(store, storage, sync, job, client)
        except (OutputUnavailableError, SyncRetryableError, httpx.HTTPError) as error:
            if clock() < state.poll.deadline:
                raise  # Retry, then polling, bring us back here until the deadline
            failure = JobError(code="output_copy_failed", message=f"the output could not be copied: {error}")
            job = store.set_fields(job.job_id, {"error": failure.stored()})
    return _write_out(store, storage, job, events)


def _confirm(store: JobStore, sync: SyncClient, job: Job, retries: int) -> Job:
    """After a webhook: the GET that decides. Raises GenerationNotFinished if it was premature."""
    if job.generation_id is None:
        raise GenerationNotFinished("the job has no generation yet")
    try:
        generation = sync.get_generation(job.generation_id)
    except SyncPermanentError as error:
        return store.advance(
            job.job_id, JobStatus.FAILED, "finalize", fields={"error": JobError.from_api(error).stored()}
        ) or _load(store, job.job_id)
    recorded = record_generation(store, job, generation, "finalize", retries)
    if not generation.is_terminal:
        raise GenerationNotFinished(f"a webhook said the job ended; sync.so says {generation.status}")
    return recorded


def _resubmit(store: JobStore, slots: Slots, job: Job) -> dict[str, Any]:
    """A confirmed transient failure: back to the front of the line for one more generation (a new
    key and freshly presigned inputs at dispatch), the slot freed and the failed generation's
    estimate refunded (nothing was produced) in the same transaction."""
    update = Update(
        job.job_id,
        set={"queue": QUEUE_PARTITION, "resubmissions": job.resubmissions + 1},
        remove=(
            "generationId",
            "idempotencyKey",
            "requestBody",
            "confirmedAt",
            "taskToken",
            "outputUrl",
            "webhookStatus",
            "webhookGenerationId",
            "slot",
            "budgetMonth",
            "chargedUsd",
        ),
        condition="generationId = :generation AND statusRank < :final",
        values={":generation": job.generation_id, ":final": 90},
    ).to_status(
        JobStatus.QUEUED, "finalize", detail=f"transient {job.error.code if job.error else 'failure'}"
    )
    if job.slot is not None:
        slots.admission.release(
            job.slot,
            job.job_id,
            job=update,
            duration=_seconds(job.submitted_at, job.confirmed_at),
            charge=refund(job),
        )
    else:
        store.apply(update)
    slots.kicker.kick(0, "resubmitted")
    return {"status": JobStatus.QUEUED, "outputKey": None}


def _write_out(store: JobStore, storage: Storage, job: Job, events: JobEvents | None) -> dict[str, Any]:
    if not job.finalized_at:  # the event goes out before the mark: at least once (lipsync.jobs.events)
        write_job_document(storage, job, events)
        job = store.set_fields(job.job_id, {"finalizedAt": utc_now()})
    return {"status": job.status, "outputKey": job.output_key if job.output_checksum else None}


def _copy_output(store: JobStore, storage: Storage, sync: SyncClient, job: Job, http: httpx.Client) -> Job:
    """Stream the output into outputs/ (see lipsync.generation.output_copy) and record its checksum."""
    generation_id, key = job.generation_id, job.output_key
    if not (generation_id and key):
        raise OutputUnavailableError(f"job {job.job_id} has no generation or output key to copy")
    copied = copy_output(
        http,
        job.output_url,
        lambda: sync.download_url(generation_id),  # the recorded URL expired (or was never recorded)
        storage,
        key,
        content_type=OUTPUT_CONTENT_TYPE,
        metadata={"job-id": job.job_id, "generation-id": generation_id, "model": job.model or ""},
    )
    return store.set_fields(
        job.job_id,
        {
            "outputChecksum": f"sha256:{copied.sha256}",
            "outputVersionId": copied.info.version_id,
            "outputSize": copied.info.size,
        },
    )


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
    """An execution ended without finalizing (a task failed for good, or the execution failed, timed
    out or was aborted): settle the job from a GET if sync.so has finished it, else mark it STOPPED
    (we no longer follow it); then free the slot and write the document. Idempotent."""
    job = store.get(job_id)
    if job is None or (generation_id and job.generation_id != generation_id):
        return {"status": job.status if job else None, "outputKey": None}  # nothing of this execution's
    if job.generation_id and not is_final(job.status):
        # If sync.so cannot tell us now, the job stops with the workflow's error.
        with contextlib.suppress(SyncRetryableError, SyncPermanentError):
            job = record_generation(store, job, sync.get_generation(job.generation_id), "workflow", 0)
    if job.status in IN_FLIGHT:
        fields = {"error": error.stored(), "finishedAt": utc_now(), "finishedBy": "workflow"}
        job = store.advance(
            job.job_id, JobStatus.STOPPED, "workflow", fields=fields, detail=error.code
        ) or _load(store, job_id)
    elif job.status == JobStatus.COMPLETED and not job.output_checksum and job.error is None:
        note = JobError(code="output_copy_failed", message=f"the output was not copied: {error.message}")
        job = store.set_fields(job.job_id, {"error": note.stored()})
    job = free_slot(slots.admission, slots.kicker, job)
    return _write_out(store, storage, job, events)


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
    except (TypeError, ValueError):
        return str(cause or "")[:500]
    return str(payload.get("errorMessage", payload) if isinstance(payload, dict) else payload)[:500]
