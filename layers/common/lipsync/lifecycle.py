"""The tasks of the JobLifecycle state machine: reconcile (poll) and finalize (confirm, copy, write
out). Arming the webhook wait is in lipsync.webhooks.

Each one is idempotent: Step Functions may run any of them again after a failure.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lipsync.documents import write_job_document
from lipsync.jobs import Job, JobError, JobStatus, utc_now
from lipsync.models import Generation
from lipsync.sync_client import SyncPermanentError, SyncRetryableError

if TYPE_CHECKING:
    from lipsync.job_store import JobStore
    from lipsync.storage import Storage
    from lipsync.sync_client import SyncClient

OUTPUT_CONTENT_TYPE = "video/mp4"
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class JobNotFoundError(LookupError):
    pass


def _load(store: JobStore, job_id: str) -> Job:
    job = store.get(job_id)
    if job is None:
        raise JobNotFoundError(f"job {job_id} does not exist")
    return job


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


class ReconcileState(BaseModel):
    """The part of the execution state the reconcile task reads."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    job_id: str = Field(alias="jobId")
    generation_id: str = Field(alias="generationId")
    poll: PollSchedule
    reconcile: dict[str, Any] = Field(default_factory=dict)

    @property
    def attempt(self) -> int:
        return int(self.reconcile.get("attempt", 0))


class GenerationNotFinished(Exception):
    """A webhook said the generation ended, but sync.so's GET says it has not: poll instead."""


def reconcile(
    store: JobStore, sync: SyncClient, state: ReconcileState, now: Callable[[], datetime] | None = None
) -> dict[str, Any]:
    """Poll: GET the generation (the authority), record what it says, and say when to look again."""
    clock = now or (lambda: datetime.now(UTC))
    try:
        generation = sync.get_generation(state.generation_id)
    except SyncRetryableError:
        if clock() >= state.poll.deadline:
            return _time_out(store, state)
        raise  # the state machine's Retry backs off
    except SyncPermanentError as error:
        _finish(store, state.job_id, JobStatus.FAILED, "poll", {"error": JobError.from_api(error).stored()})
        return {"status": JobStatus.FAILED, "terminal": True, "attempt": state.attempt, "nextWaitSeconds": 0}
    _record(store, state.job_id, generation, "poll")
    if generation.is_terminal:
        return {"status": generation.status, "terminal": True, "attempt": state.attempt, "nextWaitSeconds": 0}
    if clock() >= state.poll.deadline:
        return _time_out(store, state)
    return {
        "status": generation.status,
        "terminal": False,
        "attempt": state.attempt + 1,
        "nextWaitSeconds": state.poll.wait_after(state.attempt, clock()),
    }


def _record(
    store: JobStore, job_id: str, generation: Generation, source: Literal["webhook", "poll"]
) -> Job | None:
    """Record what an authoritative GET said; a terminal status finishes the job (returned)."""
    details: dict[str, Any] = {}
    if generation.output_url:
        details["outputUrl"] = generation.output_url
    if generation.output_duration is not None:
        details["outputDuration"] = generation.output_duration
    if error := JobError.from_generation(generation):
        details["error"] = error.stored()
    if generation.is_terminal:
        return _finish(store, job_id, generation.status, source, details)
    if store.advance(job_id, generation.status, source, fields=details) is None and details:
        store.set_fields(job_id, details)
    return None


def _finish(
    store: JobStore, job_id: str, status: str, source: Literal["webhook", "poll"], details: dict[str, Any]
) -> Job:
    """Record a confirmed final status. If a webhook recorded it first, still keep what the GET said."""
    confirmed = details | {"confirmedAt": utc_now()}
    finished = {"finishedAt": utc_now(), "finishedBy": "webhook" if source == "webhook" else "polling"}
    job = store.advance(job_id, status, source, fields=confirmed | finished)
    if job is None:
        job = store.set_fields(job_id, confirmed)
        if job.finished_by is None:
            job = store.set_fields(job_id, finished)
    return job


def _time_out(store: JobStore, state: ReconcileState) -> dict[str, Any]:
    error = JobError(
        code="job_timed_out", message=f"no final status from sync.so by {state.poll.deadline.isoformat()}"
    )
    _finish(store, state.job_id, JobStatus.TIMED_OUT, "poll", {"error": error.stored()})
    return {"status": JobStatus.TIMED_OUT, "terminal": True, "attempt": state.attempt, "nextWaitSeconds": 0}


