"""The sync.so emulator, exercised over real HTTP the way the pipeline will use it.

One emulator and one sample-media server serve the whole module (reset between
tests); tests that need other plan limits start their own emulator.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from local.media import MediaServer, make_sample_audio, make_sample_image, make_sample_video
from local.sync_emulator import EmulatorConfig, SyncEmulator
from local.sync_emulator import state as emulator_state
from local.sync_emulator.__main__ import config_from_args, parse_args
from tests.waiting import eventually

pytestmark = pytest.mark.integration

API_KEY = "sk-test"
SECRET = "whsec_test"
PROCESSING = 0.4
REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- helpers
@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.raw))


class WebhookReceiver:
    """A tiny HTTP server that records every POST (raw bytes kept for signature checks)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append(
                    Received(self.path, dict(self.headers.items()), raw, time.monotonic())
                )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FlakyMedia:
    """One file on a loopback server we control: counts GETs, can answer slowly or start failing.

    `fail_from`: the GET with this number (1 = the first) and every later one answer 403, like a
    presigned URL that expired. `slow_gets`: the GETs with these numbers wait `delay` seconds.
    """

    def __init__(
        self,
        content: bytes,
        *,
        fail_from: int | None = None,
        slow_gets: tuple[int, ...] = (),
        delay: float = 0.0,
    ) -> None:
        self.gets: list[float] = []  # time.time() of each GET
        lock = threading.Lock()
        flaky = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    flaky.gets.append(time.time())
                    number = len(flaky.gets)
                if number in slow_gets:
                    time.sleep(delay)
                if fail_from is not None and number >= fail_from:
                    status, body = 403, b"<Error><Code>AccessDenied</Code></Error>"
                else:
                    status, body = 200, content
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/clip?X-Amz-Expires=60"

    def __enter__(self) -> FlakyMedia:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Media:
    server: MediaServer

    def url(self, name: str) -> str:
        return self.server.url_for(name)

    def read(self, name: str) -> bytes:
        return (self.server.directory / name).read_bytes()


def post_in_thread(url: str, body: dict[str, Any], key: str) -> tuple[threading.Thread, list[httpx.Response]]:
    """POST /v2/generate from another thread; the answer lands in the returned list."""
    answers: list[httpx.Response] = []

    def run() -> None:
        headers = {"x-api-key": API_KEY, "Idempotency-Key": key}
        answers.append(httpx.post(f"{url}/v2/generate", json=body, headers=headers, timeout=15))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, answers


def seed_body(media: Media, **overrides: Any) -> dict[str, Any]:
    """The example from the sync.so 'generate' page, pointed at loopback media."""
    body: dict[str, Any] = {
        "model": "lipsync-1.9.0-beta",
        "input": [
            {"type": "video", "url": media.url("video.mp4")},
            {"type": "audio", "url": media.url("audio.wav")},
        ],
        "options": {
            "pads": [0, 5, 0, 0],
            "speedup": 1,
            "temperature": 0.5,
            "output_format": "mp4",
            "sync_mode": "bounce",
            "fps": 25,
            "output_resolution": [1280, 720],
            "active_speaker": True,
        },
    }
    body.update(overrides)
    return body


def simple_body(media: Media, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "lipsync-2",
        "input": [
            {"type": "video", "url": media.url("video.mp4")},
            {"type": "audio", "url": media.url("audio.wav")},
        ],
    }
    body.update(overrides)
    return body


def verify_signature(header: str, raw: bytes, secret: str) -> bool:
    """Independent check of `Sync-Signature: t=<s>,v1=<hex>` over f"{t}." + raw body."""
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 60


def finish(client: httpx.Client, generation_id: str, timeout: float = 5) -> dict[str, Any]:
    """Long-poll until the generation is terminal."""

    def terminal() -> dict[str, Any] | None:
        body = client.get(f"/v2/generate/{generation_id}", params={"wait": "true", "timeout": "2"}).json()
        return body if body["status"] not in ("PENDING", "PROCESSING") else None

    return dict(eventually(terminal, timeout))


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Media]:
    root = tmp_path_factory.mktemp("media")
    make_sample_video(root / "video.mp4")
    make_sample_video(root / "video_with_sound.mp4", with_audio=True)
    make_sample_audio(root / "audio.wav")
    make_sample_audio(root / "audio2.wav", frequency=660)
    make_sample_image(root / "face.png")
    (root / "not_media.mp4").write_text("<html>this is an error page, not a video</html>")
    (root / "not_audio.wav").write_bytes(b"\x00" * 2048)
    with MediaServer(root) as server:
        yield Media(server)


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[SyncEmulator]:
    config = EmulatorConfig(
        api_key=API_KEY,
        webhook_secret=SECRET,
        processing_seconds=PROCESSING,
        concurrency=5,
        rate_limit=60,
        output_url_ttl_seconds=3600,
    )
    emu = SyncEmulator(config, host="127.0.0.1", port=0)
    emu.start()
    yield emu
    emu.stop()


@pytest.fixture
def emu(shared_emulator: SyncEmulator) -> SyncEmulator:
    shared_emulator.reset()
    return shared_emulator


