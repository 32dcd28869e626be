"""The project's SyncClient against the sync.so emulator (a real HTTP server): every status-code path,
every retryable vs permanent classification, and the official SDK's Generation model parsing what
the emulator answers and delivers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sync.common.types.generation import Generation as SdkGeneration
from sync.core.pydantic_utilities import parse_obj_as

from lipsync.syncso.client import SyncClient, SyncPermanentError, SyncRetryableError
from lipsync.syncso.models import GenerateRequest
from lipsync.syncso.webhook_auth import verify_signature
from local.media import MediaServer, make_sample_audio, make_sample_video
from local.sync_emulator import EmulatorConfig, SyncEmulator

pytestmark = pytest.mark.integration
API_KEY = "sk-client-test"
SECRET = "whsec_client_test"


class Hooks:
    """A webhook receiver on loopback that keeps what it got."""

    def __init__(self) -> None:
        received = self.received = []  # type: list[tuple[bytes, str | None]]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((body, self.headers.get("Sync-Signature")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MediaServer]:
    folder = tmp_path_factory.mktemp("media")
    make_sample_video(Path(folder, "v.mp4"))
    make_sample_audio(Path(folder, "a.wav"))
    with MediaServer(folder) as server:
        yield server


@pytest.fixture(scope="module")
def emulator() -> Iterator[SyncEmulator]:
    config = EmulatorConfig(api_key=API_KEY, webhook_secret=SECRET, processing_seconds=0.5, concurrency=2)
    with SyncEmulator(config) as running:
        yield running


@pytest.fixture
def client(emulator: SyncEmulator) -> Iterator[SyncClient]:
    emulator.reset()
    with SyncClient(emulator.url, API_KEY, timeout=httpx.Timeout(2.0, connect=1.0)) as sync:
        yield sync


def request(media: MediaServer, **extra: Any) -> GenerateRequest:
    return GenerateRequest.model_validate(
        {
            "model": "lipsync-2",
            "input": [
                {"type": "video", "url": media.url_for("v.mp4")},
                {"type": "audio", "url": media.url_for("a.wav")},
            ],
            **extra,
        }
    )


def wait_terminal(client: SyncClient, generation_id: str) -> Any:
    for _ in range(20):
        generation = client.get_generation(generation_id, wait=True, wait_timeout_seconds=2)
        if generation.is_terminal:
            return generation
    raise AssertionError("never terminal")


def test_create_get_list_download_and_the_sdk_parses_every_answer(
    client: SyncClient, media: MediaServer
) -> None:
    hooks = Hooks()
    created = client.create_generation(request(media, webhookUrl=hooks.url), idempotency_key="job-1")
    assert created.status == "PENDING"
    done = wait_terminal(client, created.id)
    assert done.status == "COMPLETED"
    assert done.output_url
    assert httpx.get(done.output_url).content[4:8] == b"ftyp"
    assert httpx.get(client.download_url(created.id)).status_code == 200
    assert [g.id for g in client.list_generations(status=["COMPLETED"], limit=10)] == [created.id]

    for answer in (created, done):
        sdk = parse_obj_as(SdkGeneration, answer.to_api())
        assert (sdk.id, sdk.status) == (answer.id, answer.status)
    deadline = time.monotonic() + 5
    while not hooks.received and time.monotonic() < deadline:
        time.sleep(0.05)
    ((body, signature),) = hooks.received
    assert verify_signature(body, signature, [SECRET]) == "raw"
    delivered = parse_obj_as(SdkGeneration, json.loads(body))
    assert (delivered.id, delivered.status, delivered.output_url) == (
        created.id,
        "COMPLETED",
        done.output_url,
    )
    hooks.server.shutdown()


def test_the_same_idempotency_key_and_body_give_the_same_generation(
    client: SyncClient, media: MediaServer
) -> None:
    first = client.create_generation(request(media), idempotency_key="job-2")
    again = client.create_generation(request(media), idempotency_key="job-2")
    assert again.id == first.id


@pytest.mark.parametrize(
    ("scenario", "key", "status", "error_code"),
    [
        (None, "bad key!", 400, "INVALID_IDEMPOTENCY_KEY"),
        (
            {"createFailures": [{"status": 402, "errorCode": "free_tier_generations_exhausted"}]},
            "k",
            402,
            "free_tier_generations_exhausted",
        ),
        (
            {"createFailures": [{"status": 413, "errorCode": "generation_input_validation_failed"}]},
            "k",
            413,
            "generation_input_validation_failed",
        ),
    ],
)
def test_permanent_create_failures(
    emulator: SyncEmulator,
    client: SyncClient,
    media: MediaServer,
    scenario: dict[str, Any] | None,
    key: str,
    status: int,
    error_code: str,
) -> None:
    if scenario:
        emulator.set_scenario(scenario)
    with pytest.raises(SyncPermanentError) as caught:
        client.create_generation(request(media), idempotency_key=key)
    assert (caught.value.status_code, caught.value.error_code) == (status, error_code)


def test_a_wrong_api_key_is_retryable_so_a_rotation_fails_no_job(
    emulator: SyncEmulator, media: MediaServer
) -> None:
    with SyncClient(emulator.url, "sk-wrong") as wrong, pytest.raises(SyncRetryableError) as caught:
        wrong.create_generation(request(media), idempotency_key="k")
    assert (caught.value.status_code, caught.value.reason, caught.value.key_changed) == (
        401,
        "unauthorized",
        False,
    )
    assert caught.value.message == "POST /v2/generate answered 401: Unauthorized"


def test_unknown_generation_and_key_reuse_are_permanent(client: SyncClient, media: MediaServer) -> None:
    with pytest.raises(SyncPermanentError) as missing:
        client.get_generation("00000000-0000-4000-8000-000000000000")
    assert (missing.value.status_code, missing.value.error_code) == (404, "generation_not_found")
    client.create_generation(request(media), idempotency_key="job-3")
    with pytest.raises(SyncPermanentError) as reused:
        client.create_generation(request(media, outputFileName="other"), idempotency_key="job-3")
    assert reused.value.status_code == 409


def test_unreachable_input_is_a_permanent_422(client: SyncClient) -> None:
    body = GenerateRequest.model_validate(
        {
            "model": "lipsync-2",
            "input": [
                {"type": "video", "url": "http://127.0.0.1:9/v.mp4"},
                {"type": "audio", "url": "http://127.0.0.1:9/a.wav"},
            ],
        }
    )
    with pytest.raises(SyncPermanentError) as caught:
        client.create_generation(body, idempotency_key="k")
    assert (caught.value.status_code, caught.value.error_code) == (422, "generation_input_video_inaccessible")


def test_rate_limit_and_concurrency_429s_are_retryable_with_their_waits(
    emulator: SyncEmulator, client: SyncClient, media: MediaServer
) -> None:
    emulator.set_scenario(
        {"createFailures": [{"status": 429, "errorCode": "rate_limit_exceeded", "retryAfterSeconds": 7}]}
    )
    with pytest.raises(SyncRetryableError) as rate:
        client.create_generation(request(media), idempotency_key="k1")
    assert (rate.value.reason, rate.value.retry_after_seconds) == ("rate_limit", 7)

    emulator.set_scenario({"processingSeconds": 30, "createFailures": None})
    client.create_generation(request(media), idempotency_key="k2")
    client.create_generation(request(media), idempotency_key="k3")  # the plan's 2 slots are taken
    with pytest.raises(SyncRetryableError) as busy:
        client.create_generation(request(media), idempotency_key="k4")
    assert busy.value.reason == "concurrency"
    assert busy.value.error_code == "concurrency_limit_reached"
    assert busy.value.retry_after_seconds is not None
    assert busy.value.retry_after_seconds >= 1


def test_server_errors_and_lost_answers_are_retryable(
    emulator: SyncEmulator, client: SyncClient, media: MediaServer
) -> None:
    emulator.set_scenario({"createFailures": [{"status": 500}, {"status": 503, "afterCreate": True}]})
    with pytest.raises(SyncRetryableError) as server:
        client.create_generation(request(media), idempotency_key="job-4")
    assert (server.value.reason, server.value.status_code) == ("server", 500)
    with pytest.raises(SyncRetryableError) as lost:
        client.create_generation(request(media), idempotency_key="job-4")
    assert lost.value.reason == "outcome_unknown"
    assert lost.value.body is not None
    created_id = lost.value.body.generation_id
    assert client.create_generation(request(media), idempotency_key="job-4").id == created_id

    emulator.set_scenario({"getFailures": [{"status": 503, "errorCode": "internal_error"}]})
    with pytest.raises(SyncRetryableError):
        client.get_generation(str(created_id))


def test_slow_answers_and_closed_ports_are_retryable(emulator: SyncEmulator, client: SyncClient) -> None:
    emulator.set_scenario({"latencySeconds": 3})
    with pytest.raises(SyncRetryableError) as slow:
        client.get_generation("00000000-0000-4000-8000-000000000000")
    assert slow.value.reason == "timeout"
    emulator.set_scenario({"latencySeconds": 0})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with (
        SyncClient(f"http://127.0.0.1:{closed_port}", API_KEY) as nowhere,
        pytest.raises(SyncRetryableError) as down,
    ):
        nowhere.get_generation("g")
    assert down.value.reason == "not_sent"  # nothing was sent: a definite no, even for a create


def test_long_poll_answers_within_its_timeout(
    emulator: SyncEmulator, client: SyncClient, media: MediaServer
) -> None:
    emulator.set_scenario({"processingSeconds": 30})
    created = client.create_generation(request(media), idempotency_key="job-5")
    started = time.monotonic()
    still = client.get_generation(created.id, wait=True, wait_timeout_seconds=1)
    assert not still.is_terminal
    assert 0.9 <= time.monotonic() - started < 3


def test_the_account_names_the_plans_concurrency_and_a_concurrency_429_names_it_too(
    client: SyncClient, media: MediaServer
) -> None:
    account = client.get_account()
    assert account.credential_type == "api_key"
    assert account.concurrency_limit() == 2  # the emulator's plan
    for index in range(2):
        client.create_generation(request(media), idempotency_key=f"busy-{index}")
    with pytest.raises(SyncRetryableError) as refused:
        client.create_generation(request(media), idempotency_key="one-too-many")
    assert (refused.value.reason, refused.value.concurrency_limit) == ("concurrency", 2)
