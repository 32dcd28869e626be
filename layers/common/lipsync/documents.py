"""outputs/<name>.json: the job's record where the user looks for it."""

from __future__ import annotations

from lipsync.jobs import Job
from lipsync.storage import Storage


def write_job_document(storage: Storage, job: Job) -> None:
    storage.put_json(job.document_key, job.public_view())
