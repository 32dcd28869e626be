"""Planning a job from an object in the bucket, and submitting it exactly once."""

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from lipsync.config import LifecycleTimings, SubmitSettings
from lipsync.jobs import Job, JobStatus
from lipsync.models import TextInput
from lipsync.submission import (
    MAX_VISIBILITY_SECONDS,
    InvalidJobError,
    JobPlan,
    Submitter,
    plan_job,
    retry_delay_seconds,
)
from lipsync.sync_client import SyncRetryableError
from lipsync.webhook_auth import job_token
from tests.fakes import FakeJobStore, FakeStorage, FakeSyncApi, FakeWorkflow, Reply

BUCKET = "media-bucket"
TOKEN_KEY = "stack-token-key"
WEBHOOK_BASE = "https://hooks.example/prod/"
ENV = {
    "JOBS_TABLE": "jobs",
    "SYNC_API_BASE_URL": "https://api.sync.example",
    "SYNC_API_KEY_SECRET": "sync-api-key",
    "MEDIA_BUCKET": BUCKET,
    "WEBHOOK_TOKEN_KEY_SECRET": "webhook-token-key",
    "WEBHOOK_BASE_URL": WEBHOOK_BASE,
    "DEFAULT_MODEL": "lipsync-2",
    "DEFAULT_OPTIONS": '{"sync_mode": "bounce", "temperature": 0.5}',
    "PRESIGNED_URL_SECONDS": "7200",
    "STATE_MACHINE_ARN": "arn:aws:states:us-east-1:123456789012:stateMachine:JobLifecycle",
}
SETTINGS = SubmitSettings.from_env(ENV)
NO_DEFAULT_OPTIONS = SubmitSettings.from_env(ENV | {"DEFAULT_OPTIONS": "{}"})
TIMINGS = LifecycleTimings.model_validate(
    {
        "WEBHOOK_TIMEOUT_SECONDS": 600,
        "POLL_FIRST_INTERVAL_SECONDS": 15,
        "POLL_BACKOFF_RATE": 1.5,
        "POLL_MAX_INTERVAL_SECONDS": 300,
        "MAX_JOB_SECONDS": 3600,
    }
)
VIDEO_EXTENSIONS = ["mp4", "mov", "webm", "m4v", "mkv"]
AUDIO_EXTENSIONS = ["wav", "mp3", "m4a", "aac", "ogg", "flac"]


def plan(storage: FakeStorage, key: str, settings: SubmitSettings = SETTINGS) -> JobPlan | None:
    return plan_job(storage.event(key), storage, settings)


def planned(storage: FakeStorage, key: str, settings: SubmitSettings = SETTINGS) -> JobPlan:
    result = plan(storage, key, settings)
    assert result is not None
    assert result.request is not None
    return result


def invalid(storage: FakeStorage, key: str, settings: SubmitSettings = SETTINGS) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as caught:
        plan(storage, key, settings)
    return caught.value


def api_body(result: JobPlan) -> dict[str, Any]:
    assert result.request is not None
    return result.request.to_api()


def urls(result: JobPlan) -> list[str | None]:
    assert result.request is not None
    return [None if isinstance(item, TextInput) else item.url for item in result.request.input]


def query(url: str | None) -> dict[str, list[str]]:
    assert url is not None
    return parse_qs(urlsplit(url).query)


# ---------------------------------------------------------------------------- pairs


@pytest.mark.parametrize("video", [*VIDEO_EXTENSIONS, "MP4", "Mov", "WEBM"])
def test_every_video_extension_pairs_with_audio(video: str) -> None:
    storage = FakeStorage(BUCKET)
    storage.put(f"inputs/clip.{video}")
    storage.put("inputs/clip.wav")
    result = planned(storage, "inputs/clip.wav")
    assert [ref.key for ref in result.refs] == [f"inputs/clip.{video}", "inputs/clip.wav"]
    assert [item["type"] for item in api_body(result)["input"]] == ["video", "audio"]


@pytest.mark.parametrize("audio", [*AUDIO_EXTENSIONS, "WAV", "Mp3", "FLAC"])
def test_every_audio_extension_pairs_with_video(audio: str) -> None:
    storage = FakeStorage(BUCKET)
    storage.put(f"inputs/clip.{audio}")
    storage.put("inputs/clip.mp4")
    result = planned(storage, "inputs/clip.mp4")
    assert [ref.key for ref in result.refs] == ["inputs/clip.mp4", f"inputs/clip.{audio}"]


