"""The sync.so generate API (v2) as pydantic models.

Strict where a mistake is certain (input combinations, ranges, enums, segment times);
lenient where the API evolves (unknown fields and unknown models pass through).
Field names are Python-style; `to_api()` serialises back to the API's own names.
See docs/sync-api.md in the shared docs for the sources behind each rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

CURRENT_MODELS = frozenset({"sync-3", "lipsync-2", "lipsync-2-pro", "lipsync-1.9.0-beta", "react-1"})
LEGACY_MODELS = frozenset({"lipsync-1.8.0", "lipsync-1.7.1", "lipsync-1.6.0"})
KNOWN_MODELS = CURRENT_MODELS | LEGACY_MODELS
IMAGE_MODELS = frozenset({"sync-3"})

LEGACY_OPTIONS = ("pads", "speedup", "output_format", "fps", "output_resolution", "active_speaker")

Number = int | float


class ApiModel(BaseModel):
    """Base for API shapes: accepts both field names and aliases, keeps unknown fields."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_api(self) -> dict[str, Any]:
        """The JSON body with the API's field names, exactly the fields that were set."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# ---------------------------------------------------------------------------- statuses


class GenerationStatus(StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"
    CANCELED = "CANCELED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


ACTIVE_STATUSES = frozenset({GenerationStatus.PENDING, GenerationStatus.PROCESSING})


def is_terminal(status: str) -> bool:
    """Only PENDING and PROCESSING are in flight; every other value, known or not, is final."""
    return status.upper() not in ACTIVE_STATUSES


# ---------------------------------------------------------------------------- inputs


def _check_ranges(ranges: Sequence[tuple[Number, Number]] | None, unit: str) -> None:
    for start, end in ranges or []:
        if start < 0 or end <= start:
            raise ValueError(f"each {unit} segment needs 0 <= start < end, got [{start}, {end}]")


class _MediaInput(ApiModel):
    type: str  # narrowed by each subclass; declared first so bodies keep the API's field order
    url: str | None = None
    asset_id: str | None = Field(default=None, alias="assetId")
    ref_id: str | None = Field(default=None, alias="refId")

    @model_validator(mode="after")
    def _needs_a_source(self) -> Self:
        if not self.url and not self.asset_id:
            raise ValueError(f"a {getattr(self, 'type', 'media')} input needs a url or an assetId")
        return self


class VideoInput(_MediaInput):
    type: Literal["video"]
    # Legacy per-input segments (replaced by top-level `segments`).
    segments_secs: list[tuple[Number, Number]] | None = None
    segments_frames: list[tuple[int, int]] | None = None

    @model_validator(mode="after")
    def _segments_in_order(self) -> Self:
        _check_ranges(self.segments_secs, "segments_secs")
        _check_ranges(self.segments_frames, "segments_frames")
        return self


class ImageInput(_MediaInput):
    type: Literal["image"]


class AudioInput(_MediaInput):
    type: Literal["audio"]


class ElevenLabsProvider(ApiModel):
    name: Literal["elevenlabs"]
    voice_id: str = Field(alias="voiceId", min_length=1)
    script: str = Field(min_length=1, max_length=5000)
    stability: float | None = Field(default=None, ge=0, le=1)
    similarity_boost: float | None = Field(default=None, alias="similarityBoost", ge=0, le=1)


class TextInput(ApiModel):
    type: Literal["text"]
    provider: ElevenLabsProvider
    ref_id: str | None = Field(default=None, alias="refId")


InputItem = Annotated[VideoInput | ImageInput | AudioInput | TextInput, Field(discriminator="type")]
VISUAL_TYPES = frozenset({"video", "image"})
VOICE_TYPES = frozenset({"audio", "text"})


# ---------------------------------------------------------------------------- options

SyncMode = Literal["bounce", "loop", "cut_off", "silence", "remap"]


class ActiveSpeakerDetection(ApiModel):
    auto_detect: bool | None = None
    frame_number: int | None = Field(default=None, ge=0)
    coordinates: tuple[Number, Number] | None = None
    bounding_boxes: list[tuple[Number, Number, Number, Number] | None] | None = None
    bounding_boxes_url: str | None = None


class OptionsOverride(ApiModel):
    """What a segment may override."""

    sync_mode: SyncMode | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    occlusion_detection_enabled: bool | None = None
    active_speaker_detection: ActiveSpeakerDetection | None = None


class Options(OptionsOverride):
    model_mode: Literal["lips", "face", "head"] | None = None
    prompt: Literal["happy", "sad", "angry", "disgusted", "surprised", "neutral"] | None = None
    # Legacy (mid-2025) options: passed through as written, never added by the pipeline.
    pads: Annotated[list[Number], Field(min_length=4, max_length=4)] | None = None
    speedup: int | None = Field(default=None, ge=1, le=4)
    output_format: Literal["mp4", "mov"] | None = None
    fps: Number | None = Field(default=None, gt=0)
    output_resolution: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = None
    active_speaker: bool | None = None

    def legacy_fields(self) -> list[str]:
        return [name for name in LEGACY_OPTIONS if name in self.model_fields_set]


# ---------------------------------------------------------------------------- segments, dubbing


class SegmentAudioInput(ApiModel):
    ref_id: str = Field(alias="refId", min_length=1)
    start_time: float | None = Field(default=None, alias="startTime", ge=0)
    end_time: float | None = Field(default=None, alias="endTime", gt=0)


class Segment(ApiModel):
    start_time: float = Field(alias="startTime", ge=0)
    end_time: float = Field(alias="endTime", gt=0)
    audio_input: SegmentAudioInput = Field(alias="audioInput")
    options_override: OptionsOverride | None = Field(default=None, alias="optionsOverride")

    @model_validator(mode="after")
    def _times_in_order(self) -> Self:
        if self.end_time <= self.start_time:
            raise ValueError(f"segment endTime {self.end_time} must be after startTime {self.start_time}")
        audio = self.audio_input
        if audio.start_time is not None and audio.end_time is not None and audio.end_time <= audio.start_time:
            raise ValueError("segment audioInput endTime must be after its startTime")
        return self


class DubParams(ApiModel):
    provider_name: Literal["elevenlabs"] = Field(alias="providerName")
    target_lang: str = Field(alias="targetLang", min_length=1)
    source_lang: str | None = Field(default=None, alias="sourceLang")
    num_speakers: int | None = Field(default=None, alias="numSpeakers", ge=1)


# ---------------------------------------------------------------------------- request


class GenerateRequest(ApiModel):
    """The body of POST /v2/generate."""

    model: str = Field(min_length=1)
    input: list[InputItem] = Field(min_length=1)
    options: Options | None = None
    segments: list[Segment] | None = Field(default=None, min_length=1)
    webhook_url: str | None = Field(default=None, alias="webhookUrl")
    output_file_name: str | None = Field(
        default=None, alias="outputFileName", pattern=r"^[A-Za-z0-9_-]{1,255}$"
    )
    project_id: str | None = Field(
        default=None,
        alias="projectId",
        pattern=r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    )
    dub_params: DubParams | None = Field(default=None, alias="dubParams")
    dialogue_edit: dict[str, Any] | None = Field(default=None, alias="dialogueEdit")

    @model_validator(mode="after")
    def _inputs_fit_together(self) -> Self:
        visuals = [item for item in self.input if item.type in VISUAL_TYPES]
        voices = [item for item in self.input if item.type in VOICE_TYPES]
        if len(visuals) != 1:
            raise ValueError(f"input needs exactly one video or image item, got {len(visuals)}")
        if visuals[0].type == "image" and self.model in KNOWN_MODELS and self.model not in IMAGE_MODELS:
            raise ValueError(f"an image input needs model sync-3, not {self.model}")
        if self.dub_params is not None:
            if voices:
                raise ValueError("dubParams generates the voice: remove the audio/text input")
        elif self.segments:
            self._check_segment_refs(voices)
        elif len(voices) != 1:
            raise ValueError(f"input needs exactly one audio or text item, got {len(voices)}")
        return self

    def _check_segment_refs(self, voices: list[Any]) -> None:
        ref_ids = [voice.ref_id for voice in voices]
        if not voices or any(ref is None for ref in ref_ids):
            raise ValueError("with segments, every audio/text input needs a refId")
        if len(set(ref_ids)) != len(ref_ids):
            raise ValueError("with segments, input refIds must be unique")
        for index, segment in enumerate(self.segments or []):
            if segment.audio_input.ref_id not in ref_ids:
                raise ValueError(
                    f"segments[{index}].audioInput.refId {segment.audio_input.ref_id!r} names no input"
                )

    def warnings(self) -> list[str]:
        """What is legal but worth telling the user: unknown or legacy models and options."""
        notes: list[str] = []
        if self.model in LEGACY_MODELS:
            notes.append(f"model {self.model} is legacy; sync.so may reject it")
        elif self.model not in KNOWN_MODELS:
            notes.append(f"model {self.model} is not one we know; passing it to sync.so unchanged")
        if self.options and (legacy := self.options.legacy_fields()):
            notes.append(f"legacy options passed through unchanged: {', '.join(legacy)}")
        for item in self.input:
            if isinstance(item, VideoInput) and (item.segments_secs or item.segments_frames):
                notes.append("legacy per-input segments_secs/segments_frames; prefer top-level segments")
        return notes


# ---------------------------------------------------------------------------- responses


def _empty_object_is_none(value: Any) -> Any:
    # The API page's example response shows `{}` for unset nullable fields.
    return None if value == {} else value


def _finite_or_none(value: float | None) -> float | None:
    """Infinity and NaN (JSON readers accept them) are no duration and no delay: unknown."""
    return value if value is None or math.isfinite(value) else None


Nullable = BeforeValidator(_empty_object_is_none)
Finite = AfterValidator(_finite_or_none)


class Generation(ApiModel):
    """A generation as returned by create/get/list, and as delivered by webhooks."""

    id: str = Field(min_length=1)
    created_at: str | None = Field(default=None, alias="createdAt")
    status: str
    model: str | None = None
    input: list[dict[str, Any]] | None = None
    options: Annotated[dict[str, Any] | None, Nullable] = None
    webhook_url: Annotated[str | None, Nullable] = Field(default=None, alias="webhookUrl")
    output_url: Annotated[str | None, Nullable] = Field(
        default=None,
        validation_alias=AliasChoices("outputUrl", "outputMediaUrl"),
        serialization_alias="outputUrl",
    )
    output_duration: Annotated[float | None, Nullable, Finite] = Field(default=None, alias="outputDuration")
    output_file_name: str | None = Field(default=None, alias="outputFileName")
    project_id: str | None = Field(default=None, alias="projectId")
    synthesized_audio_url: str | None = Field(default=None, alias="synthesizedAudioUrl")
    segment_output_url: Annotated[str | None, Nullable] = Field(default=None, alias="segmentOutputUrl")
    error: Annotated[str | None, Nullable] = None
    # GET says errorCode, the webhook says error_code.
    error_code: str | None = Field(
        default=None,
        validation_alias=AliasChoices("errorCode", "error_code"),
        serialization_alias="errorCode",
    )
    progress_percent: float | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _upper_status(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)


class CostEstimateAnswer(ApiModel):
    """`POST /v2/generations/estimate`'s answer (the legacy `/v2/analyze/cost` wraps it in a list)."""

    estimated_frame_count: int | None = Field(default=None, alias="estimatedFrameCount")
    estimated_generation_cost: float = Field(alias="estimatedGenerationCost", ge=0)
    estimated_credits: float | None = Field(default=None, alias="estimatedCredits")

    @model_validator(mode="before")
    @classmethod
    def _first_of_a_list(cls, value: Any) -> Any:
        return value[0] if isinstance(value, list) and value else value


