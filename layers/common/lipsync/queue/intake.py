"""Intake: a created object becomes a QUEUED job in the job queue (or an INVALID one), at once.

Nothing here calls sync.so or waits: the S3 event is finished as soon as the record exists,
and the dispatcher is woken. Waiting happens in the queue, never in SQS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from lipsync.jobs.documents import write_job_document
from lipsync.jobs.model import Job, JobError, JobStatus, utc_now
from lipsync.jobs.store import QUEUE_PARTITION, Update, queue_key
from lipsync.queue.planning import (
    INPUTS_PREFIX,
    JOBS_PREFIX,
    OUTPUTS_PREFIX,
    InvalidInputError,
    InvalidJobError,
    JobPlan,
    plan_job,
)

if TYPE_CHECKING:
    from lipsync.config import IntakeSettings
    from lipsync.jobs.events import JobEvents
    from lipsync.jobs.store import JobStore
    from lipsync.plan.cost import CostEstimator
    from lipsync.plan.kicks import Kicker
    from lipsync.s3_events import ObjectCreated
    from lipsync.storage import Storage

Outcome = Literal["queued", "duplicate", "waiting", "ignored", "invalid"]


class Intake:
    def __init__(
        self,
        settings: IntakeSettings,
        store: JobStore,
        storage: Storage,
        kicker: Kicker,
        events: JobEvents | None = None,
        estimator: CostEstimator | None = None,
    ) -> None:
        self._settings = settings
        self._estimator = estimator
        self._events = events
        self.max_receive_count = settings.max_receive_count
        self._store = store
        self._storage = storage
        self._kicker = kicker

    def handle(self, created: ObjectCreated) -> tuple[Outcome, Job | None]:
        """Process one created object; the caller kicks the dispatcher once per batch."""
        if created.bucket != self._storage.bucket:
            return "ignored", None
        if created.version_id is None:
            # Some producers omit versionId; identity must not depend on which event we got.
            info = self._storage.head(created.key)
            if info is None:
                return "ignored", None  # deleted since
            created = created.model_copy(
                update={"version_id": info.version_id, "etag": info.etag or created.etag}
            )
        try:
            plan = plan_job(created, self._storage, self._settings)
        except InvalidJobError as error:
            return "invalid", self._record_invalid(error.plan, error)
        if plan is None:
            return ("waiting" if created.key.startswith(INPUTS_PREFIX) else "ignored"), None
        return self.enqueue(plan)

    def report_failure(self, created: ObjectCreated, error: Exception) -> str:
        """The object's last delivery failed: before it goes to the dead-letter queue, leave a
        document the user will find (named after the file, so it never overwrites a job's)."""
        prefix = JOBS_PREFIX if created.key.startswith(JOBS_PREFIX) else INPUTS_PREFIX
        key = f"{OUTPUTS_PREFIX}{created.key.removeprefix(prefix)}.error.json"
        self._storage.put_json(
            key,
            {
                "object": created.key,
                "versionId": created.version_id,
                "status": "NOT_PROCESSED",
                "error": {
                    "code": "intake_failed",
                    "message": f"the upload could not be turned into a job ({type(error).__name__}); "
                    "its S3 event is in the dead-letter queue: redrive it once AWS is healthy again",
                },
                "at": utc_now(),
            },
        )
        return key

    def _new_job(self, plan: JobPlan, status: JobStatus, **extra: Any) -> Job:
        now = utc_now()
        return Job.model_validate(
            {
                "jobId": plan.job_id,
                "name": plan.name,
                "kind": plan.kind,
                "status": status,
                "bucket": self._storage.bucket,
                "inputs": plan.refs,
                "documentKey": plan.document_key,
                "createdAt": now,
                "updatedAt": now,
                "history": [{"status": status, "source": "intake", "at": now}],
                **extra,
            }
        )

    def _record_invalid(self, plan: JobPlan, error: InvalidInputError) -> Job:
        job = self._new_job(plan, JobStatus.INVALID, error=JobError(message=error.message, field=error.field))
        _, stored = self._store.create(job, retention_days=self._settings.job_retention_days)
        # A redelivered event finds finalizedAt set: announced once. A record of another status is
        # a job these objects made before; its own writers end it.
        if stored.status == JobStatus.INVALID and not stored.finalized_at:
            write_job_document(self._storage, stored, self._events)
            stored = self._store.set_fields(stored.job_id, {"finalizedAt": utc_now()})
        return stored

    def _estimate(self, plan: JobPlan) -> dict[str, Any] | None:
        if self._estimator is None or plan.template is None or plan.model is None:
            return None
        return self._estimator.estimate_request(self._storage, plan.template, plan.model).stored()

    def _link_retry(self, old_job_id: str, new_job_id: str) -> None:
        """The old job names its re-runs. Idempotent; a lost race raises, and the S3 event's
        redelivery links again (a retry of a job that is gone links one way only)."""
        old = self._store.get(old_job_id)
        if old is None or new_job_id in old.retried_by:
            return
        count = len(old.retried_by)
        linked = self._store.apply(
            Update(
                old_job_id,
                set={"retriedBy": [*old.retried_by, new_job_id]},
                condition="size(retriedBy) = :count"
                + ("" if count else " OR attribute_not_exists(retriedBy)"),
                values={":count": count},
            )
        )
        if linked is None:
            raise RuntimeError(f"job {old_job_id} changed while linking its retry {new_job_id}")

    def enqueue(self, plan: JobPlan) -> tuple[Outcome, Job]:
        if plan.template is None:
            raise ValueError("a job plan without a request cannot be queued")
        arrived = plan.arrived_at or utc_now()
        existing = self._store.get(plan.job_id)  # a pair's second event: no second estimate
        job = self._new_job(
            plan,
            JobStatus.QUEUED,
            model=plan.model,
            outputKey=plan.output_key,
            requestTemplate=plan.template.model_dump_json(),
            arrivedAt=arrived,
            queueKey=queue_key(arrived, plan.job_id),
            warnings=plan.warnings,
            retryOf=plan.retry_of,
            pinnedInputs=plan.template.presign,
            estimate=self._estimate(plan) if existing is None else None,
        )
        created, stored = (
            (False, existing)
            if existing
            else self._store.create(job, retention_days=self._settings.job_retention_days)
        )
        if plan.retry_of:
            self._link_retry(plan.retry_of, plan.job_id)
        if created:
            return "queued", stored
        if stored.status == JobStatus.QUEUED and stored.arrived_at and arrived > stored.arrived_at:
            # The pair's other event saw the later upload: the job arrived when its last file did.
            moved = self._store.apply(
                Update(
                    plan.job_id,
                    set={"arrivedAt": arrived, "queueKey": queue_key(arrived, plan.job_id)},
                    condition="#status = :queued AND #queue = :partition AND arrivedAt < :arrived",
                    names={"#status": "status", "#queue": "queue"},
                    values={":queued": JobStatus.QUEUED, ":partition": QUEUE_PARTITION, ":arrived": arrived},
                )
            )
            stored = moved or stored
        return "duplicate", stored
