"""From an object in the bucket to a sync.so generation, exactly once.

`plan_job` turns a created object into a `JobPlan` (a pair of media files or a manifest),
or raises `InvalidInputError` with a message for the user. `Submitter.submit` records
the job (create-once), calls `POST /v2/generate` with the job id as Idempotency-Key, and
starts the job's execution. Retryable API failures propagate so the queue retries later.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlencode

from pydantic import ValidationError

from lipsync.config import LifecycleTimings, SubmitSettings
from lipsync.documents import write_job_document
from lipsync.jobs import Job, JobError, JobStatus, ObjectRef, is_final, job_id_for, utc_now
from lipsync.models import GenerateRequest, TextInput
from lipsync.s3_events import ObjectCreated
from lipsync.storage import Storage, TooLargeError
from lipsync.sync_client import SyncPermanentError, SyncRetryableError
from lipsync.webhook_auth import job_token

if TYPE_CHECKING:
    from lipsync.job_store import JobStore
    from lipsync.sync_client import SyncClient
    from lipsync.workflow import Workflow

INPUTS_PREFIX = "inputs/"
JOBS_PREFIX = "jobs/"
OUTPUTS_PREFIX = "outputs/"
VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "webm", "m4v", "mkv"})
AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "m4a", "aac", "ogg", "flac"})
MAX_VISIBILITY_SECONDS = 12 * 60 * 60
FIRST_BACKOFF_SECONDS = 2.0  # then 4, 8, ... up to 15 minutes, when sync.so gives no Retry-After
# sync.so answers 401/402/403 for the account, not the input: the job failed rather than was rejected.
ACCOUNT_STATUS_CODES = frozenset({401, 402, 403})


class InvalidInputError(ValueError):
    """The user's files or manifest are wrong; `str()` says which field and why."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    name: str
    kind: Literal["pair", "manifest"]
    refs: list[ObjectRef]
    request: GenerateRequest | None = None
    output_key: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def document_key(self) -> str:
        return f"{OUTPUTS_PREFIX}{self.name}.json"


class InvalidJobError(InvalidInputError):
    """An invalid input, with the identity of the job it would have been."""

    def __init__(self, plan: JobPlan, error: InvalidInputError) -> None:
        super().__init__(error.message, field=error.field)
        self.plan = plan


# ---------------------------------------------------------------------------- planning


def _split_extension(key: str) -> tuple[str, str]:
    stem, dot, extension = key.rpartition(".")
    if not dot or "/" in extension:
        return key, ""
    return stem, extension.lower()


def _ref(created: ObjectCreated) -> ObjectRef:
    return ObjectRef(key=created.key, version_id=created.version_id, etag=created.etag)


def plan_job(created: ObjectCreated, storage: Storage, settings: SubmitSettings) -> JobPlan | None:
    """The job an object asks for; None when it is not (yet) a job. Raises InvalidJobError."""
    if created.key.endswith("/") or PurePosixPath(created.key).name.startswith("."):
        return None  # "Create folder" placeholders and hidden files (.DS_Store) are not jobs
    if created.key.startswith(INPUTS_PREFIX):
        return _plan_pair(created, storage, settings)
    if created.key.startswith(JOBS_PREFIX):
        return _plan_manifest(created, storage, settings)
    return None


def _plan_pair(created: ObjectCreated, storage: Storage, settings: SubmitSettings) -> JobPlan | None:
    stem, extension = _split_extension(created.key)
    name = stem.removeprefix(INPUTS_PREFIX)
    invalid = JobPlan(job_id_for(storage.bucket, [_ref(created)]), name, "pair", [_ref(created)])
    if extension not in VIDEO_EXTENSIONS | AUDIO_EXTENSIONS:
        # Named after the whole file, so a stray file never overwrites a real job's document.
        stray = JobPlan(invalid.job_id, created.key.removeprefix(INPUTS_PREFIX), "pair", invalid.refs)
        raise InvalidJobError(
            stray,
            InvalidInputError(
                f"{created.key} is neither a video ({', '.join(sorted(VIDEO_EXTENSIONS))}) "
                f"nor an audio file ({', '.join(sorted(AUDIO_EXTENSIONS))})"
            ),
        )
    siblings = [
        info.key for info in storage.list_objects(f"{stem}.") if _split_extension(info.key)[0] == stem
    ]
    if created.key not in siblings:
        siblings.append(created.key)  # listing can lag behind the event
    videos = sorted(key for key in siblings if _split_extension(key)[1] in VIDEO_EXTENSIONS)
    audios = sorted(key for key in siblings if _split_extension(key)[1] in AUDIO_EXTENSIONS)
    for kind, keys in (("videos", videos), ("audio files", audios)):
        if len(keys) > 1:
            raise InvalidJobError(
                invalid,
                InvalidInputError(f"{' and '.join(keys)} are both {kind} for {name!r}; keep exactly one"),
            )
    if not videos or not audios:
        return None  # the partner's own event will start the job
    refs = []
    for key in (videos[0], audios[0]):
        if key == created.key:
            refs.append(_ref(created))
            continue
        partner = storage.head(key)
        if partner is None:
            return None
        refs.append(ObjectRef(key=key, version_id=partner.version_id, etag=partner.etag))
    expires = settings.presigned_url_seconds
    request = GenerateRequest.model_validate(
        {
            "model": settings.default_model,
            "input": [
                {"type": "video", "url": storage.presign_get(refs[0].key, refs[0].version_id, expires)},
                {"type": "audio", "url": storage.presign_get(refs[1].key, refs[1].version_id, expires)},
            ],
            **({"options": settings.default_options} if settings.default_options else {}),
        }
    )
    return JobPlan(
        job_id=job_id_for(storage.bucket, refs),
        name=name,
        kind="pair",
        refs=refs,
        request=request,
        output_key=f"{OUTPUTS_PREFIX}{name}.mp4",
        warnings=request.warnings(),
    )


