"""Validation of `POST /v2/generate` bodies, in two stages like the real API.

1. Schema (types, enums, ranges) -> 400 with a NestJS/class-validator list of messages.
2. Semantics (which inputs go together) -> 422 with one `errorCode`.

Deliberately hand-written over plain dicts, independent of the project's own
models, so a mistake there cannot be mirrored here. Unknown fields are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .errors import bad_request, input_error

CURRENT_MODELS = ("sync-3", "lipsync-2", "lipsync-2-pro", "lipsync-1.9.0-beta", "react-1")
LEGACY_MODELS = ("lipsync-1.8.0", "lipsync-1.7.1", "lipsync-1.6.0")
UNDOCUMENTED_MODELS = ("lipsync-2-mini", "appearence-1")
KNOWN_MODELS = CURRENT_MODELS + LEGACY_MODELS + UNDOCUMENTED_MODELS

INPUT_TYPES = ("video", "image", "audio", "text")
VISUAL_TYPES = ("video", "image")
VOICE_TYPES = ("audio", "text")
SYNC_MODES = ("bounce", "loop", "cut_off", "silence", "remap")
MODEL_MODES = ("lips", "face", "head")
PROMPTS = ("happy", "sad", "angry", "disgusted", "surprised", "neutral")
OUTPUT_FORMATS = ("mp4", "mov")
MAX_SCRIPT_CHARS = 5000
OUTPUT_FILE_NAME = re.compile(r"[A-Za-z0-9_-]{1,255}")


@dataclass
class CreateRequest:
    """A create body that passed validation (values are the caller's, unchanged)."""

    body: dict[str, Any]
    model: str
    inputs: list[dict[str, Any]]
    options: dict[str, Any]
    webhook_url: str | None
    visual: dict[str, Any] | None
    voices: list[dict[str, Any]] = field(default_factory=list)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and re.match(r"https?://[^\s/]+", value) is not None


class _Schema:
    """Collects class-validator style messages ("options.temperature must not be greater than 1")."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def fail(self, message: str) -> None:
        self.messages.append(message)

    def number(
        self,
        obj: dict[str, Any],
        key: str,
        where: str,
        lo: float | None = None,
        hi: float | None = None,
        integer: bool = False,
    ) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not _is_number(value) or (integer and not isinstance(value, int)):
            self.fail(f"{where}{key} must be {'an integer' if integer else 'a number'}")
        elif lo is not None and value < lo:
            self.fail(f"{where}{key} must not be less than {lo:g}")
        elif hi is not None and value > hi:
            self.fail(f"{where}{key} must not be greater than {hi:g}")

    def choice(self, obj: dict[str, Any], key: str, where: str, allowed: tuple[Any, ...]) -> None:
        if key in obj and obj[key] not in allowed:
            self.fail(f"{where}{key} must be one of the following values: {', '.join(map(str, allowed))}")

    def boolean(self, obj: dict[str, Any], key: str, where: str) -> None:
        if key in obj and not isinstance(obj[key], bool):
            self.fail(f"{where}{key} must be a boolean value")

    def string(self, obj: dict[str, Any], key: str, where: str, required: bool = False) -> None:
        if key not in obj:
            if required:
                self.fail(f"{where}{key} must be a string")
            return
        if not isinstance(obj[key], str):
            self.fail(f"{where}{key} must be a string")

    def number_list(self, obj: dict[str, Any], key: str, where: str, length: int | None = None) -> None:
        if key not in obj:
            return
        value = obj[key]
        if not isinstance(value, list) or not all(_is_number(v) for v in value):
            self.fail(f"{where}{key} must be an array of numbers")
        elif length is not None and len(value) != length:
            self.fail(f"{where}{key} must contain exactly {length} elements")


def _check_input_item(s: _Schema, index: int, item: Any) -> None:
    where = f"input.{index}."
    if not isinstance(item, dict):
        s.fail(f"input.{index} must be an object")
        return
    s.choice(item, "type", where, INPUT_TYPES)
    if "type" not in item:
        s.fail(f"{where}type must be one of the following values: {', '.join(INPUT_TYPES)}")
    s.string(item, "refId", where)
    if item.get("type") == "text":
        provider = item.get("provider")
        if not isinstance(provider, dict):
            s.fail(f"{where}provider must be an object")
            return
        pw = f"{where}provider."
        s.choice(provider, "name", pw, ("elevenlabs",))
        s.string(provider, "name", pw, required=True)
        s.string(provider, "voiceId", pw, required=True)
        s.string(provider, "script", pw, required=True)
        s.number(provider, "stability", pw, 0, 1)
        s.number(provider, "similarityBoost", pw, 0, 1)
        return
    # Media items point at their bytes by URL or by a registered asset.
    if "url" in item and not _is_url(item["url"]):
        s.fail(f"{where}url must be a URL address")
    s.string(item, "assetId", where)
    if "url" not in item and "assetId" not in item:
        s.fail(f"{where}url or {where}assetId must be provided")
    for key in ("segments_secs", "segments_frames"):  # legacy, accepted
        if key in item and not isinstance(item[key], list):
            s.fail(f"{where}{key} must be an array")


def _check_options(s: _Schema, options: Any) -> None:
    if not isinstance(options, dict):
        s.fail("options must be an object")
        return
    w = "options."
    s.choice(options, "sync_mode", w, SYNC_MODES)
    s.number(options, "temperature", w, 0, 1)
    s.boolean(options, "occlusion_detection_enabled", w)
    s.choice(options, "model_mode", w, MODEL_MODES)
    s.choice(options, "prompt", w, PROMPTS)
    if "active_speaker_detection" in options:
        asd = options["active_speaker_detection"]
        if not isinstance(asd, dict):
            s.fail("options.active_speaker_detection must be an object")
        else:
            aw = "options.active_speaker_detection."
            s.boolean(asd, "auto_detect", aw)
            s.number(asd, "frame_number", aw, 0, integer=True)
            s.number_list(asd, "coordinates", aw, length=2)
            if "bounding_boxes" in asd and not isinstance(asd["bounding_boxes"], list):
                s.fail(f"{aw}bounding_boxes must be an array")
            s.string(asd, "bounding_boxes_url", aw)
    # Legacy (mid-2025) options: accepted; the API ignores what a model does not support.
    s.number_list(options, "pads", w, length=4)
    s.number(options, "speedup", w, 1, 4)
    s.choice(options, "output_format", w, OUTPUT_FORMATS)
    s.number(options, "fps", w, 1)
    s.number_list(options, "output_resolution", w, length=2)
    s.boolean(options, "active_speaker", w)


def _check_segments(s: _Schema, segments: Any) -> None:
    if not isinstance(segments, list):
        s.fail("segments must be an array")
        return
    for i, seg in enumerate(segments):
        where = f"segments.{i}."
        if not isinstance(seg, dict):
            s.fail(f"segments.{i} must be an object")
            continue
        for key in ("startTime", "endTime"):
            if key not in seg:
                s.fail(f"{where}{key} must be a number")
        s.number(seg, "startTime", where, 0)
        s.number(seg, "endTime", where, 0)
        audio_input = seg.get("audioInput")
        if not isinstance(audio_input, dict):
            s.fail(f"{where}audioInput must be an object")
        else:
            s.string(audio_input, "refId", f"{where}audioInput.", required=True)
            s.number(audio_input, "startTime", f"{where}audioInput.", 0)
            s.number(audio_input, "endTime", f"{where}audioInput.", 0)
        if "optionsOverride" in seg:
            _check_options(s, seg["optionsOverride"])


def check_schema(body: Any) -> None:
    """Stage 1: raise a 400 listing every type/enum/range problem."""
    s = _Schema()
    if not isinstance(body, dict):
        raise bad_request(["request body must be a JSON object"])
    if not isinstance(body.get("model"), str) or not body["model"]:
        s.fail("model must be a string")
    inputs = body.get("input")
    if not isinstance(inputs, list):
        s.fail("input must be an array")
    else:
        if not inputs:
            s.fail("input must contain at least 1 elements")
        for i, item in enumerate(inputs):
            _check_input_item(s, i, item)
    if "options" in body and body["options"] is not None:
        _check_options(s, body["options"])
    if body.get("webhookUrl") is not None and not _is_url(body["webhookUrl"]):
        s.fail("webhookUrl must be a URL address")
    if "outputFileName" in body and not (
        isinstance(body["outputFileName"], str) and OUTPUT_FILE_NAME.fullmatch(body["outputFileName"])
    ):
        s.fail("outputFileName must match /^[A-Za-z0-9_-]{1,255}$/ regular expression")
    s.string(body, "projectId", "")
    if "segments" in body:
        _check_segments(s, body["segments"])
    if "dubParams" in body:
        dub = body["dubParams"]
        if not isinstance(dub, dict):
            s.fail("dubParams must be an object")
        else:
            s.choice(dub, "providerName", "dubParams.", ("elevenlabs",))
            s.string(dub, "targetLang", "dubParams.", required=True)
            s.string(dub, "sourceLang", "dubParams.")
    if s.messages:
        raise bad_request(s.messages)


def check_semantics(body: dict[str, Any]) -> CreateRequest:
    """Stage 2: raise a 422 with the API's errorCode for inputs that do not fit together."""
    model: str = body["model"]
    inputs: list[dict[str, Any]] = body["input"]
    if model not in KNOWN_MODELS:
        raise input_error(
            "generation_unsupported_model",
            f"The model '{model}' is not supported.",
            f"Use one of: {', '.join(CURRENT_MODELS)}.",
        )
    visuals = [i for i in inputs if i["type"] in VISUAL_TYPES]
    voices = [i for i in inputs if i["type"] in VOICE_TYPES]
    if len(visuals) > 1:
        raise input_error(
            "generation_input_too_many_visual",
            "Only one visual input (video or image) is allowed.",
            "Send exactly one video or image input.",
        )
    if not visuals:
        raise input_error(
            "generation_input_missing_video",
            "A video input is required." if model != "sync-3" else "A video or image input is required.",
            "Add an input item of type 'video' with a url or assetId.",
        )
    if visuals[0]["type"] == "image" and model != "sync-3":
        raise input_error(
            "generation_input_image_unsupported_model",
            f"Image inputs are only supported by sync-3, not by '{model}'.",
            "Use model 'sync-3' or send a video input.",
        )
    if "dubParams" in body:
        if voices:
            raise input_error(
                "generation_input_dub_audio_conflict",
                "dubParams cannot be combined with an audio or text input.",
                "Remove the audio/text input, or remove dubParams.",
            )
        if visuals[0]["type"] != "video":
            raise input_error(
                "generation_input_missing_video",
                "Dubbing requires a video input.",
                "Send one video input with dubParams.",
            )
    elif not voices:
        raise input_error(
            "generation_input_missing_audio",
            "An audio or text input is required.",
            "Add an input item of type 'audio' (url or assetId) or 'text' (TTS).",
        )
    if "segments" in body:
        _check_segment_refs(body["segments"], voices)
    elif len(voices) > 1:
        raise input_error(
            "generation_input_too_many_audio",
            "Only one audio or text input is allowed without segments.",
            "Send one voice input, or use top-level segments with a refId per audio input.",
        )
    for voice in voices:
        if voice["type"] == "text" and len(voice["provider"]["script"]) > MAX_SCRIPT_CHARS:
            raise input_error(
                "generation_text_length_exceeded",
                f"The TTS script is longer than {MAX_SCRIPT_CHARS} characters.",
                "Shorten the script or split the generation.",
            )
    options = body.get("options") or {}
    return CreateRequest(
        body=body,
        model=model,
        inputs=inputs,
        options=options,
        webhook_url=body.get("webhookUrl"),
        visual=visuals[0],
        voices=voices,
    )


def _check_segment_refs(segments: list[dict[str, Any]], voices: list[dict[str, Any]]) -> None:
    def invalid(message: str) -> None:
        raise input_error(
            "generation_input_segments_invalid",
            message,
            "Give every audio input a unique refId, reference those refIds from segments, "
            "and keep startTime < endTime.",
        )

    ref_ids = [v.get("refId") for v in voices]
    if any(r is None for r in ref_ids):
        invalid("Every audio input needs a refId when segments are used.")
    if len(set(ref_ids)) != len(ref_ids):
        invalid("Audio input refIds must be unique.")
    if not segments:
        invalid("segments must not be empty.")
    for i, seg in enumerate(segments):
        if seg["audioInput"]["refId"] not in ref_ids:
            invalid(f"segments.{i}.audioInput.refId does not match any input refId.")
        if not seg["startTime"] < seg["endTime"]:
            invalid(f"segments.{i}: startTime must be less than endTime.")
        audio_input = seg["audioInput"]
        if (
            "startTime" in audio_input
            and "endTime" in audio_input
            and not audio_input["startTime"] < audio_input["endTime"]
        ):
            invalid(f"segments.{i}.audioInput: startTime must be less than endTime.")


def validate_create(body: Any) -> CreateRequest:
    check_schema(body)
    return check_semantics(body)