@pytest.fixture
def client(emu: SyncEmulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url, headers={"x-api-key": API_KEY}, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.stop()


@pytest.fixture
def hook(receiver: WebhookReceiver) -> WebhookReceiver:
    receiver.received.clear()
    return receiver


# ------------------------------------------------------------------------------ auth
def test_auth_missing_and_wrong_key(emu: SyncEmulator) -> None:
    missing = httpx.get(f"{emu.url}/v2/generations")
    assert missing.status_code == 401
    assert missing.json() == {
        "message": "Either Cookie or x-api-key header must be provided",
        "error": "Unauthorized",
        "statusCode": 401,
    }
    wrong = httpx.post(f"{emu.url}/v2/generate", headers={"x-api-key": "nope"}, json={})
    assert wrong.status_code == 401
    assert wrong.json() == {"message": "Unauthorized", "statusCode": 401}


def test_api_key_rotation(emu: SyncEmulator, client: httpx.Client) -> None:
    def status(key: str) -> int:
        return httpx.get(f"{emu.url}/v2/generations", headers={"x-api-key": key}).status_code

    rotated = httpx.post(f"{emu.url}/_emulator/api-key", json={"apiKey": "sk-new"})
    assert (rotated.status_code, rotated.json()) == (200, {"rotated": True})
    assert client.get("/v2/generations").status_code == 401  # the old key is dead at once
    assert status("sk-new") == 200
    emu.rotate_api_key("sk-newer")
    assert (status("sk-new"), status("sk-newer")) == (401, 200)
    for bad in ({}, {"apiKey": ""}, {"apiKey": 5}, ["sk-x"]):
        assert httpx.post(f"{emu.url}/_emulator/api-key", json=bad).status_code == 400, bad
    assert status("sk-newer") == 200
    emu.reset()  # back to the configured key
    assert (status("sk-newer"), status(API_KEY)) == (401, 200)


# ------------------------------------------------------------------- happy path
def test_seed_example_completes_with_signed_webhook(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    webhook_url = f"{hook.url}?token=abc123"
    created = client.post("/v2/generate", json=seed_body(media, webhookUrl=webhook_url))
    assert created.status_code == 201
    gen = created.json()
    assert gen["status"] == "PENDING"
    assert gen["model"] == "lipsync-1.9.0-beta"
    assert gen["options"]["pads"] == [0, 5, 0, 0]  # echoed as sent
    assert gen["webhookUrl"] == webhook_url
    assert (gen["outputUrl"], gen["outputDuration"], gen["error"], gen["errorCode"]) == (None,) * 4

    seen = {client.get(f"/v2/generate/{gen['id']}").json()["status"]}
    done = finish(client, gen["id"])
    seen.add(done["status"])
    assert done["status"] == "COMPLETED"
    assert done["outputDuration"] == pytest.approx(1.0, abs=0.2)
    output = httpx.get(done["outputUrl"])
    assert output.status_code == 200
    assert output.content[4:8] == b"ftyp"

    delivery = eventually(lambda: hook.received)[0]
    assert delivery.path == "/hook?token=abc123"
    assert delivery.headers["Content-Type"] == "application/json"
    assert verify_signature(delivery.headers["Sync-Signature"], delivery.raw, SECRET)
    assert not verify_signature(delivery.headers["Sync-Signature"], delivery.raw, "whsec_other")
    payload = delivery.json
    assert payload["id"] == gen["id"]
    assert payload["status"] == "COMPLETED"
    assert payload["outputUrl"] == done["outputUrl"]
    assert "error_code" in payload
    assert "errorCode" not in payload
    # Exactly the bytes of compact JSON, as documented.
    assert delivery.raw == json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

    records = eventually(emu.webhooks)
    assert records[0]["url"].endswith("/hook?token=***")
    assert (records[0]["status"], records[0]["responseStatus"]) == ("COMPLETED", 200)
    time.sleep(0.1)
    assert len(hook.received) == 1  # one webhook per job, none for PENDING/PROCESSING


def test_status_moves_pending_processing_completed(client: httpx.Client, media: Media) -> None:
    gen = client.post("/v2/generate", json=simple_body(media)).json()
    seen: list[str] = []

    def observe() -> bool:
        body = client.get(f"/v2/generate/{gen['id']}", params={"include": "progress"}).json()
        assert 0 <= body["progress_percent"] <= 100
        if not seen or seen[-1] != body["status"]:
            seen.append(body["status"])
        return bool(body["status"] == "COMPLETED")

    eventually(observe, timeout=5, interval=0.01)
    assert seen == ["PENDING", "PROCESSING", "COMPLETED"]


@pytest.mark.parametrize(
    "case",
    ["image_and_tts", "dubbing", "segments", "asset"],
)
def test_other_input_shapes_complete(client: httpx.Client, media: Media, case: str) -> None:
    body: dict[str, Any]
    if case == "image_and_tts":
        tts: dict[str, Any] = {
            "type": "text",
            "provider": {"name": "elevenlabs", "voiceId": "v1", "script": "Hello there"},
        }
        body = {"model": "sync-3", "input": [{"type": "image", "url": media.url("face.png")}, tts]}
    elif case == "dubbing":
        body = {
            "model": "lipsync-2",
            "input": [{"type": "video", "url": media.url("video_with_sound.mp4")}],
            "dubParams": {"providerName": "elevenlabs", "targetLang": "de"},
        }
    elif case == "segments":
        body = {
            "model": "lipsync-2",
            "input": [
                {"type": "video", "url": media.url("video.mp4")},
                {"type": "audio", "url": media.url("audio.wav"), "refId": "a"},
                {"type": "audio", "url": media.url("audio2.wav"), "refId": "b"},
            ],
            "segments": [
                {"startTime": 0, "endTime": 0.5, "audioInput": {"refId": "a"}},
                {"startTime": 0.5, "endTime": 1, "audioInput": {"refId": "b"}},
            ],
        }
    else:
        asset = client.post(
            "/v2/assets", json={"url": media.url("video.mp4"), "type": "VIDEO", "name": "clip"}
        )
        assert asset.status_code == 201
        assert set(asset.json()) >= {"id", "url", "type", "name", "createdAt"}
        assert client.get(f"/v2/assets/{asset.json()['id']}").json()["name"] == "clip"
        body = simple_body(media)
        body["input"][0] = {"type": "video", "assetId": asset.json()["id"]}
    created = client.post("/v2/generate", json=body)
    assert created.status_code == 201, created.text
    done = finish(client, created.json()["id"])
    assert done["status"] == "COMPLETED", done
    assert httpx.get(done["outputUrl"]).content[4:8] == b"ftyp"
    if case == "image_and_tts":
        tts_audio = httpx.get(done["synthesizedAudioUrl"])
        assert tts_audio.status_code == 200
        assert tts_audio.content[:4] == b"RIFF"


def test_output_url_expiry_and_download(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    emu.set_scenario({"outputUrlTtlSeconds": 0})
    gen = client.post("/v2/generate", json=simple_body(media)).json()
    not_yet = client.get(f"/v2/generations/{gen['id']}/download")
    assert not_yet.status_code == 409
    assert not_yet.json()["errorCode"] == "generation_not_completed"
    done = finish(client, gen["id"])
    expired = httpx.get(done["outputUrl"])
    assert expired.status_code == 403
    assert "Request has expired" in expired.text

    fresh = client.get(f"/v2/generations/{gen['id']}/download")
    assert fresh.status_code == 200
    assert fresh.headers["content-type"].startswith("text/plain")
    assert fresh.text.startswith("http")
    assert not fresh.text.startswith('"')
    assert httpx.get(fresh.text).content[4:8] == b"ftyp"
    assert httpx.get(fresh.text.replace("signature=", "signature=0")).status_code == 403
    assert client.get("/v2/generations/00000000-0000-4000-8000-000000000000/download").status_code == 404

    # A URL with a short life works first, then expires.
    emu.set_scenario({"outputUrlTtlSeconds": 2})
    short = finish(client, client.post("/v2/generate", json=simple_body(media)).json()["id"])
    assert httpx.get(short["outputUrl"]).status_code == 200
    eventually(lambda: httpx.get(short["outputUrl"]).status_code == 403, timeout=4, interval=0.2)


def test_output_download_failure_breaks_off_midway(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    done = finish(client, client.post("/v2/generate", json=simple_body(media)).json()["id"])
    emu.set_scenario({"outputDownloadFailures": 1})
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(done["outputUrl"])
    whole = httpx.get(done["outputUrl"])  # only the first download breaks
    assert whole.status_code == 200
    assert whole.content[4:8] == b"ftyp"
    assert emu.scenario()["outputDownloadFailures"] == 0


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda b: b.pop("model"), "model must be a string"),
        (lambda b: b.update(input="nope"), "input must be an array"),
        (lambda b: b["options"].update(temperature=1.5), "options.temperature must not be greater than 1"),
        (lambda b: b["options"].update(sync_mode="stretch"), "options.sync_mode must be one of"),
        (lambda b: b["options"].update(speedup=9), "options.speedup must not be greater than 4"),
        (lambda b: b.update(outputFileName="bad name.mp4"), "outputFileName must match"),
        (lambda b: b["input"][0].pop("url"), "input.0.url or input.0.assetId must be provided"),
        (lambda b: b["input"][1].update(type="text"), "input.1.provider must be an object"),
        (lambda b: b["input"][0].update(type="gif"), "input.0.type must be one of"),
        (lambda b: b.update(webhookUrl="not a url"), "webhookUrl must be a URL address"),
    ],
)
def test_schema_errors_are_400(
    client: httpx.Client, media: Media, change: Callable[[dict[str, Any]], Any], fragment: str
) -> None:
    body = seed_body(media)
    change(body)
    answer = client.post("/v2/generate", json=body)
    assert answer.status_code == 400
    assert answer.json()["statusCode"] == 400
    assert answer.json()["error"] == "Bad Request"
    assert any(fragment in m for m in answer.json()["message"]), answer.json()


def test_invalid_json_is_400(client: httpx.Client) -> None:
    answer = client.post("/v2/generate", content=b"{nope", headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert isinstance(answer.json()["message"], list)


def _tts(script: str = "hi") -> dict[str, Any]:
    return {"type": "text", "provider": {"name": "elevenlabs", "voiceId": "v", "script": script}}


@pytest.mark.parametrize(
    ("make", "code"),
    [
        (lambda m: simple_body(m, model="lipsync-9"), "generation_unsupported_model"),
        (
            lambda m: simple_body(m, input=[{"type": "video", "url": m.url("video.mp4")}] * 2 + [_tts()]),
            "generation_input_too_many_visual",
        ),
        (lambda m: simple_body(m, input=[{"type": "image", "url": m.url("face.png")}, _tts()]), "image"),
        (lambda m: simple_body(m, input=[{"type": "video", "url": m.url("video.mp4")}]), "missing_audio"),
        (lambda m: simple_body(m, input=[{"type": "audio", "url": m.url("audio.wav")}]), "missing_video"),
        (
            lambda m: simple_body(m, dubParams={"providerName": "elevenlabs", "targetLang": "de"}),
            "generation_input_dub_audio_conflict",
        ),
        (
            lambda m: simple_body(m, segments=[{"startTime": 0, "endTime": 1, "audioInput": {"refId": "x"}}]),
            "generation_input_segments_invalid",
        ),
        (
            lambda m: simple_body(
                m,
                input=[{"type": "video", "url": m.url("video.mp4")}, {**_tts(), "refId": "a"}],
                segments=[{"startTime": 2, "endTime": 1, "audioInput": {"refId": "a"}}],
            ),
            "generation_input_segments_invalid",
        ),
        (
            lambda m: simple_body(m, input=[{"type": "video", "assetId": "missing"}, _tts()]),
            "generation_input_asset_not_found",
        ),
        (
            lambda m: simple_body(m, input=[{"type": "video", "url": m.url("video.mp4")}, _tts("x" * 5001)]),
            "generation_text_length_exceeded",
        ),
    ],
)
def test_semantic_errors_are_422(
    client: httpx.Client, media: Media, make: Callable[[Media], dict[str, Any]], code: str
) -> None:
    answer = client.post("/v2/generate", json=make(media))
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["statusCode"] == 422
    assert code in body["errorCode"]
    assert body["message"]
    assert body["suggestion"]


def test_legacy_models_accepted(client: httpx.Client, media: Media) -> None:
    created = []
    for model in ("lipsync-1.8.0", "lipsync-1.7.1", "lipsync-1.6.0", "lipsync-2-mini", "react-1"):
        answer = client.post("/v2/generate", json=seed_body(media, model=model, extraField={"ignored": 1}))
        assert answer.status_code == 201, answer.text
        assert "extraField" not in answer.json()  # unknown fields are ignored
        created.append(answer.json()["id"])
    assert all(finish(client, generation_id)["status"] == "COMPLETED" for generation_id in created)


def test_inaccessible_inputs_are_422(client: httpx.Client, media: Media) -> None:
    body = simple_body(media)
    body["input"][0]["url"] = media.url("missing.mp4")
    answer = client.post("/v2/generate", json=body)
    assert answer.status_code == 422
    assert answer.json()["errorCode"] == "generation_input_video_inaccessible"
    assert answer.json()["message"] == "The provided video URL is inaccessible."

    body = simple_body(media)
    body["input"][1]["url"] = "http://127.0.0.1:9/closed.wav"  # discard port: connection refused
    answer = client.post("/v2/generate", json=body)
    assert answer.status_code == 422
    assert answer.json()["errorCode"] == "generation_input_audio_inaccessible"
    assert client.get("/v2/generations").json() == []


@pytest.mark.parametrize(
    ("index", "name", "code"),
    [
        (0, "not_media.mp4", "generation_input_video_invalid"),
        (1, "not_audio.wav", "generation_input_audio_invalid"),
    ],
)
def test_non_media_input_fails_after_create(
    client: httpx.Client, media: Media, index: int, name: str, code: str
) -> None:
    body = simple_body(media)
    body["input"][index]["url"] = media.url(name)
    created = client.post("/v2/generate", json=body)
    assert created.status_code == 201
    done = finish(client, created.json()["id"])
    assert (done["status"], done["errorCode"]) == ("FAILED", code)
    assert done["error"]


# -------------------------------------------------------------------- idempotency
def test_idempotency_key(client: httpx.Client, media: Media) -> None:
    body = simple_body(media)
    first = client.post("/v2/generate", json=body, headers={"Idempotency-Key": "job-1.v2~a_b"})
    again = client.post("/v2/generate", json=body, headers={"Idempotency-Key": "job-1.v2~a_b"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert len(client.get("/v2/generations").json()) == 1

    other = client.post(
        "/v2/generate",
        json=simple_body(media, model="lipsync-2-pro"),
        headers={"Idempotency-Key": "job-1.v2~a_b"},
    )
    assert other.status_code == 409
    assert other.json()["errorCode"] == "idempotency_key_reused"

    for bad in ("has space", "x" * 129, "a/b", ""):
        answer = client.post("/v2/generate", json=body, headers={"Idempotency-Key": bad})
        assert answer.status_code == 400, bad
        assert answer.json()["errorCode"] == "INVALID_IDEMPOTENCY_KEY"
    dup = client.post("/v2/generate", json=body, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert dup.status_code == 400
    assert len(client.get("/v2/generations").json()) == 1


# -------------------------------------------------------- idempotency, concurrent
def test_concurrent_duplicate_is_a_409_and_creates_one_generation(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    with FlakyMedia(media.read("video.mp4"), slow_gets=(1,), delay=1.0) as slow:
        body = simple_body(media)
        body["input"][0]["url"] = slow.url
        thread, first = post_in_thread(emu.url, body, "dup-1")
        eventually(lambda: slow.gets)  # the first request is fetching its inputs, key in use
        second = client.post("/v2/generate", json=body, headers={"Idempotency-Key": "dup-1"})
        thread.join(timeout=10)
    assert second.status_code == 409
    assert second.json()["errorCode"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    assert "Retry later with the same Idempotency-Key" in second.json()["message"]
    assert first[0].status_code == 201
    assert [g["id"] for g in client.get("/v2/generations").json()] == [first[0].json()["id"]]
    stats = emu.stats()
    assert (stats["createRequests"], stats["created"], stats["rejected"]["other"]) == (2, 1, 1)


def test_the_key_stays_in_progress_until_the_answer_is_sent(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    # A client that timed out on a slow answer and retries at once meets the conflict.
    emu.set_scenario({"latencySeconds": 1.0})
    thread, first = post_in_thread(emu.url, simple_body(media), "slow-answer")
    eventually(lambda: emu.stats()["created"] == 1)  # created; the answer is still on its way
    retry = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "slow-answer"})
    thread.join(timeout=10)
    assert retry.status_code == 409
    assert retry.json()["errorCode"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    later = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "slow-answer"})
    assert (later.status_code, later.json()["id"]) == (201, first[0].json()["id"])
    assert len(client.get("/v2/generations").json()) == 1


def test_concurrent_duplicate_can_wait_for_the_first_answer(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    emu.set_scenario({"concurrentDuplicate": "wait"})
    with FlakyMedia(media.read("video.mp4"), slow_gets=(1,), delay=1.0) as slow:
        body = simple_body(media)
        body["input"][0]["url"] = slow.url
        thread, first = post_in_thread(emu.url, body, "dup-2")
        eventually(lambda: slow.gets)
        second = client.post("/v2/generate", json=body, headers={"Idempotency-Key": "dup-2"})
        thread.join(timeout=10)
    assert first[0].status_code == second.status_code == 201
    assert first[0].json() == second.json()
    assert len(client.get("/v2/generations").json()) == 1


# ------------------------------------------------------------------------- limits
def test_concurrency_limit(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    emu.set_scenario({"processingSeconds": 3})
    ids = [
        client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": f"k{i}"}).json()[
            "id"
        ]
        for i in range(5)
    ]
    over = client.post("/v2/generate", json=simple_body(media))
    assert over.status_code == 429
    body = over.json()
    assert body["errorCode"] == "concurrency_limit_reached"
    assert body["error"] == "Too Many Requests"
    assert (body["activeGenerations"], body["concurrencyLimit"]) == (5, 5)
    # The default fixed hint, although every job here ends within 3 s: the real API cannot know that.
    assert body["retryAfterSeconds"] == 10
    assert over.headers["Retry-After"] == "10"
    assert body["upgradeUrl"] == "https://sync.so/pricing"
    # An idempotent replay is not a new job, so it is not refused.
    replay = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "k0"})
    assert (replay.status_code, replay.json()["id"]) == (201, ids[0])
    assert emu.stats()["rejected"] == {"concurrency": 1, "rate": 0, "other": 0}


def test_concurrency_hint_is_fixed_and_configurable(media: Media) -> None:
    config = EmulatorConfig(
        api_key=API_KEY, processing_seconds=0.8, concurrency=1, concurrency_retry_after_seconds=2.5
    )
    with SyncEmulator(config) as emu, httpx.Client(base_url=emu.url, headers={"x-api-key": API_KEY}) as c:
        assert c.post("/v2/generate", json=simple_body(media)).status_code == 201
        hints = []
        for _ in range(2):  # the job's end comes closer; the hint does not move
            over = c.post("/v2/generate", json=simple_body(media))
            assert over.status_code == 429
            hints.append((over.json()["retryAfterSeconds"], over.headers["Retry-After"]))
            time.sleep(0.3)
        assert hints == [(2.5, "3"), (2.5, "3")]
        # Injected concurrency 429s use the same hint unless the entry gives one.
        emu.set_scenario({"createFailures": [
            {"status": 429, "errorCode": "concurrency_limit_reached"},
            {"status": 429, "errorCode": "concurrency_limit_reached", "retryAfterSeconds": 4},
        ]})  # fmt: skip
        injected = [c.post("/v2/generate", json=simple_body(media)) for _ in range(2)]
        assert [(r.json()["retryAfterSeconds"], r.headers["Retry-After"]) for r in injected] == [
            (2.5, "3"),
            (4, "4"),
        ]


def test_reserved_slots_are_released_and_counted(media: Media) -> None:
    config = EmulatorConfig(api_key=API_KEY, processing_seconds=0.3, concurrency=1, rate_limit=60)
    with (
        SyncEmulator(config) as emu,
        httpx.Client(base_url=emu.url, headers={"x-api-key": API_KEY}) as c,
        FlakyMedia(media.read("video.mp4"), slow_gets=(1,), delay=1.0) as slow,
    ):
        missing = simple_body(media)
        missing["input"][0]["url"] = media.url("missing.mp4")
        for _ in range(3):  # refused after taking the slot: the slot comes back each time
            assert c.post("/v2/generate", json=missing).status_code == 422
        body = simple_body(media)
        body["input"][0]["url"] = slow.url
        thread, first = post_in_thread(emu.url, body, "slot-1")
        eventually(lambda: slow.gets)
        # The first create holds the only slot while it fetches: no job exists yet, but it counts.
        busy = c.post("/v2/generate", json=simple_body(media))
        thread.join(timeout=10)
        assert busy.status_code == 429
        assert busy.json()["activeGenerations"] == 1
        assert first[0].status_code == 201
        finish(c, first[0].json()["id"])
        assert c.post("/v2/generate", json=simple_body(media)).status_code == 201


def test_rate_limit_counts_every_create_request(media: Media, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_state, "RATE_WINDOW_SECONDS", 2.0)  # a short window keeps this fast
    config = EmulatorConfig(api_key=API_KEY, processing_seconds=0.2, concurrency=10, rate_limit=4)
    with SyncEmulator(config) as emu, httpx.Client(base_url=emu.url, headers={"x-api-key": API_KEY}) as c:
        emu.set_scenario({"createFailures": [{"status": 503, "count": 1}]})
        # Four requests, one job: an injected failure, an accepted create, its replay, a 400.
        assert c.post("/v2/generate", json=simple_body(media)).status_code == 503
        assert (
            c.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "r0"}).status_code
            == 201
        )
        assert (
            c.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "r0"}).status_code
            == 201
        )
        assert c.post("/v2/generate", content=b"{nope").status_code == 400
        limited = c.post("/v2/generate", json=simple_body(media))
        assert limited.status_code == 429
        assert limited.json() == {
            "statusCode": 429,
            "errorCode": "rate_limit_exceeded",
            "message": "Rate limit exceeded. Please try again later.",
            "error": "Too Many Requests",
        }
        assert 1 <= int(limited.headers["Retry-After"]) <= 2  # until the oldest leaves the window
        replay = c.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "r0"})
        assert replay.status_code == 429  # replays count too
        # A client retrying in a tight loop burns its own budget: for longer than the window,
        # every retry is refused, because each refused retry counts.
        deadline = time.monotonic() + 2.6
        while time.monotonic() < deadline:
            assert c.post("/v2/generate", json=simple_body(media)).status_code == 429
            time.sleep(0.25)
        time.sleep(2.1)  # a quiet window
        assert c.post("/v2/generate", json=simple_body(media)).status_code == 201
        stats = emu.stats()
        assert stats["created"] == 2
        assert stats["rejected"]["rate"] == stats["createRequests"] - 5
        assert stats["rejected"]["other"] == 2


