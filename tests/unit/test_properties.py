"""Property-based tests (hypothesis) and a fixed corpus of nasty inputs for every entry point that
takes what users, S3, sync.so or the internet send: manifests and keys (`plan_job`), S3
notifications (`created_objects`), webhook deliveries (`WebhookReceiver.receive`, `verify_signature`),
sync.so's answers (`SyncClient`, `error_from_response`) and listing cursors (`decode_cursor`).

The invariant each test proves: every input yields a result or the specific, documented error,
never an unhandled exception and never a silent drop.

The `test_bug_*` tests at the end are inputs that once broke that invariant (found by these
properties), kept as a fixed corpus of their own.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, get_args
from urllib.parse import quote, quote_plus

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from lipsync.config import PlanningSettings
from lipsync.generation.webhooks import (
    MAX_BODY_BYTES,
    RejectReason,
    WebhookReceiver,
    WebhookRejectedError,
    WebhookResult,
)
from lipsync.jobs.model import Job
from lipsync.jobs.store import decode_cursor
from lipsync.queue.planning import (
    AUDIO_EXTENSIONS,
    MAX_JSON_DEPTH,
    VIDEO_EXTENSIONS,
    InvalidJobError,
    JobPlan,
    plan_job,
)
from lipsync.s3_events import ObjectCreated, created_objects
from lipsync.storage import MAX_MANIFEST_BYTES
from lipsync.syncso.client import (
    PERMANENT_CONFLICTS,
    RetryReason,
    SyncApiError,
    SyncClient,
    SyncPermanentError,
    SyncRetryableError,
    error_from_response,
)
from lipsync.syncso.models import KNOWN_MODELS, CostEstimateAnswer, Generation
from lipsync.syncso.webhook_auth import (
    MalformedSignatureError,
    MissingSignatureError,
    SignatureError,
    job_token,
    parse_signature_header,
    sign,
    verify_signature,
)
from tests.fakes import FakeStorage, FakeWorkflow
from tests.tables import SeededStore, make_tables

BUCKET = "media-bucket"
SETTINGS = PlanningSettings.from_env({"DEFAULT_MODEL": "lipsync-2", "DEFAULT_OPTIONS": "{}"})
EVENT_TIME = "2026-11-25T00:00:00.000Z"
HOOK_URL = "https://hooks.example/prod/webhooks/sync/x?token=t"
MEDIA_KEYS = ("media/face.mp4", "media/voice.wav")  # what `media_storage` holds
API_KEY = "sk-property-key-0000"
TOKEN_KEY = "stack-token-key"
JOB_ID = "0123456789abcdef0123456789abcdef"
UNKNOWN_JOB_ID = "fedcba9876543210fedcba9876543210"
GENERATION_ID = "gen-1"
CURRENT = "whsec_current"
PREVIOUS = "whsec_previous"


def checked(max_examples: int) -> settings:
    """Enough examples to mean something, fast enough for every run. No example database: nothing
    is written to the work tree (a failure prints its falsifying example)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def answer_of[T, E: BaseException](call: Callable[[], T], documented: type[E]) -> T | E:
    """What `call` returns, or the documented error it raises; any other exception escapes."""
    try:
        return call()
    except documented as error:
        return error


# ---------------------------------------------------------------------------- JSON values

# Integers far past what the pipeline uses, but short of the 4,300 digits Python's int() reads, and
# text without lone surrogates: both the others are in the fixed corpus of test_bug_* cases below.
JSON_SCALARS: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | st.text(max_size=16)
)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FINITE_JSON: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
NUMBERS: st.SearchStrategy[Any] = st.integers(-10, 10**6) | st.floats() | st.sampled_from([0, 0.5, 1, 2.5])


def nested(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


# ---------------------------------------------------------------------------- manifests


def media_storage() -> FakeStorage:
    """A bucket with media a manifest can name: face.mp4 has two versions (v1, v3), voice.wav one (v2)."""
    storage = FakeStorage(BUCKET)
    storage.put("media/face.mp4", b"first take")
    storage.put("media/voice.wav", b"voice")
    storage.put("media/face.mp4", b"second take")
    return storage


BUCKET_KEYS = st.sampled_from(
    [*MEDIA_KEYS, "/media/face.mp4", "media/missing.mp4", "media/", "", "/", "%2F"]
) | st.text(max_size=20)
VERSION_IDS = (
    st.sampled_from(["v1", "v2", "v3", "v99", "null", "", "a&b", "x" * 1100, "v1#frag", "ü"])
    | st.text(max_size=12)
    | st.from_regex(r"[A-Za-z0-9._+/=-]{1,40}", fullmatch=True)
)


@st.composite
def s3_uris(draw: st.DrawFn) -> str:
    bucket = draw(st.sampled_from([BUCKET, "other-bucket", "", "MEDIA-BUCKET", "[::1]", "media-bucket:9"]))
    key = draw(BUCKET_KEYS)
    path = quote(key) if draw(st.booleans()) else key
    versions = draw(st.lists(VERSION_IDS, max_size=2))
    params = [f"versionId={quote(v, safe='') if draw(st.booleans()) else v}" for v in versions]
    params += draw(st.lists(st.sampled_from(["x=1", "versionId", "&", "=", "%zz"]), max_size=2))
    return f"s3://{bucket}/{path.lstrip('/')}" + (f"?{'&'.join(params)}" if params else "")


URLS: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(["https://cdn.example/face.mp4", "https://cdn.example/voice.wav", "https://"]),
    st.text(max_size=20).map(lambda path: f"https://cdn.example/{quote(path)}"),
    BUCKET_KEYS,
    s3_uris(),
    st.tuples(
        st.sampled_from(["http", "ftp", "file", "gs", "S3", "s3", "data", "HTTPS", ""]), st.text(max_size=12)
    ).map(lambda parts: f"{parts[0]}://{parts[1]}"),
    JSON_VALUES,
)
INPUT_TYPES = st.sampled_from(["video", "audio", "image", "text", "other"])
PROVIDERS = st.fixed_dictionaries(
    {"name": st.sampled_from(["elevenlabs", "other"]), "voiceId": st.text(max_size=6)},
    optional={
        "script": st.text(max_size=20),
        "stability": NUMBERS,
        "similarityBoost": NUMBERS,
    },
)
INPUT_ITEMS: st.SearchStrategy[Any] = st.fixed_dictionaries(
    {"type": INPUT_TYPES},
    optional={
        "url": URLS,
        "assetId": st.text(max_size=6),
        "refId": st.sampled_from(["a", "b", ""]) | st.text(max_size=3),
        "provider": PROVIDERS | JSON_VALUES,
        "segments_secs": st.lists(st.tuples(NUMBERS, NUMBERS), max_size=2) | JSON_VALUES,
    },
)
# Mostly a visual and a voice (so the URLs are looked at), sometimes anything at all.
INPUT_PAIRS = st.tuples(
    st.fixed_dictionaries({"type": st.sampled_from(["video", "image"]), "url": URLS}),
    st.fixed_dictionaries({"type": st.just("audio"), "url": URLS})
    | st.fixed_dictionaries({"type": st.just("text"), "provider": PROVIDERS}),
).map(list)
INPUTS: st.SearchStrategy[Any] = st.one_of(
    INPUT_PAIRS, INPUT_PAIRS, st.lists(INPUT_ITEMS | JSON_VALUES, max_size=4), JSON_VALUES
)
ACTIVE_SPEAKER = st.fixed_dictionaries(
    {},
    optional={
        "auto_detect": st.booleans(),
        "frame_number": st.integers(-3, 10),
        "coordinates": st.lists(NUMBERS, max_size=3),
        "bounding_boxes": JSON_VALUES,
    },
)
OPTIONS: st.SearchStrategy[Any] = JSON_VALUES | st.fixed_dictionaries(
    {},
    optional={
        "sync_mode": st.sampled_from(["bounce", "loop", "cut_off", "silence", "remap", "BOUNCE", ""]),
        "temperature": NUMBERS,
        "model_mode": st.sampled_from(["lips", "face", "head", "body"]),
        "prompt": st.sampled_from(["happy", "sad", "bored"]),
        "pads": st.lists(NUMBERS, max_size=5),
        "speedup": st.integers(-2, 6),
        "output_format": st.sampled_from(["mp4", "mov", "gif"]),
        "fps": NUMBERS,
        "output_resolution": st.lists(st.integers(-5, 5000), max_size=3),
        "active_speaker_detection": ACTIVE_SPEAKER | JSON_VALUES,
        "occlusion_detection_enabled": st.booleans() | JSON_VALUES,
    },
)
SEGMENTS: st.SearchStrategy[Any] = JSON_VALUES | st.lists(
    st.fixed_dictionaries(
        {
            "startTime": NUMBERS,
            "endTime": NUMBERS,
            "audioInput": st.fixed_dictionaries(
                {"refId": st.sampled_from(["a", "b", ""]) | st.text(max_size=3)},
                optional={"startTime": NUMBERS, "endTime": NUMBERS},
            ),
        },
        optional={"optionsOverride": OPTIONS},
    ),
    max_size=3,
)
NAMES: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from(
        [
            "campaign/clip-1",
            "../escape",
            "a/../b",
            "/abs",
            "a/",
            " ",
            "",
            ".",
            "a/./b",
            "a//b",
            "x" * 201,
            "ü +%",
        ]
    ),
    st.text(max_size=30),
    JSON_VALUES,
)
RETRY_OF: st.SearchStrategy[Any] = st.one_of(
    st.text("0123456789abcdef", min_size=32, max_size=32),
    st.text("0123456789ABCDEF", min_size=32, max_size=32),
    st.text(max_size=40),
    JSON_VALUES,
)
OUTPUT_FILE_NAMES: st.SearchStrategy[Any] = st.one_of(
    st.from_regex(r"[A-Za-z0-9_-]{1,30}", fullmatch=True), st.text(max_size=30), JSON_VALUES
)
MODELS: st.SearchStrategy[Any] = st.sampled_from(sorted(KNOWN_MODELS)) | st.text(max_size=12) | JSON_VALUES


