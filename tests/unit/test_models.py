"""The generate API models: the seed page's shapes, every option, and the strict/lenient split."""

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lipsync.syncso.models import (
    ApiErrorBody,
    GenerateRequest,
    Generation,
    GenerationStatus,
    is_terminal,
)

SEED_PAGE = Path(__file__).parents[2].parent / "shared" / "seed" / "sync-generate-api-page.txt"
VIDEO = {"type": "video", "url": "https://example.com/v.mp4"}
AUDIO = {"type": "audio", "url": "https://example.com/a.wav"}


def seed_request_body() -> dict[str, Any]:
    text = SEED_PAGE.read_text()
    return json.loads(text.split("--data '", 1)[1].split("'", 1)[0])


def seed_response_body() -> dict[str, Any]:
    text = SEED_PAGE.read_text()
    start = text.index('{\n"id"')
    end = text.index("Generation Status Updates")
    return json.loads(text[start:end])


def request(**overrides: Any) -> dict[str, Any]:
    return {"model": "lipsync-2", "input": [VIDEO, AUDIO], **overrides}


def test_seed_request_parses_and_serialises_back_unchanged() -> None:
    body = seed_request_body()
    parsed = GenerateRequest.model_validate(body)
    assert parsed.options is not None
    assert parsed.options.pads == [0, 5, 0, 0]
    assert parsed.options.output_resolution == (1280, 720)
    assert parsed.to_api() == body
    options = parsed.to_api()["options"]
    assert [type(options[name]) for name in ("speedup", "fps")] == [int, int]  # ints stay ints


def test_seed_request_warns_about_its_legacy_options() -> None:
    warnings = GenerateRequest.model_validate(seed_request_body()).warnings()
    assert warnings == [
        "legacy options passed through unchanged: pads, speedup, output_format, fps, output_resolution, "
        "active_speaker"
    ]


def test_seed_response_shape_parses_with_empty_object_placeholders() -> None:
    generation = Generation.model_validate(seed_response_body())
    assert generation.status == "PENDING"
    assert generation.output_url is None
    assert generation.webhook_url is None
    assert generation.output_duration is None
    assert generation.error == "<string>"
    assert not generation.is_terminal


@pytest.mark.parametrize("model", ["sync-3", "lipsync-2", "lipsync-2-pro", "lipsync-1.9.0-beta", "react-1"])
def test_current_models_need_no_warning(model: str) -> None:
    assert GenerateRequest.model_validate(request(model=model)).warnings() == []


@pytest.mark.parametrize("model", ["lipsync-1.8.0", "lipsync-1.7.1", "lipsync-1.6.0"])
def test_legacy_models_pass_with_a_warning(model: str) -> None:
    assert GenerateRequest.model_validate(request(model=model)).warnings() == [
        f"model {model} is legacy; sync.so may reject it"
    ]


def test_unknown_model_passes_through_with_a_warning() -> None:
    parsed = GenerateRequest.model_validate(request(model="lipsync-9-future"))
    assert parsed.to_api()["model"] == "lipsync-9-future"
    assert "not one we know" in parsed.warnings()[0]


def test_every_current_option_round_trips() -> None:
    options = {
        "sync_mode": "remap",
        "temperature": 0.3,
        "active_speaker_detection": {
            "auto_detect": False,
            "frame_number": 12,
            "coordinates": [100, 200],
            "bounding_boxes": [[1, 2, 3, 4], None],
            "bounding_boxes_url": "https://example.com/boxes.json",
            "v3": True,
        },
        "occlusion_detection_enabled": True,
        "model_mode": "head",
        "prompt": "happy",
    }
    body = request(
        model="react-1",
        options=options,
        webhookUrl="https://hooks.example.com/x",
        outputFileName="my_output-1",
        projectId="3f2b8a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        futureField={"kept": True},
    )
    parsed = GenerateRequest.model_validate(body)
    assert parsed.to_api() == body
    assert parsed.warnings() == []


def test_text_input_with_elevenlabs_and_asset_ids() -> None:
    body = {
        "model": "lipsync-2",
        "input": [
            {"type": "video", "assetId": "asset-1", "refId": "v"},
            {
                "type": "text",
                "provider": {
                    "name": "elevenlabs",
                    "voiceId": "voice-1",
                    "script": "Hello there",
                    "stability": 0.4,
                    "similarityBoost": 0.8,
                },
            },
        ],
    }
    assert GenerateRequest.model_validate(body).to_api() == body


def test_image_input_needs_sync_3() -> None:
    image = {"type": "image", "url": "https://example.com/face.png"}
    assert GenerateRequest.model_validate({"model": "sync-3", "input": [image, AUDIO]})
    with pytest.raises(ValidationError, match="image input needs model sync-3"):
        GenerateRequest.model_validate({"model": "lipsync-2", "input": [image, AUDIO]})


def test_top_level_segments_allow_several_voices_with_unique_ref_ids() -> None:
    body = request(
        input=[VIDEO, {**AUDIO, "refId": "a"}, {**AUDIO, "refId": "b"}],
        segments=[
            {"startTime": 0, "endTime": 2.5, "audioInput": {"refId": "a"}},
            {
                "startTime": 2.5,
                "endTime": 5,
                "audioInput": {"refId": "b", "startTime": 0, "endTime": 2.5},
                "optionsOverride": {"sync_mode": "cut_off", "temperature": 0.2},
            },
        ],
    )
    assert GenerateRequest.model_validate(body).to_api() == body


