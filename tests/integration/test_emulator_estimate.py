"""The emulator's cost estimate (`POST /v2/generations/estimate` and its alias), over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from local.sync_emulator import EmulatorConfig, SyncEmulator

API_KEY = "sk-estimate"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with (
        SyncEmulator(EmulatorConfig(api_key=API_KEY)) as emulator,
        httpx.Client(base_url=emulator.url, headers={"x-api-key": API_KEY}, timeout=10) as http,
    ):
        yield http


@pytest.mark.parametrize("path", ["/v2/generations/estimate", "/v2/generate/estimate-cost"])
@pytest.mark.parametrize(
    ("body", "frames", "cost"),
    [
        ({"model": "lipsync-2", "duration": 10}, 300, 0.6),  # 30 fps by default, $0.05 per second at 25 fps
        ({"model": "lipsync-2", "duration": 10, "fps": 25}, 250, 0.5),
        ({"model": "lipsync-2-pro", "duration": 1.01, "fps": 25}, 26, 0.0863),  # frames round up
        ({"model": "sync-3", "duration": 60, "fps": 25, "reasoningEnabled": True}, 1500, 7.98),
    ],
)
def test_an_estimate_is_frames_times_the_models_price(
    client: httpx.Client, path: str, body: dict[str, object], frames: int, cost: float
) -> None:
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "estimatedFrameCount": frames,
        "estimatedGenerationCost": cost,
        "estimatedCredits": None,
    }


def test_a_model_without_a_documented_price_has_no_estimate(client: httpx.Client) -> None:
    answer = client.post("/v2/generations/estimate", json={"model": "react-1", "duration": 5})
    assert answer.status_code == 422
    assert answer.json()["errorCode"] == "cost_estimate_unavailable"


def test_an_unknown_model_and_a_malformed_body_are_refused(client: httpx.Client) -> None:
    unknown = client.post("/v2/generations/estimate", json={"model": "nope", "duration": 5})
    assert (unknown.status_code, unknown.json()["errorCode"]) == (422, "generation_unsupported_model")
    malformed = client.post("/v2/generations/estimate", json={"model": 3, "duration": -1, "fps": "x"})
    assert malformed.status_code == 400
    assert malformed.json()["message"] == [
        "model must be a string",
        "duration must be a positive number",
        "fps must be a positive number",
    ]


def test_an_estimate_needs_the_api_key(client: httpx.Client) -> None:
    answer = client.post(
        "/v2/generations/estimate", json={"model": "lipsync-2", "duration": 5}, headers={"x-api-key": "wrong"}
    )
    assert answer.status_code == 401