@st.composite
def manifests(draw: st.DrawFn) -> Any:
    """A JSON value, usually shaped like a generate request (with the pipeline's own fields)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)
    fields: dict[str, st.SearchStrategy[Any]] = {
        "model": MODELS,
        "options": OPTIONS,
        "segments": SEGMENTS,
        "name": NAMES,
        "retryOf": RETRY_OF,
        "outputFileName": OUTPUT_FILE_NAMES,
        "dubParams": JSON_VALUES,
        "projectId": st.uuids().map(str) | st.text(max_size=8),
    }
    manifest: dict[str, Any] = draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2))
    if draw(st.integers(0, 9)) > 0:
        manifest["input"] = draw(INPUTS)
    for name, values in fields.items():
        if draw(st.integers(0, 3)) == 0:
            manifest[name] = draw(values)
    if draw(st.integers(0, 19)) == 0:
        manifest["webhookUrl"] = draw(st.just(HOOK_URL) | JSON_VALUES)
    return manifest


@st.composite
def serialized(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> bytes:
    """A JSON value as a user's editor might save it."""
    text = json.dumps(
        draw(values),
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2, "\t"])),
    )
    return text.encode(draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "utf-32"])))


def outcome(
    created: ObjectCreated, storage: FakeStorage, planning: PlanningSettings = SETTINGS
) -> JobPlan | InvalidJobError | None:
    """`plan_job`'s answer, checked: a usable plan, None, or an InvalidJobError a user can read.
    Any other exception escapes (and fails the test)."""
    try:
        result = plan_job(created, storage, planning)
    except InvalidJobError as error:
        check_invalid(error, created)
        return error
    if result is not None:
        check_plan(result, created, storage)
    return result


