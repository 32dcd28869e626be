"""From a created object to the job it asks for: an input pair or a manifest.

`plan_job` returns a `JobPlan` (None when the object is not, or not yet, a job) or raises
`InvalidJobError` with a message for the user. Nothing is presigned here: media in this
bucket stay S3 references in a `RequestTemplate` until the job is dispatched, so a job can
wait in the queue for as long as it takes without its URLs going stale.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ValidationError

from lipsync.config import PlanningSettings
from lipsync.jobs.model import ObjectRef, job_id_for
from lipsync.s3_events import ObjectCreated
from lipsync.storage import Storage, TooLargeError
from lipsync.syncso.models import GenerateRequest, TextInput

INPUTS_PREFIX = "inputs/"
JOBS_PREFIX = "jobs/"
OUTPUTS_PREFIX = "outputs/"
VIDEO_EXTENSIONS = frozenset({"mp4", "mov", "webm", "m4v", "mkv"})
AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "m4a", "aac", "ogg", "flac"})
# S3 version ids are up to 1,024 URL-safe characters (and "null" for objects from before versioning).
VERSION_ID = re.compile(r"[A-Za-z0-9._+/=-]{1,1024}")
MAX_JSON_DEPTH = 32  # a generate request nests 5 levels; anything far deeper is a mistake (or an attack)


class InvalidInputError(ValueError):
    """The user's files or manifest are wrong; `str()` says which field and why."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.message = message
        self.field = field


class RequestTemplate(BaseModel):
    """A generate request whose inputs in this bucket are still S3 references (`presign`: input
    index -> object version). `render` makes the body sync.so receives."""

    body: dict[str, Any]
    presign: dict[int, ObjectRef] = {}

    def digest(self) -> str:
        """What the request asks for: its body and its bucket inputs' content (not their versions)."""
        parts = [json.dumps(self.body, sort_keys=True, ensure_ascii=False)]
        parts += [f"{index}={ref.identity}" for index, ref in sorted(self.presign.items())]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def render(self, storage: Storage, expires_seconds: int, webhook_url: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(self.body))
        for index, ref in self.presign.items():
            body["input"][index]["url"] = storage.presign_get(ref.key, ref.version_id, expires_seconds)
        return body | {"webhookUrl": webhook_url}


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    name: str
    kind: Literal["pair", "manifest"]
    refs: list[ObjectRef]
    template: RequestTemplate | None = None
    model: str | None = None
    output_key: str = ""
    arrived_at: str | None = None
    warnings: list[str] = field(default_factory=list)
    retry_of: str | None = None  # a manifest's `retryOf`: the job it re-runs

    @property
    def document_key(self) -> str:
        return f"{OUTPUTS_PREFIX}{self.name}.json"


class InvalidJobError(InvalidInputError):
    """An invalid input, with the identity of the job it would have been."""

    def __init__(self, plan: JobPlan, error: InvalidInputError) -> None:
        super().__init__(error.message, field=error.field)
        self.plan = plan


def _split_extension(key: str) -> tuple[str, str]:
    stem, dot, extension = key.rpartition(".")
    if not dot or "/" in extension:
        return key, ""
    return stem, extension.lower()


def _ref(created: ObjectCreated) -> ObjectRef:
    return ObjectRef(key=created.key, version_id=created.version_id, etag=created.etag)


def plan_job(created: ObjectCreated, storage: Storage, settings: PlanningSettings) -> JobPlan | None:
    """The job an object asks for; None when it is not (yet) a job. Raises InvalidJobError."""
    if created.key.endswith("/") or PurePosixPath(created.key).name.startswith("."):
        return None  # "Create folder" placeholders and hidden files (.DS_Store) are not jobs
    if created.key.startswith(INPUTS_PREFIX):
        return _plan_pair(created, storage, settings)
    if created.key.startswith(JOBS_PREFIX):
        return _plan_manifest(created, storage, settings)
    return None


def _plan_pair(created: ObjectCreated, storage: Storage, settings: PlanningSettings) -> JobPlan | None:
    stem, extension = _split_extension(created.key)
    name = stem.removeprefix(INPUTS_PREFIX)
    invalid = JobPlan(job_id_for(storage.bucket, [_ref(created)]), _safe_name(name), "pair", [_ref(created)])
    if ".." in PurePosixPath(name).parts:
        raise InvalidJobError(invalid, InvalidInputError(f"{created.key}: a name may not hold a '..' part"))
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
    arrivals = [created.event_time] if created.event_time else []
    for key in (videos[0], audios[0]):
        if key == created.key:
            refs.append(_ref(created))
            continue
        partner = storage.head(key)
        if partner is None:
            return None
        refs.append(ObjectRef(key=key, version_id=partner.version_id, etag=partner.etag))
        if partner.last_modified:
            arrivals.append(partner.last_modified)
    request = GenerateRequest.model_validate(
        {
            "model": settings.default_model,
            "input": [{"type": "video", "url": "s3:"}, {"type": "audio", "url": "s3:"}],
            **({"options": settings.default_options} if settings.default_options else {}),
        }
    )
    template = RequestTemplate(body=request.to_api(), presign={0: refs[0], 1: refs[1]})
    return JobPlan(
        job_id=job_id_for(storage.bucket, refs, template.digest()),
        name=name,
        kind="pair",
        refs=refs,
        template=template,
        model=request.model,
        output_key=f"{OUTPUTS_PREFIX}{name}.mp4",
        # Both events of a pair compute the same arrival: the later of the two uploads.
        arrived_at=max(arrivals) if arrivals else None,
        warnings=request.warnings(),
    )


