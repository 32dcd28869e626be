"""Cross-check against the official SDK (PyPI `syncsdk`, imported as `sync`).

Requests our models build must validate as the SDK's CreateGenerationDto and survive its
serialisation unchanged where the two overlap. (Responses and webhook bodies from the
emulator are checked against the SDK's Generation in tests/integration.)
"""

from typing import Any

import pytest
from sync.common.types.create_generation_dto import CreateGenerationDto
from sync.common.types.generation import Generation as SdkGeneration
from sync.core.pydantic_utilities import parse_obj_as

from lipsync.syncso.models import GenerateRequest, Generation

VIDEO = {"type": "video", "url": "https://media.example/v.mp4"}
AUDIO = {"type": "audio", "url": "https://media.example/a.wav"}

REQUESTS: dict[str, dict[str, Any]] = {
    "pair": {"model": "lipsync-2", "input": [VIDEO, AUDIO]},
    "every current option": {
        "model": "lipsync-2-pro",
        "input": [VIDEO, AUDIO],
        "options": {
            "sync_mode": "cut_off",
            "temperature": 0.7,
            "occlusion_detection_enabled": True,
            "active_speaker_detection": {"auto_detect": False, "frame_number": 3, "coordinates": [10, 20]},
        },
        "webhookUrl": "https://hooks.example/webhooks/sync/job?token=t",
        "outputFileName": "clip_01",
    },
    "react-1": {
        "model": "react-1",
        "input": [VIDEO, AUDIO],
        "options": {"model_mode": "head", "prompt": "surprised"},
    },
    "text to speech": {
        "model": "sync-3",
        "input": [
            {"type": "video", "assetId": "asset-1"},
            {
                "type": "text",
                "provider": {"name": "elevenlabs", "voiceId": "v", "script": "Hello", "stability": 0.5},
            },
        ],
    },
    "segments": {
        "model": "lipsync-2",
        "input": [VIDEO, {**AUDIO, "refId": "a"}, {**AUDIO, "refId": "b"}],
        "segments": [
            {"startTime": 0, "endTime": 1.5, "audioInput": {"refId": "a"}},
            {"startTime": 1.5, "endTime": 3, "audioInput": {"refId": "b", "startTime": 0.5, "endTime": 2}},
        ],
    },
    "legacy per-input segments": {
        "model": "lipsync-1.9.0-beta",
        "input": [{**VIDEO, "segments_secs": [[0, 1.5]], "segments_frames": [[0, 30]]}, AUDIO],
    },
}


@pytest.mark.parametrize("name", REQUESTS)
def test_our_request_bodies_validate_as_the_sdk_dto(name: str) -> None:
    body = GenerateRequest.model_validate(REQUESTS[name]).to_api()
    dto = parse_obj_as(CreateGenerationDto, body)
    assert dto.dict() == body


def test_the_sdk_rejects_what_we_would_never_send() -> None:
    # Guard that the cross-check can fail at all: the SDK does validate.
    with pytest.raises(ValueError, match="input"):
        parse_obj_as(CreateGenerationDto, {"model": "lipsync-2", "input": "not a list"})


def test_a_generation_both_models_parse_agrees_on_the_overlap() -> None:
    body = {
        "id": "gen-1",
        "createdAt": "2026-11-25T10:00:00Z",
        "status": "COMPLETED",
        "model": "lipsync-2",
        "input": [VIDEO, AUDIO],
        "outputUrl": "https://cdn.example/out.mp4",
        "outputDuration": 2.5,
        "error": None,
        "error_code": None,
    }
    ours = Generation.model_validate(body)
    theirs = parse_obj_as(SdkGeneration, body)
    assert (ours.id, ours.status, ours.output_url, ours.output_duration) == (
        theirs.id,
        theirs.status,
        theirs.output_url,
        theirs.output_duration,
    )