def test_rate_limit_can_count_accepted_creates_only(media: Media, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emulator_state, "RATE_WINDOW_SECONDS", 1.5)
    config = EmulatorConfig(
        api_key=API_KEY, processing_seconds=0.2, concurrency=10, rate_limit=2, rate_limit_counts_all=False
    )
    with SyncEmulator(config) as emu, httpx.Client(base_url=emu.url, headers={"x-api-key": API_KEY}) as c:
        assert c.post("/v2/generate", content=b"{nope").status_code == 400  # not counted
        for i in range(2):
            headers = {"Idempotency-Key": f"r{i}"}
            assert c.post("/v2/generate", json=simple_body(media), headers=headers).status_code == 201
        limited = c.post("/v2/generate", json=simple_body(media))
        assert limited.status_code == 429
        assert limited.json()["errorCode"] == "rate_limit_exceeded"
        replay = c.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "r0"})
        assert replay.status_code == 201  # replays are not counted in this mode
        # Refused retries do not count either: the first accepted create leaving the window is enough.
        started = time.monotonic()
        eventually(lambda: c.post("/v2/generate", json=simple_body(media)).status_code == 201, 4, 0.2)
        assert time.monotonic() - started < 2.0
        assert emu.stats()["created"] == 3


# -------------------------------------------------------- inputs fetched again
@pytest.mark.parametrize(("kind", "via_asset"), [("video", False), ("audio", True)])
def test_input_inaccessible_when_processing_starts_fails_the_job(
    emu: SyncEmulator,
    client: httpx.Client,
    media: Media,
    hook: WebhookReceiver,
    kind: str,
    via_asset: bool,
) -> None:
    emu.set_scenario({"processingSeconds": 0.8})
    name, index = ("video.mp4", 0) if kind == "video" else ("audio.wav", 1)
    with FlakyMedia(media.read(name), fail_from=2) as flaky:  # works at create, 403 afterwards
        body = simple_body(media, webhookUrl=hook.url)
        if via_asset:
            asset = client.post("/v2/assets", json={"url": flaky.url, "type": kind.upper()}).json()
            body["input"][index] = {"type": kind, "assetId": asset["id"]}
        else:
            body["input"][index]["url"] = flaky.url
        created = client.post("/v2/generate", json=body)
        assert created.status_code == 201, created.text
        done = finish(client, created.json()["id"])
        assert len(flaky.gets) == 2
    assert (done["status"], done["errorCode"], done["error"]) == (
        "FAILED",
        f"generation_input_{kind}_inaccessible",
        f"The provided {kind} URL is inaccessible.",
    )
    assert done["outputUrl"] is None
    payload = eventually(lambda: hook.received)[0].json
    assert (payload["id"], payload["status"]) == (done["id"], "FAILED")
    assert payload["error_code"] == f"generation_input_{kind}_inaccessible"
    time.sleep(1.0)  # past the time the job was planned to complete: it stays FAILED
    assert client.get(f"/v2/generate/{done['id']}").json()["status"] == "FAILED"
    assert [d.json["status"] for d in hook.received] == ["FAILED"]
    (stats,) = emu.stats()["generations"]
    assert stats["processingAt"] is not None
    assert stats["endedAt"] < stats["createdAt"] + 0.8


