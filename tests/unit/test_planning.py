"""Planning a job from an object in the bucket: pairs, manifests, and every way they can be wrong.

Nothing is presigned when a job is planned; `rendered` shows the body dispatch would send."""

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from lipsync.config import PlanningSettings
from lipsync.queue.planning import InvalidJobError, JobPlan, plan_job
from tests.fakes import FakeStorage

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
SETTINGS = PlanningSettings.from_env(ENV)
NO_DEFAULT_OPTIONS = PlanningSettings.from_env(ENV | {"DEFAULT_OPTIONS": "{}"})
PRESIGN_SECONDS = 7200
VIDEO_EXTENSIONS = ["mp4", "mov", "webm", "m4v", "mkv"]
AUDIO_EXTENSIONS = ["wav", "mp3", "m4a", "aac", "ogg", "flac"]


def plan(storage: FakeStorage, key: str, settings: PlanningSettings = SETTINGS) -> JobPlan | None:
    return plan_job(storage.event(key), storage, settings)


def planned(storage: FakeStorage, key: str, settings: PlanningSettings = SETTINGS) -> JobPlan:
    result = plan(storage, key, settings)
    assert result is not None
    assert result.template is not None
    return result


def invalid(storage: FakeStorage, key: str, settings: PlanningSettings = SETTINGS) -> InvalidJobError:
    with pytest.raises(InvalidJobError) as caught:
        plan(storage, key, settings)
    return caught.value


def api_body(result: JobPlan) -> dict[str, Any]:
    """What the plan stores: the request without presigned URLs and without the webhook."""
    assert result.template is not None
    return result.template.body


def rendered(result: JobPlan, storage: FakeStorage) -> dict[str, Any]:
    """The body dispatch sends: URLs presigned then (as the fake storage signs them)."""
    assert result.template is not None
    return result.template.render(storage, PRESIGN_SECONDS, "https://hooks.example/x")


def urls(result: JobPlan, storage: FakeStorage | None = None) -> list[str | None]:
    body = rendered(result, storage or FakeStorage(BUCKET))
    return [item.get("url") for item in body["input"]]


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
    video_url, audio_url = urls(result, storage)
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
    video_url, audio_url = urls(result, storage)
    assert video_url is not None
    assert video_url.startswith("https://presigned.example/inputs/face.mp4?")
    assert query(video_url)["versionId"] == [current.version_id]
    assert query(video_url)["X-Amz-Expires"] == ["7200"]
    assert audio_url == AUDIO["url"]


def test_an_s3_uri_may_pin_an_older_version() -> None:
    storage = FakeStorage(BUCKET)
    old = storage.put("inputs/face.mp4")
    storage.put("inputs/face.mp4", b"newer")
    reference = f"s3://{BUCKET}/inputs/face.mp4?versionId={old.version_id}"
    result = planned(storage, manifest(storage, request_body({"type": "video", "url": reference}, AUDIO)))
    video_url, _ = urls(result, storage)
    assert query(video_url or "")["versionId"] == [old.version_id]


def test_a_missing_version_is_invalid_naming_it() -> None:
    storage = FakeStorage(BUCKET)
    storage.put("inputs/face.mp4")
    reference = f"s3://{BUCKET}/inputs/face.mp4?versionId=gone"
    error = invalid(storage, manifest(storage, request_body({"type": "video", "url": reference}, AUDIO)))
    assert (error.field, error.message) == (
        "input.0.url",
        f"s3://{BUCKET}/inputs/face.mp4 (version gone) does not exist",
    )


def test_retry_of_names_the_job_a_manifest_re_runs() -> None:
    storage = FakeStorage(BUCKET)
    result = planned(storage, manifest(storage, request_body(VIDEO, AUDIO) | {"retryOf": "ab" * 16}))
    assert result.retry_of == "ab" * 16
    assert "retryOf" not in api_body(result)  # the pipeline's field, never sent to sync.so
    error = invalid(storage, manifest(storage, request_body(VIDEO, AUDIO) | {"retryOf": "job-1"}))
    assert error.field == "retryOf"


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


def test_a_manifest_job_id_follows_what_it_asks_not_which_upload_asked() -> None:
    """Issue 14, item 15: job identity came from the object version, so the same folder sent twice
    made new paid jobs. Now the same bytes asking the same request are the same job."""
    storage = FakeStorage(BUCKET)
    key = manifest(storage, request_body(VIDEO, AUDIO))
    first = planned(storage, key).job_id
    assert planned(storage, key).job_id == first
    manifest(storage, request_body(VIDEO, AUDIO))  # the same bytes again: a new version
    assert planned(storage, key).job_id == first
    manifest(storage, request_body(VIDEO, AUDIO) | {"model": "lipsync-2-pro"})
    assert planned(storage, key).job_id != first