@pytest.mark.parametrize(
    ("first", "second"), [("inputs/a.mp4", "inputs/a.wav"), ("inputs/a.wav", "inputs/a.mp4")]
)
def test_the_first_arrival_waits_and_the_second_makes_the_plan(first: str, second: str) -> None:
    storage = FakeStorage(BUCKET)
    storage.put(first)
    assert plan(storage, first) is None
    storage.put(second)
    result = planned(storage, second)
    assert (result.kind, result.name, result.output_key, result.document_key) == (
        "pair",
        "a",
        "outputs/a.mp4",
        "outputs/a.json",
    )


def test_both_events_give_the_same_job_id_and_a_new_version_a_new_one() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/a.mp4")
    storage.put("inputs/a.wav")
    from_video = planned(storage, "inputs/a.mp4")
    from_audio = planned(storage, "inputs/a.wav")
    assert from_video.job_id == from_audio.job_id
    assert from_video.refs == from_audio.refs
    assert len(from_video.job_id) == 32

    storage.put("inputs/a.wav", b"new take")
    new_audio = planned(storage, "inputs/a.wav")
    assert new_audio.job_id != from_audio.job_id
    assert planned(storage, "inputs/a.mp4").job_id == new_audio.job_id

    storage.put("inputs/a.mp4", b"new video")
    assert planned(storage, "inputs/a.mp4").job_id not in {from_audio.job_id, new_audio.job_id}


def test_presigned_urls_are_pinned_to_the_versions_of_the_pair() -> None:
    storage = FakeStorage(BUCKET)
    video = storage.put("inputs/a.mp4")
    audio = storage.put("inputs/a.wav")
    result = planned(storage, "inputs/a.wav")
    video_url, audio_url = urls(result)
    assert video_url is not None
    assert audio_url is not None
    assert video_url.startswith("https://presigned.example/inputs/a.mp4?")
    assert audio_url.startswith("https://presigned.example/inputs/a.wav?")
    assert query(video_url)["versionId"] == [video.version_id]
    assert query(audio_url)["versionId"] == [audio.version_id]
    assert query(video_url)["X-Amz-Expires"] == ["7200"]
    assert [(ref.version_id, ref.etag) for ref in result.refs] == [
        (video.version_id, video.etag),
        (audio.version_id, audio.etag),
    ]


@pytest.mark.parametrize(
    ("stem", "name"),
    [
        ("inputs/campaign/2026/clip", "campaign/2026/clip"),
        ("inputs/my clip (take 2)", "my clip (take 2)"),
        ("inputs/café/naïve clip", "café/naïve clip"),
        ("inputs/v1.2/intro.final", "v1.2/intro.final"),
    ],
)
def test_nested_folders_spaces_and_unicode_in_stems(stem: str, name: str) -> None:
    storage = FakeStorage(BUCKET)
    storage.put(f"{stem}.mov")
    storage.put(f"{stem}.mp3")
    result = planned(storage, f"{stem}.mov")
    assert (result.name, result.output_key, result.document_key) == (
        name,
        f"outputs/{name}.mp4",
        f"outputs/{name}.json",
    )
    assert [ref.key for ref in result.refs] == [f"{stem}.mov", f"{stem}.mp3"]


@pytest.mark.parametrize(
    ("keys", "kind"),
    [
        (["inputs/a.mp4", "inputs/a.mov", "inputs/a.wav"], "videos"),
        (["inputs/a.mp4", "inputs/a.wav", "inputs/a.MP3"], "audio files"),
    ],
)
def test_two_videos_or_two_audios_for_one_stem_are_invalid(keys: list[str], kind: str) -> None:
    storage = FakeStorage(BUCKET)
    for key in keys:
        storage.put(key)
    clashing = [key for key in keys if key != ("inputs/a.wav" if kind == "videos" else "inputs/a.mp4")]
    for key in keys:  # whichever event comes last
        error = invalid(storage, key)
        for clash in clashing:
            assert clash in str(error)
        assert kind in str(error)
        assert error.plan.name == "a"
        assert error.plan.document_key == "outputs/a.json"


def test_two_videos_are_invalid_even_before_the_audio_arrives() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/a.mp4")
    storage.put("inputs/a.webm")
    error = invalid(storage, "inputs/a.webm")
    assert "inputs/a.mp4" in error.message
    assert "inputs/a.webm" in error.message


