"""The job: one sync.so generation requested by files in the bucket.

A job's id is derived from the identity of the objects that asked for it, so every
duplicate delivery of the same upload maps to the same job (and the same
Idempotency-Key). Its status only moves forward; see `STATUS_RANK`.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipsync.models import Generation, GenerationStatus

if TYPE_CHECKING:
    from lipsync.sync_client import SyncApiError


class JobStatus(StrEnum):
    QUEUED = "QUEUED"  # recorded; not yet accepted by sync.so (or waiting out a 429)
    PENDING = GenerationStatus.PENDING.value
    PROCESSING = GenerationStatus.PROCESSING.value
    COMPLETED = GenerationStatus.COMPLETED.value
    FAILED = GenerationStatus.FAILED.value
    REJECTED = GenerationStatus.REJECTED.value
    TIMED_OUT = GenerationStatus.TIMED_OUT.value
    INVALID = "INVALID"  # the files or the manifest were wrong; sync.so was never called


ACTIVE_RANK: dict[str, int] = {JobStatus.QUEUED: 0, JobStatus.PENDING: 10, JobStatus.PROCESSING: 20}
TERMINAL_RANK = 90


def status_rank(status: str) -> int:
    """Order of statuses; every status that is not in flight (known or not) is final."""
    return ACTIVE_RANK.get(status, TERMINAL_RANK)


def is_final(status: str) -> bool:
    return status_rank(status) == TERMINAL_RANK


Source = Literal["submit", "webhook", "poll", "finalize"]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ObjectRef(BaseModel):
    """One S3 object version that a job was made from."""

    key: str
    version_id: str | None = Field(default=None, alias="versionId")
    etag: str | None = None

    model_config = ConfigDict(populate_by_name=True, frozen=True)

    @property
    def identity(self) -> str:
        return f"{self.key}#{self.version_id or self.etag or ''}"


def job_id_for(bucket: str, refs: list[ObjectRef]) -> str:
    """A stable id (also the Idempotency-Key and the execution name): 32 hex characters."""
    identity = "\n".join([bucket, *sorted(ref.identity for ref in refs)])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


class HistoryEntry(BaseModel):
    status: str
    source: Source
    at: str
    detail: str | None = None


class JobError(BaseModel):
    """What went wrong, in the API's words when it was the API."""

    code: str | None = None
    message: str
    field: str | None = None

    @classmethod
    def from_api(cls, error: SyncApiError) -> JobError:
        return cls(code=error.error_code, message=error.message)

    @classmethod
    def from_generation(cls, generation: Generation) -> JobError | None:
        """A failed generation's error (webhooks say error_code, GET says errorCode; both land here)."""
        if not (generation.error or generation.error_code):
            return None
        return cls(code=generation.error_code, message=generation.error or generation.error_code or "")

    def stored(self) -> dict[str, Any]:
        """As the job record keeps it."""
        return self.model_dump(exclude_none=True)


class Job(BaseModel):
    """The job record as stored in the jobs table."""

    job_id: str = Field(alias="jobId")
    name: str
    kind: Literal["pair", "manifest"]
    status: str
    bucket: str
    inputs: list[ObjectRef] = Field(default_factory=list)
    model: str | None = None
    output_key: str | None = Field(default=None, alias="outputKey")
    document_key: str = Field(alias="documentKey")
    generation_id: str | None = Field(default=None, alias="generationId")
    error: JobError | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    submitted_at: str | None = Field(default=None, alias="submittedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    finished_by: str | None = Field(default=None, alias="finishedBy")
    confirmed_at: str | None = Field(default=None, alias="confirmedAt")  # final status read back by a GET
    output_duration: float | None = Field(default=None, alias="outputDuration")
    output_checksum: str | None = Field(default=None, alias="outputChecksum")
    output_version_id: str | None = Field(default=None, alias="outputVersionId")
    output_size: int | None = Field(default=None, alias="outputSize")
    finalized_at: str | None = Field(default=None, alias="finalizedAt")
    submit_attempts: int = Field(default=0, alias="submitAttempts")
    last_error: str | None = Field(default=None, alias="lastError")
    warnings: list[str] = Field(default_factory=list)
    # Private: the exact request body (it holds presigned URLs), the execution's task token,
    # and sync.so's signed output URL. Never shown by `public_view`.
    request_body: str | None = Field(default=None, alias="requestBody")  # JSON text, sent as is on every try
    task_token: str | None = Field(default=None, alias="taskToken")
    output_url: str | None = Field(default=None, alias="outputUrl")
    webhook_status: str | None = Field(default=None, alias="webhookStatus")

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    def public_view(self) -> dict[str, Any]:
        """The record as users see it (status routes and outputs/<name>.json): no secrets or signed URLs."""
        return self.model_dump(
            mode="json",
            by_alias=True,
            exclude_none=True,
            exclude={"request_body", "task_token", "output_url"},
        )
