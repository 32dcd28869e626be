"""Cost estimates: durations from media headers (ranged reads), the output-length rules, sync.so's
estimate endpoint and the price-table fallback, and what a finished job cost."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from lipsync.config import BudgetSettings, CostSettings
from lipsync.jobs.model import ObjectRef
from lipsync.media_duration import media_seconds, object_seconds
from lipsync.plan.cost import (
    UPPER_BOUND_SECONDS,
    CostEstimate,
    CostEstimator,
    actual_cost,
    output_seconds,
)
from lipsync.plan.prices import PriceTable
from lipsync.queue.planning import RequestTemplate
from tests.fakes import FakeStorage, FakeSyncApi
from tests.media_bytes import wav_bytes
from tests.unit.test_metrics import job

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------- durations


def test_a_wav_duration_is_read_from_its_header() -> None:
    assert media_seconds(io.BytesIO(wav_bytes(4.0)), "wav") == 4.0


def test_an_objects_duration_costs_a_few_ranged_reads_not_the_whole_file() -> None:
    storage = FakeStorage()
    body = wav_bytes(120.0)  # 1.9 MB
    stored = storage.put("inputs/long.wav", body)
    ref = ObjectRef(key="inputs/long.wav", version_id=stored.version_id)
    assert object_seconds(storage, ref, len(body)) == 120.0
    assert 0 < storage.range_reads <= 2


@pytest.mark.parametrize(
    ("extension", "body"),
    [("wav", b"RIFF but not really"), ("mp4", b"\x00" * 64), ("webm", b"\x1a\x45\xdf\xa3"), ("txt", b"hi")],
)
def test_an_unreadable_or_unsupported_file_has_no_duration(extension: str, body: bytes) -> None:
    assert media_seconds(io.BytesIO(body), extension) is None


# ---------------------------------------------------------------------------- output length


def body(*inputs: Any, **extra: Any) -> dict[str, Any]:
    return {"model": "lipsync-2", "input": list(inputs), **extra}


VIDEO = {"type": "video", "url": "s3:"}
AUDIO = {"type": "audio", "url": "s3:"}


def test_the_output_follows_the_audio() -> None:
    assert output_seconds(body(VIDEO, AUDIO), {0: 10.0, 1: 4.0}) == (4.0, "audio")


def test_cut_off_takes_the_shorter_of_video_and_audio() -> None:
    request = body(VIDEO, AUDIO, options={"sync_mode": "cut_off"})
    assert output_seconds(request, {0: 3.0, 1: 4.0}) == (3.0, "shorter")


def test_segments_and_dubbing_keep_the_videos_length() -> None:
    segments = [{"startTime": 0, "endTime": 2, "audioInput": {"refId": "a"}}]
    assert output_seconds(body(VIDEO, AUDIO, segments=segments), {0: 9.0, 1: 1.0}) == (9.0, "segments")
    assert output_seconds(body(VIDEO, AUDIO, segments=segments), {}) == (2.0, "segments")
    assert output_seconds(body(VIDEO), {0: 7.5}) == (7.5, "video")


def test_a_script_is_timed_at_150_words_a_minute() -> None:
    text = {"type": "text", "provider": {"name": "elevenlabs", "voiceId": "v", "script": "word " * 25}}
    assert output_seconds(body(VIDEO, text), {0: 60.0}) == (10.0, "text")


def test_an_unknown_length_assumes_the_longest_output() -> None:
    https_audio = {"type": "audio", "url": "https://example.com/a.mp3"}
    assert output_seconds(body(VIDEO, https_audio), {0: 5.0}) == (UPPER_BOUND_SECONDS, "upper-bound")


# ---------------------------------------------------------------------------- estimates


def estimate_answer(request: httpx.Request) -> httpx.Response:
    sent = json.loads(request.content)
    if request.url.path != "/v2/generations/estimate":
        return httpx.Response(404, json={"statusCode": 404, "message": "Not Found"})
    return httpx.Response(
        200,
        json={
            "estimatedFrameCount": 120,
            "estimatedGenerationCost": sent["duration"] * 0.1,
            "estimatedCredits": None,
        },
    )


def test_the_estimate_comes_from_syncs_endpoint() -> None:
    api = FakeSyncApi(estimate_answer)
    estimate = CostEstimator(PriceTable(), api.client()).estimate("lipsync-2", 4.0, "audio")
    assert (estimate.usd, estimate.source, estimate.usd_per_second) == (0.4, "api", 0.1)
    assert json.loads(api.requests[0].content) == {"model": "lipsync-2", "duration": 4.0}


def test_the_documented_alias_answers_where_the_main_path_does_not() -> None:
    def alias_only(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v2/generate/estimate-cost":
            return httpx.Response(200, json=[{"estimatedFrameCount": 30, "estimatedGenerationCost": 0.06}])
        return httpx.Response(404, json={"statusCode": 404, "message": "Cannot POST"})

    estimate = CostEstimator(PriceTable(), FakeSyncApi(alias_only).client()).estimate("sync-3", 1.0, "audio")
    assert (estimate.usd, estimate.source) == (0.06, "api")


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(
            422, json={"statusCode": 422, "errorCode": "cost_estimate_unavailable", "message": "no"}
        ),
        httpx.Response(500, json={"statusCode": 500, "message": "boom"}),
        httpx.Response(200, json={"unexpected": True}),
    ],
)
def test_the_price_table_stands_in_when_the_endpoint_fails(reply: httpx.Response) -> None:
    estimate = CostEstimator(PriceTable(), FakeSyncApi(lambda _: reply).client()).estimate(
        "lipsync-2", 10.0, "audio"
    )
    # $0.05 per second at 25 fps, counted at the endpoint's 30 fps
    assert (estimate.usd, estimate.source, estimate.usd_per_second) == (0.6, "price-table", 0.06)
    assert estimate.note is not None
    assert "unavailable" in estimate.note


def test_a_model_missing_from_the_table_is_priced_as_the_dearest() -> None:
    estimate = CostEstimator(PriceTable()).estimate("lipsync-1.9.0-beta", 10.0, "audio")
    assert estimate.usd == pytest.approx(10 * 0.133 * 1.2)
    assert "no list price for lipsync-1.9.0-beta" in (estimate.note or "")


def test_a_planned_jobs_estimate_reads_its_inputs_in_the_bucket() -> None:
    storage = FakeStorage()
    video = storage.put("inputs/a.mp4", b"not parsed")
    audio = storage.put("inputs/a.wav", wav_bytes(2.5))
    template = RequestTemplate(
        body=body(VIDEO, AUDIO),
        presign={
            0: ObjectRef(key="inputs/a.mp4", version_id=video.version_id),
            1: ObjectRef(key="inputs/a.wav", version_id=audio.version_id),
        },
    )
    estimate = CostEstimator(PriceTable()).estimate_request(
        storage, template.body, template.presign, "lipsync-2-pro"
    )
    assert (estimate.seconds, estimate.basis, estimate.usd) == (2.5, "audio", round(2.5 * 0.083 * 1.2, 4))
    assert storage.range_reads == 1  # the audio decides: the video is not read


# ---------------------------------------------------------------------------- the price table


def test_the_price_table_parameter_is_checked_at_cold_start() -> None:
    assert PriceTable.from_json("").prices == {"lipsync-2": 0.05, "lipsync-2-pro": 0.083, "sync-3": 0.133}
    assert PriceTable.from_json('{"lipsync-2": 0.04}').prices == {"lipsync-2": 0.04}
    for bad, message in (("{", "not JSON"), ("[]", "JSON object"), ('{"sync-3": "cheap"}', "'sync-3'")):
        with pytest.raises(ValueError, match=message):
            CostSettings.from_env({"PRICE_TABLE_USD_PER_SECOND": bad})


def test_the_templates_default_price_table_is_the_codes() -> None:
    from lipsync.config import TUNABLES

    assert PriceTable.from_json(TUNABLES["PriceTableUsdPerSecond"][1]) == PriceTable()


def test_an_empty_budget_is_off() -> None:
    assert BudgetSettings.from_env({"MONTHLY_BUDGET_USD": ""}).monthly_budget_usd is None
    assert BudgetSettings.from_env({"MONTHLY_BUDGET_USD": "99.5"}).monthly_budget_usd == 99.5


# ---------------------------------------------------------------------------- the cost


ESTIMATE = CostEstimate(
    usd=0.6, model="lipsync-2", seconds=10, basis="audio", source="api", usd_per_second=0.06
).stored()


def test_a_completed_job_costs_its_outputs_seconds_at_the_estimates_price() -> None:
    assert actual_cost(job(estimate=ESTIMATE, outputDuration=8.0)) == 0.48


def test_a_generation_without_output_costs_nothing_and_an_unknown_end_is_unknown() -> None:
    assert actual_cost(job(status="FAILED", estimate=ESTIMATE)) == 0.0
    assert actual_cost(job(status="REJECTED")) == 0.0
    assert actual_cost(job(status="TIMED_OUT", estimate=ESTIMATE)) is None
    assert actual_cost(job(estimate=ESTIMATE)) is None  # COMPLETED, but sync.so gave no duration