@pytest.mark.parametrize(
    "key", ["inputs/notes.txt", "inputs/clip.avi", "inputs/README", "inputs/deep/x.mp4.bak"]
)
def test_an_unsupported_file_in_inputs_is_invalid_and_named(key: str) -> None:
    storage = FakeStorage(BUCKET)
    storage.put(key)
    error = invalid(storage, key)
    assert key in str(error)
    assert error.plan.refs[0].key == key


@pytest.mark.parametrize(
    "key", ["inputs/", "inputs/campaign/", "inputs/v1.2/", "jobs/", "jobs/campaign/", "inputs/.DS_Store"]
)
def test_folder_placeholders_and_hidden_files_are_ignored(key: str) -> None:
    # The S3 console's "Create folder" makes a zero-byte object whose key ends in '/'.
    storage = FakeStorage(BUCKET)
    storage.put(key, b"")
    assert plan(storage, key) is None


def test_stems_that_only_share_a_prefix_are_not_a_pair() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/a.mp4")
    storage.put("inputs/a.b.wav")
    storage.put("inputs/ab.wav")
    assert plan(storage, "inputs/a.mp4") is None
    assert plan(storage, "inputs/a.b.wav") is None
    assert plan(storage, "inputs/ab.wav") is None


def test_a_pair_uses_the_default_model_and_options() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/a.mp4")
    storage.put("inputs/a.wav")
    body = api_body(planned(storage, "inputs/a.wav"))
    assert body["model"] == "lipsync-2"
    assert body["options"] == {"sync_mode": "bounce", "temperature": 0.5}
    assert "options" not in api_body(planned(storage, "inputs/a.wav", NO_DEFAULT_OPTIONS))
    assert planned(storage, "inputs/a.wav").warnings == []


def test_objects_outside_the_input_prefixes_are_not_jobs() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("outputs/a.mp4")
    storage.put("elsewhere/a.json")
    assert plan(storage, "outputs/a.mp4") is None
    assert plan(storage, "elsewhere/a.json") is None


# ---------------------------------------------------------------------------- manifests


def manifest(storage: FakeStorage, content: object, key: str = "jobs/m.json") -> str:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    storage.put(key, data, content_type="application/json")
    return key


def request_body(*inputs: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"input": list(inputs), **extra}


VIDEO = {"type": "video", "url": "https://cdn.example/v.mp4?sig=abc"}
AUDIO = {"type": "audio", "url": "https://cdn.example/a.wav"}


def test_https_urls_pass_through_untouched() -> None:
    storage = FakeStorage(BUCKET)
    result = planned(storage, manifest(storage, request_body(VIDEO, AUDIO)))
    assert urls(result) == [VIDEO["url"], AUDIO["url"]]
    assert (result.kind, result.name, result.output_key) == ("manifest", "m", "outputs/m.mp4")


@pytest.mark.parametrize(
    "reference",
    ["inputs/face.mp4", "/inputs/face.mp4", f"s3://{BUCKET}/inputs/face.mp4"],
)
def test_keys_and_this_buckets_s3_uris_become_pinned_presigned_urls(reference: str) -> None:
    storage = FakeStorage(BUCKET)
    video = storage.put("inputs/face.mp4")
    storage.put("inputs/face.mp4", b"newer")  # the manifest names the key: the current version counts
    current = storage.objects["inputs/face.mp4"]
    assert current.version_id != video.version_id
    result = planned(storage, manifest(storage, request_body({"type": "video", "url": reference}, AUDIO)))
    video_url, audio_url = urls(result)
    assert video_url is not None
    assert video_url.startswith("https://presigned.example/inputs/face.mp4?")
    assert query(video_url)["versionId"] == [current.version_id]
    assert query(video_url)["X-Amz-Expires"] == ["7200"]
    assert audio_url == AUDIO["url"]


def test_another_buckets_s3_uri_is_invalid_naming_the_field_and_bucket() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/face.mp4")
    key = manifest(
        storage, request_body({"type": "video", "url": "s3://other-bucket/inputs/face.mp4"}, AUDIO)
    )
    error = invalid(storage, key)
    assert error.field == "input.0.url"
    assert "other-bucket" in error.message
    assert str(error).startswith("input.0.url: ")


@pytest.mark.parametrize("url", ["http://cdn.example/a.wav", "ftp://cdn.example/a.wav", "gs://b/a.wav"])
def test_other_schemes_are_invalid(url: str) -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, {"type": "audio", "url": url}))
    error = invalid(storage, key)
    assert error.field == "input.1.url"
    assert url.split("://")[0] + "://" in error.message