def utf8(text: str) -> bool:
    """Whether S3 (a key) and DynamoDB (a string) can take `text`."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_invalid(error: InvalidJobError, created: ObjectCreated) -> None:
    assert isinstance(error.message, str)
    assert error.message
    assert error.field is None or (isinstance(error.field, str) and error.field)
    assert str(error) == (f"{error.field}: {error.message}" if error.field else error.message)
    plan = error.plan
    assert re.fullmatch(r"[0-9a-f]{32}", plan.job_id)
    assert [ref.key for ref in plan.refs][:1] == [created.key]  # the document names the object
    # The error document is written under this key: it must be one S3 can take.
    assert plan.document_key.startswith("outputs/")
    assert utf8(plan.document_key), f"the error document's key {plan.document_key!r} is not UTF-8"


def check_plan(plan: JobPlan, created: ObjectCreated, storage: FakeStorage) -> None:
    assert re.fullmatch(r"[0-9a-f]{32}", plan.job_id)
    assert created.key in [ref.key for ref in plan.refs]
    assert plan.template is not None
    assert plan.model
    assert plan.output_key.startswith("outputs/")
    assert plan.output_key.endswith(".mp4")
    for value in (plan.name, plan.output_key, plan.document_key):
        assert utf8(value), f"the plan names {value!r}, which is not UTF-8"
    for ref in plan.template.presign.values():
        assert storage.head(ref.key, ref.version_id) is not None  # pinned to a version that exists
    plan.template.model_dump_json()  # what intake stashes
    body = plan.template.render(storage, 600, HOOK_URL)
    assert body["webhookUrl"] == HOOK_URL
    for index in plan.template.presign:
        assert body["input"][index]["url"].startswith("https://presigned.example/")
    assert utf8(json.dumps(body, ensure_ascii=False))  # what dispatch sends


def planned_manifest(body: bytes, key: str = "jobs/clip.json") -> JobPlan | InvalidJobError:
    storage = media_storage()
    storage.put(key, body)
    result = outcome(storage.event(key), storage)
    assert result is not None, "a manifest is never silently ignored"
    return result


@checked(300)
@given(body=serialized(manifests()))
def test_any_json_manifest_is_a_plan_or_an_invalid_job(body: bytes) -> None:
    planned_manifest(body)


@checked(150)
@given(
    body=st.one_of(
        st.binary(max_size=400),
        st.binary(max_size=200).map(lambda raw: b"\xff\xfe\xfd" + raw),  # never UTF-8
        st.binary(max_size=200).map(lambda raw: b'{"input": "' + raw + b'"}'),
        st.binary(max_size=200).map(lambda raw: b"\xef\xbb\xbf" + raw),  # a BOM, then anything
    )
)
def test_any_bytes_as_a_manifest_are_a_plan_or_an_invalid_job(body: bytes) -> None:
    planned_manifest(body)


VALID_MANIFEST = {
    "input": [
        {"type": "video", "url": MEDIA_KEYS[0]},
        {"type": "audio", "url": f"s3://{BUCKET}/{MEDIA_KEYS[1]}"},
    ]
}


def deep_manifest(depth: int) -> bytes:
    return ('{"input": ' + nested(depth - 1, "{}") + "}").encode()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param(b"", None, id="zero-bytes"),
        pytest.param(b" \n\t ", None, id="whitespace"),
        pytest.param(b"{}", "input", id="empty-object"),
        pytest.param(b"null", None, id="null"),
        pytest.param(b"[]", None, id="array"),
        pytest.param(b'"a string"', None, id="string"),
        pytest.param(b"\xff\xfe\x00garbage", None, id="not-utf8"),
        pytest.param(  # pydantic refuses a lone surrogate in a key (in a value, see test_bug_escaped_...)
            json.dumps(VALID_MANIFEST).encode()[:-1] + b', "\\udfff": 1}', None, id="escaped-surrogate-key"
        ),
        pytest.param(b"{" + b" " * (10 * 1024 * 1024) + b"}", None, id="10MB"),
        pytest.param(deep_manifest(100), None, id="nested-100"),
        pytest.param(deep_manifest(10_000), None, id="nested-10000"),
        pytest.param(nested(10_000).encode(), None, id="bare-array-nested-10000"),
        pytest.param(json.dumps({"input": "x"}).encode(), "input", id="input-string"),
        pytest.param(json.dumps({"input": []}).encode(), "input", id="input-empty"),
        pytest.param(json.dumps({"input": [None, 1]}).encode(), "input.0", id="input-items-not-objects"),
        pytest.param(json.dumps(VALID_MANIFEST | {"options": []}).encode(), "options", id="options-list"),
        pytest.param(json.dumps(VALID_MANIFEST | {"options": None}).encode(), "options", id="options-null"),
        pytest.param(json.dumps(VALID_MANIFEST | {"model": 5}).encode(), "model", id="model-int"),
        pytest.param(json.dumps(VALID_MANIFEST | {"model": ""}).encode(), "model", id="model-empty"),
        pytest.param(
            json.dumps(VALID_MANIFEST | {"segments": {}}).encode(), "segments", id="segments-object"
        ),
        pytest.param(json.dumps(VALID_MANIFEST | {"name": 5}).encode(), "name", id="name-int"),
        pytest.param(json.dumps(VALID_MANIFEST | {"name": "../up"}).encode(), "name", id="name-dotdot"),
        pytest.param(json.dumps(VALID_MANIFEST | {"retryOf": 5}).encode(), "retryOf", id="retry-of-int"),
        pytest.param(
            json.dumps(VALID_MANIFEST | {"outputFileName": "a b"}).encode(),
            "outputFileName",
            id="bad-file-name",
        ),
        pytest.param(
            json.dumps(VALID_MANIFEST | {"webhookUrl": HOOK_URL}).encode(), "webhookUrl", id="webhook"
        ),
        pytest.param(
            json.dumps(
                {"input": [{"type": "video", "url": "media/face.mp4"}, {"type": "audio", "url": 5}]}
            ).encode(),
            "input.1.audio.url",
            id="url-int",
        ),
        pytest.param(
            json.dumps(
                {"input": [{"type": "video", "url": "ftp://x/y"}, {"type": "audio", "url": "a"}]}
            ).encode(),
            "input.0.url",
            id="other-scheme",
        ),
        pytest.param(
            json.dumps(
                {"input": [{"type": "video", "url": "s3://[/x"}, {"type": "audio", "url": "media/voice.wav"}]}
            ).encode(),
            "input.0.url",
            id="unparseable-s3-uri",
        ),
        pytest.param(
            json.dumps(
                {
                    "input": [
                        {"type": "video", "url": "s3://media-bucket/media/face.mp4?versionId=v2"},
                        {"type": "audio", "url": "media/voice.wav"},
                    ]
                }
            ).encode(),
            "input.0.url",
            id="version-of-another-object",
        ),
    ],
)
def test_corpus_manifests_are_invalid_jobs_naming_the_field(body: bytes, field: str | None) -> None:
    result = planned_manifest(body)
    assert isinstance(result, InvalidJobError)
    assert result.field == field


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(json.dumps(VALID_MANIFEST).encode(), id="plain"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(VALID_MANIFEST).encode(), id="utf8-bom"),
        pytest.param(json.dumps(VALID_MANIFEST).encode("utf-16"), id="utf16"),
        pytest.param(json.dumps(VALID_MANIFEST, indent="\t", ensure_ascii=False).encode(), id="tabs"),
        pytest.param(json.dumps(VALID_MANIFEST | {"note": "ü\u2028\x00"}).encode(), id="odd-unicode"),
        pytest.param(
            json.dumps(VALID_MANIFEST | {"x": nested(MAX_JSON_DEPTH - 2)}).encode(), id="deep-string"
        ),
        pytest.param(
            json.dumps(VALID_MANIFEST | {"x": json.loads(nested(MAX_JSON_DEPTH - 1))}).encode(),
            id="at-max-depth",
        ),
        pytest.param(json.dumps(VALID_MANIFEST | {"name": "ü/clip +%20 1"}).encode(), id="unicode-name"),
        pytest.param(
            json.dumps(
                {
                    "input": [
                        {"type": "video", "url": "s3://media-bucket/media/face.mp4?versionId=v1"},
                        {"type": "audio", "url": "/media/voice.wav"},
                    ]
                }
            ).encode(),
            id="pinned-version",
        ),
    ],
)
def test_corpus_manifests_that_are_plans(body: bytes) -> None:
    assert isinstance(planned_manifest(body), JobPlan)


def test_a_manifest_of_exactly_the_size_limit_is_read_and_one_byte_more_is_invalid() -> None:
    padding = MAX_MANIFEST_BYTES - len(json.dumps(VALID_MANIFEST | {"pad": ""}).encode())
    at_limit = json.dumps(VALID_MANIFEST | {"pad": "x" * padding}).encode()
    assert len(at_limit) == MAX_MANIFEST_BYTES
    assert isinstance(planned_manifest(at_limit), JobPlan)
    too_large = planned_manifest(at_limit[:-1] + b" }")
    assert isinstance(too_large, InvalidJobError)
    assert str(MAX_MANIFEST_BYTES) in too_large.message


# ---------------------------------------------------------------------------- S3 keys and notifications

KEY_CHARS = st.characters(codec="utf-8") | st.sampled_from(list(" +%./\\~*?#&=:"))
KEY_SEGMENTS = st.text(KEY_CHARS, max_size=10) | st.sampled_from(
    ["..", ".", "", "%20", "a+b", "%2B", "1+1=2", "ÄÖ", " lead", "trail ", "café", "日本", ".hidden"]
)
EXTENSIONS = st.sampled_from(
    [
        "mp4",
        "MP4",
        "Mp4",
        "mov",
        "MKV",
        "wav",
        "WAV",
        "mp3",
        "FLAC",
        "json",
        "JSON",
        "Json",
        "txt",
        "",
        "mp4/",
    ]
) | st.text(KEY_CHARS, max_size=4)


@st.composite
def object_keys(draw: st.DrawFn) -> str:
    prefix = draw(st.sampled_from(["inputs/", "jobs/"]))
    parts = draw(st.lists(KEY_SEGMENTS, min_size=1, max_size=4))
    extension = draw(EXTENSIONS)
    return prefix + "/".join(parts) + (f".{extension}" if extension else "")


def notification(
    key: str,
    *,
    version_id: str | None,
    etag: str | None,
    safe: str = "",
    event_name: str = "ObjectCreated:Put",
) -> dict[str, Any]:
    """One record as S3 sends it: the key URL-encoded with '+' for spaces (moto encodes '/' too)."""
    obj: dict[str, Any] = {"key": quote_plus(key, safe=safe), "size": 10, "sequencer": "0055AED6DCD90281E5"}
    if etag is not None:
        obj["eTag"] = etag
    if version_id is not None:
        obj["versionId"] = version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": EVENT_TIME,
        "eventName": event_name,
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": BUCKET, "arn": f"arn:aws:s3:::{BUCKET}"},
            "object": obj,
        },
    }


def sqs_body(*records: dict[str, Any]) -> str:
    return json.dumps({"Records": list(records)})


def partner_of(key: str) -> str | None:
    """The other half of a pair for a media key (same stem), or None."""
    stem, dot, extension = key.rpartition(".")
    if not dot or "/" in extension:
        return None
    if extension.lower() in VIDEO_EXTENSIONS:
        return f"{stem}.wav"
    if extension.lower() in AUDIO_EXTENSIONS:
        return f"{stem}.mp4"
    return None


def expect_for_key(key: str, *, with_partner: bool) -> type[JobPlan] | type[InvalidJobError] | None:
    """What planning an object must give: no key is ever silently dropped."""
    if key.endswith("/") or PurePosixPath(key).name.startswith("."):
        return None  # folder placeholders and hidden files
    if ".." in PurePosixPath(key.rpartition(".")[0] if "." in key else key).parts[1:]:
        return InvalidJobError  # a name may not climb out of outputs/
    if key.startswith("jobs/"):
        _, dot, extension = key.rpartition(".")
        return JobPlan if dot and extension.lower() == "json" else InvalidJobError
    if partner_of(key) is None:
        return InvalidJobError  # a stray file in inputs/ gets an error document
    return JobPlan if with_partner else None  # the partner's own event will start the job


def plan_key(
    key: str, *, with_partner: bool, safe: str, body: bytes = b"media"
) -> JobPlan | InvalidJobError | None:
    storage = media_storage()
    stored = storage.put(key, body)
    partner = partner_of(key)
    if with_partner and partner is not None:
        storage.put(partner)
    etag = f'"{stored.etag}"'
    (created,) = created_objects(
        sqs_body(notification(key, version_id=stored.version_id, etag=etag, safe=safe))
    )
    assert created == ObjectCreated(
        bucket=BUCKET, key=key, version_id=stored.version_id, etag=stored.etag, event_time=EVENT_TIME
    )
    return outcome(created, storage)


@checked(300)
@given(key=object_keys(), with_partner=st.booleans(), safe=st.sampled_from(["", "/"]))
def test_any_key_round_trips_through_a_notification_and_plans_or_is_invalid(
    key: str, with_partner: bool, safe: str
) -> None:
    body = json.dumps(VALID_MANIFEST).encode()
    result = plan_key(key, with_partner=with_partner, safe=safe, body=body)
    expected = expect_for_key(key, with_partner=with_partner)
    assert (type(result) if result is not None else None) is expected, result
    if isinstance(result, JobPlan) and result.kind == "pair":
        stem, partner = key.rpartition(".")[0], partner_of(key)
        assert partner is not None
        assert sorted(ref.key for ref in result.refs) == sorted([key, partner])
        assert result.name == stem.removeprefix("inputs/")
        assert result.output_key == f"outputs/{result.name}.mp4"


@pytest.mark.parametrize(
    ("key", "with_partner", "expected"),
    [
        ("inputs/clip.mp4", True, JobPlan),
        ("inputs/clip.mp4", False, None),
        ("inputs/my clip 1.mp4", True, JobPlan),
        ("inputs/1+1=2.wav", True, JobPlan),
        ("inputs/100%.wav", True, JobPlan),
        ("inputs/%20%2B%25.mp4", True, JobPlan),
        ("inputs/café/日本 ü.MOV", True, JobPlan),
        ("inputs/CLIP.MP4", True, JobPlan),
        ("inputs/voice.WAV", True, JobPlan),
        ("inputs/a.b.c.mp4", True, JobPlan),
        ("inputs/a..mp4", True, JobPlan),
        ("inputs/../escape.mp4", True, InvalidJobError),  # a name may not climb out of outputs/
        ("inputs/a/b/c/deep name.flac", True, JobPlan),
        ("inputs/noextension", False, InvalidJobError),
        ("inputs/clip.txt", False, InvalidJobError),
        ("inputs/clip.mp4.txt", False, InvalidJobError),
        ("inputs/clip.", False, InvalidJobError),
        ("inputs/a.b/c", False, InvalidJobError),
        ("inputs/\x00.mp4", True, JobPlan),
        ("inputs/", False, None),
        ("inputs/folder/", False, None),
        ("inputs/.DS_Store", False, None),
        ("inputs/a/.hidden.mp4", True, None),
        ("inputs/..", False, None),
        ("jobs/clip.json", False, JobPlan),
        ("jobs/clip.JSON", False, JobPlan),
        ("jobs/my clip+1%.json", False, JobPlan),
        ("jobs/café/日本.Json", False, JobPlan),
        ("jobs/clip.json.txt", False, InvalidJobError),
        ("jobs/clip", False, InvalidJobError),
        ("jobs/.json", False, None),
        ("jobs/", False, None),
        ("outputs/clip.mp4", False, None),
        ("elsewhere.json", False, None),
    ],
)
@pytest.mark.parametrize("safe", ["", "/"])
def test_corpus_keys(key: str, with_partner: bool, expected: type[Any] | None, safe: str) -> None:
    result = plan_key(key, with_partner=with_partner, safe=safe, body=json.dumps(VALID_MANIFEST).encode())
    assert (type(result) if result is not None else None) is expected


def test_a_key_with_a_media_extension_in_upper_case_pairs_with_a_lower_case_partner() -> None:
    result = plan_key("inputs/Clip.MKV", with_partner=True, safe="")
    assert isinstance(result, JobPlan)
    assert [ref.key for ref in result.refs] == ["inputs/Clip.MKV", "inputs/Clip.wav"]


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A record of any event, its fields now and then of the wrong type."""
    record = notification(
        draw(st.text(max_size=20)),
        version_id=draw(st.none() | st.text(max_size=10)),
        etag=draw(st.none() | st.text(max_size=10)),
        event_name=draw(
            st.sampled_from(
                ["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete"]
            )
            | st.text(max_size=12)
        ),
    )
    if draw(st.integers(0, 3)) == 0:
        path = draw(
            st.sampled_from(
                [("eventName",), ("s3",), ("s3", "bucket"), ("s3", "object"), ("s3", "object", "key")]
            )
        )
        target = record
        for part in path[:-1]:
            target = target[part]
        if draw(st.booleans()):
            target[path[-1]] = draw(JSON_VALUES)
        else:
            del target[path[-1]]
    return record


