"""What a job will cost, and what it cost.

- **The output's length** decides the price (billing is output frames). It follows the voice:
  the audio's duration; with `sync_mode: cut_off` the shorter of video and audio; with segments
  or dubbing, the video's. A script (text-to-speech) is timed at 150 words a minute. When no
  length can be read, the estimate assumes `UPPER_BOUND_SECONDS`, sync.so's audio limit, so a
  budget never counts a job as cheaper than it can be.
- **The estimate** comes from sync.so's estimate endpoint; when it is unavailable or fails, from
  the price table (USD per output second, a template parameter), at the endpoint's default of
  30 fps over the 25 fps list price. A model missing from the table is priced as the dearest one.
- **The cost** of a finished job is the output's duration at the estimate's price per second;
  nothing for a generation that produced no output (FAILED, REJECTED, CANCELED).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lipsync.media_duration import object_seconds
from lipsync.plan.prices import PriceTable

if TYPE_CHECKING:
    from lipsync.jobs.model import Job, ObjectRef
    from lipsync.storage import Storage
    from lipsync.syncso.client import SyncClient

UPPER_BOUND_SECONDS = 300.0  # generation_audio_length_exceeded above this
WORDS_PER_SECOND = 2.5
UNBILLED_STATUSES = frozenset({"FAILED", "REJECTED", "CANCELED", "INVALID"})

Basis = Literal["audio", "video", "shorter", "text", "segments", "upper-bound"]


class CostEstimate(BaseModel):
    """A job's estimate, as its record and document keep it."""

    model_config = ConfigDict(populate_by_name=True)

    usd: float = Field(ge=0)
    model: str
    seconds: float = Field(ge=0, description="the output length the estimate assumes")
    basis: Basis
    source: Literal["api", "price-table"]
    usd_per_second: float = Field(alias="usdPerSecond", ge=0)
    note: str | None = None

    def stored(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def output_seconds(
    body: dict[str, Any], durations: Mapping[int, float | None] | Callable[[int], float | None]
) -> tuple[float, Basis]:
    """How long the output will play, from the request and its inputs' durations (by input index;
    a callable is asked only for the inputs the answer depends on)."""
    duration = durations if callable(durations) else durations.get
    inputs: list[dict[str, Any]] = body.get("input") or []
    video_index = next((i for i, item in enumerate(inputs) if item.get("type") == "video"), None)

    def video() -> float | None:
        return duration(video_index) if video_index is not None else None

    if body.get("segments"):
        if seconds := video():
            return seconds, "segments"
        ends = [float(segment.get("endTime") or 0) for segment in body["segments"]]
        return (max(ends), "segments") if max(ends, default=0) > 0 else (UPPER_BOUND_SECONDS, "upper-bound")
    voices = [(i, item) for i, item in enumerate(inputs) if item.get("type") in ("audio", "text")]
    if not voices:  # dubbing: the video keeps its length
        seconds = video()
        return (seconds, "video") if seconds else (UPPER_BOUND_SECONDS, "upper-bound")
    index, voice = voices[0]
    if voice.get("type") == "text":
        script = str((voice.get("provider") or {}).get("script") or "")
        return max(1.0, round(len(script.split()) / WORDS_PER_SECOND, 3)), "text"
    audio = duration(index)
    if audio is None:
        return UPPER_BOUND_SECONDS, "upper-bound"
    if (body.get("options") or {}).get("sync_mode") == "cut_off" and (seconds := video()):
        return min(audio, seconds), "shorter"
    return audio, "audio"


class CostEstimator:
    """Estimates with sync.so's endpoint (when a client is given), else with the price table."""

    def __init__(self, prices: PriceTable, sync: SyncClient | None = None) -> None:
        self._prices = prices
        self._sync = sync

    def estimate(self, model: str, seconds: float, basis: Basis) -> CostEstimate:
        import httpx  # here: the status and budget paths import this module without calling sync.so

        from lipsync.syncso.client import SyncApiError

        fallback_note = None
        if self._sync is not None:
            try:
                answer = self._sync.estimate_cost(model, seconds)
            except (SyncApiError, httpx.HTTPError, ValueError) as error:
                fallback_note = f"sync.so's estimate was unavailable ({_reason(error)})"
            else:
                usd = answer.estimated_generation_cost
                return CostEstimate(
                    usd=round(usd, 4),
                    model=model,
                    seconds=seconds,
                    basis=basis,
                    source="api",
                    usd_per_second=round(usd / seconds, 6) if seconds else 0.0,
                )
        per_second, price_note = self._prices.usd_per_second(model)
        notes = [note for note in (fallback_note, price_note) if note]
        return CostEstimate(
            usd=round(per_second * seconds, 4),
            model=model,
            seconds=seconds,
            basis=basis,
            source="price-table",
            usd_per_second=round(per_second, 6),
            note="; ".join(notes) or None,
        )

    def estimate_request(
        self, storage: Storage, body: dict[str, Any], bucket_inputs: Mapping[int, ObjectRef], model: str
    ) -> CostEstimate:
        """A planned job's estimate: its bucket inputs' durations (by input index), read from their
        headers."""

        def duration(index: int) -> float | None:
            ref = bucket_inputs.get(index)
            info = storage.head(ref.key, ref.version_id) if ref else None
            return object_seconds(storage, ref, info.size) if ref and info else None

        seconds, basis = output_seconds(body, duration)
        return self.estimate(model, seconds, basis)


def actual_cost(job: Job) -> float | None:
    """What a finished job cost: its output's seconds at the estimate's price; 0 without output;
    None when unknown (no estimate, or a COMPLETED job whose output length sync.so did not say)."""
    estimate = CostEstimate.model_validate(job.estimate) if job.estimate else None
    if job.status in UNBILLED_STATUSES:
        return 0.0
    if estimate is None or job.output_duration is None:
        return None
    return round(estimate.usd_per_second * job.output_duration, 4)


def _reason(error: Exception) -> str:
    from lipsync.syncso.client import SyncApiError

    if isinstance(error, SyncApiError):
        return error.error_code or type(error).__name__
    return type(error).__name__