# The documented plan limits (the rate-limits page): what a plan name means when the account
# answer gives no number of its own.
PLAN_CONCURRENCY = {"hobbyist": 1, "creator": 3, "growth": 6, "scale": 15}
# Where a number of concurrent generations may sit in `organization` (the reference names the
# object "limits" and the MCP tools "generationLimits"; the field itself is not documented yet).
_LIMIT_OBJECTS = ("limits", "generationLimits", "plan")
_LIMIT_FIELDS = ("concurrency", "concurrentGenerations", "maxConcurrentGenerations", "concurrentRequests")


class Account(ApiModel):
    """`GET /v2/account`: the account, its organization, plan, limits and balance. Only what the
    pipeline reads is typed; the rest is kept as sync.so sent it."""

    organization: dict[str, Any] = Field(default_factory=dict)
    credential_type: str | None = Field(default=None, alias="credentialType")

    def concurrency_limit(self) -> int | None:
        """The plan's concurrent generations: a number the answer gives, else the plan's name in
        the documented table, else None (unknown: the caller keeps what it had)."""
        for place in _LIMIT_OBJECTS:
            limits = self.organization.get(place)
            if not isinstance(limits, dict):
                continue
            for field in _LIMIT_FIELDS:
                value = limits.get(field)
                if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
                    return value
        plan = self.organization.get("plan")
        plan_name = plan.get("name") if isinstance(plan, dict) else plan
        return PLAN_CONCURRENCY.get(str(plan_name).strip().lower()) if plan_name else None


class ApiErrorBody(ApiModel):
    """sync.so's error body (NestJS style); every field is optional because shapes vary."""

    status_code: int | None = Field(default=None, alias="statusCode")
    error_code: str | None = Field(
        default=None,
        validation_alias=AliasChoices("errorCode", "error_code", "code"),
        serialization_alias="errorCode",
    )
    message: str | list[str] | None = None
    error: str | None = None
    suggestion: str | None = None
    retry_after_seconds: Annotated[float | None, Finite] = Field(default=None, alias="retryAfterSeconds")

    @field_validator("retry_after_seconds")
    @classmethod
    def _not_negative(cls, value: float | None) -> float | None:
        return None if value is None else max(0.0, value)

    active_generations: int | None = Field(default=None, alias="activeGenerations")
    concurrency_limit: int | None = Field(default=None, alias="concurrencyLimit")
    generation_id: str | None = Field(default=None, alias="generationId")

    @property
    def text(self) -> str:
        if isinstance(self.message, list):
            return "; ".join(self.message)
        return self.message or self.error or ""