@checked(200)
@given(
    body=st.one_of(
        st.text(max_size=50),
        serialized(JSON_VALUES).map(lambda raw: raw.decode("utf-8", "replace")),
        st.lists(records(), max_size=3).map(lambda rs: json.dumps({"Records": rs})),
        st.just(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})),
        st.just(nested(10_000)),
        st.just('{"Records": ' + nested(10_000) + "}"),
    )
)
def test_any_sqs_body_is_created_objects_or_a_validation_error(body: str) -> None:
    # A ValidationError is the documented answer: the submit handler fails the record.
    created = answer_of(lambda: created_objects(body), ValidationError)
    assert isinstance(created, ValidationError) or all(isinstance(item, ObjectCreated) for item in created)


@checked(150)
@given(
    created=st.lists(object_keys(), max_size=4),
    others=st.lists(
        st.sampled_from(["ObjectRemoved:Delete", "ObjectRestore:Post", "s3:Replication"]), max_size=3
    ),
)
def test_every_created_record_and_only_those_come_out_in_order(created: list[str], others: list[str]) -> None:
    body = sqs_body(
        *[
            notification(f"other-{i}", version_id=None, etag=None, event_name=name)
            for i, name in enumerate(others)
        ],
        *[notification(key, version_id=f"v{i}", etag=None) for i, key in enumerate(created)],
    )
    assert [(item.key, item.version_id) for item in created_objects(body)] == [
        (key, f"v{i}") for i, key in enumerate(created)
    ]


