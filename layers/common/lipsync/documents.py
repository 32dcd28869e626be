"""outputs/<name>.json: the job's record where the user looks for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lipsync.jobs import Job
from lipsync.storage import Storage


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
    return job.public_view() | {
        "timings": {name: value for name, value in timings.items() if value is not None}
    }


def write_job_document(storage: Storage, job: Job) -> None:
    storage.put_json(job.document_key, job_document(job))