def _confirm(store: JobStore, sync: SyncClient, job: Job) -> Job:
    """After a webhook: the GET that confirms it. Raises GenerationNotFinished if it was premature."""
    assert job.generation_id
    try:
        generation = sync.get_generation(job.generation_id)
    except SyncPermanentError as error:
        return _finish(
            store, job.job_id, JobStatus.FAILED, "webhook", {"error": JobError.from_api(error).stored()}
        )
    finished = _record(store, job.job_id, generation, "webhook")
    if finished is None:
        raise GenerationNotFinished(f"the webhook said the job ended; sync.so says {generation.status}")
    return finished


# ---------------------------------------------------------------------------- finalize


class OutputUnavailableError(RuntimeError):
    """The output could not be fetched (retried by the state machine)."""


def finalize(
    store: JobStore,
    storage: Storage,
    sync: SyncClient,
    job_id: str,
    workflow_error: dict[str, Any] | None = None,
    http: httpx.Client | None = None,
) -> dict[str, Any]:
    """Confirm the status if a webhook reported it, copy a COMPLETED job's output into outputs/,
    and write outputs/<name>.json; any other end is recorded and written out the same way."""
    job = _load(store, job_id)
    if workflow_error:
        # Record what went wrong; a job sync.so completed stays COMPLETED, without an output copy.
        error = JobError(
            code=str(workflow_error.get("Error") or "workflow_error"),
            message="the job's workflow failed: " + _cause_text(workflow_error.get("Cause")),
        ).stored()
        failed = store.advance(
            job_id, JobStatus.FAILED, "finalize", fields={"error": error, "finishedAt": utc_now()}
        )
        if failed:
            job = failed
        elif job.error is None:  # keep the error that ended the job, if it has one
            job = store.set_fields(job_id, {"error": error})
    else:
        if job.confirmed_at is None:  # woken by a webhook: confirm it first (polling already did)
            job = _confirm(store, sync, job)
        if job.status == JobStatus.COMPLETED and not job.output_checksum:
            with http or httpx.Client(timeout=DOWNLOAD_TIMEOUT) as client:
                job = _copy_output(store, storage, sync, job, client)
    if not job.finalized_at:
        write_job_document(storage, job)
        job = store.set_fields(job_id, {"finalizedAt": utc_now()})
    return {"status": job.status, "outputKey": job.output_key if job.output_checksum else None}


def _cause_text(cause: Any) -> str:
    """A Lambda failure's Cause is its error payload as JSON: keep the message, not the stack trace."""
    try:
        payload = json.loads(cause)
    except (TypeError, ValueError):
        return str(cause or "")[:500]
    return str(payload.get("errorMessage", payload) if isinstance(payload, dict) else payload)[:500]


def _copy_output(store: JobStore, storage: Storage, sync: SyncClient, job: Job, http: httpx.Client) -> Job:
    assert job.generation_id
    assert job.output_key
    with tempfile.TemporaryFile() as spool:
        checksum = hashlib.sha256()
        if not _download(http, job.output_url, spool, checksum):
            # The signed URL expired (or was never recorded): ask sync.so for a fresh one.
            fresh = sync.download_url(job.generation_id)
            spool.seek(0)
            spool.truncate()
            checksum = hashlib.sha256()
            if not _download(http, fresh, spool, checksum):
                raise OutputUnavailableError(
                    f"sync.so's output for generation {job.generation_id} is not downloadable"
                )
        spool.seek(0)
        info = storage.upload(
            job.output_key,
            spool,
            content_type=OUTPUT_CONTENT_TYPE,
            metadata={
                "job-id": job.job_id,
                "generation-id": job.generation_id,
                "model": job.model or "",
                "sha256": checksum.hexdigest(),
            },
        )
    return store.set_fields(
        job.job_id,
        {
            "outputChecksum": f"sha256:{checksum.hexdigest()}",
            "outputVersionId": info.version_id,
            "outputSize": info.size,
        },
    )


def _download(http: httpx.Client, url: str | None, sink: Any, checksum: Any) -> bool:
    """Stream `url` into `sink`; False when the URL is missing, expired or refused (4xx)."""
    if not url:
        return False
    with http.stream("GET", url) as response:
        if 400 <= response.status_code < 500:
            return False
        if response.status_code >= 300:
            raise OutputUnavailableError(f"output download answered {response.status_code}")
        for chunk in response.iter_bytes(1024 * 1024):
            checksum.update(chunk)
            sink.write(chunk)
    return True
