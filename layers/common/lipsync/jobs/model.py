"""The job: one lipsync request made by files in the bucket, and the generations it paid for.

A job's id comes from **what** was asked, not from which upload asked: the bucket, each input's
key and content (its ETag) and the request itself. Every duplicate delivery of the same upload,
and an identical re-upload, map to the same job. Its status has two sources, kept apart:

- the pipeline's own statuses (`PIPELINE_STATUSES`): QUEUED, BUDGET_HOLD, SUBMITTING, TIMED_OUT,
  STOPPED, INVALID;
- the API's answers, mapped by `status_from_api` (the verbatim value is kept in `apiStatus`).
  An API status we do not know becomes UNKNOWN: final, counted, never mistaken for ours.

Every change of status goes through `lipsync.jobs.transitions`. The create under way, and the
generation it made, are the job's `attempt`: one sub-record that a requeue drops in one place.
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
    TIMED_OUT = "TIMED_OUT"  # past its deadline; sync.so may still finish it: still watched (pipeline)
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"  # legacy API statuses CANCELED / CANCELLED
    UNKNOWN = "UNKNOWN"  # a final API status this version does not understand (kept in apiStatus)
    STOPPED = "STOPPED"  # the pipeline stopped following it before sync.so said it ended (pipeline)
    INVALID = "INVALID"  # the files or the manifest were wrong; sync.so was never called (pipeline)


PIPELINE_STATUSES = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.BUDGET_HOLD,
        JobStatus.SUBMITTING,
        JobStatus.TIMED_OUT,
        JobStatus.STOPPED,
        JobStatus.INVALID,
    }
)
WAITING = frozenset({JobStatus.QUEUED, JobStatus.BUDGET_HOLD})
# sync.so may be working on it: it holds (or may hold) a plan slot, and something follows it.
IN_FLIGHT = frozenset({JobStatus.SUBMITTING, JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.TIMED_OUT})
# Ended with a generation that sync.so reported, or that the pipeline stopped following: a later,
# authoritative answer from sync.so can still finish it (its output is paid for).
RECOVERABLE = frozenset({JobStatus.TIMED_OUT, JobStatus.STOPPED})
# Finished badly: what FailedJobRateAlarm counts (REJECTED and INVALID are the input's fault).
FAILED_OUTCOMES = frozenset({JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.STOPPED, JobStatus.UNKNOWN})
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


def is_final(status: str) -> bool:
    """Neither waiting nor in flight (any status this version does not know counts as final)."""
    return status not in WAITING and status not in IN_FLIGHT


Source = Literal["intake", "dispatch", "webhook", "poll", "finalize", "workflow", "sweep"]


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
        """What the object holds: its key and content (the ETag); the version only without an ETag."""
        return f"{self.key}#{self.etag or self.version_id or ''}"


def job_id_for(bucket: str, refs: list[ObjectRef], request_digest: str = "", run: str = "") -> str:
    """A stable id (the base of every Idempotency-Key and execution name): 32 hex characters.

    The same bytes under the same keys, asking for the same request, are the same job. `run`
    tells apart a re-run of a failed job that was asked for by uploading the same bytes again."""
    identity = "\n".join([bucket, *sorted(ref.identity for ref in refs), request_digest, run])
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def versions_of(refs: list[ObjectRef]) -> str:
    """Which uploads (object versions) a set of inputs is: tells a re-upload from a redelivery."""
    return ",".join(sorted(f"{ref.key}@{ref.version_id or ''}" for ref in refs))


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
        """As the job record keeps it (long API texts are cut: the record has a size limit)."""
        return self.model_dump(exclude_none=True) | {"message": self.message[:1000]}


class PaidGeneration(BaseModel):
    """One generation sync.so created for this job (each one is billed)."""

    model_config = ConfigDict(populate_by_name=True)

    generation_id: str = Field(alias="generationId")
    idempotency_key: str = Field(alias="idempotencyKey")
    submitted_at: str = Field(alias="submittedAt")
    api_status: str | None = Field(default=None, alias="apiStatus")
    error_code: str | None = Field(default=None, alias="errorCode")
    finished_at: str | None = Field(default=None, alias="finishedAt")


class Blob(BaseModel):
    """A JSON text the job keeps (its request template, the exact body of a create): inline when
    small, else in the bucket's private `.lipsync/` prefix by key and checksum (an item is at most
    400 KB; a manifest may be 256 KB)."""

    model_config = ConfigDict(populate_by_name=True)

    sha256: str
    size: int
    text: str | None = None
    s3_key: str | None = Field(default=None, alias="s3Key")


class Attempt(BaseModel):
    """The create under way (or to be retried) and what the generation it made needs while it runs.

    `key` and `body` are fixed before the first send and never change while the outcome of a send
    is unknown (`uncertainSince`): every later try sends the same key and the same bytes."""

    model_config = ConfigDict(populate_by_name=True)

    key: str  # Idempotency-Key
    body: Blob | None = None  # the exact JSON text sent under `key` (dropped once sync.so answers)
    slot: int | None = None  # the plan slot held
    lease_id: str | None = Field(default=None, alias="leaseId")  # who may send now
    lease_until: float | None = Field(default=None, alias="leaseUntil")  # when another may take over
    sends: int = 0  # POSTs under `key`
    first_sent_at: float | None = Field(default=None, alias="firstSentAt")
    uncertain_since: float | None = Field(default=None, alias="uncertainSince")
    last_error: str | None = Field(default=None, alias="lastError")
    task_token: str | None = Field(default=None, alias="taskToken")  # the execution's webhook wait
    output_url: str | None = Field(default=None, alias="outputUrl")  # sync.so's signed URL

    @property
    def uncertain(self) -> bool:
        return self.uncertain_since is not None


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
    renamed_from: str | None = Field(default=None, alias="renamedFrom")  # the name another job holds
    lineage: str | None = None  # the first job of a line of re-runs (they share output names)
    generation_id: str | None = Field(default=None, alias="generationId")
    generations: list[PaidGeneration] = Field(default_factory=list)
    resubmissions: int = 0  # transient failures sent again
    error: JobError | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    created_at: str = Field(alias="createdAt")
    updated_at: str = Field(alias="updatedAt")
    arrived_at: str | None = Field(default=None, alias="arrivedAt")  # the upload that completed the job
    queue_key: str | None = Field(default=None, alias="queueKey")  # place in its lane (see the store)
    submitted_at: str | None = Field(default=None, alias="submittedAt")
    deadline_at: str | None = Field(default=None, alias="deadlineAt")  # TIMED_OUT after this
    finished_at: str | None = Field(default=None, alias="finishedAt")
    finished_by: str | None = Field(default=None, alias="finishedBy")
    late: bool | None = None  # finished after its deadline (or after the pipeline stopped watching)
    confirmed_at: str | None = Field(default=None, alias="confirmedAt")  # final status read back by a GET
    execution_name: str | None = Field(default=None, alias="executionName")
    output_duration: float | None = Field(default=None, alias="outputDuration")
    output_checksum: str | None = Field(default=None, alias="outputChecksum")
    output_version_id: str | None = Field(default=None, alias="outputVersionId")
    output_size: int | None = Field(default=None, alias="outputSize")
    finalized_at: str | None = Field(default=None, alias="finalizedAt")  # its ending was announced
    key_counter: int = Field(default=0, alias="keyCounter")  # Idempotency-Keys derived so far
    warnings: list[str] = Field(default_factory=list)
    estimate: dict[str, Any] | None = None  # lipsync.plan.cost.CostEstimate, made at intake
    cost_usd: float | None = Field(default=None, alias="costUsd")  # from the output's duration
    budget_month: str | None = Field(default=None, alias="budgetMonth")  # whose spend counts this job
    charged_usd: float | None = Field(default=None, alias="chargedUsd")  # what that spend counts now
    hold_reason: str | None = Field(default=None, alias="holdReason")  # why it waits in BUDGET_HOLD
    # The request's inputs in this bucket, by input index, at the versions the job was made from.
    pinned_inputs: dict[int, ObjectRef] = Field(default_factory=dict, alias="pinnedInputs")
    retry_of: str | None = Field(default=None, alias="retryOf")  # the job this one re-runs
    retried_by: list[str] = Field(default_factory=list, alias="retriedBy")
    reupload: dict[str, Any] | None = None  # the same bytes uploaded again after it COMPLETED
    webhook_status: str | None = Field(default=None, alias="webhookStatus")  # a signal, not the truth
    webhook_generation_id: str | None = Field(default=None, alias="webhookGenerationId")
    last_webhook_at: str | None = Field(default=None, alias="lastWebhookAt")
    webhook_signature: str | None = Field(
        default=None, alias="webhookSignature"
    )  # the signed form that matched
    # Private: the request template (S3 references, presigned at dispatch) and the attempt (the
    # exact body of the current create, its key and lease, the slot, the task token and sync.so's
    # signed output URL). Never shown by `public_view`.
    request: Blob | None = None
    attempt: Attempt | None = None

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    PRIVATE_FIELDS: ClassVar[frozenset[str]] = frozenset({"request", "attempt", "queue_key"})

    @property
    def slot(self) -> int | None:
        return self.attempt.slot if self.attempt else None

    def public_view(self) -> dict[str, Any]:
        """The record as users see it (status routes and outputs/<name>.json): no secrets or signed URLs."""
        view = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, exclude=set(self.PRIVATE_FIELDS)
        )
        if self.attempt is not None:
            view["createAttempts"] = self.attempt.sends
            if self.slot is not None:
                view["slot"] = self.slot
            if self.attempt.uncertain_since is not None:
                view["createOutcomeUnknownSince"] = datetime.fromtimestamp(
                    self.attempt.uncertain_since, UTC
                ).isoformat(timespec="seconds")
        return view

    def next_execution_name(self) -> str:
        """One execution per generation: the job id, then `<job id>-r<n>` for each resubmission."""
        return self.job_id if self.resubmissions == 0 else f"{self.job_id}-r{self.resubmissions}"


ITEM_LIMIT_BYTES = 400 * 1024  # DynamoDB's item size limit


def record_bytes(job: Job, *extra: BaseModel) -> int:
    """About how much room the job's record takes (its JSON, a little more than DynamoDB counts),
    with `extra` sub-records added."""
    size = len(job.model_dump_json(by_alias=True, exclude_none=True).encode())
    return size + sum(len(part.model_dump_json(by_alias=True, exclude_none=True).encode()) for part in extra)


def job_id_of_execution(execution_name: str) -> str:
    return execution_name.split("-", 1)[0]
