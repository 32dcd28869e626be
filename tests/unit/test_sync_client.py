"""The sync.so client's requests and its retryable/permanent classification (no network)."""

import json
from collections.abc import Callable

import httpx
import pytest

from lipsync.syncso.client import (
    SyncClient,
    SyncPermanentError,
    SyncRetryableError,
    parse_retry_after,
)
from lipsync.syncso.models import GenerateRequest
from tests.fakes import current_key

REQUEST = GenerateRequest.model_validate(
    {
        "model": "lipsync-2",
        "input": [
            {"type": "video", "url": "https://media.example/v.mp4"},
            {"type": "audio", "url": "https://media.example/a.wav"},
        ],
    }
)
GENERATION = {"id": "gen-1", "status": "PENDING", "createdAt": "2026-11-25T00:00:00Z"}

Handler = Callable[[httpx.Request], httpx.Response]


def client_with(handler: Handler) -> SyncClient:
    return SyncClient("https://api.example/", "sk-secret", transport=httpx.MockTransport(handler))


def answer(status: int, body: object = None, headers: dict[str, str] | None = None) -> Handler:
    def handle(_request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(status, text=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handle


def test_create_sends_key_idempotency_key_and_the_api_body() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=GENERATION)

    generation = client_with(handle).create_generation(REQUEST, idempotency_key="job-123")
    assert generation.id == "gen-1"
    (sent,) = seen
    assert (sent.method, sent.url.path) == ("POST", "/v2/generate")
    assert sent.headers["x-api-key"] == "sk-secret"
    assert sent.headers["idempotency-key"] == "job-123"
    assert json.loads(sent.content) == REQUEST.to_api()


def test_get_with_wait_sets_query_and_a_longer_read_timeout() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**GENERATION, "status": "COMPLETED", "outputUrl": "https://o"})

    generation = client_with(handle).get_generation("gen-1", wait=True, wait_timeout_seconds=10)
    assert generation.is_terminal
    assert dict(seen[0].url.params) == {"wait": "true", "timeout": "10"}
    assert seen[0].extensions["timeout"]["read"] == 13.0


def test_get_with_progress() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={**GENERATION, "progress_percent": 40})

    assert client_with(handle).get_generation("gen-1", include_progress=True).progress_percent == 40
    assert dict(seen[0].url.params) == {"include": "progress"}


def test_download_url_reads_plain_text() -> None:
    url = client_with(answer(200, "https://cdn.example/out.mp4?sig=1\n")).download_url("gen-1")
    assert url == "https://cdn.example/out.mp4?sig=1"


def test_list_generations_builds_filters_and_cursor() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[GENERATION, {**GENERATION, "id": "gen-2"}])

    page = client_with(handle).list_generations(
        status=["COMPLETED", "FAILED"], project_id="p", limit=2, cursor="gen-0"
    )
    assert [g.id for g in page] == ["gen-1", "gen-2"]
    assert dict(seen[0].url.params) == {
        "status": "COMPLETED,FAILED",
        "projectId": "p",
        "limit": "2",
        "cursor": "gen-0",
    }
    with pytest.raises(ValueError, match="needs a limit"):
        client_with(handle).list_generations(cursor="gen-0")


@pytest.mark.parametrize(
    ("status", "body", "headers", "reason", "retry_after"),
    [
        (
            429,
            {"statusCode": 429, "errorCode": "rate_limit_exceeded", "message": "Rate limit exceeded."},
            {"Retry-After": "7"},
            "rate_limit",
            7.0,
        ),
        (
            429,
            {"statusCode": 429, "errorCode": "concurrency_limit_reached", "retryAfterSeconds": 42},
            {"Retry-After": "5"},
            "concurrency",
            42.0,
        ),
        (500, {"statusCode": 500, "errorCode": "internal_error"}, None, "server", None),
        (502, "<html>bad gateway</html>", None, "server", None),
        (504, {"errorCode": "elevenlabs_service_unavailable"}, None, "server", None),
        (
            503,
            {"statusCode": 503, "errorCode": "IDEMPOTENCY_OUTCOME_UNKNOWN", "generationId": "gen-9"},
            {"Retry-After": "2"},
            "outcome_unknown",
            2.0,
        ),
    ],
)
def test_retryable_answers(
    status: int, body: object, headers: dict[str, str] | None, reason: str, retry_after: float | None
) -> None:
    with pytest.raises(SyncRetryableError) as caught:
        client_with(answer(status, body, headers)).create_generation(REQUEST, idempotency_key="k")
    error = caught.value
    assert (error.retryable, error.reason, error.status_code) == (True, reason, status)
    assert error.retry_after_seconds == retry_after
    assert "sk-secret" not in str(error)


