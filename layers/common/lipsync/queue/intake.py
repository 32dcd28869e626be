"""Intake: a created object becomes a QUEUED job in the job queue (or an INVALID one), at once.

Nothing here calls sync.so's create or waits: the S3 event is finished as soon as the record
exists, and the dispatcher is woken. Waiting happens in the queue, never in SQS.

- **Only the current version starts a job.** An event for a version that has been replaced
  since (a redelivery that arrives after the user uploaded again) starts nothing: the new
  version's own event does.
- **The same bytes are the same job.** A job's id comes from its inputs' content and its request
  (lipsync.jobs.model.job_id_for), so a redelivered event, or the same folder uploaded twice,
  finds the job that exists: nothing is paid twice. After a COMPLETED job its document says the
  upload came again; after a job that failed, uploading the same bytes again runs it again, as a
  new job that names the old one (`retryOf`), as `lipsync retry` does.
- **Two jobs never write the same outputs.** A job claims its output names with its record
  (lipsync.jobs.names); a name another line of jobs holds gets a distinct one.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from boto3.dynamodb.conditions import Attr, ConditionBase

from lipsync.jobs import transitions as t
from lipsync.jobs.blobs import stash
from lipsync.jobs.documents import announce, write_waiting_document
from lipsync.jobs.model import (
    ITEM_LIMIT_BYTES,
    Job,
    JobError,
    JobStatus,
    is_final,
    job_id_for,
    record_bytes,
    utc_now,
    versions_of,
)
from lipsync.jobs.names import NameClaim, distinct
from lipsync.jobs.store import Created, NamesTaken
from lipsync.jobs.transitions import F, lane_key
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

Outcome = Literal["queued", "duplicate", "done", "waiting", "ignored", "stale", "invalid"]
CLAIM_HEADROOM_BYTES = 48 * 1024  # what dispatch and the lifecycle add: attempt, ledger, history, costs
RETRIED_BY_LIMIT = 50
RERUN_CHAIN_LIMIT = 20


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
        current = self._storage.head(created.key)
        if current is None:
            return "ignored", None  # deleted since
        if created.version_id and current.version_id and created.version_id != current.version_id:
            return "stale", None  # replaced since: the newer version's own event makes the job
        created = created.model_copy(
            update={"version_id": current.version_id, "etag": current.etag or created.etag}
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

    # ------------------------------------------------------------------ records
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
                "lineage": plan.job_id,
                "createdAt": now,
                "updatedAt": now,
                "history": [{"status": status, "source": "intake", "at": now}],
                **extra,
            }
        )

    def _record_invalid(self, plan: JobPlan, error: InvalidInputError) -> Job:
        job = self._new_job(
            plan,
            JobStatus.INVALID,
            error=JobError(message=error.message, field=error.field),
            queueKey=lane_key(utc_now(), plan.job_id),  # in the `ended` lane until announced
        )
        _, stored = self._create(job)
        # A redelivered event finds finalizedAt set: announced once. A record of another status is
        # a job these objects made before; its own writers end it.
        if stored.status == JobStatus.INVALID:
            stored = announce(self._store, self._storage, stored, self._events)
        return stored

    def _create(self, job: Job) -> tuple[bool, Job]:
        """Create the record with its output names; whether it is new, and the record. A name
        another line of jobs holds is taken over when that line did not succeed (this job runs it
        again), else this job gets a distinct name."""
        claims = [NameClaim(stem, job.job_id, job.lineage or job.job_id) for stem in _stems(job)]
        result = self._store.create(job, retention_days=self._settings.job_retention_days, names=claims)
        if isinstance(result, NamesTaken):
            heir = self._heir(job, result.stems)
            if heir is not None:
                job = job.model_copy(update={"lineage": heir.lineage or heir.job_id, "retry_of": heir.job_id})
            else:
                job = _renamed(job)
            claims = [NameClaim(stem, job.job_id, job.lineage or job.job_id) for stem in _stems(job)]
            result = self._store.create(job, retention_days=self._settings.job_retention_days, names=claims)
            if isinstance(result, NamesTaken):
                raise RuntimeError(f"the output names {result.stems} are taken twice over")
            if heir is not None and isinstance(result, Created):
                self._link_retry(heir.job_id, job.job_id)
        return isinstance(result, Created), result.job

    def _heir(self, job: Job, stems: list[str]) -> Job | None:
        """The job whose names a new job takes over: the one owner of them all, when it ended without
        succeeding (FAILED, REJECTED, STOPPED, INVALID, ...). A running or COMPLETED owner keeps its
        names, and a stray file's error never replaces a job's document."""
        if job.status == JobStatus.INVALID:
            return None
        owners = {self._store.name_owner(stem) for stem in stems}
        owner_id = owners.pop() if len(owners) == 1 else None
        owner = self._store.get(owner_id) if owner_id else None
        if owner is None or not is_final(owner.status) or owner.status == JobStatus.COMPLETED:
            return None
        return owner

    def _estimate(self, plan: JobPlan) -> dict[str, Any] | None:
        if self._estimator is None or plan.template is None or plan.model is None:
            return None
        return self._estimator.estimate_request(
            self._storage, plan.template.body, plan.template.presign, plan.model
        ).stored()

    def _link_retry(self, old_job_id: str, new_job_id: str) -> None:
        """The old job names its re-runs (the last ones). Idempotent; a lost race raises, and the S3
        event's redelivery links again (a retry of a job that is gone links one way only)."""
        old = self._store.get(old_job_id)
        if old is None or new_job_id in old.retried_by:
            return
        count = len(old.retried_by)
        unchanged: ConditionBase = Attr(F.RETRIED_BY).size().eq(count)
        if not count:
            unchanged = unchanged | Attr(F.RETRIED_BY).not_exists()
        linked = self._store.apply(
            t.note(
                old_job_id, {F.RETRIED_BY: [*old.retried_by, new_job_id][-RETRIED_BY_LIMIT:]}, when=unchanged
            )
        )
        if linked is None:
            raise RuntimeError(f"job {old_job_id} changed while linking its retry {new_job_id}")

    # ------------------------------------------------------------------ queueing
    def enqueue(self, plan: JobPlan) -> tuple[Outcome, Job]:
        if plan.template is None:
            raise ValueError("a job plan without a request cannot be queued")
        existing = self._store.get(plan.job_id)
        if existing is not None:
            return self._again(plan, existing)
        retry_of = self._store.get(plan.retry_of) if plan.retry_of else None
        return self._queue(plan, lineage=(retry_of.lineage or retry_of.job_id) if retry_of else None)

    def _queue(self, plan: JobPlan, *, lineage: str | None) -> tuple[Outcome, Job]:
        if plan.template is None:
            raise ValueError("a job plan without a request cannot be queued")
        arrived = plan.arrived_at or utc_now()
        job = self._new_job(
            plan,
            JobStatus.QUEUED,
            model=plan.model,
            outputKey=plan.output_key,
            request=stash(self._storage, plan.job_id, plan.template.model_dump_json()),
            arrivedAt=arrived,
            queueKey=lane_key(arrived, plan.job_id),
            warnings=plan.warnings[:20],
            retryOf=plan.retry_of,
            pinnedInputs=plan.template.presign,
            estimate=self._estimate(plan),
            **({"lineage": lineage} if lineage else {}),
        )
        size = record_bytes(job)
        if size + CLAIM_HEADROOM_BYTES > ITEM_LIMIT_BYTES:
            too_large = InvalidInputError(
                f"the job's record would take {size // 1024} KB with {len(plan.template.presign)} inputs "
                f"pinned in this bucket; DynamoDB keeps at most {ITEM_LIMIT_BYTES // 1024} KB per job. "
                "Split it into smaller jobs"
            )
            return "invalid", self._record_invalid(plan, too_large)
        created, stored = self._create(job)
        if plan.retry_of:
            self._link_retry(plan.retry_of, stored.job_id)
        return ("queued" if created else "duplicate"), stored

    def _again(self, plan: JobPlan, existing: Job) -> tuple[Outcome, Job]:
        """The job these bytes ask for exists: a redelivery, or the same upload made again."""
        same_upload = versions_of(plan.refs) == versions_of(existing.inputs)
        if not is_final(existing.status) or same_upload:
            return "duplicate", self._arrived_later(plan, existing)
        latest = self._latest_run(existing)
        if latest.status == JobStatus.COMPLETED:
            return "done", self._note_reupload(latest, plan)
        if not is_final(latest.status) or versions_of(plan.refs) == versions_of(latest.inputs):
            return "duplicate", latest
        # A line of jobs that did not succeed, uploaded again: run it again.
        rerun = dataclasses.replace(
            plan,
            job_id=job_id_for(
                self._storage.bucket,
                plan.refs,
                plan.template.digest() if plan.template else "",
                run=versions_of(plan.refs),
            ),
            retry_of=latest.job_id,
        )
        if (again := self._store.get(rerun.job_id)) is not None:
            return "duplicate", again
        return self._queue(rerun, lineage=latest.lineage or existing.lineage or existing.job_id)

    def _latest_run(self, job: Job) -> Job:
        """The newest job of the line `job` starts (its last re-run, and that one's, ...)."""
        for _ in range(RERUN_CHAIN_LIMIT):
            if not job.retried_by:
                return job
            newer = self._store.get(job.retried_by[-1])
            if newer is None:
                return job
            job = newer
        return job

    def _note_reupload(self, job: Job, plan: JobPlan) -> Job:
        """The same bytes again after a COMPLETED job: nothing is paid; its document says so."""
        versions = versions_of(plan.refs)
        previous = job.reupload or {}
        if previous.get("versions") == versions:
            return job  # this upload's event again
        note = {
            "count": int(previous.get("count", 0)) + 1,
            "lastAt": utc_now(),
            "versions": versions,
            "note": "the same files were uploaded again; the job had COMPLETED, so it was not run (or "
            "paid for) again. Change a file to make a new job",
        }
        noted = self._store.apply(
            t.note(job.job_id, {F.REUPLOAD: note}, when=t.status_is(JobStatus.COMPLETED))
        )
        if noted is None:
            return job
        write_waiting_document(self._storage, noted)  # its own document, refreshed: no event
        return noted

    def _arrived_later(self, plan: JobPlan, stored: Job) -> Job:
        """A pair's other event saw the later upload: the job arrived when its last file did."""
        arrived = plan.arrived_at
        if not (
            stored.status == JobStatus.QUEUED
            and stored.arrived_at
            and arrived
            and arrived > stored.arrived_at
        ):
            return stored
        moved = self._store.apply(
            t.note(
                plan.job_id,
                {F.ARRIVED_AT: arrived, F.LANE_KEY: lane_key(arrived, plan.job_id)},
                when=t.status_is(JobStatus.QUEUED) & Attr(F.ARRIVED_AT).lt(arrived),
            )
        )
        return moved or stored


def _stems(job: Job) -> list[str]:
    """The output names a job writes: its document's, and its video's."""
    stems = [job.document_key.removeprefix(OUTPUTS_PREFIX).removesuffix(".json")]
    if job.output_key:
        stems.append(job.output_key.removeprefix(OUTPUTS_PREFIX).removesuffix(".mp4"))
    return list(dict.fromkeys(stems))


def _renamed(job: Job) -> Job:
    """The same job under names of its own (the same for every redelivery of its event)."""
    document = distinct(job.document_key.removeprefix(OUTPUTS_PREFIX).removesuffix(".json"), job.job_id)
    output = (
        distinct(job.output_key.removeprefix(OUTPUTS_PREFIX).removesuffix(".mp4"), job.job_id)
        if job.output_key
        else None
    )
    return job.model_copy(
        update={
            "document_key": f"{OUTPUTS_PREFIX}{document}.json",
            "output_key": f"{OUTPUTS_PREFIX}{output}.mp4" if output else None,
            "renamed_from": job.name,
        }
    )
