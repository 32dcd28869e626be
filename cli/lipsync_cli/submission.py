"""What `submit` and `submit-manifest` upload, checked first by the submit function's own code.

Validation runs `lipsync.planning.plan_job` (the layer's code, the same models and messages as the
submit function) over a view of the bucket in which the planned uploads already exist, so a
submission that would become an INVALID job is refused here, before anything is uploaded.

- A pair without options goes to inputs/<name>.<ext> (video first; the audio completes the job).
- With --model, --option or --text, the media go to media/<name>/ (a prefix that starts nothing)
  and a manifest naming them goes to jobs/<name>.json, last.
- With --segment START:END:AUDIO, each segment's audio goes to media/<name>/s<n>.<ext> as an audio
  input with refId s<n>, and the manifest's `segments` name those refIds.
- A manifest file's input URLs that are local files (relative to the manifest) are uploaded to
  media/<name>/ and the manifest is rewritten to name those keys.
- `retry` uploads one manifest, jobs/<name>.retry-<UTC time>.json, built by lipsync_cli.retries.
"""

from __future__ import annotations

import json
import math
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from lipsync.config import PlanningSettings
from lipsync.jobs.model import ObjectRef
from lipsync.plan.cost import CostEstimate
from lipsync.queue.planning import (
    AUDIO_EXTENSIONS,
    INPUTS_PREFIX,
    JOBS_PREFIX,
    VIDEO_EXTENSIONS,
    InvalidJobError,
    JobPlan,
    plan_job,
)
from lipsync.s3_events import ObjectCreated
from lipsync.storage import MAX_MANIFEST_BYTES, ObjectInfo, S3Storage, TooLargeError
from lipsync_cli.errors import AwsError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from lipsync_cli.targets import Target

MEDIA_PREFIX = "media/"


@dataclass(frozen=True)
class Upload:
    key: str
    source: Path | None = None  # a local file, or
    body: bytes | None = None  # bytes (a manifest)

    @property
    def size(self) -> int:
        return self.source.stat().st_size if self.source else len(self.body or b"")

    @property
    def content_type(self) -> str:
        if self.body is not None:
            return "application/json"
        return mimetypes.guess_type(self.key)[0] or "application/octet-stream"


@dataclass
class Submission:
    """What will be uploaded, in order (the last upload starts the job), and the job it makes."""

    kind: Literal["pair", "manifest"]
    uploads: list[Upload]
    plan: JobPlan | None = None
    manifest: dict[str, Any] | None = None
    job_id: str | None = None  # known once uploaded (it derives from the uploaded versions)
    uploaded: list[ObjectRef] = field(default_factory=list)
    estimate: CostEstimate | None = None  # known once validated (lipsync_cli.costs)
    price_table: str | None = None  # which table priced the estimate: "list" or "stack"

    @property
    def local_files(self) -> dict[str, Path]:
        """The uploads that are local files, by the key they will have."""
        return {upload.key: upload.source for upload in self.uploads if upload.source is not None}

    def summary(self, bucket: str, *, dry_run: bool) -> dict[str, Any]:
        plan = self.plan
        return {
            "dryRun": dry_run,
            "kind": self.kind,
            "name": plan.name if plan else None,
            "jobId": self.job_id,
            "model": plan.model if plan else None,
            "outputKey": plan.output_key if plan else None,
            "documentKey": plan.document_key if plan else None,
            "uploads": [{"key": f"s3://{bucket}/{u.key}", "bytes": u.size} for u in self.uploads],
            "warnings": list(plan.warnings) if plan else [],
            "estimate": self.estimate.stored() if self.estimate else None,
            **({"priceTable": self.price_table} if self.estimate else {}),
            **({"manifest": self.manifest} if self.manifest is not None else {}),
        }


