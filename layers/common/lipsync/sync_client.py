"""A small httpx client for the sync.so v2 API.

It never retries: the submit queue (SQS redelivery) and the state machine (`Retry`) do.
Every failure becomes a `SyncRetryableError` or a `SyncPermanentError`; the class names
are what Step Functions `Retry`/`Catch` match on, so keep them stable.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterable
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from lipsync.models import ApiErrorBody, GenerateRequest, Generation

RetryReason = Literal["rate_limit", "concurrency", "server", "outcome_unknown", "timeout", "connection"]

# Well below the shortest Lambda timeout that calls sync.so (10 s).
DEFAULT_TIMEOUT = httpx.Timeout(8.0, connect=3.0)
WAIT_MARGIN_SECONDS = 3.0


class SyncApiError(Exception):
    """A failed sync.so call. `message` never contains the API key or signed URLs."""

    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_code: str | None = None,
        retry_after_seconds: float | None = None,
        body: ApiErrorBody | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after_seconds = retry_after_seconds
        self.body = body


class SyncRetryableError(SyncApiError):
    """Try again later (same Idempotency-Key): 429, 5xx, timeouts, connection errors."""

    retryable = True

    def __init__(self, message: str, *, reason: RetryReason, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class SyncPermanentError(SyncApiError):
    """The request itself is wrong or refused (400, 401, 402, 404, 409, 413, 422): fix it, do not retry."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, moment - (time.time() if now is None else now))


def error_from_response(response: httpx.Response, operation: str) -> SyncApiError:
    """Classify a non-2xx answer, keeping the API's errorCode and message."""
    try:
        body: ApiErrorBody | None = ApiErrorBody.model_validate(response.json())
    except (ValueError, ValidationError):
        body = None
    status = response.status_code
    error_code = body.error_code if body else None
    detail = body.text if body and body.text else response.text[:300]
    message = f"{operation} answered {status}" + (f" {error_code}" if error_code else "") + f": {detail}"
    retry_after = (body.retry_after_seconds if body else None) or parse_retry_after(
        response.headers.get("retry-after")
    )
    common: dict[str, Any] = {
        "status_code": status,
        "error_code": error_code,
        "retry_after_seconds": retry_after,
        "body": body,
    }
    if status == 429:
        reason: RetryReason = "concurrency" if error_code == "concurrency_limit_reached" else "rate_limit"
        return SyncRetryableError(message, reason=reason, **common)
    if status == 503 and error_code == "IDEMPOTENCY_OUTCOME_UNKNOWN":
        return SyncRetryableError(message, reason="outcome_unknown", **common)
    if status >= 500 or status == 408:
        return SyncRetryableError(message, reason="server", **common)
    return SyncPermanentError(message, **common)


class SyncClient:
    """`POST /v2/generate`, `GET /v2/generate/{id}`, `GET /v2/generations[/{id}/download]`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": api_key, "accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def create_generation(self, request: GenerateRequest, *, idempotency_key: str) -> Generation:
        """Create a generation. Retry with the same key and body after any retryable error."""
        response = self._send(
            "POST",
            "/v2/generate",
            json=request.to_api(),
            headers={"Idempotency-Key": idempotency_key},
        )
        return Generation.model_validate(response.json())

    def get_generation(
        self,
        generation_id: str,
        *,
        wait: bool = False,
        wait_timeout_seconds: int | None = None,
        include_progress: bool = False,
    ) -> Generation:
        """Read a generation; `wait=True` long-polls up to `wait_timeout_seconds` (1-10 s)."""
        params: dict[str, str] = {}
        timeout: httpx.Timeout | None = None
        if wait:
            params["wait"] = "true"
            if wait_timeout_seconds is not None:
                params["timeout"] = str(wait_timeout_seconds)
            read = (wait_timeout_seconds or 5) + WAIT_MARGIN_SECONDS
            timeout = httpx.Timeout(read, connect=DEFAULT_TIMEOUT.connect)
        if include_progress:
            params["include"] = "progress"
        response = self._send("GET", f"/v2/generate/{generation_id}", params=params, timeout=timeout)
        return Generation.model_validate(response.json())

    def download_url(self, generation_id: str) -> str:
        """A fresh signed URL for a completed generation's output (the body is plain text)."""
        response = self._send("GET", f"/v2/generations/{generation_id}/download", accept="text/plain")
        return response.text.strip().strip('"')

    def list_generations(
        self,
        *,
        status: Iterable[str] = (),
        ids: Iterable[str] = (),
        source: str | None = None,
        project_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> list[Generation]:
        """One page of generations (newest first when `limit` is set; `cursor` is the last id seen)."""
        if cursor and limit is None:
            raise ValueError("cursor paging needs a limit")
        params = {
            key: value
            for key, value in {
                "status": ",".join(status),
                "ids": ",".join(ids),
                "source": source,
                "projectId": project_id,
                "limit": str(limit) if limit is not None else None,
                "cursor": cursor,
            }.items()
            if value
        }
        response = self._send("GET", "/v2/generations", params=params)
        payload = response.json()
        # Documented as a bare array; tolerate a {"data": [...]} envelope too.
        items: list[Any] = payload.get("data") or [] if isinstance(payload, dict) else payload
        return [Generation.model_validate(item) for item in items]

    def _send(
        self,
        method: str,
        path: str,
        *,
        accept: str | None = None,
        timeout: httpx.Timeout | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        operation = f"{method} {path}"
        headers = kwargs.pop("headers", {})
        if accept:
            headers["accept"] = accept
        extra: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs, **extra)
        except httpx.TimeoutException as exc:
            raise SyncRetryableError(
                f"{operation} timed out ({type(exc).__name__})", reason="timeout"
            ) from exc
        except httpx.TransportError as exc:
            raise SyncRetryableError(
                f"{operation} could not connect ({type(exc).__name__})", reason="connection"
            ) from exc
        if response.is_success:
            return response
        raise error_from_response(response, operation)