def test_slow_refetch_that_fails_never_completes(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    # The second fetch outlasts the processing time (0.4 s), then fails: no COMPLETED meanwhile.
    with FlakyMedia(media.read("video.mp4"), fail_from=2, slow_gets=(2,), delay=1.0) as flaky:
        body = simple_body(media, webhookUrl=hook.url)
        body["input"][0]["url"] = flaky.url
        generation_id = client.post("/v2/generate", json=body).json()["id"]
        time.sleep(0.8)
        assert client.get(f"/v2/generate/{generation_id}").json()["status"] == "PROCESSING"
        done = finish(client, generation_id)
    assert (done["status"], done["errorCode"]) == ("FAILED", "generation_input_video_inaccessible")
    eventually(lambda: hook.received)
    time.sleep(0.2)
    assert [d.json["status"] for d in hook.received] == ["FAILED"]


def test_inputs_that_stay_reachable_are_fetched_again_and_complete(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    with FlakyMedia(media.read("audio.wav")) as steady:
        body = simple_body(media)
        body["input"][1]["url"] = steady.url
        done = finish(client, client.post("/v2/generate", json=body).json()["id"])
        assert done["status"] == "COMPLETED"
        (stats,) = emu.stats()["generations"]
        assert len(steady.gets) == 2
        assert steady.gets[1] >= stats["processingAt"] - 0.01  # fetched again when processing started


# -------------------------------------------------------------------------- stats
def test_stats(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    emu.set_scenario({"processingSeconds": 0.6})
    a = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "s-a"}).json()
    b = client.post("/v2/generate", json=simple_body(media)).json()
    assert client.post("/v2/generate", content=b"{nope").status_code == 400
    assert httpx.post(f"{emu.url}/v2/generate", json=simple_body(media)).status_code == 401
    for generation in (a, b):
        finish(client, generation["id"])
    emu.set_scenario({"outcome": "NEVER"})
    c = client.post("/v2/generate", json=simple_body(media)).json()
    eventually(lambda: client.get(f"/v2/generate/{c['id']}").json()["status"] == "PROCESSING")

    stats = httpx.get(f"{emu.url}/_emulator/stats").json()
    assert stats == emu.stats()
    assert stats["maxActive"] == 2  # a and b overlapped; both ended before c began
    assert (stats["createRequests"], stats["created"]) == (5, 3)
    assert stats["rejected"] == {"concurrency": 0, "rate": 0, "other": 2}
    gens = stats["generations"]
    assert [g["id"] for g in gens] == [a["id"], b["id"], c["id"]]  # creation order
    assert [g["status"] for g in gens] == ["COMPLETED", "COMPLETED", "PROCESSING"]
    assert [g["idempotencyKey"] for g in gens] == ["s-a", None, None]
    for g in gens[:2]:
        assert g["createdAt"] <= g["processingAt"] <= g["endedAt"]
        assert isinstance(g["createdAt"], float)
    assert gens[2]["processingAt"] is not None
    assert gens[2]["endedAt"] is None

    emu.reset()
    assert emu.stats() == {
        "maxActive": 0,
        "createRequests": 0,
        "created": 0,
        "rejected": {"concurrency": 0, "rate": 0, "other": 0},
        "generations": [],
    }


# ---------------------------------------------------------------------- GET / list
def test_long_poll_and_query_errors(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    quick = client.post("/v2/generate", json=simple_body(media)).json()
    started = time.monotonic()
    done = client.get(f"/v2/generate/{quick['id']}", params={"wait": "true", "timeout": "5"})
    assert done.json()["status"] == "COMPLETED"
    assert time.monotonic() - started < 3  # answered when the job ended, not at the timeout

    emu.set_scenario({"outcome": "NEVER"})
    stuck = client.post("/v2/generate", json=simple_body(media)).json()
    started = time.monotonic()
    answer = client.get(f"/v2/generate/{stuck['id']}", params={"wait": "true", "timeout": "1"})
    assert 0.9 <= time.monotonic() - started < 3
    assert answer.status_code == 200
    assert answer.json()["status"] in ("PENDING", "PROCESSING")
    assert answer.headers["Retry-After"] == "2"
    assert answer.headers["X-Sync-Wait-Mode"] == "long_poll"
    assert answer.headers["X-Sync-Wait-Timeout-Seconds"] == "1"

    for params in (
        {"wait": "true", "timeout": "0"},
        {"wait": "true", "timeout": "11"},
        {"wait": "true", "include": "progress"},
    ):
        assert client.get(f"/v2/generate/{stuck['id']}", params=params).status_code == 400, params
    progress = client.get(f"/v2/generate/{stuck['id']}", params={"include": "progress"}).json()
    assert "progress_percent" in progress
    assert "progress_percent" not in client.get(f"/v2/generate/{stuck['id']}").json()
    missing = client.get("/v2/generate/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    assert missing.json()["errorCode"] == "generation_not_found"


def test_list_filters_and_cursor(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    made = [
        client.post("/v2/generate", json=simple_body(media, projectId="p1" if i < 2 else "p2")).json()["id"]
        for i in range(3)
    ]
    for generation_id in made:
        finish(client, generation_id)
    emu.set_scenario({"outcome": "NEVER"})
    made.append(client.post("/v2/generate", json=simple_body(media)).json()["id"])
    newest_first = made[::-1]

    def ids(*pairs: tuple[str, str], **params: str) -> list[str]:
        answer = client.get("/v2/generations", params=[*pairs, *params.items()])
        assert answer.status_code == 200, answer.text
        return [g["id"] for g in answer.json()]

    assert sorted(ids()) == sorted(made)
    assert sorted(ids(status="COMPLETED")) == sorted(made[:3])
    assert ids(status="PENDING,PROCESSING") == [made[3]]
    # Repeated parameters, as the official SDK sends them, and mixtures of both forms.
    assert ids(("status", "PENDING"), ("status", "PROCESSING")) == [made[3]]
    assert sorted(ids(("status", "COMPLETED"), ("status", "PENDING,PROCESSING"))) == sorted(made)
    assert sorted(ids(ids=f"{made[0]},{made[3]}")) == sorted([made[0], made[3]])
    assert sorted(ids(("ids", made[0]), ("ids", made[3]))) == sorted([made[0], made[3]])
    assert sorted(ids(("ids", f"{made[0]},{made[1]}"), ("ids", made[3]))) == sorted([*made[:2], made[3]])
    assert ids(("ids", made[0]), ("ids", made[3]), ("status", "COMPLETED")) == [made[0]]
    repeated_bad = client.get("/v2/generations", params=[("status", "COMPLETED"), ("status", "DONE")])
    assert repeated_bad.status_code == 400
    assert sorted(ids(projectId="p1")) == sorted(made[:2])
    assert ids(limit="2") == newest_first[:2]
    assert ids(limit="2", cursor=newest_first[1]) == newest_first[2:]
    assert ids(limit="2", cursor=newest_first[3]) == []
    for bad in ({"cursor": made[0]}, {"limit": "0"}, {"limit": "101"}, {"status": "DONE"}):
        assert client.get("/v2/generations", params=bad).status_code == 400, bad


# ------------------------------------------------------------------------ scenarios
def test_webhook_drop(emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver) -> None:
    emu.set_scenario({"webhook": "drop"})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    records = eventually(emu.webhooks)
    assert records[0]["dropped"] is True
    assert records[0]["responseStatus"] is None
    time.sleep(0.2)
    assert hook.received == []


def test_webhook_delay(emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver) -> None:
    emu.set_scenario({"webhookDelaySeconds": 0.8})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    finished_at = time.monotonic()
    delivery = eventually(lambda: hook.received, timeout=3)[0]
    assert delivery.at - finished_at >= 0.6


def test_webhook_duplicate(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    emu.set_scenario({"webhook": "duplicate"})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    first, second = eventually(lambda: hook.received if len(hook.received) == 2 else None)
    assert first.json == second.json
    assert first.json["status"] == "COMPLETED"
    assert all(verify_signature(d.headers["Sync-Signature"], d.raw, SECRET) for d in (first, second))


def test_webhook_reorder(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    emu.set_scenario({"webhook": "reorder"})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    deliveries = eventually(lambda: hook.received if len(hook.received) == 2 else None)
    assert [d.json["status"] for d in deliveries] == ["COMPLETED", "PROCESSING"]
    assert deliveries[1].json["outputUrl"] is None


def test_create_failures(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    emu.set_scenario({"createFailures": [
        {"status": 429, "errorCode": "rate_limit_exceeded", "count": 2, "retryAfterSeconds": 1},
        {"status": 503, "count": 1},
    ]})  # fmt: skip
    for _ in range(2):
        limited = client.post("/v2/generate", json=simple_body(media))
        assert limited.status_code == 429
        assert limited.json()["errorCode"] == "rate_limit_exceeded"
        assert limited.headers["Retry-After"] == "1"
    unavailable = client.post("/v2/generate", json=simple_body(media))
    assert unavailable.status_code == 503
    assert unavailable.json()["statusCode"] == 503
    assert unavailable.json()["errorCode"]
    assert client.post("/v2/generate", json=simple_body(media)).status_code == 201
    assert emu.scenario()["createFailures"][0]["count"] == 0


def test_create_failure_after_create_is_recoverable_with_same_key(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    emu.set_scenario({"createFailures": [{"status": 503, "afterCreate": True, "count": 1}]})
    lost = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "lost-1"})
    assert lost.status_code == 503
    assert lost.json()["errorCode"] == "IDEMPOTENCY_OUTCOME_UNKNOWN"
    generation_id = lost.json()["generationId"]
    assert lost.json()["statusCode"] == 503
    assert client.get(f"/v2/generate/{generation_id}").status_code == 200  # the job does exist
    retry = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "lost-1"})
    assert (retry.status_code, retry.json()["id"]) == (201, generation_id)
    assert [g["id"] for g in client.get("/v2/generations").json()] == [generation_id]
    assert finish(client, generation_id)["status"] == "COMPLETED"


def test_create_failure_after_create_can_be_an_in_progress_409(
    emu: SyncEmulator, client: httpx.Client, media: Media
) -> None:
    emu.set_scenario(
        {
            "createFailures": [
                {"status": 409, "errorCode": "IDEMPOTENCY_REQUEST_IN_PROGRESS", "afterCreate": True}
            ]
        }
    )
    answer = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "ip-1"})
    assert answer.status_code == 409
    body = answer.json()
    assert (body["statusCode"], body["errorCode"]) == (409, "IDEMPOTENCY_REQUEST_IN_PROGRESS")
    assert "same Idempotency-Key" in body["message"]
    generation_id = body["generationId"]
    assert [g["id"] for g in client.get("/v2/generations").json()] == [generation_id]
    assert finish(client, generation_id)["status"] == "COMPLETED"  # the job exists and runs
    retry = client.post("/v2/generate", json=simple_body(media), headers={"Idempotency-Key": "ip-1"})
    assert (retry.status_code, retry.json()["id"]) == (201, generation_id)


def test_get_failures(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    gen = client.post("/v2/generate", json=simple_body(media)).json()
    emu.set_scenario({"getFailures": [{"status": 503, "errorCode": "internal_error", "count": 1}]})
    failed = client.get(f"/v2/generate/{gen['id']}")
    assert (failed.status_code, failed.json()["errorCode"]) == (503, "internal_error")
    assert client.get(f"/v2/generate/{gen['id']}").status_code == 200


def test_failed_outcome(emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver) -> None:
    emu.set_scenario(
        {"outcome": "FAILED", "outcomeErrorCode": "generation_timeout", "outcomeError": "took too long"}
    )
    done = finish(
        client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"]
    )
    assert (done["status"], done["errorCode"], done["error"]) == (
        "FAILED",
        "generation_timeout",
        "took too long",
    )
    assert done["outputUrl"] is None
    payload = eventually(lambda: hook.received)[0].json
    assert (payload["status"], payload["error_code"]) == ("FAILED", "generation_timeout")


def test_rejected_outcome_sends_no_webhook_by_default(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    emu.set_scenario({"outcome": "REJECTED"})
    done = finish(
        client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"]
    )
    assert done["status"] == "REJECTED"
    time.sleep(0.3)
    assert hook.received == []
    assert emu.webhooks() == []

    emu.set_scenario({"webhookStatuses": ["COMPLETED", "FAILED", "REJECTED"]})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    assert eventually(lambda: hook.received)[0].json["status"] == "REJECTED"


def test_latency(emu: SyncEmulator, client: httpx.Client) -> None:
    emu.set_scenario({"latencySeconds": 0.5})
    started = time.monotonic()
    assert client.get("/v2/generations").status_code == 200
    assert time.monotonic() - started >= 0.5


def test_scenario_admin_endpoint(emu: SyncEmulator) -> None:
    merged = httpx.post(f"{emu.url}/_emulator/scenario", json={"webhook": "duplicate"}).json()
    assert merged["webhook"] == "duplicate"
    assert merged["outcome"] == "COMPLETED"
    merged = httpx.post(f"{emu.url}/_emulator/scenario", json={"outcome": "FAILED"}).json()
    assert (merged["webhook"], merged["outcome"]) == ("duplicate", "FAILED")
    assert httpx.get(f"{emu.url}/_emulator/scenario").json() == merged
    bad = httpx.post(f"{emu.url}/_emulator/scenario", json={"webhok": "drop"})
    assert bad.status_code == 400
    assert httpx.post(f"{emu.url}/_emulator/scenario", json={"outcome": "MAYBE"}).status_code == 400
    assert merged["concurrentDuplicate"] == "conflict"
    assert (
        httpx.post(f"{emu.url}/_emulator/scenario", json={"concurrentDuplicate": "queue"}).status_code == 400
    )
    assert emu.set_scenario({"concurrentDuplicate": "wait"})["concurrentDuplicate"] == "wait"
    assert emu.set_scenario({"concurrentDuplicate": None})["concurrentDuplicate"] == "conflict"


# ------------------------------------------------------------------- admin / logs
def test_request_log_masks_secrets(emu: SyncEmulator, client: httpx.Client, media: Media) -> None:
    body = simple_body(media, webhookUrl="https://hooks.example/cb?token=s3cret&keep=1")
    body["input"][0]["url"] += "?X-Amz-Credential=AKIA&X-Amz-Signature=abc&X-Amz-Security-Token=tok&x=1"
    gen = client.post(
        "/v2/generate", json=body, headers={"Authorization": "Bearer zzz", "Cookie": "session=1"}
    ).json()
    client.get(f"/v2/generate/{gen['id']}", params={"token": "t0k", "include": "progress"})
    done = finish(client, gen["id"])
    httpx.get(done["outputUrl"])  # file downloads are not logged
    httpx.get(f"{emu.url}/_emulator/requests")  # neither are admin calls

    log = httpx.get(f"{emu.url}/_emulator/requests").json()
    assert all(entry["path"].startswith("/v2/") for entry in log)
    create = log[0]
    assert (create["method"], create["path"], create["status"]) == ("POST", "/v2/generate", 201)
    headers = {k.lower(): v for k, v in create["headers"].items()}
    assert headers["x-api-key"] == headers["authorization"] == headers["cookie"] == "***"
    assert create["body"]["webhookUrl"] == "https://hooks.example/cb?token=***&keep=1"
    assert create["body"]["input"][0]["url"].endswith(
        "?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&x=1"
    )
    assert log[1]["query"] == {"token": "***", "include": "progress"}
    text = json.dumps(log)
    for secret in (API_KEY, "zzz", "s3cret", "AKIA", "t0k"):
        assert secret not in text
    assert emu.requests() == log


def test_reset_clears_everything(
    emu: SyncEmulator, client: httpx.Client, media: Media, hook: WebhookReceiver
) -> None:
    emu.set_scenario({"webhook": "duplicate"})
    finish(client, client.post("/v2/generate", json=simple_body(media, webhookUrl=hook.url)).json()["id"])
    eventually(emu.webhooks)
    assert httpx.post(f"{emu.url}/_emulator/reset").status_code == 200
    assert emu.requests() == []
    assert emu.webhooks() == []
    assert emu.scenario()["webhook"] == "deliver"
    assert client.get("/v2/generations").json() == []


# ---------------------------------------------------------------------------- CLI
def test_cli_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL", "SYNC_EMULATOR_CONCURRENCY_RETRY_AFTER_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    defaults = config_from_args(parse_args([]))
    assert (defaults.rate_limit_counts_all, defaults.concurrency_retry_after_seconds) == (True, 10.0)
    flags = config_from_args(
        parse_args(["--rate-limit-counts-accepted-only", "--concurrency-retry-after-seconds", "2.5"])
    )
    assert (flags.rate_limit_counts_all, flags.concurrency_retry_after_seconds) == (False, 2.5)

    monkeypatch.setenv("SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL", "0")
    monkeypatch.setenv("SYNC_EMULATOR_CONCURRENCY_RETRY_AFTER_SECONDS", "7")
    env = config_from_args(parse_args([]))
    assert (env.rate_limit_counts_all, env.concurrency_retry_after_seconds) == (False, 7.0)
    monkeypatch.setenv("SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL", "1")
    assert config_from_args(parse_args([])).rate_limit_counts_all is True
    monkeypatch.setenv("SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL", "maybe")
    with pytest.raises(SystemExit):
        parse_args([])


def test_cli_starts_and_stops_on_sigterm() -> None:
    env = {**os.environ, "SYNC_EMULATOR_API_KEY": "sk-cli"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.sync_emulator", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("sync emulator listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        assert httpx.get(f"{url}/_emulator/health").json() == {"status": "ok"}
        assert httpx.get(f"{url}/v2/generations", headers={"x-api-key": "sk-cli"}).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