class PlannedStorage(S3Storage):
    """The bucket as it will be once `uploads` are in it (read-only; nothing is written)."""

    def __init__(self, bucket: str, client: S3Client, uploads: list[Upload]) -> None:
        super().__init__(bucket, client)
        self._planned = {upload.key: upload for upload in uploads}

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        if key in self._planned:
            return ObjectInfo(key=key, etag="planned", size=self._planned[key].size)
        return super().head(key, version_id)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        existing = [info for info in super().list_objects(prefix) if info.key not in self._planned]
        planned = [
            ObjectInfo(key=key, etag="planned", size=upload.size)
            for key, upload in self._planned.items()
            if key.startswith(prefix)
        ]
        return existing + planned

    def read(self, key: str, version_id: str | None = None, *, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        upload = self._planned.get(key)
        if upload is None:
            return super().read(key, version_id, max_bytes=max_bytes)
        if upload.size > max_bytes:
            raise TooLargeError(f"{key} is {upload.size} bytes; the limit is {max_bytes}")
        return upload.body if upload.body is not None else upload.source.read_bytes()  # type: ignore[union-attr]


# ---------------------------------------------------------------------------- building


def _local_file(path: str, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise UsageError(f"{what} {path}: no such file")
    return file


def _extension(path: Path) -> str:
    return path.suffix.lstrip(".").lower()


def _check_name(name: str) -> str:
    path = PurePosixPath(name)
    if not name.strip() or path.is_absolute() or ".." in path.parts or name.endswith("/") or len(name) > 200:
        raise UsageError(
            f"--name {name!r}: must be a relative name like 'campaign/clip-1' "
            "(no '..', at most 200 characters)"
        )
    return str(path)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """`key=value` (value as JSON when it parses, else a string); dotted keys nest: a.b=1."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option {pair!r}: expected key=value, e.g. sync_mode=loop or temperature=0.5")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = options
        *parents, leaf = key.strip().split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UsageError(f"--option {pair!r}: {part} is already set to a value")
            node = child
        node[leaf] = value
    return options


@dataclass(frozen=True)
class SegmentSpec:
    """One `--segment START:END:AUDIO`: the audio file voices the video from START to END seconds."""

    start: float
    end: float
    audio: Path


SEGMENT_EXAMPLE = "e.g. 0:2.5:line1.wav (START and END in seconds of the video, then an audio file)"


def parse_segment(text: str) -> SegmentSpec:
    """START:END:AUDIO; the file name may hold more colons. The order of the times (and that START
    is not negative) is the submit function's rule: validation reports it in its words."""
    start_text, found_end, rest = text.partition(":")
    end_text, found_audio, audio = rest.partition(":")
    if not (found_end and found_audio and start_text.strip() and end_text.strip() and audio):
        raise UsageError(f"--segment {text!r}: expected START:END:AUDIO, {SEGMENT_EXAMPLE}")
    times: list[float] = []
    for label, raw in (("START", start_text), ("END", end_text)):
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise UsageError(
                f"--segment {text!r}: {label} {raw!r} is not a number of seconds; {SEGMENT_EXAMPLE}"
            )
        times.append(value)
    audio_file = _local_file(audio, f"--segment {text!r}: audio")
    if _extension(audio_file) not in AUDIO_EXTENSIONS:
        raise UsageError(
            f"--segment {text!r}: audio {audio}: use one of {', '.join(sorted(AUDIO_EXTENSIONS))}"
        )
    return SegmentSpec(times[0], times[1], audio_file)


def _segment_inputs(
    job_name: str, segments: Sequence[SegmentSpec], media: list[Upload]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Audio inputs with unique refIds (one per distinct file, uploaded once) and the segments
    naming them, in the shape of lipsync.models.Segment."""
    ref_ids: dict[Path, str] = {}
    voices: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for spec in segments:
        identity = spec.audio.resolve()
        if identity not in ref_ids:
            ref_ids[identity] = f"s{len(ref_ids) + 1}"
            key = f"{MEDIA_PREFIX}{job_name}/{ref_ids[identity]}.{_extension(spec.audio)}"
            media.append(Upload(key, source=spec.audio))
            voices.append({"type": "audio", "url": key, "refId": ref_ids[identity]})
        parts.append(
            {"startTime": spec.start, "endTime": spec.end, "audioInput": {"refId": ref_ids[identity]}}
        )
    return voices, parts


def pair_submission(
    video: str,
    audio: str | None,
    *,
    name: str | None,
    model: str | None,
    options: dict[str, Any],
    text: str | None,
    voice: str | None,
    segments: Sequence[SegmentSpec] = (),
) -> Submission:
    video_file = _local_file(video, "video")
    if _extension(video_file) not in VIDEO_EXTENSIONS:
        raise UsageError(f"video {video}: use one of {', '.join(sorted(VIDEO_EXTENSIONS))}")
    if segments and (audio is not None or text is not None):
        raise UsageError(
            "with --segment, every segment names its own audio: drop AUDIO and --text "
            "(to voice the whole video with one file, give it as a segment, e.g. --segment 0:4:voice.wav)"
        )
    if not segments and (text is None) == (audio is None):
        raise UsageError("give an AUDIO file or --text (with --voice), not both and not neither")
    if text is not None and not voice:
        raise UsageError("--text needs --voice VOICE_ID (an ElevenLabs voice id)")
    audio_file = _local_file(audio, "audio") if audio is not None else None
    if audio_file is not None and _extension(audio_file) not in AUDIO_EXTENSIONS:
        raise UsageError(f"audio {audio}: use one of {', '.join(sorted(AUDIO_EXTENSIONS))}")
    job_name = _check_name(name or video_file.stem)
    if model is None and not options and text is None and not segments:
        uploads = [Upload(f"{INPUTS_PREFIX}{job_name}.{_extension(video_file)}", source=video_file)]
        uploads.append(Upload(f"{INPUTS_PREFIX}{job_name}.{_extension(audio_file)}", source=audio_file))  # type: ignore[arg-type]
        return Submission("pair", uploads)
    media = [Upload(f"{MEDIA_PREFIX}{job_name}/video.{_extension(video_file)}", source=video_file)]
    voice_inputs: list[dict[str, Any]]
    timing: list[dict[str, Any]] = []
    if segments:
        voice_inputs, timing = _segment_inputs(job_name, segments, media)
    elif audio_file is not None:
        media.append(Upload(f"{MEDIA_PREFIX}{job_name}/audio.{_extension(audio_file)}", source=audio_file))
        voice_inputs = [{"type": "audio", "url": media[1].key}]
    else:
        voice_inputs = [
            {"type": "text", "provider": {"name": "elevenlabs", "voiceId": voice, "script": text}}
        ]
    manifest: dict[str, Any] = {
        "name": job_name,
        **({"model": model} if model else {}),
        "input": [{"type": "video", "url": media[0].key}, *voice_inputs],
        **({"segments": timing} if timing else {}),
        **({"options": options} if options else {}),
    }
    return _manifest_submission(job_name, manifest, media)


def manifest_submission(path: str, *, name: str | None) -> Submission:
    file = _local_file(path, "manifest")
    raw = file.read_bytes()
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        manifest = None  # the submit function's own check reports it, in its words
    stem = name or (manifest.get("name") if isinstance(manifest, dict) else None) or file.stem
    job_name = _check_name(stem if isinstance(stem, str) else file.stem)
    if not isinstance(manifest, dict):
        return Submission("manifest", [Upload(f"{JOBS_PREFIX}{job_name}.json", body=raw)])
    if name:
        manifest["name"] = job_name
    media: list[Upload] = []
    for item in manifest.get("input") or []:
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not url or "://" in url:
            continue
        local = Path(url).expanduser()
        local = local if local.is_absolute() else file.parent / local
        if local.is_file():
            media.append(Upload(f"{MEDIA_PREFIX}{job_name}/{len(media)}-{local.name}", source=local))
            item["url"] = media[-1].key
    return _manifest_submission(job_name, manifest, media)


def _manifest_submission(job_name: str, manifest: dict[str, Any], media: list[Upload]) -> Submission:
    return keyed_manifest_submission(f"{JOBS_PREFIX}{job_name}.json", manifest, media)


def keyed_manifest_submission(key: str, manifest: dict[str, Any], media: Sequence[Upload] = ()) -> Submission:
    """A manifest uploaded as `key`, after `media` (the manifest starts the job, so it goes last)."""
    body = json.dumps(manifest, indent=2).encode()
    return Submission("manifest", [*media, Upload(key, body=body)], manifest=manifest)


# ---------------------------------------------------------------------------- validating, uploading


def _aws(action: str, error: Exception) -> AwsError:
    if isinstance(error, ClientError):
        detail = error.response.get("Error", {})
        return AwsError(f"{action}: {detail.get('Code', '')} {detail.get('Message', '')}".strip())
    return AwsError(f"{action}: {error}")


def _settings(target: Target) -> PlanningSettings:
    return PlanningSettings.model_validate(
        {"DEFAULT_MODEL": target.default_model, "DEFAULT_OPTIONS": target.default_options}
    )


def validate(submission: Submission, target: Target, s3: S3Client) -> Submission:
    """Plan the job exactly as the submit function will; InvalidJobError becomes a UsageError
    with the function's message (field: message)."""
    storage = PlannedStorage(target.bucket, s3, submission.uploads)
    trigger = submission.uploads[-1].key
    plan = _plan(submission, target, ObjectCreated(bucket=target.bucket, key=trigger), storage)
    if plan is None:
        raise UsageError(f"{trigger} would not start a job")
    submission.plan = plan
    return submission


def _plan(submission: Submission, target: Target, created: ObjectCreated, storage: Any) -> JobPlan | None:
    """`plan_job` as the submit function runs it, its errors in the command line's terms."""
    try:
        return plan_job(created, storage, _settings(target))
    except InvalidJobError as error:
        raise UsageError(f"invalid {submission.kind}: {error}") from None
    except (ClientError, BotoCoreError) as error:
        raise _aws(f"reading s3://{target.bucket}", error) from None


def upload(submission: Submission, target: Target, s3: S3Client) -> Submission:
    """Upload in order; the job id derives from the uploaded versions, as the submit function's does."""
    refs: list[ObjectRef] = []
    for item in submission.uploads:
        try:
            if item.body is not None:
                answer: Any = s3.put_object(
                    Bucket=target.bucket, Key=item.key, Body=item.body, ContentType=item.content_type
                )
            else:
                s3.upload_file(
                    str(item.source), target.bucket, item.key, ExtraArgs={"ContentType": item.content_type}
                )
                answer = s3.head_object(Bucket=target.bucket, Key=item.key)
        except (ClientError, BotoCoreError) as error:
            raise _aws(f"uploading s3://{target.bucket}/{item.key}", error) from None
        refs.append(
            ObjectRef(
                key=item.key, version_id=answer.get("VersionId"), etag=answer.get("ETag", "").strip('"')
            )
        )
    submission.uploaded = refs
    # The job's id comes from what the objects hold and what they ask (lipsync.jobs.model): planned
    # again over the uploaded objects, exactly as the submit function plans them.
    trigger = refs[-1]
    created = ObjectCreated(
        bucket=target.bucket, key=trigger.key, version_id=trigger.version_id, etag=trigger.etag
    )
    plan = _plan(submission, target, created, S3Storage(target.bucket, s3))
    if plan is None:
        raise AwsError(f"{trigger.key} was uploaded but its partner is not in the bucket")
    submission.job_id = plan.job_id
    return submission
