"""The job: one lipsync request made by files in the bucket, and the generations it paid for.

A job's id is derived from the identity of the objects that asked for it, so every
duplicate delivery of the same upload maps to the same job. Its status has two sources,
kept apart so they can never be confused:

- the pipeline's own statuses (`PIPELINE_STATUSES`): QUEUED, BUDGET_HOLD, SUBMITTING, TIMED_OUT,
  STOPPED, INVALID;
- the API's answers, mapped by `status_from_api` (the verbatim value is kept in `apiStatus`).
  An API status we do not know becomes UNKNOWN: final, counted, never mistaken for ours.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipsync.syncso.models import Generation

if TYPE_CHECKING:
    from lipsync.syncso.client import SyncApiError


class JobStatus(StrEnum):
    QUEUED = "QUEUED"  # waiting in the job queue for a plan slot (pipeline)
    BUDGET_HOLD = "BUDGET_HOLD"  # waiting for the monthly budget to allow its estimate (pipeline)
    SUBMITTING = "SUBMITTING"  # holds a slot; POST /v2/generate under way or to be retried (pipeline)
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"  # legacy API statuses CANCELED / CANCELLED
    UNKNOWN = "UNKNOWN"  # a final API status this version does not understand (kept in apiStatus)
    TIMED_OUT = "TIMED_OUT"  # no final answer from sync.so by the job's deadline (pipeline)
    STOPPED = "STOPPED"  # its workflow failed, timed out or was aborted before sync.so finished (pipeline)
    INVALID = "INVALID"  # the files or the manifest were wrong; sync.so was never called (pipeline)


PIPELINE_STATUSES = frozenset(
    {JobStatus.QUEUED, JobStatus.BUDGET_HOLD, JobStatus.SUBMITTING, JobStatus.TIMED_OUT, JobStatus.INVALID}
)
_FROM_API = {
    "PENDING": JobStatus.PENDING,
    "PROCESSING": JobStatus.PROCESSING,
    "COMPLETED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
    "REJECTED": JobStatus.REJECTED,
    "CANCELED": JobStatus.CANCELED,
    "CANCELLED": JobStatus.CANCELED,
    "TIMED_OUT": JobStatus.FAILED,  # legacy: the generation timed out at sync.so
}


def status_from_api(api_status: str) -> JobStatus:
    """The job status an API status means. Anything unknown (even "QUEUED") is a final UNKNOWN."""
    return _FROM_API.get(api_status.strip().upper(), JobStatus.UNKNOWN)


def is_known_api_status(api_status: str) -> bool:
    return api_status.strip().upper() in _FROM_API


RANK: dict[str, int] = {
    JobStatus.QUEUED: 0,
    JobStatus.BUDGET_HOLD: 0,
    JobStatus.SUBMITTING: 5,
    JobStatus.PENDING: 10,
    JobStatus.PROCESSING: 20,
}
TERMINAL_RANK = 90
IN_FLIGHT = frozenset({JobStatus.SUBMITTING, JobStatus.PENDING, JobStatus.PROCESSING})


def status_rank(status: str) -> int:
    """Order of statuses; every status that is not waiting or in flight is final."""
    return RANK.get(status, TERMINAL_RANK)


def is_final(status: str) -> bool:
    return status_rank(status) == TERMINAL_RANK


Source = Literal["intake", "dispatch", "webhook", "poll", "finalize", "workflow"]


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
    """A stable id (the base of every Idempotency-Key and execution name): 32 hex characters."""
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


class PaidGeneration(BaseModel):
    """One generation sync.so created for this job (each one is billed)."""

    model_config = ConfigDict(populate_by_name=True)

    generation_id: str = Field(alias="generationId")
    idempotency_key: str = Field(alias="idempotencyKey")
    submitted_at: str = Field(alias="submittedAt")
    api_status: str | None = Field(default=None, alias="apiStatus")
    error_code: str | None = Field(default=None, alias="errorCode")
    finished_at: str | None = Field(default=None, alias="finishedAt")


class Job(BaseModel):
    """The job record as stored in the jobs table."""

    job_id: str = Field(alias="jobId")
    name: str
    kind: Literal["pair", "manifest"]
    status: str
    api_status: str | None = Field(default=None, alias="apiStatus")  # sync.so's last word, verbatim
    bucket: str
    inputs: list[ObjectRef] = Field(default_factory=list)
    model: str | None = None
    output_key: str | None = Field(default=None, alias="outputKey")
    document_key: str = Field(alias="documentKey")
    generation_id: str | None = Field(default=None, alias="generationId")
    generations: list[PaidGeneration] = Field(default_factory=list)
    resubmissions: int = 0  # transient failures sent again
    error: JobError | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    arrived_at: str | None = Field(default=None, alias="arrivedAt")  # the upload that completed the job
    queue_key: str | None = Field(default=None, alias="queueKey")  # place in line (only while QUEUED)
    submitted_at: str | None = Field(default=None, alias="submittedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")
    finished_by: str | None = Field(default=None, alias="finishedBy")
    confirmed_at: str | None = Field(default=None, alias="confirmedAt")  # final status read back by a GET
    execution_name: str | None = Field(default=None, alias="executionName")
    slot: int | None = None  # the plan slot held while SUBMITTING/PENDING/PROCESSING
    output_duration: float | None = Field(default=None, alias="outputDuration")
    output_checksum: str | None = Field(default=None, alias="outputChecksum")
    output_version_id: str | None = Field(default=None, alias="outputVersionId")
    output_size: int | None = Field(default=None, alias="outputSize")
    finalized_at: str | None = Field(default=None, alias="finalizedAt")
    create_attempts: int = Field(default=0, alias="createAttempts")  # POSTs under the current key
    key_counter: int = Field(default=0, alias="keyCounter")  # Idempotency-Keys derived so far
    last_error: str | None = Field(default=None, alias="lastError")
    warnings: list[str] = Field(default_factory=list)
    estimate: dict[str, Any] | None = None  # lipsync.cost.CostEstimate, made at intake
    cost_usd: float | None = Field(default=None, alias="costUsd")  # from the output's duration
    budget_month: str | None = Field(default=None, alias="budgetMonth")  # whose spend counts this job
    charged_usd: float | None = Field(default=None, alias="chargedUsd")  # what that spend counts now
    hold_reason: str | None = Field(default=None, alias="holdReason")  # why it waits in BUDGET_HOLD
    # The request's inputs in this bucket, by input index, at the versions the job was made from.
    pinned_inputs: dict[int, ObjectRef] = Field(default_factory=dict, alias="pinnedInputs")
    retry_of: str | None = Field(default=None, alias="retryOf")  # the job this one re-runs
    retried_by: list[str] = Field(default_factory=list, alias="retriedBy")
    webhook_status: str | None = Field(default=None, alias="webhookStatus")  # a signal, not the truth
    webhook_generation_id: str | None = Field(default=None, alias="webhookGenerationId")
    last_webhook_at: str | None = Field(default=None, alias="lastWebhookAt")
    webhook_signature: str | None = Field(
        default=None, alias="webhookSignature"
    )  # the signed form that matched
    # Private: the request template (S3 references, presigned at dispatch), the exact body of the
    # current create (presigned URLs), its key and lease, the task token and sync.so's signed
    # output URL. Never shown by `public_view`.
    request_template: str | None = Field(default=None, alias="requestTemplate")
    request_body: str | None = Field(default=None, alias="requestBody")
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey")
    lease_id: str | None = Field(default=None, alias="leaseId")
    lease_until: float | None = Field(default=None, alias="leaseUntil")
    task_token: str | None = Field(default=None, alias="taskToken")
    output_url: str | None = Field(default=None, alias="outputUrl")

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    PRIVATE_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "request_template",
            "request_body",
            "idempotency_key",
            "lease_id",
            "lease_until",
            "task_token",
            "output_url",
            "queue_key",
        }
    )

    def public_view(self) -> dict[str, Any]:
        """The record as users see it (status routes and outputs/<name>.json): no secrets or signed URLs."""
        return self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude=set(self.PRIVATE_FIELDS)
        )

    def next_execution_name(self) -> str:
        """One execution per generation: the job id, then `<job id>-r<n>` for each resubmission."""
        return self.job_id if self.resubmissions == 0 else f"{self.job_id}-r{self.resubmissions}"


def job_id_of_execution(execution_name: str) -> str:
    return execution_name.split("-r", 1)[0]
