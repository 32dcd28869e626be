"""`retry`: a job that ended without succeeding, run again as a new job that names the old one.

The new job is one manifest, jobs/<name>.retry-<UTC time>.json (a new object, so a new job id),
holding the old job's name (its output lands where the user expects it), `retryOf` (the submit
function links both records: the new one's retryOf, the old one's retriedBy) and the old request:
- a manifest job: the exact version of the manifest it was made from, read back from the bucket,
  with its inputs in the bucket pinned to the versions the job used (`pinnedInputs`);
- a pair job: its model and its two inputs, pinned to the versions it was made from.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from lipsync.jobs.model import Job, JobStatus, ObjectRef, is_final
from lipsync.queue.planning import AUDIO_EXTENSIONS, JOBS_PREFIX, VIDEO_EXTENSIONS
from lipsync.storage import MAX_MANIFEST_BYTES
from lipsync_cli.errors import AwsError, CliError, Exit, NotFoundError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

RETRYABLE = frozenset(
    {
        JobStatus.FAILED,
        JobStatus.REJECTED,
        JobStatus.TIMED_OUT,
        JobStatus.STOPPED,
        JobStatus.UNKNOWN,
        JobStatus.CANCELED,
    }
)
PIPELINE_FIELDS = ("name", "retryOf")  # the manifest fields a retry sets anew


def job_record(answer: dict[str, Any]) -> Job:
    """The status route's job (Job.public_view()) as the layer's model."""
    try:
        return Job.model_validate(answer)
    except ValidationError as error:
        raise AwsError(f"the API answered a job record this CLI does not understand: {error}") from None


def check_retryable(job: Job) -> None:
    """Only a finished job that did not succeed is re-run; anything else says why not."""
    label = f"job {job.job_id} ({job.name})"
    if job.status in RETRYABLE:
        return
    if job.status == JobStatus.COMPLETED:
        raise CliError(
            f"{label} COMPLETED (output {job.output_key}): there is nothing to retry; "
            "submit its inputs again to make another",
            Exit.NOT_RETRYABLE,
        )
    if job.status == JobStatus.INVALID:
        error = job.error
        reason = f": {error.field + ': ' if error.field else ''}{error.message}" if error else ""
        raise CliError(
            f"{label} is INVALID{reason}. A retry would be refused the same way: fix the input "
            "and submit it again",
            Exit.NOT_RETRYABLE,
        )
    if not is_final(job.status):
        why = f" ({job.hold_reason})" if job.status == JobStatus.BUDGET_HOLD and job.hold_reason else ""
        raise CliError(
            f"{label} is still {job.status}{why}: it has not finished, so there is nothing to retry "
            f"yet (lipsync watch {job.job_id})",
            Exit.NOT_FINISHED,
        )
    raise CliError(f"{label} ended {job.status}, which retry does not re-run", Exit.NOT_RETRYABLE)


def retry_key(name: str, now: datetime) -> str:
    """jobs/<name>.retry-<UTC time>.json: next to the old manifest, and a job of its own."""
    return f"{JOBS_PREFIX}{name}.retry-{now.strftime('%Y%m%dT%H%M%SZ')}.json"


def s3_url(bucket: str, ref: ObjectRef) -> str:
    """s3://<bucket>/<key>?versionId=<id>: the exact version (planning unquotes both)."""
    url = f"s3://{bucket}/{quote(ref.key, safe='/')}"
    return f"{url}?versionId={quote(ref.version_id, safe='')}" if ref.version_id else url


def _extension(key: str) -> str:
    return key.rpartition(".")[2].lower() if "." in key else ""


def pair_manifest(job: Job) -> dict[str, Any]:
    """A pair job as a manifest: its model and both inputs at the versions it was made from."""
    video = next((ref for ref in job.inputs if _extension(ref.key) in VIDEO_EXTENSIONS), None)
    audio = next((ref for ref in job.inputs if _extension(ref.key) in AUDIO_EXTENSIONS), None)
    if video is None or audio is None:
        found = ", ".join(ref.key for ref in job.inputs) or "none"
        raise CliError(
            f"job {job.job_id} is a pair without both a video and an audio input (inputs: {found}); "
            "submit it again instead",
            Exit.NOT_RETRYABLE,
        )
    return {
        "name": job.name,
        "retryOf": job.job_id,
        **({"model": job.model} if job.model else {}),
        "input": [
            {"type": "video", "url": s3_url(job.bucket, video)},
            {"type": "audio", "url": s3_url(job.bucket, audio)},
        ],
    }


def manifest_manifest(job: Job, old: bytes) -> dict[str, Any]:
    """A manifest job's own manifest again, with this retry's name and retryOf."""
    try:
        manifest = json.loads(old)
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise CliError(
            f"the manifest job {job.job_id} was made from is not a JSON object any more; submit it again",
            Exit.NOT_RETRYABLE,
        )
    rest = {key: value for key, value in manifest.items() if key not in PIPELINE_FIELDS}
    inputs = rest.get("input")
    if isinstance(inputs, list):  # the media it used, not whatever the keys hold now
        rest["input"] = [
            item | {"url": s3_url(job.bucket, job.pinned_inputs[index])}
            if isinstance(item, dict) and index in job.pinned_inputs
            else item
            for index, item in enumerate(inputs)
        ]
    return {"name": job.name, "retryOf": job.job_id, **rest}


def read_manifest(job: Job, s3: S3Client) -> bytes:
    """The exact manifest version the job was made from (its first input)."""
    if not job.inputs:
        raise CliError(f"job {job.job_id} names no manifest to re-run", Exit.NOT_RETRYABLE)
    ref = job.inputs[0]
    where = f"s3://{job.bucket}/{ref.key}" + (f" (version {ref.version_id})" if ref.version_id else "")
    extra: dict[str, Any] = {"VersionId": ref.version_id} if ref.version_id else {}
    try:
        answer = s3.get_object(Bucket=job.bucket, Key=ref.key, **extra)
        if answer.get("ContentLength", 0) > MAX_MANIFEST_BYTES:
            raise CliError(f"{where} is larger than a manifest may be ({MAX_MANIFEST_BYTES} bytes)")
        return answer["Body"].read()
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
            raise NotFoundError(
                f"{where}, the manifest job {job.job_id} was made from, is gone: submit the job again"
            ) from None
        raise AwsError(f"reading {where}: {code} {error}") from None
    except BotoCoreError as error:
        raise AwsError(f"reading {where}: {error}") from None


def retry_manifest(job: Job, s3: S3Client) -> dict[str, Any]:
    return manifest_manifest(job, read_manifest(job, s3)) if job.kind == "manifest" else pair_manifest(job)