def _plan_manifest(created: ObjectCreated, storage: Storage, settings: SubmitSettings) -> JobPlan:
    stem, extension = _split_extension(created.key)
    ref = _ref(created)
    plan = JobPlan(job_id_for(storage.bucket, [ref]), stem.removeprefix(JOBS_PREFIX), "manifest", [ref])
    try:
        if extension != "json":
            raise InvalidInputError(f"{created.key}: a manifest must be a .json file")
        manifest = _read_manifest(created, storage)
        name = _manifest_name(manifest.pop("name", None), default=plan.name)
        plan = JobPlan(plan.job_id, name, "manifest", [ref])
        request = _manifest_request(manifest, storage, settings)
    except InvalidInputError as error:
        raise InvalidJobError(plan, error) from error
    output_name = request.output_file_name or name
    return JobPlan(
        job_id=plan.job_id,
        name=name,
        kind="manifest",
        refs=[ref],
        request=request,
        output_key=f"{OUTPUTS_PREFIX}{output_name}.mp4",
        warnings=request.warnings(),
    )


def _read_manifest(created: ObjectCreated, storage: Storage) -> dict[str, Any]:
    try:
        raw = storage.read(created.key, created.version_id)
    except TooLargeError as error:
        raise InvalidInputError(str(error)) from error
    try:
        manifest = json.loads(raw)
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{created.key} is not UTF-8 text") from error
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{created.key} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from error
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{created.key} must hold a JSON object (a sync.so generate request body)")
    if "webhookUrl" in manifest:
        raise InvalidInputError("the pipeline sets the webhook itself; remove this field", field="webhookUrl")
    return manifest


def _manifest_name(value: Any, *, default: str) -> str:
    if value is None:
        return default
    path = PurePosixPath(value) if isinstance(value, str) else None
    if (
        path is None
        or not value.strip()
        or path.is_absolute()
        or ".." in path.parts
        or value.endswith("/")
        or len(value) > 200
    ):
        raise InvalidInputError(
            "must be a relative name like 'campaign/clip-1' (no '..', at most 200 characters)", field="name"
        )
    return str(path)


def _manifest_request(
    manifest: dict[str, Any], storage: Storage, settings: SubmitSettings
) -> GenerateRequest:
    body = {"model": settings.default_model, **manifest}
    if settings.default_options or "options" in manifest:
        user_options = manifest.get("options", {})
        if not isinstance(user_options, dict):
            raise InvalidInputError("must be a JSON object", field="options")
        body["options"] = {**settings.default_options, **user_options}
    try:
        request = GenerateRequest.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidInputError(first["msg"].removeprefix("Value error, "), field=location) from error
    for index, item in enumerate(request.input):
        if not isinstance(item, TextInput) and item.url:
            item.url = _resolve_url(item.url, f"input.{index}.url", storage, settings.presigned_url_seconds)
    return request


def _resolve_url(url: str, field_name: str, storage: Storage, expires: int) -> str:
    """https URLs pass through; keys in this bucket and s3://<this bucket>/key become presigned URLs."""
    if url.startswith("https://"):
        return url
    if url.startswith("s3://"):
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if bucket != storage.bucket:
            raise InvalidInputError(
                f"names bucket {bucket!r}; only objects in {storage.bucket!r} can be used", field=field_name
            )
    elif "://" in url:
        raise InvalidInputError(
            f"use an https:// URL, s3://{storage.bucket}/<key> or a key in this bucket, not {url.split('://')[0]}://",
            field=field_name,
        )
    else:
        key = url
    key = key.lstrip("/")
    info = storage.head(key) if key else None
    if info is None:
        raise InvalidInputError(f"s3://{storage.bucket}/{key} does not exist", field=field_name)
    return storage.presign_get(key, info.version_id, expires)


# ---------------------------------------------------------------------------- submitting