@pytest.mark.parametrize(
    "reference", ["inputs/missing.wav", f"s3://{BUCKET}/inputs/missing.wav", f"s3://{BUCKET}"]
)
def test_a_missing_object_is_invalid_naming_the_key(reference: str) -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, {"type": "audio", "url": reference}))
    error = invalid(storage, key)
    assert error.field == "input.1.url"
    assert "does not exist" in error.message
    expected = reference.removeprefix(f"s3://{BUCKET}").lstrip("/")
    assert f"s3://{BUCKET}/{expected}" in error.message


def test_not_json_is_invalid_with_line_and_column() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, b'{\n  "model": "lipsync-2",\n}\n')
    error = invalid(storage, key)
    assert "jobs/m.json is not valid JSON" in error.message
    assert "(line 3, column 1)" in error.message
    assert error.plan.document_key == "outputs/m.json"


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"42", b"null"])
def test_a_manifest_that_is_not_an_object_is_invalid(content: bytes) -> None:
    storage = FakeStorage(BUCKET)
    error = invalid(storage, manifest(storage, content))
    assert "must hold a JSON object" in error.message


def test_a_manifest_that_is_not_utf8_is_invalid() -> None:
    storage = FakeStorage(BUCKET)
    error = invalid(storage, manifest(storage, b'{"model": "\xff\xfe"}'))
    assert "UTF-8" in error.message


def test_an_oversized_manifest_is_invalid() -> None:
    storage = FakeStorage(BUCKET)
    padding = "x" * (300 * 1024)
    error = invalid(storage, manifest(storage, request_body(VIDEO, AUDIO, padding=padding)))
    assert "limit" in error.message


def test_webhook_url_in_a_manifest_is_invalid() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO, webhookUrl="https://attacker.example/hook"))
    error = invalid(storage, key)
    assert error.field == "webhookUrl"
    assert "webhookUrl" in str(error)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"options": {"temperature": 3}}, "options.temperature"),
        ({"options": {"sync_mode": "wobble"}}, "options.sync_mode"),
        ({"options": "loud"}, "options"),
        ({"outputFileName": "bad name!"}, "outputFileName"),
        ({"model": ""}, "model"),
    ],
)
def test_schema_violations_are_invalid_naming_the_field(extra: dict[str, Any], field: str) -> None:
    storage = FakeStorage(BUCKET)
    error = invalid(storage, manifest(storage, request_body(VIDEO, AUDIO, **extra)))
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


def test_a_manifest_without_a_voice_is_invalid() -> None:
    storage = FakeStorage(BUCKET)
    error = invalid(storage, manifest(storage, request_body(VIDEO)))
    assert "audio or text" in error.message


def test_name_names_the_outputs_and_is_not_sent() -> None:
    storage = FakeStorage(BUCKET)
    result = planned(storage, manifest(storage, request_body(VIDEO, AUDIO, name="campaign/clip-1")))
    assert (result.name, result.output_key, result.document_key) == (
        "campaign/clip-1",
        "outputs/campaign/clip-1.mp4",
        "outputs/campaign/clip-1.json",
    )
    assert "name" not in api_body(result)


@pytest.mark.parametrize("name", ["../x", "a/../../b", "/etc/x", "", "   ", "dir/", 5, None, "x" * 201])
def test_bad_names_are_refused(name: object) -> None:
    storage = FakeStorage(BUCKET)
    content = request_body(VIDEO, AUDIO) | {"name": name}
    if name is None:  # JSON null means "no name"
        assert planned(storage, manifest(storage, content)).name == "m"
        return
    error = invalid(storage, manifest(storage, content))
    assert error.field == "name"
    assert error.plan.document_key == "outputs/m.json"  # the error lands where the user looks


def test_output_file_name_names_the_video_only() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO, name="n", outputFileName="final_cut-2"))
    result = planned(storage, key)
    assert (result.output_key, result.document_key) == ("outputs/final_cut-2.mp4", "outputs/n.json")
    assert api_body(result)["outputFileName"] == "final_cut-2"


def test_the_default_model_fills_a_missing_model_only() -> None:
    storage = FakeStorage(BUCKET)
    assert api_body(planned(storage, manifest(storage, request_body(VIDEO, AUDIO))))["model"] == "lipsync-2"
    chosen = manifest(storage, request_body(VIDEO, AUDIO, model="lipsync-2-pro"), "jobs/pro.json")
    assert api_body(planned(storage, chosen))["model"] == "lipsync-2-pro"