# ---------------------------------------------------------------------------- webhooks

SECRET_SETS = st.sampled_from([[], [""], [CURRENT], [CURRENT, PREVIOUS], ["", PREVIOUS]])
GENERATION_BODIES = st.builds(
    lambda gen_id, status, extra: json.dumps({"id": gen_id, "status": status, **extra}).encode(),
    st.sampled_from([GENERATION_ID, "gen-2", ""]) | st.text(max_size=6),
    st.sampled_from(["COMPLETED", "failed", " processing ", "PENDING"]) | st.text(max_size=8) | JSON_VALUES,
    st.dictionaries(
        st.sampled_from(["outputUrl", "error", "error_code", "createdAt", "outputDuration", "x"]), JSON_VALUES
    ),
)
WEBHOOK_BODIES = st.one_of(
    st.binary(max_size=300),
    serialized(JSON_VALUES),
    GENERATION_BODIES,
    st.just(nested(5000).encode()),
    st.just(b"x" * (MAX_BODY_BYTES + 1)),
    st.just(b""),
)


@st.composite
def signature_headers(draw: st.DrawFn, body: bytes) -> str | None:
    now = int(time.time())
    secret = draw(st.sampled_from([CURRENT, PREVIOUS, "whsec_wrong"]))
    good = sign(secret, body, now).partition(",v1=")[2]
    timestamps = st.sampled_from(
        [
            str(now),
            str(now - 3600),
            str(now * 1000),
            "²",
            "١٢٣",
            "",
            " 12 ",
            "-1",
            "9" * 21,
            "0x10",
            str(now) + ".5",
        ]
    ) | st.text(max_size=6)
    signatures = st.sampled_from([good, good.upper(), good[:-1], "", "zz", "ü" * 64, "\x00"]) | st.text(
        max_size=8
    )
    parts = draw(
        st.lists(
            st.one_of(
                timestamps.map(lambda value: f"t={value}"),
                signatures.map(lambda value: f"v1={value}"),
                st.sampled_from(["v0=abc", "t", "v1", "=", "", " , ", "t==1"]),
                st.text(max_size=8),
            ),
            max_size=4,
        )
    )
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return None
    if choice == 1:
        return sign(secret, body, now)  # a real one (maybe under the wrong secret)
    if choice == 2:
        return draw(st.text(max_size=40))
    return ",".join(parts)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[str, str | None, str | None, bytes, list[str]]:
    job_id = draw(st.sampled_from([JOB_ID, UNKNOWN_JOB_ID]))
    valid = job_token(TOKEN_KEY, job_id)
    token = draw(
        st.one_of(
            st.none(),
            st.just(""),
            st.just(valid),
            st.just(valid),
            st.sampled_from([valid.upper(), valid + " ", " " + valid, valid[:-1], valid + "0", "0" * 64]),
            st.just(job_token(TOKEN_KEY, UNKNOWN_JOB_ID if job_id == JOB_ID else JOB_ID)),
            st.text(max_size=70),
            st.text(st.characters(min_codepoint=128), max_size=64),
            st.tuples(st.characters(), st.integers(100, 20_000)).map(lambda c: c[0] * c[1]),
        )
    )
    body = draw(WEBHOOK_BODIES)
    header = draw(signature_headers(body))
    return job_id, token, header, body, draw(SECRET_SETS)


@pytest.fixture
def hooks() -> tuple[SeededStore, FakeWorkflow]:
    store = make_tables()[0]
    store.put(
        Job.model_validate(
            {
                "jobId": JOB_ID,
                "name": "a",
                "kind": "pair",
                "status": "PROCESSING",
                "bucket": BUCKET,
                "documentKey": "outputs/a.json",
                "generationId": GENERATION_ID,
                "createdAt": EVENT_TIME,
                "updatedAt": EVENT_TIME,
                "history": [{"status": "PROCESSING", "source": "dispatch", "at": EVENT_TIME}],
            }
        )
    )
    return store, FakeWorkflow()


def webhook_receiver(store: SeededStore, workflow: FakeWorkflow, secrets: list[str]) -> WebhookReceiver:
    return WebhookReceiver(store, workflow, lambda: [TOKEN_KEY], lambda: list(secrets))


@checked(200)
@given(delivery=deliveries())
def test_any_delivery_is_a_result_or_a_4xx(
    hooks: tuple[SeededStore, FakeWorkflow], delivery: tuple[str, str | None, str | None, bytes, list[str]]
) -> None:
    store, workflow = hooks
    job_id, token, header, body, secrets = delivery
    before = store.get(JOB_ID)
    authentic = token == job_token(TOKEN_KEY, job_id)
    hooks_receiver = webhook_receiver(store, workflow, secrets)
    result = answer_of(lambda: hooks_receiver.receive(job_id, token, header, body), WebhookRejectedError)
    if isinstance(result, WebhookRejectedError):
        assert 400 <= result.status_code <= 499
        assert result.reason in get_args(RejectReason)
        assert str(result)
        assert job_token(TOKEN_KEY, job_id) not in str(result)  # never echoes a token
        if not authentic:
            assert result.status_code in (401, 403, 413)
        assert store.get(JOB_ID) == before  # a refused delivery records nothing
        return
    assert isinstance(result, WebhookResult)
    assert authentic
    assert job_id == JOB_ID
    assert len(body) <= MAX_BODY_BYTES
    generation = Generation.model_validate_json(body)
    assert generation.id == GENERATION_ID
    assert (result.applied, result.status) == (True, generation.status)
    if any(secrets):
        assert result.signed_form in ("raw", "compact")
    else:
        assert result.signed_form is None  # the token alone authenticates
    job = store.get(JOB_ID)
    assert job is not None
    assert job.status == "PROCESSING"  # a webhook never sets the status
    assert job.webhook_status == generation.status


EXTRA_GENERATION_FIELDS = st.dictionaries(
    st.text(max_size=8).map(lambda name: f"x-{name}"), FINITE_JSON, max_size=3
)