def _plan_manifest(created: ObjectCreated, storage: Storage, settings: PlanningSettings) -> JobPlan:
    stem, extension = _split_extension(created.key)
    ref = _ref(created)
    default_name = stem.removeprefix(JOBS_PREFIX)
    plan = JobPlan(job_id_for(storage.bucket, [ref]), _safe_name(default_name), "manifest", [ref])
    try:
        if ".." in PurePosixPath(default_name).parts:
            raise InvalidInputError(f"{created.key}: a name may not hold a '..' part")
        if extension != "json":
            raise InvalidInputError(f"{created.key}: a manifest must be a .json file")
        manifest = _read_manifest(created, storage)
        name = _manifest_name(manifest.pop("name", None), default=plan.name)
        retry_of = _retry_of(manifest.pop("retryOf", None))
        plan = JobPlan(plan.job_id, name, "manifest", [ref])
        request, presign = _manifest_request(manifest, storage, settings)
    except InvalidInputError as error:
        raise InvalidJobError(plan, error) from error
    output_name = request.output_file_name or name
    template = RequestTemplate(body=request.to_api(), presign=presign)
    return JobPlan(
        job_id=job_id_for(storage.bucket, [ref], template.digest()),
        name=name,
        kind="manifest",
        refs=[ref],
        template=template,
        model=request.model,
        output_key=f"{OUTPUTS_PREFIX}{output_name}.mp4",
        arrived_at=created.event_time,
        warnings=request.warnings(),
        retry_of=retry_of,
    )


def _retry_of(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{32}", value):
        raise InvalidInputError(
            "must be the id of the job this one re-runs (32 hex characters)", field="retryOf"
        )
    return value


def _read_manifest(created: ObjectCreated, storage: Storage) -> dict[str, Any]:
    try:
        raw = storage.read(created.key, created.version_id)
    except TooLargeError as error:
        raise InvalidInputError(str(error)) from error
    try:
        manifest = json.loads(raw)
    except RecursionError as error:
        raise InvalidInputError(
            f"{created.key} nests JSON more than {MAX_JSON_DEPTH} levels deep; a generate request "
            "is a few levels deep"
        ) from error
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"{created.key} is not UTF-8 text") from error
    except json.JSONDecodeError as error:
        raise InvalidInputError(
            f"{created.key} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from error
    except ValueError as error:  # e.g. an integer of more than 4,300 digits
        raise InvalidInputError(f"{created.key} holds a value JSON readers refuse: {error}") from error
    try:
        json.dumps(manifest, ensure_ascii=False).encode()
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{created.key} holds text that is not Unicode (an escaped lone surrogate such as \\ud800)"
        ) from error
    if not isinstance(manifest, dict):
        raise InvalidInputError(f"{created.key} must hold a JSON object (a sync.so generate request body)")
    if json_depth(manifest) > MAX_JSON_DEPTH:
        raise InvalidInputError(
            f"{created.key} nests JSON more than {MAX_JSON_DEPTH} levels deep; a generate request "
            "is a few levels deep"
        )
    if "webhookUrl" in manifest:
        raise InvalidInputError("the pipeline sets the webhook itself; remove this field", field="webhookUrl")
    return manifest


def _safe_name(name: str) -> str:
    """A name that can name an INVALID job's document: no '..' parts (replaced by '_')."""
    return "/".join("_" if part == ".." else part for part in name.split("/"))


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests (without recursion: the input is the user's)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_JSON_DEPTH:
                children = item.values() if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
    return deepest


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
    manifest: dict[str, Any], storage: Storage, settings: PlanningSettings
) -> tuple[GenerateRequest, dict[int, ObjectRef]]:
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
    presign: dict[int, ObjectRef] = {}
    for index, item in enumerate(request.input):
        if not isinstance(item, TextInput) and item.url:
            ref = _bucket_ref(item.url, f"input.{index}.url", storage)
            if ref is not None:
                presign[index] = ref
    return request, presign


def _bucket_ref(url: str, field_name: str, storage: Storage) -> ObjectRef | None:
    """https URLs pass through (None); keys in this bucket and s3://<this bucket>/key are pinned to
    their current version (or to s3://...?versionId=<id>), to be presigned at dispatch."""
    if url.startswith("https://"):
        return None
    version_id = None
    if url.startswith("s3://"):
        try:
            location = urlsplit(url)
        except ValueError as error:
            raise InvalidInputError(f"is not a valid s3:// URI ({error})", field=field_name) from error
        bucket, key = location.netloc, unquote(location.path)
        versions = parse_qs(location.query, keep_blank_values=True).get("versionId", [])
        if len(versions) > 1:
            raise InvalidInputError("names more than one versionId", field=field_name)
        version_id = versions[0] if versions else None
        if version_id is not None and not VERSION_ID.fullmatch(version_id):
            raise InvalidInputError(
                f"versionId {version_id[:80]!r} is not an S3 version id", field=field_name
            )
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
    info = storage.head(key, version_id) if key else None
    if info is None:
        version = f" (version {version_id})" if version_id else ""
        raise InvalidInputError(f"s3://{storage.bucket}/{key}{version} does not exist", field=field_name)
    return ObjectRef(key=key, version_id=info.version_id, etag=info.etag)