def test_default_options_are_merged_under_the_manifests_options() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO, options={"temperature": 0.9, "model_mode": "face"}))
    assert api_body(planned(storage, key))["options"] == {
        "sync_mode": "bounce",
        "temperature": 0.9,
        "model_mode": "face",
    }
    plain = manifest(storage, request_body(VIDEO, AUDIO), "jobs/plain.json")
    assert api_body(planned(storage, plain))["options"] == {"sync_mode": "bounce", "temperature": 0.5}
    assert "options" not in api_body(planned(storage, plain, NO_DEFAULT_OPTIONS))


def test_unknown_fields_pass_through() -> None:
    storage = FakeStorage(BUCKET)
    content = request_body(
        {**VIDEO, "futureInputFlag": True},
        {
            "type": "text",
            "provider": {"name": "elevenlabs", "voiceId": "voice-1", "script": "Hello"},
        },
        options={"brand_new_option": {"level": 2}},
        futureTopLevel=[1, 2],
        projectId="0f8fad5b-d9cb-469f-a165-70867728950e",
    )
    body = api_body(planned(storage, manifest(storage, content)))
    assert body["futureTopLevel"] == [1, 2]
    assert body["projectId"] == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert body["options"]["brand_new_option"] == {"level": 2}
    assert body["input"][0]["futureInputFlag"] is True
    assert body["input"][1] == content["input"][1]


def test_legacy_options_pass_through_with_warnings() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO, options={"pads": [0, 5, 0, 0], "speedup": 2}))
    result = planned(storage, key)
    assert api_body(result)["options"]["pads"] == [0, 5, 0, 0]
    assert any("legacy options" in warning and "pads" in warning for warning in result.warnings)


def test_a_non_json_file_under_jobs_is_invalid() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("jobs/m.yaml", b"model: lipsync-2")
    error = invalid(storage, "jobs/m.yaml")
    assert "jobs/m.yaml" in error.message
    assert ".json" in error.message


def test_an_upper_case_json_extension_is_a_manifest() -> None:
    storage = FakeStorage(BUCKET)
    assert planned(storage, manifest(storage, request_body(VIDEO, AUDIO), "jobs/M.JSON")).name == "M"


def test_a_manifest_job_id_follows_the_manifest_version() -> None:
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO))
    first = planned(storage, key).job_id
    assert planned(storage, key).job_id == first
    manifest(storage, request_body(VIDEO, AUDIO))
    assert planned(storage, key).job_id != first


# ---------------------------------------------------------------------------- Submitter

CREATED_AT = "2026-11-25T00:00:00Z"


def generation(status: int = 201, gen_id: str = "gen-1") -> httpx.Response:
    return httpx.Response(status, json={"id": gen_id, "status": "PENDING", "createdAt": CREATED_AT})


def api_error(status: int, code: str, message: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"statusCode": status, "errorCode": code, "message": message, **extra})