@checked(150)
@given(
    status=st.sampled_from(["COMPLETED", "FAILED", "processing", " Pending "]) | st.text(max_size=12),
    known=st.fixed_dictionaries(
        {},
        optional={
            "createdAt": st.text(max_size=24),
            "outputUrl": st.none() | st.just({}) | st.text(max_size=30),
            "error": st.none() | st.text(max_size=20),
            "error_code": st.none() | st.text(max_size=10),
            "outputDuration": st.none() | st.floats(allow_nan=False, allow_infinity=False),
            "model": st.text(max_size=8),
            "options": st.none()
            | st.just({})
            | st.dictionaries(st.text(max_size=4), FINITE_JSON, max_size=2),
        },
    ),
    extra=EXTRA_GENERATION_FIELDS,
    layout=st.sampled_from([(None, None), (2, None), (None, (", ", ": ")), ("\t", (",", ":"))]),
    ensure_ascii=st.booleans(),
    signed_form=st.sampled_from(["raw", "compact"]),
    secrets=st.sampled_from([[CURRENT], [CURRENT, PREVIOUS], ["", PREVIOUS]]),
    use_previous=st.booleans(),
)
def test_a_signed_tokened_generation_for_the_job_is_accepted(
    hooks: tuple[SeededStore, FakeWorkflow],
    status: str,
    known: dict[str, Any],
    extra: dict[str, Any],
    layout: tuple[int | str | None, tuple[str, str] | None],
    ensure_ascii: bool,
    signed_form: str,
    secrets: list[str],
    use_previous: bool,
) -> None:
    store, workflow = hooks
    document = {"id": GENERATION_ID, "status": status, **known, **extra}
    indent, separators = layout
    body = json.dumps(document, indent=indent, separators=separators, ensure_ascii=ensure_ascii).encode()
    compact = json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
    usable = [secret for secret in secrets if secret]
    secret = usable[-1] if use_previous else usable[0]
    header = sign(secret, body if signed_form == "raw" else compact, int(time.time()))
    result = webhook_receiver(store, workflow, secrets).receive(
        JOB_ID, job_token(TOKEN_KEY, JOB_ID), header, body
    )
    assert result.applied
    assert result.status == status.strip().upper()
    assert result.signed_form == ("raw" if signed_form == "raw" or compact == body else "compact")
    assert not result.woke_workflow  # no execution waits on this job
    job = store.get(JOB_ID)
    assert job is not None
    assert (job.status, job.webhook_status, job.webhook_generation_id) == (
        "PROCESSING",
        status.strip().upper(),
        GENERATION_ID,
    )


@checked(300)
@given(header=st.none() | st.text(max_size=60) | signature_headers(b"{}"))
def test_any_signature_header_parses_to_ascii_digits_or_is_a_signature_error(header: str | None) -> None:
    parsed = answer_of(lambda: parse_signature_header(header), SignatureError)
    if isinstance(parsed, SignatureError):
        assert isinstance(parsed, MissingSignatureError | MalformedSignatureError)
        return
    timestamp, signatures = parsed
    assert re.fullmatch(r"[0-9]{1,20}", timestamp)
    assert signatures


@checked(300)
@given(data=st.data(), body=WEBHOOK_BODIES, secrets=SECRET_SETS)
def test_any_signature_is_a_signed_form_or_a_signature_error(
    data: st.DataObject, body: bytes, secrets: list[str]
) -> None:
    header = data.draw(signature_headers(body))
    form = answer_of(lambda: verify_signature(body, header, secrets), SignatureError)
    if isinstance(form, SignatureError):
        assert str(form)
        return
    assert form in ("raw", "compact")
    assert any(secrets)


# ---------------------------------------------------------------------------- sync.so answers

HEADER_BYTES = st.binary(max_size=30).map(
    lambda raw: bytes(b for b in raw if b == 9 or 32 <= b <= 126 or b >= 128)
)
RETRY_AFTER = st.one_of(
    st.sampled_from(
        [
            b"",
            b"abc",
            b"-5",
            b"12",
            b" 12 ",
            b"1e999",
            b"inf",
            b"nan",
            b"0x10",
            b"Wed, 21 Oct 2015 07:28:00 GMT",
            b"Mon, 32 Jan 2020 00:00:00 GMT",
            b"Mon, 01 Jan 2020 00:00:00 +9999",
            b"Mon, 01 Jan 0 00:00:00 GMT",
            b"\xff\xfe",
        ]
    ),
    st.tuples(
        st.integers(0, 10**6),
        st.integers(0, 99),
        st.integers(0, 99),
        st.sampled_from(["GMT", "+0100", "-2400"]),
    ).map(lambda p: f"Mon, {p[1]:02d} Jan {p[0]} {p[2]:02d}:00:00 {p[3]}".encode()),
    HEADER_BYTES,
)
CONTENT_TYPES = (
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-8",
            b"application/json; charset=utf-16",
            b"text/plain; charset=nonsense",
            b"text/plain; charset=",
            b"text/html",
        ]
    )
    | HEADER_BYTES
)
GENERATION_DICTS = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["gen-1", ""]) | st.text(max_size=6),
        "status": st.sampled_from(["PENDING", "COMPLETED"]) | JSON_VALUES,
    },
    optional={
        "createdAt": st.text(max_size=10) | JSON_VALUES,
        "outputUrl": st.none() | st.just({}) | st.text(max_size=20) | JSON_VALUES,
        "outputDuration": NUMBERS | JSON_VALUES,
        "errorCode": st.text(max_size=8) | JSON_VALUES,
        "input": st.lists(st.dictionaries(st.text(max_size=4), FINITE_JSON, max_size=2), max_size=2)
        | JSON_VALUES,
    },
)
ERROR_CODES = st.sampled_from(
    [
        "concurrency_limit_reached",
        "rate_limit_exceeded",
        "IDEMPOTENCY_OUTCOME_UNKNOWN",
        *sorted(PERMANENT_CONFLICTS),
        "generation_face_not_detected",
    ]
) | st.text(max_size=8)
ERROR_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "statusCode": st.integers(0, 999) | JSON_VALUES,
        "errorCode": ERROR_CODES | JSON_VALUES,
        "code": ERROR_CODES,
        "message": st.text(max_size=20) | st.lists(st.text(max_size=8), max_size=3) | JSON_VALUES,
        "error": st.text(max_size=10) | JSON_VALUES,
        "retryAfterSeconds": st.floats() | st.integers(-5, 10**6) | st.text(max_size=4),
        "generationId": st.text(max_size=8) | JSON_VALUES,
        "activeGenerations": st.integers(-1, 10) | JSON_VALUES,
    },
)
COST_BODIES = st.fixed_dictionaries(
    {"estimatedGenerationCost": NUMBERS | JSON_VALUES},
    optional={
        "estimatedFrameCount": st.integers(-1, 10**6) | JSON_VALUES,
        "estimatedCredits": NUMBERS | JSON_VALUES,
    },
)


def json_bytes(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(lambda value: json.dumps(value).encode())


API_BODIES = st.one_of(
    st.binary(max_size=300),
    json_bytes(JSON_VALUES),
    json_bytes(GENERATION_DICTS),
    json_bytes(st.lists(GENERATION_DICTS, max_size=3)),
    json_bytes(st.fixed_dictionaries({"data": st.lists(GENERATION_DICTS, max_size=2) | JSON_VALUES})),
    json_bytes(ERROR_BODIES),
    json_bytes(COST_BODIES),
    json_bytes(st.lists(COST_BODIES, max_size=2)),
    st.sampled_from(
        [
            b"",
            nested(5000).encode(),
            b'{"a":' * 5000,
            b'"https://signed.example/out.mp4"',
            b"https://signed.example/out.mp4\n",
            b"\xff\xfe\x00",
            b'{"id": "gen-1", "status": "COMPLETED"}',
        ]
    ),
)
# Content-Encoding with a body it encodes, or one it does not (a lying header); encodings httpx
# does not know are ignored.
ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda raw: raw,
    "gzip": gzip.compress,
    "gzip-lie": lambda raw: raw,
    "deflate": zlib.compress,
    "br": lambda raw: raw,
    "zstd": lambda raw: raw,
    "x-nonsense": lambda raw: raw,
}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes  # as sent (Content-Encoding applied)
    plain: bytes  # as decoded