def test_outcome_unknown_keeps_the_generation_id() -> None:
    body = {"statusCode": 503, "errorCode": "IDEMPOTENCY_OUTCOME_UNKNOWN", "generationId": "gen-9"}
    with pytest.raises(SyncRetryableError) as caught:
        client_with(answer(503, body)).create_generation(REQUEST, idempotency_key="k")
    assert caught.value.body is not None
    assert caught.value.body.generation_id == "gen-9"


@pytest.mark.parametrize(
    ("status", "body", "expected_message"),
    [
        (
            400,
            {"statusCode": 400, "message": ["input must be an array", "model is required"]},
            "400: input must be an array; model is required",
        ),
        (
            400,
            {"statusCode": 400, "errorCode": "INVALID_IDEMPOTENCY_KEY", "message": "bad key"},
            "400 INVALID_IDEMPOTENCY_KEY: bad key",
        ),
        (
            402,
            {"statusCode": 402, "errorCode": "free_tier_generations_exhausted", "message": "pay"},
            "402 free_tier_generations_exhausted: pay",
        ),
        (
            404,
            {"statusCode": 404, "errorCode": "generation_not_found", "message": "nope"},
            "404 generation_not_found: nope",
        ),
        (
            413,
            {"statusCode": 413, "errorCode": "generation_input_validation_failed", "message": "too big"},
            "413 generation_input_validation_failed: too big",
        ),
        (
            422,
            {
                "statusCode": 422,
                "errorCode": "generation_input_video_inaccessible",
                "message": "The provided video URL is inaccessible.",
            },
            "422 generation_input_video_inaccessible: The provided video URL is inaccessible.",
        ),
        (422, "plain text failure", "422: plain text failure"),
    ],
)
def test_permanent_answers_keep_error_code_and_message(
    status: int, body: object, expected_message: str
) -> None:
    with pytest.raises(SyncPermanentError) as caught:
        client_with(answer(status, body)).create_generation(REQUEST, idempotency_key="k")
    error = caught.value
    assert (error.retryable, error.status_code) == (False, status)
    assert error.error_code == (body.get("errorCode") if isinstance(body, dict) else None)
    assert str(error) == f"POST /v2/generate answered {expected_message}"


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (401, {"message": "Unauthorized", "statusCode": 401}, "unauthorized"),
        (409, {"statusCode": 409, "errorCode": "generation_conflict", "message": "conflict"}, "conflict"),
        (
            409,
            {"statusCode": 409, "errorCode": "IDEMPOTENCY_REQUEST_IN_PROGRESS", "message": "wait"},
            "conflict",
        ),
    ],
)
def test_a_401_and_a_409_on_create_are_retryable_not_final(status: int, body: object, reason: str) -> None:
    # A 409 may mean the first request with this key created the job; a 401 may be a rotated key.
    with pytest.raises(SyncRetryableError) as caught:
        client_with(answer(status, body)).create_generation(REQUEST, idempotency_key="k")
    assert caught.value.reason == reason
    assert caught.value.outcome_uncertain is (reason == "conflict")


def test_a_401_on_a_read_re_reads_the_key_once_and_retries_with_the_new_one() -> None:
    keys = ["sk-old"]
    seen: list[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-api-key"])
        if request.headers["x-api-key"] == "sk-old":
            return httpx.Response(401, json={"message": "Unauthorized", "statusCode": 401})
        return httpx.Response(200, json={"id": "g", "status": "PROCESSING"})

    client = SyncClient("https://api.sync.example", current_key(keys), transport=httpx.MockTransport(api))
    keys.append("sk-new")
    assert client.get_generation("g").status == "PROCESSING"
    assert seen == ["sk-old", "sk-new"]


def test_timeouts_and_connection_errors_are_retryable() -> None:
    def time_out(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SyncRetryableError) as slow:
        client_with(time_out).get_generation("g")
    with pytest.raises(SyncRetryableError) as down:
        client_with(refuse).get_generation("g")
    # A refused connection sent nothing (a definite no for a create); a timeout may hide one.
    assert (slow.value.reason, down.value.reason) == ("timeout", "not_sent")
    assert (slow.value.outcome_uncertain, down.value.outcome_uncertain) == (True, False)


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 25 Nov 2026 00:00:30 GMT", now=1795564800.0) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