def retry_delay_seconds(error: SyncRetryableError, receive_count: int) -> int:
    """How long the message stays invisible: the API's hint, else capped exponential backoff with jitter."""
    base = error.retry_after_seconds or min(900.0, FIRST_BACKOFF_SECONDS * 2 ** max(0, receive_count - 1))
    return int(min(MAX_VISIBILITY_SECONDS, base + random.uniform(0, base / 4) + 1))  # noqa: S311 - jitter


def execution_input(job: Job, timings: LifecycleTimings, now: datetime | None = None) -> dict[str, Any]:
    started = now or datetime.now(UTC)
    deadline = started + timedelta(seconds=timings.max_job_seconds)
    return {
        "jobId": job.job_id,
        "generationId": job.generation_id,
        "webhookTimeoutSeconds": timings.webhook_timeout_seconds,
        "poll": {
            "firstIntervalSeconds": timings.poll_first_interval_seconds,
            "backoffRate": timings.poll_backoff_rate,
            "maxIntervalSeconds": timings.poll_max_interval_seconds,
            "deadline": deadline.isoformat().replace("+00:00", "Z"),
        },
        "reconcile": {
            "attempt": 0,
            "terminal": False,
            "nextWaitSeconds": timings.poll_first_interval_seconds,
        },
    }


Outcome = Literal["submitted", "duplicate", "waiting", "ignored", "invalid", "rejected", "failed"]


class Submitter:
    def __init__(
        self,
        settings: SubmitSettings,
        timings: LifecycleTimings,
        store: JobStore,
        storage: Storage,
        sync: SyncClient,
        workflow: Workflow,
        token_key: str,
    ) -> None:
        self._settings = settings
        self._timings = timings
        self._store = store
        self._storage = storage
        self._sync = sync
        self._workflow = workflow
        self._token_key = token_key

    def handle(self, created: ObjectCreated) -> tuple[Outcome, Job | None]:
        """Process one created object. Raises SyncRetryableError when the queue should retry."""
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
        return self.submit(plan)

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
                "history": [{"status": status, "source": "submit", "at": now}],
                **extra,
            }
        )

    def _record_invalid(self, plan: JobPlan, error: InvalidInputError) -> Job:
        job = self._new_job(plan, JobStatus.INVALID, error=JobError(message=error.message, field=error.field))
        _, stored = self._store.create(job, retention_days=self._settings.job_retention_days)
        write_job_document(self._storage, stored)
        return stored

    def submit(self, plan: JobPlan) -> tuple[Outcome, Job]:
        assert plan.request is not None
        webhook_url = (
            f"{self._settings.webhook_base_url.rstrip('/')}/webhooks/sync/{plan.job_id}?"
            + urlencode({"token": job_token(self._token_key, plan.job_id)})
        )
        # Kept as JSON text: a retry must send the same body, and DynamoDB would turn 30.0 into 30.
        body = json.dumps(plan.request.to_api() | {"webhookUrl": webhook_url}, ensure_ascii=False)
        job = self._new_job(
            plan,
            JobStatus.QUEUED,
            model=plan.request.model,
            outputKey=plan.output_key,
            requestBody=body,
            warnings=plan.warnings,
        )
        created, job = self._store.create(job, retention_days=self._settings.job_retention_days)
        if not created and job.generation_id:
            # Accepted before (maybe a webhook already finished it): make sure its execution runs.
            self._workflow.start(job.job_id, execution_input(job, self._timings))
            return "duplicate", job
        if not created and is_final(job.status):
            return "duplicate", job
        return self._call_api(job)

    def _call_api(self, job: Job) -> tuple[Outcome, Job]:
        # Always the stored body: a retry after an uncertain outcome must repeat it byte for byte.
        request = GenerateRequest.model_validate_json(job.request_body or "{}")
        try:
            generation = self._sync.create_generation(request, idempotency_key=job.job_id)
        except SyncRetryableError as error:
            self._store.set_fields(
                job.job_id,
                {"submitAttempts": job.submit_attempts + 1, "lastError": error.message},
            )
            raise
        except SyncPermanentError as error:
            status = JobStatus.FAILED if error.status_code in ACCOUNT_STATUS_CODES else JobStatus.REJECTED
            failed = self._store.advance(
                job.job_id,
                status,
                "submit",
                fields={"error": JobError.from_api(error).stored(), "finishedAt": utc_now()},
                detail=error.error_code,
            )
            final = failed or self._store.get(job.job_id) or job
            write_job_document(self._storage, final)
            return ("failed" if status == JobStatus.FAILED else "rejected"), final
        ids = {"generationId": generation.id, "submittedAt": utc_now()}
        recorded = self._store.advance(
            job.job_id, JobStatus.PENDING, "submit", fields=ids
        ) or self._store.set_fields(job.job_id, ids)
        self._workflow.start(recorded.job_id, execution_input(recorded, self._timings))
        return "submitted", recorded
