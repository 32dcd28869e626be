"""outputs/<name>.json: the job's record where the user looks for it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from lipsync.jobs.model import FAILED_OUTCOMES, Job, JobStatus, utc_now
from lipsync.jobs.transitions import F, not_announced, note, status_is
from lipsync.observability import count_by, percent, seconds
from lipsync.storage import Storage

if TYPE_CHECKING:
    from lipsync.jobs.events import JobEvents
    from lipsync.jobs.store import JobStore


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return round((datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds(), 3)


def job_document(job: Job) -> dict[str, Any]:
    """The public record plus derived timings (seconds)."""
    timings = {
        "queuedSeconds": _seconds_between(job.created_at, job.submitted_at),
        "generationSeconds": _seconds_between(job.submitted_at, job.finished_at),
        "totalSeconds": _seconds_between(job.created_at, job.finished_at),
    }
    if job.status == JobStatus.COMPLETED and job.output_checksum:
        timings["uploadToOutputSeconds"] = _seconds_between(job.arrived_at or job.created_at, job.finished_at)
    return job.public_view() | {
        "timings": {name: value for name, value in timings.items() if value is not None}
    }


def write_waiting_document(storage: Storage, job: Job) -> None:
    """The document of a job that waits (BUDGET_HOLD, and QUEUED again after it): no event, no metrics."""
    storage.put_json(job.document_key, job_document(job))


def write_job_document(storage: Storage, job: Job, events: JobEvents | None = None) -> None:
    """Write a finished job's document, publish its `Job Finished` event (with `events`) and
    report its metrics.

    Callers set `finalizedAt` afterwards and skip this once it is set, so a job is announced once,
    or again when the caller fails between the two (at least once; see lipsync.jobs.events)."""
    document = job_document(job)
    storage.put_json(job.document_key, document)
    if events is not None:
        events.job_finished(document)
    report_finished(document)


def report_finished(document: dict[str, Any]) -> None:
    """Metrics of a finished job: its outcome, and how long it waited and took.

    FailedJobPercent is 100 for a job that ended badly and 0 otherwise, so its Average over a
    period is the share of finished jobs that failed: FailedJobRateAlarm reads it as it is."""
    status = str(document["status"])
    count_by("JobsFinished", "Outcome", status)
    percent("FailedJobPercent", 100 if status in FAILED_OUTCOMES else 0)
    timings: dict[str, float] = document.get("timings", {})
    for metric, timing in (
        ("QueueWaitSeconds", "queuedSeconds"),
        ("GenerationSeconds", "generationSeconds"),
        ("UploadToOutputSeconds", "uploadToOutputSeconds"),
    ):
        if (value := timings.get(timing)) is not None:
            seconds(metric, value)


def announce(store: JobStore, storage: Storage, job: Job, events: JobEvents | None = None) -> Job:
    """A final job's ending, written once: its document and Job Finished event, then `finalizedAt`
    (which takes it out of the `ended` lane). A writer that fails in between leaves the job in
    that lane, and the sweep announces it (at least once; see lipsync.jobs.events)."""
    if job.finalized_at:
        return job
    write_job_document(storage, job, events)
    marked = store.apply(
        note(
            job.job_id,
            {F.FINALIZED_AT: utc_now()},
            clear=[F.LANE],
            when=not_announced() & status_is(job.status),
        )
    )
    return marked or store.get(job.job_id) or job