def time_out(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("slow", request=request)


@dataclass
class Rig:
    store: FakeJobStore
    storage: FakeStorage
    workflow: FakeWorkflow
    api: FakeSyncApi
    submitter: Submitter

    def handle(self, key: str) -> tuple[str, Job | None]:
        return self.submitter.handle(self.storage.event(key))

    def pair(self) -> str:
        """Upload a pair; the audio's key (its event makes the job)."""
        self.storage.put("inputs/a.mp4", b"video bytes")
        self.storage.put("inputs/a.wav", b"audio bytes")
        return "inputs/a.wav"


def rig(*replies: Reply) -> Rig:
    store, storage, workflow = FakeJobStore(), FakeStorage(BUCKET), FakeWorkflow()
    api = FakeSyncApi(*replies)
    submitter = Submitter(SETTINGS, TIMINGS, store, storage, api.client(), workflow, TOKEN_KEY)
    return Rig(store, storage, workflow, api, submitter)


def sent_body(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


def test_a_pair_makes_one_post_with_the_job_id_as_key_and_a_tokened_webhook_url() -> None:
    r = rig(generation())
    r.storage.put("inputs/a.mp4")
    assert r.handle("inputs/a.mp4") == ("waiting", None)
    assert r.api.requests == []
    r.storage.put("inputs/a.wav")
    outcome, job = r.handle("inputs/a.wav")
    assert outcome == "submitted"
    assert job is not None
    (post,) = r.api.posts()
    assert post.url.path == "/v2/generate"
    assert post.headers["Idempotency-Key"] == job.job_id
    body = sent_body(post)
    assert body["webhookUrl"] == (
        f"https://hooks.example/prod/webhooks/sync/{job.job_id}?token={job_token(TOKEN_KEY, job.job_id)}"
    )
    assert body["model"] == "lipsync-2"
    assert [item["url"].split("?")[0] for item in body["input"]] == [
        "https://presigned.example/inputs/a.mp4",
        "https://presigned.example/inputs/a.wav",
    ]


def test_five_duplicate_deliveries_make_one_post_and_one_execution() -> None:
    r = rig(generation())
    key = r.pair()
    outcomes = [r.handle(key)[0] for _ in range(5)]
    assert outcomes == ["submitted", "duplicate", "duplicate", "duplicate", "duplicate"]
    assert len(r.api.posts()) == 1
    # Every delivery (re)starts the execution by name; Step Functions makes the repeats no-ops.
    job_id = r.workflow.starts[0][0]
    assert [started for started, _ in r.workflow.starts] == [job_id] * 5
    assert list(r.workflow.executions) == [job_id]
    # The partner's event is the same job too.
    assert r.handle("inputs/a.mp4")[0] == "duplicate"
    assert len(r.api.posts()) == 1


def test_an_event_without_a_version_id_is_the_same_job() -> None:
    r = rig(generation())
    key = r.pair()
    bare = r.storage.event(key).model_copy(update={"version_id": None})
    outcome, job = r.submitter.handle(bare)
    assert outcome == "submitted"
    assert job is not None
    assert r.handle(key) == ("duplicate", r.store.get(job.job_id))
    assert r.handle("inputs/a.mp4")[0] == "duplicate"
    assert len(r.api.posts()) == 1
    del r.storage.objects[key]  # deleted before the (versionless) event was processed
    assert r.submitter.handle(bare) == ("ignored", None)


def test_a_201_records_pending_and_starts_the_execution() -> None:
    r = rig(generation(gen_id="gen-77"))
    before = datetime.now(UTC)
    outcome, job = r.handle(r.pair())
    after = datetime.now(UTC)
    assert outcome == "submitted"
    assert job is not None
    stored = r.store.get(job.job_id)
    assert stored is not None
    assert (stored.status, stored.generation_id) == (JobStatus.PENDING, "gen-77")
    assert stored.submitted_at is not None
    assert [(entry.status, entry.source) for entry in stored.history] == [
        ("QUEUED", "submit"),
        ("PENDING", "submit"),
    ]
    assert stored.request_body is not None
    assert json.loads(stored.request_body) == sent_body(r.api.posts()[0])
    assert stored.output_key == "outputs/a.mp4"
    ((started, execution),) = r.workflow.starts
    assert started == job.job_id
    deadline = datetime.fromisoformat(execution["poll"].pop("deadline"))
    assert before + timedelta(seconds=3600) <= deadline <= after + timedelta(seconds=3600)
    assert execution == {
        "jobId": job.job_id,
        "generationId": "gen-77",
        "webhookTimeoutSeconds": 600,
        "poll": {"firstIntervalSeconds": 15, "backoffRate": 1.5, "maxIntervalSeconds": 300},
        "reconcile": {"attempt": 0, "terminal": False, "nextWaitSeconds": 15},
    }


@pytest.mark.parametrize(
    ("reply", "retry_after"),
    [
        (api_error(429, "concurrency_limit_reached", "busy", retryAfterSeconds=42), 42.0),
        (api_error(429, "rate_limit_exceeded", "slow down"), None),
        (api_error(500, "internal_error", "oops"), None),
        (httpx.Response(503, text="unavailable"), None),
        (api_error(503, "IDEMPOTENCY_OUTCOME_UNKNOWN", "unknown", generationId="gen-9"), None),
        (time_out, None),
    ],
)
def test_retryable_errors_propagate_and_the_retry_resends_the_stored_body(
    reply: Reply, retry_after: float | None
) -> None:
    r = rig(reply, reply, generation())
    key = r.pair()
    for attempt in (1, 2):
        with pytest.raises(SyncRetryableError) as caught:
            r.handle(key)
        assert caught.value.retry_after_seconds == retry_after
        (job,) = r.store.list_jobs(status=None, limit=10, cursor=None)[0]
        assert (job.status, job.submit_attempts, job.generation_id) == (JobStatus.QUEUED, attempt, None)
        assert job.last_error
        assert r.workflow.starts == []
        r.storage.signature = f"re-signed-{attempt}"  # a fresh plan would carry different URLs
    outcome, done = r.handle(key)
    assert outcome == "submitted"
    assert done is not None
    first, second, third = r.api.posts()
    assert first.content == second.content == third.content
    assert b"re-signed" not in third.content
    assert {post.headers["Idempotency-Key"] for post in (first, second, third)} == {done.job_id}
    assert (done.status, done.submit_attempts) == (JobStatus.PENDING, 2)
    assert len(r.workflow.starts) == 1


def test_a_retry_resends_byte_identical_numbers_after_the_store_round_trip() -> None:
    # DynamoDB gives 2.0 back as 2. The first POST must already be what later retries send
    # (the stored body), or sync.so sees the same Idempotency-Key with a different body.
    r = rig(api_error(429, "rate_limit_exceeded", "slow down"), generation())
    options = {"fps": 30.0, "pads": [0.0, 5.0, 0.0, 0.0], "brand_new_scale": 2.0}
    manifest(r.storage, request_body(VIDEO, AUDIO, options=options), "jobs/numbers.json")
    with pytest.raises(SyncRetryableError):
        r.handle("jobs/numbers.json")
    assert r.handle("jobs/numbers.json")[0] == "submitted"
    first, retry = r.api.posts()
    assert first.content == retry.content


def test_a_half_submitted_job_is_resubmitted_with_its_stored_body() -> None:
    r = rig(generation())
    key = r.pair()
    # Seed: a QUEUED record without generationId, as if the Lambda died after recording it.
    planned_job = plan(r.storage, key)
    assert planned_job is not None
    stored_body = {
        "model": "lipsync-2",
        "input": [
            {"type": "video", "url": "https://presigned.example/inputs/a.mp4?X-Amz-Signature=original"},
            {"type": "audio", "url": "https://presigned.example/inputs/a.wav?X-Amz-Signature=original"},
        ],
        "webhookUrl": f"{WEBHOOK_BASE}webhooks/sync/{planned_job.job_id}?token=t",
    }
    r.store.put(
        Job.model_validate(
            {
                "jobId": planned_job.job_id,
                "name": "a",
                "kind": "pair",
                "status": "QUEUED",
                "bucket": BUCKET,
                "documentKey": "outputs/a.json",
                "outputKey": "outputs/a.mp4",
                "createdAt": CREATED_AT,
                "updatedAt": CREATED_AT,
                "requestBody": json.dumps(stored_body),
            }
        )
    )
    outcome, job = r.handle(key)
    assert outcome == "submitted"
    assert job is not None
    (post,) = r.api.posts()
    assert sent_body(post) == stored_body
    assert post.headers["Idempotency-Key"] == planned_job.job_id
    assert job.status == JobStatus.PENDING


def test_a_422_is_rejected_with_the_apis_error_and_a_document() -> None:
    message = "The provided video URL is inaccessible."
    r = rig(api_error(422, "generation_input_video_inaccessible", message))
    outcome, job = r.handle(r.pair())
    assert outcome == "rejected"
    assert job is not None
    stored = r.store.get(job.job_id)
    assert stored is not None
    assert stored.status == JobStatus.REJECTED
    assert stored.error is not None
    assert stored.error.code == "generation_input_video_inaccessible"
    assert message in stored.error.message
    assert stored.finished_at is not None
    assert (stored.history[-1].status, stored.history[-1].source) == ("REJECTED", "submit")
    document = r.storage.documents["outputs/a.json"]
    assert document["status"] == "REJECTED"
    assert document["error"] == stored.error.model_dump(exclude_none=True)
    assert r.workflow.starts == []
    # A redelivery changes nothing and pays nothing.
    assert r.handle("inputs/a.wav")[0] == "duplicate"
    assert len(r.api.posts()) == 1
    assert r.workflow.starts == []


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "unauthorized"), (402, "free_tier_generations_exhausted"), (403, "forbidden")],
)
def test_account_errors_fail_the_job(status: int, code: str) -> None:
    r = rig(api_error(status, code, "account problem"))
    outcome, job = r.handle(r.pair())
    assert outcome == "failed"
    assert job is not None
    assert job.status == JobStatus.FAILED
    assert job.error is not None
    assert job.error.code == code
    assert r.storage.documents["outputs/a.json"]["status"] == "FAILED"
    assert r.workflow.starts == []