@pytest.mark.parametrize(
    ("segments", "voices", "message"),
    [
        ([{"startTime": 3, "endTime": 1, "audioInput": {"refId": "a"}}], ["a"], "must be after startTime"),
        ([{"startTime": 0, "endTime": 1, "audioInput": {"refId": "zzz"}}], ["a"], "names no input"),
        ([{"startTime": 0, "endTime": 1, "audioInput": {"refId": "a"}}], ["a", "a"], "must be unique"),
        ([{"startTime": 0, "endTime": 1, "audioInput": {"refId": "a"}}], [None], "needs a refId"),
        ([{"startTime": -1, "endTime": 1, "audioInput": {"refId": "a"}}], ["a"], "greater than or equal"),
    ],
)
def test_bad_segments_are_refused(segments: list[Any], voices: list[str | None], message: str) -> None:
    inputs = [VIDEO] + [{**AUDIO, "refId": ref} if ref else AUDIO for ref in voices]
    with pytest.raises(ValidationError, match=message):
        GenerateRequest.model_validate(request(input=inputs, segments=segments))


def test_legacy_per_input_segments_are_accepted_and_checked() -> None:
    video = {**VIDEO, "segments_secs": [[0, 1.5], [2, 3]], "segments_frames": [[0, 30]]}
    parsed = GenerateRequest.model_validate(request(input=[video, AUDIO]))
    assert parsed.to_api()["input"][0]["segments_secs"] == [[0, 1.5], [2, 3]]
    assert "legacy per-input segments" in parsed.warnings()[0]
    with pytest.raises(ValidationError, match="start < end"):
        GenerateRequest.model_validate(request(input=[{**VIDEO, "segments_secs": [[2, 1]]}, AUDIO]))


def test_dubbing_takes_one_video_and_no_voice() -> None:
    dub = {"providerName": "elevenlabs", "targetLang": "es", "sourceLang": "auto"}
    assert GenerateRequest.model_validate({"model": "lipsync-2", "input": [VIDEO], "dubParams": dub})
    with pytest.raises(ValidationError, match="dubParams generates the voice"):
        GenerateRequest.model_validate(request(dubParams=dub))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (request(input=[VIDEO]), "exactly one audio or text item, got 0"),
        (request(input=[VIDEO, AUDIO, AUDIO]), "exactly one audio or text item, got 2"),
        (request(input=[AUDIO]), "exactly one video or image item, got 0"),
        (request(input=[VIDEO, VIDEO, AUDIO]), "exactly one video or image item, got 2"),
        (request(input=[{"type": "video"}, AUDIO]), "needs a url or an assetId"),
        (request(input=[VIDEO, {"type": "smell", "url": "x"}]), "does not match any of the expected tags"),
        (request(options={"temperature": 1.5}), "less than or equal to 1"),
        (request(options={"sync_mode": "stretch"}), "sync_mode"),
        (request(options={"model_mode": "body"}), "model_mode"),
        (request(options={"prompt": "bored"}), "prompt"),
        (request(options={"speedup": 5}), "less than or equal to 4"),
        (request(options={"output_format": "avi"}), "output_format"),
        (request(options={"pads": [0, 1]}), "at least 4"),
        (request(options={"output_resolution": [1280, 0]}), "greater than 0"),
        (request(options={"fps": 0}), "greater than 0"),
        (request(outputFileName="bad name.mp4"), "outputFileName"),
        (request(projectId="not-a-uuid"), "projectId"),
        (request(model=""), "at least 1 character"),
        ({"input": [VIDEO, AUDIO]}, "model"),
    ],
)
def test_certain_mistakes_are_refused_with_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        GenerateRequest.model_validate(body)


def test_text_script_limit() -> None:
    text = {"type": "text", "provider": {"name": "elevenlabs", "voiceId": "v", "script": "x" * 5001}}
    with pytest.raises(ValidationError, match="at most 5000"):
        GenerateRequest.model_validate(request(input=[VIDEO, text]))


@pytest.mark.parametrize("status", [s.value for s in GenerationStatus])
def test_every_documented_status_parses(status: str) -> None:
    generation = Generation.model_validate({"id": "g", "status": status.lower()})
    assert generation.status == status
    assert generation.is_terminal == (status not in {"PENDING", "PROCESSING"})


def test_unknown_status_counts_as_terminal() -> None:
    assert is_terminal("ARCHIVED")
    assert Generation.model_validate({"id": "g", "status": "ARCHIVED"}).is_terminal


def test_generation_reads_both_error_code_spellings_and_output_url_aliases() -> None:
    webhook = Generation.model_validate({"id": "g", "status": "FAILED", "error_code": "generation_timeout"})
    polled = Generation.model_validate({"id": "g", "status": "FAILED", "errorCode": "generation_timeout"})
    assert webhook.error_code == polled.error_code == "generation_timeout"
    renamed = Generation.model_validate({"id": "g", "status": "COMPLETED", "outputMediaUrl": "https://o"})
    assert renamed.output_url == "https://o"
    assert renamed.to_api()["outputUrl"] == "https://o"


def test_api_error_bodies_parse_in_every_documented_shape() -> None:
    rate = ApiErrorBody.model_validate(
        {
            "statusCode": 429,
            "errorCode": "concurrency_limit_reached",
            "message": "Too many",
            "activeGenerations": 3,
            "concurrencyLimit": 3,
            "retryAfterSeconds": 12,
            "upgradeUrl": "https://sync.so/pricing",
        }
    )
    assert (rate.error_code, rate.retry_after_seconds, rate.concurrency_limit) == (
        "concurrency_limit_reached",
        12,
        3,
    )
    listed = ApiErrorBody.model_validate({"statusCode": 400, "message": ["a is bad", "b is bad"]})
    assert listed.text == "a is bad; b is bad"
    bare = ApiErrorBody.model_validate({"message": "Unauthorized", "statusCode": 401})
    assert (bare.error_code, bare.text) == (None, "Unauthorized")