@st.composite
def answers(draw: st.DrawFn) -> Answer:
    status = draw(st.integers(100, 599) | st.sampled_from([200, 201, 401, 404, 408, 409, 429, 500, 503]))
    body = plain = draw(API_BODIES)
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        headers.append(
            (draw(st.sampled_from([b"retry-after", b"Retry-After", b"RETRY-AFTER"])), draw(RETRY_AFTER))
        )
    if draw(st.booleans()):
        headers.append((b"content-type", draw(CONTENT_TYPES)))
    if draw(st.integers(0, 4)) == 0:
        encoding = draw(st.sampled_from(sorted(ENCODINGS)))
        headers.append((b"content-encoding", encoding.removesuffix("-lie").encode()))
        body = ENCODINGS[encoding](body)
    headers += draw(
        st.lists(st.tuples(st.sampled_from([b"x-request-id", b"x-rate-limit", b"link"]), HEADER_BYTES))
    )
    return Answer(status, headers, body, plain)


OPERATIONS: dict[str, Callable[[SyncClient], object]] = {
    "create_generation": lambda sync: sync.create_generation(
        '{"model": "lipsync-2"}', idempotency_key="job.1"
    ),
    "get_generation": lambda sync: sync.get_generation("gen-1", wait=True, wait_timeout_seconds=5),
    "download_url": lambda sync: sync.download_url("gen-1"),
    "estimate_cost": lambda sync: sync.estimate_cost("lipsync-2", 12.5),
    "list_generations": lambda sync: sync.list_generations(status=["COMPLETED"], limit=10, cursor="gen-0"),
}
VALUE_TYPES: dict[str, type[Any]] = {
    "create_generation": Generation,
    "get_generation": Generation,
    "download_url": str,
    "estimate_cost": CostEstimateAnswer,
    "list_generations": list,
}


def api_over(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> SyncClient:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    return SyncClient("https://api.sync.example", API_KEY, transport=httpx.MockTransport(handle))


def is_permanent_refusal(status: int, error_code: str | None) -> bool:
    """What `error_from_response` documents as a permanent error: the request was not taken."""
    if status >= 500 or status in (401, 408, 429):
        return False
    return status != 409 or error_code in PERMANENT_CONFLICTS


@checked(300)
@given(operation=st.sampled_from(sorted(OPERATIONS)), answer=answers())
def test_any_sync_answer_is_a_value_or_a_sync_api_error(operation: str, answer: Answer) -> None:
    status, headers, body = answer.status, answer.headers, answer.body
    success = 200 <= status < 300
    with api_over(status, headers, body) as sync:
        value = answer_of(lambda: OPERATIONS[operation](sync), SyncApiError)
    if isinstance(value, SyncApiError):
        assert isinstance(value, SyncRetryableError | SyncPermanentError)
        assert isinstance(value.message, str)
        assert value.message
        assert API_KEY not in str(value)
        # A body that does not match its Content-Encoding may be found before the status is read.
        assert value.status_code == status or (
            isinstance(value, SyncRetryableError)
            and value.reason == "bad_response"
            and value.status_code is None
        )
        if isinstance(value, SyncRetryableError):
            assert value.reason in get_args(RetryReason)
            assert isinstance(value.outcome_uncertain, bool)
        else:
            assert is_permanent_refusal(status, value.error_code)
        if operation == "create_generation" and (success or status >= 500):
            # A 2xx we could not read, or a 5xx, may have created a generation: the retry must repeat it.
            assert isinstance(value, SyncRetryableError)
            assert value.outcome_uncertain is True
        return
    assert success  # only a success is a value
    assert isinstance(value, VALUE_TYPES[operation])
    if isinstance(value, list):
        assert all(isinstance(item, Generation) for item in value)


@checked(200)
@given(answer=answers(), operation=st.sampled_from(["POST /v2/generate", "GET /v2/generate/{id}"]))
def test_any_failed_answer_classifies_as_retryable_or_permanent(answer: Answer, operation: str) -> None:
    status = answer.status
    # httpx decodes a body when it builds a Response: one that does not match its Content-Encoding
    # never gets this far (the client's own read turns it into a bad_response error).
    headers = [(name, value) for name, value in answer.headers if name.lower() != b"content-encoding"]
    response = httpx.Response(status, headers=headers, content=answer.plain)
    error = error_from_response(response, operation)
    assert isinstance(error, SyncRetryableError | SyncPermanentError)
    assert error.message.startswith(f"{operation} answered {status}")
    assert error.status_code == status
    if isinstance(error, SyncRetryableError):
        assert isinstance(error.outcome_uncertain, bool)
    assert error.retry_after_seconds is None or isinstance(error.retry_after_seconds, float)


# ---------------------------------------------------------------------------- listing cursors

START_KEYS = st.dictionaries(
    st.sampled_from(["jobId", "status", "updatedAt"]) | st.text(max_size=6),
    st.tuples(st.sampled_from(["S", "N"]), st.text(max_size=12)).map(lambda pair: {pair[0]: pair[1]}),
    min_size=1,
    max_size=3,
)


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@checked(300)
@given(
    cursor=st.one_of(
        st.text(max_size=60),
        # Lone surrogates too: a query string may hold anything.
        st.text(st.characters(categories=["Cs"]) | st.characters(), max_size=20),
        st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/", max_size=60),
        JSON_VALUES.map(cursor_of),
        START_KEYS.map(lambda key: cursor_of(key).rstrip("=")),
        st.sampled_from(
            [
                "",
                "=",
                "====",
                cursor_of({}),
                cursor_of([]),
                base64.urlsafe_b64encode(nested(10_000).encode()).decode(),
                base64.urlsafe_b64encode(b"1" * 5000).decode(),
                base64.urlsafe_b64encode(b"\xff\xfe").decode(),
                base64.urlsafe_b64encode(b'{"jobId": {"S": "a", "N": "1"}}').decode(),
                base64.urlsafe_b64encode(b'{"jobId": {"B": "YQ=="}}').decode(),
            ]
        ),
    )
)
def test_any_cursor_is_a_start_key_or_a_value_error(cursor: str) -> None:
    start = answer_of(lambda: decode_cursor(cursor), ValueError)
    if isinstance(start, ValueError):
        assert str(start) == "the cursor is not one this API handed out"
        return
    assert isinstance(start, dict)
    assert start
    for name, value in start.items():
        assert isinstance(name, str)
        ((kind, text),) = value.items()
        assert kind in ("S", "N")
        assert isinstance(text, str)


@checked(150)
@given(start=START_KEYS)
def test_a_cursor_the_store_hands_out_decodes_to_its_start_key(start: dict[str, dict[str, str]]) -> None:
    # As DynamoJobStore.list_jobs encodes LastEvaluatedKey.
    assert decode_cursor(base64.urlsafe_b64encode(json.dumps(start).encode()).decode()) == start


# ---------------------------------------------------------------------------- bugs (they fail until fixed)


def test_bug_a_manifest_with_a_5000_digit_integer_is_an_invalid_job() -> None:
    """json.loads raises a plain ValueError ("Exceeds the limit (4300 digits) for integer string
    conversion") that _read_manifest does not catch (it catches JSONDecodeError only)."""
    body = json.dumps(VALID_MANIFEST).encode()[:-1] + b', "frames": ' + b"1" * 5000 + b"}"
    assert len(body) < MAX_MANIFEST_BYTES
    assert isinstance(planned_manifest(body), InvalidJobError)


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param(b'"note": "\\ud800"', id="in-a-value"),
        pytest.param(b'"options": {"x-custom": "\\udc80"}', id="in-options"),
        pytest.param(b'"name": "\\ud800"', id="in-the-name"),
        pytest.param(b'"name": "\\ud800", "input": "x"', id="in-the-name-of-an-invalid-job"),
    ],
)
def test_bug_escaped_lone_surrogates_in_a_manifest_are_an_invalid_job(extra: bytes) -> None:
    """Valid JSON text (ASCII bytes) whose escapes decode to a lone surrogate: kept in an extra field,
    RequestTemplate.digest() raises UnicodeEncodeError; kept in `name`, the plan (or the invalid
    job's plan) names outputs/<name>.json, which no S3 key or DynamoDB string can hold."""
    body = json.dumps(VALID_MANIFEST).encode()[:-1] + b", " + extra + b"}"
    body.decode("ascii")
    result = planned_manifest(body)  # which checks that every name the result carries is UTF-8
    assert isinstance(result, InvalidJobError)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(nested(5000).encode(), id="nested-past-the-recursion-limit"),
        pytest.param(
            b'{"id": "gen-1", "status": "COMPLETED", "note": "\\ud800"}', id="escaped-lone-surrogate"
        ),
    ],
)
@pytest.mark.parametrize("entry", ["verify_signature", "receive"])
def test_bug_a_signed_webhook_body_that_cannot_be_compacted_is_a_4xx(
    hooks: tuple[SeededStore, FakeWorkflow], body: bytes, entry: str
) -> None:
    """With a signing secret and a well-formed, fresh header whose v1 does not match the raw body,
    verify_signature's _compact() re-serialises the body outside any try: json.loads raises
    RecursionError, or json.dumps(...).encode() raises UnicodeEncodeError. Both escape receive()
    (a 500, and sync.so retries) instead of a 401 bad_signature."""
    header = f"t={int(time.time())},v1={'0' * 64}"
    if entry == "verify_signature":
        with pytest.raises(SignatureError):
            verify_signature(body, header, [CURRENT])
        return
    store, workflow = hooks
    with pytest.raises(WebhookRejectedError) as caught:
        webhook_receiver(store, workflow, [CURRENT]).receive(
            JOB_ID, job_token(TOKEN_KEY, JOB_ID), header, body
        )
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    "retry_after",
    ["Mon, 01 Jan 99999999999 00:00:00 GMT", "Mon, 01 Jan 2147483648 00:00:00 GMT"],
)
def test_bug_a_retry_after_date_past_the_c_int_range_is_a_sync_api_error(retry_after: str) -> None:
    """parse_retry_after catches TypeError and ValueError around email.utils.parsedate_to_datetime,
    which raises OverflowError ("signed integer is greater than maximum") for such a year."""
    with (
        api_over(503, [(b"retry-after", retry_after.encode())], b"") as sync,
        pytest.raises(SyncRetryableError),
    ):
        sync.create_generation('{"model": "lipsync-2"}', idempotency_key="job.1")