def test_an_invalid_manifest_is_recorded_and_written_without_a_post() -> None:
    r = rig(generation())
    manifest(r.storage, request_body(VIDEO, AUDIO, options={"temperature": 3}), "jobs/bad.json")
    outcome, job = r.handle("jobs/bad.json")
    assert outcome == "invalid"
    assert job is not None
    stored = r.store.get(job.job_id)
    assert stored is not None
    assert stored.status == JobStatus.INVALID
    assert stored.error is not None
    assert stored.error.field == "options.temperature"
    assert [(entry.status, entry.source) for entry in stored.history] == [("INVALID", "submit")]
    document = r.storage.documents["outputs/bad.json"]
    assert document["status"] == "INVALID"
    assert document["error"]["field"] == "options.temperature"
    assert document["error"]["message"] == stored.error.message
    assert r.api.requests == []
    assert r.workflow.starts == []
    assert r.handle("jobs/bad.json")[0] == "invalid"  # a redelivery: same record
    assert len(r.store.items) == 1


def test_an_invalid_pair_is_recorded_with_the_reason() -> None:
    r = rig(generation())
    r.storage.put("inputs/a.mp4")
    r.storage.put("inputs/a.mov")
    r.storage.put("inputs/a.wav")
    outcome, job = r.handle("inputs/a.wav")
    assert outcome == "invalid"
    assert job is not None
    assert job.status == JobStatus.INVALID
    document = r.storage.documents["outputs/a.json"]
    assert "inputs/a.mov" in document["error"]["message"]
    assert "inputs/a.mp4" in document["error"]["message"]
    assert r.api.requests == []


def test_input_objects_are_never_modified_or_deleted() -> None:
    r = rig(api_error(422, "generation_input_validation_failed", "no"))
    key = r.pair()
    r.storage.put("inputs/b.txt")
    manifest(r.storage, b"not json", "jobs/broken.json")
    inputs_before = {k: v for k, v in r.storage.objects.items() if not k.startswith("outputs/")}
    versions_before = dict(r.storage.versions)
    for handled in (key, "inputs/b.txt", "jobs/broken.json", key):
        r.handle(handled)
    assert {k: v for k, v in r.storage.objects.items() if not k.startswith("outputs/")} == inputs_before
    assert all(r.storage.versions[version] == stored for version, stored in versions_before.items())
    assert all(written.startswith("outputs/") for written in r.storage.writes)


def test_objects_of_another_bucket_or_outside_the_prefixes_are_ignored() -> None:
    r = rig(generation())
    r.pair()
    foreign = r.storage.event("inputs/a.wav").model_copy(update={"bucket": "other-bucket"})
    assert r.submitter.handle(foreign) == ("ignored", None)
    r.storage.put("outputs/x.mp4")
    assert r.handle("outputs/x.mp4") == ("ignored", None)
    assert r.api.requests == []
    assert r.store.items == {}


def test_documents_and_public_views_never_show_urls_tokens_or_task_tokens() -> None:
    r = rig(generation(), api_error(422, "generation_input_video_inaccessible", "The video is inaccessible."))
    _, job = r.handle(r.pair())
    assert job is not None
    token = job_token(TOKEN_KEY, job.job_id)
    secret_job = r.store.set_fields(
        job.job_id, {"taskToken": "task-token-secret", "outputUrl": "https://cdn.sync.example/out.mp4?sig=s"}
    )
    view = json.dumps(secret_job.public_view())
    for secret in ("presigned.example", "X-Amz-Signature", token, "task-token-secret", "cdn.sync.example"):
        assert secret not in view
    r.storage.put("inputs/b.mp4")
    r.storage.put("inputs/b.wav")
    assert r.handle("inputs/b.wav")[0] == "rejected"
    document = json.dumps(r.storage.documents["outputs/b.json"])
    assert "presigned.example" not in document
    assert "token=" not in document


def test_retry_delay_honours_retry_after() -> None:
    error = SyncRetryableError("busy", reason="concurrency", retry_after_seconds=42)
    delays = {retry_delay_seconds(error, receive_count=count) for count in range(1, 20) for _ in range(5)}
    assert min(delays) >= 43
    assert max(delays) <= 42 + 42 / 4 + 1


@pytest.mark.parametrize(("receive_count", "base"), [(1, 2), (2, 4), (3, 8), (5, 32), (10, 900), (40, 900)])
def test_retry_delay_backs_off_exponentially_with_a_cap(receive_count: int, base: int) -> None:
    error = SyncRetryableError("server", reason="server")
    for _ in range(20):
        delay = retry_delay_seconds(error, receive_count)
        assert base + 1 <= delay <= base + base / 4 + 1


def test_retry_delay_never_exceeds_the_longest_visibility_timeout() -> None:
    error = SyncRetryableError("busy", reason="rate_limit", retry_after_seconds=10 * 24 * 3600)
    assert retry_delay_seconds(error, 1) == MAX_VISIBILITY_SECONDS