@pytest.mark.parametrize("data", [b"5", b"1.5", b"true"])
def test_bug_a_list_envelope_with_scalar_data_is_a_sync_api_error(data: bytes) -> None:
    """_GenerationList.items() iterates `self.root.get("data") or []`: a truthy number or true is
    not iterable (TypeError, not caught by list_generations' `except ValidationError`)."""
    with api_over(200, [], b'{"data": ' + data + b"}") as sync, pytest.raises(SyncRetryableError):
        sync.list_generations()


@pytest.mark.parametrize(
    ("operation", "status"), [("create_generation", 500), ("get_generation", 404), ("download_url", 200)]
)
@pytest.mark.parametrize("charset", ["utf-16", "utf-32"])
def test_bug_a_charset_the_body_does_not_decode_in_is_a_sync_api_error(
    operation: str, status: int, charset: str
) -> None:
    """`response.text` (error_from_response's detail, download_url's answer) raises UnicodeError
    ("UTF-16 stream does not start with BOM") for a body in a declared utf-16/utf-32 charset that
    has no BOM: httpx's decoder uses errors="replace", which does not cover the BOM check."""
    headers = [(b"content-type", f"text/plain; charset={charset}".encode())]
    with api_over(status, headers, b"upstream error page") as sync:
        value = answer_of(lambda: OPERATIONS[operation](sync), SyncApiError)
    assert isinstance(value, SyncApiError | str)


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_bug_a_body_that_does_not_decode_is_a_sync_api_error(encoding: str) -> None:
    """httpx raises httpx.DecodingError (a RequestError, not a TransportError) while reading a body
    whose Content-Encoding does not match it; SyncClient._request catches TransportError only."""

    def handle(request: httpx.Request) -> httpx.Response:
        # Streamed, as a real connection is: the client decodes while it reads.
        return httpx.Response(
            200, headers={"content-encoding": encoding}, stream=httpx.ByteStream(b'{"id": "gen-1"}')
        )

    transport = httpx.MockTransport(handle)
    with (
        SyncClient("https://api.sync.example", API_KEY, transport=transport) as sync,
        pytest.raises(SyncApiError),
    ):
        sync.get_generation("gen-1")


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        pytest.param({"retry-after": "inf"}, b"", id="retry-after-inf"),
        pytest.param({"retry-after": "1e999"}, b"", id="retry-after-1e999"),
        pytest.param(
            {}, b'{"errorCode": "rate_limit_exceeded", "retryAfterSeconds": 1e999}', id="body-1e999"
        ),
        pytest.param({}, b'{"errorCode": "rate_limit_exceeded", "retryAfterSeconds": NaN}', id="body-nan"),
    ],
)
def test_bug_non_finite_numbers_from_sync_so_are_not_a_retry_after(
    headers: dict[str, str], body: bytes
) -> None:
    """error_from_response keeps retry_after_seconds = inf or nan. The dispatcher then pauses until
    `now + inf` and boto3's serializer raises TypeError("Infinity and NaN not supported") in
    DynamoAdmission.pause (reproduced: a 429 with Retry-After: 1e999 crashes Dispatcher.run)."""
    error = error_from_response(httpx.Response(429, headers=headers, content=body), "POST /v2/generate")
    assert isinstance(error, SyncRetryableError)
    assert error.retry_after_seconds is None or (
        math.isfinite(error.retry_after_seconds) and error.retry_after_seconds >= 0
    )


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_bug_non_finite_numbers_from_sync_so_are_not_an_output_duration(number: bytes) -> None:
    """Generation.output_duration takes NaN and Infinity from sync.so's JSON; lifecycle.record_generation
    writes it to the job (F.OUTPUT_DURATION), where boto3's serializer raises TypeError("Infinity and
    NaN not supported") (reproduced with record_generation over the moto store)."""
    body = b'{"id": "gen-1", "status": "COMPLETED", "outputDuration": ' + number + b"}"
    with api_over(200, [], body) as sync:
        generation = answer_of(lambda: sync.get_generation("gen-1"), SyncApiError)
    assert isinstance(generation, SyncApiError) or (
        generation.output_duration is None or math.isfinite(generation.output_duration)
    )
