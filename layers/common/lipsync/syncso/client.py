"""A small httpx client for the sync.so v2 API.

It never retries: the submit queue (SQS redelivery) and the state machine (`Retry`) do.
Every failure becomes a `SyncRetryableError` or a `SyncPermanentError`; the class names
are what Step Functions `Retry`/`Catch` match on, so keep them stable.
"""

from __future__ import annotations

import email.utils
import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import httpx
from pydantic import BaseModel, RootModel, ValidationError

from lipsync.syncso.models import Account, ApiErrorBody, CostEstimateAnswer, GenerateRequest, Generation

RetryReason = Literal[
    "rate_limit",
    "concurrency",
    "server",
    "outcome_unknown",
    "conflict",
    "timeout",
    "connection",
    "not_sent",
    "bad_response",
    "unauthorized",
]
KeyProvider = Callable[[bool], str]  # fresh=True skips any cache (after a 401)

# Well below the shortest Lambda timeout that calls sync.so (10 s).
DEFAULT_TIMEOUT = httpx.Timeout(8.0, connect=3.0)
WAIT_MARGIN_SECONDS = 3.0
ESTIMATE_PATHS = ("/v2/generations/estimate", "/v2/generate/estimate-cost")
# 409s that say for certain nothing was (or will be) created; any other 409 may hide a create.
PERMANENT_CONFLICTS = frozenset(
    {"generation_not_deletable_while_processing", "generation_not_completed", "idempotency_key_reused"},
)


class _GenerationList(RootModel[list[Generation] | dict[str, Any]]):
    def items(self) -> list[Generation]:
        if isinstance(self.root, list):
            return self.root
        data = self.root.get("data") or []
        if not isinstance(data, list):
            raise ValueError("the list's data is not a list")
        return [Generation.model_validate(item) for item in data]


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
        concurrency_limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after_seconds = retry_after_seconds
        self.body = body
        # X-Sync-Concurrency-Limit on a concurrency 429: the plan's limit as sync.so counts it.
        self.concurrency_limit = concurrency_limit


class SyncRetryableError(SyncApiError):
    """Try again later: 429, 409 idempotency conflicts, 5xx, timeouts, connection errors, and a 401
    (the key can be rotated; running jobs must not fail for it)."""

    retryable = True

    def __init__(
        self, message: str, *, reason: RetryReason, key_changed: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason
        self.key_changed = key_changed  # a 401 after which a fresh read of the key gave another key

    @property
    def outcome_uncertain(self) -> bool:
        """A create answered like this may have created a generation: retry with the same key and body.
        (`not_sent`: the connection was refused, so the request never left; a 429 or 401 is sync.so
        saying it did not take this request.)"""
        return self.reason in {
            "server",
            "outcome_unknown",
            "conflict",
            "timeout",
            "connection",
            "bad_response",
        }


class SyncPermanentError(SyncApiError):
    """The request itself is wrong or refused (400, 402, 403, 404, 413, 422): fix it, do not retry."""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - (
                time.time() if now is None else now
            )
        except (TypeError, ValueError, OverflowError):  # not a date, or a year past any clock's range
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _positive_int(value: str | None) -> int | None:
    try:
        number = int(value or "")
    except ValueError:
        return None
    return number if number >= 1 else None


def error_from_response(response: httpx.Response, operation: str) -> SyncApiError:
    """Classify a non-2xx answer, keeping the API's errorCode and message."""
    try:
        body: ApiErrorBody | None = ApiErrorBody.model_validate_json(_content(response))
    except ValidationError:
        body = None
    status = response.status_code
    error_code = body.error_code if body else None
    detail = body.text if body and body.text else _text(response)[:300]
    message = f"{operation} answered {status}" + (f" {error_code}" if error_code else "") + f": {detail}"
    retry_after = (body.retry_after_seconds if body else None) or parse_retry_after(
        response.headers.get("retry-after")
    )
    common: dict[str, Any] = {
        "status_code": status,
        "error_code": error_code,
        "retry_after_seconds": retry_after,
        "body": body,
        "concurrency_limit": _positive_int(response.headers.get("x-sync-concurrency-limit")),
    }
    if status == 429:
        reason: RetryReason = "concurrency" if error_code == "concurrency_limit_reached" else "rate_limit"
        return SyncRetryableError(message, reason=reason, **common)
    if status == 503 and error_code == "IDEMPOTENCY_OUTCOME_UNKNOWN":
        return SyncRetryableError(message, reason="outcome_unknown", **common)
    if status == 409 and error_code not in PERMANENT_CONFLICTS:
        # An idempotency conflict (a concurrent duplicate): the first request may have created it.
        return SyncRetryableError(message, reason="conflict", **common)
    if status == 401:
        return SyncRetryableError(message, reason="unauthorized", **common)
    if status >= 500 or status == 408:
        return SyncRetryableError(message, reason="server", **common)
    return SyncPermanentError(message, **common)


def _parsed[Model: BaseModel](model: type[Model], response: httpx.Response, operation: str) -> Model:
    """A 2xx body as `model`; a body that is not one is the API's fault, and says so (the caller
    treats it like any answer it could not read: a create's outcome is then unknown)."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as error:
        problem = (
            "not JSON"
            if any(e["type"] == "json_invalid" for e in error.errors())
            else "not the documented shape"
        )
        raise SyncRetryableError(
            f"{operation} answered {response.status_code} with a body that is {problem}",
            reason="bad_response",
            status_code=response.status_code,
        ) from error


def _content(response: httpx.Response) -> bytes:
    """The body; one that does not match its Content-Encoding is no body."""
    try:
        return response.content
    except httpx.DecodingError:
        return b""


def _text(response: httpx.Response) -> str:
    """The body as text; one whose declared charset does not decode it is read as UTF-8, lossily."""
    try:
        return response.text
    except (UnicodeError, LookupError, httpx.DecodingError):
        return _content(response).decode("utf-8", "replace")


def _fixed_key(api_key: str) -> KeyProvider:
    def provide(fresh: bool = False) -> str:
        return api_key

    return provide


class SyncClient:
    """`POST /v2/generate`, `GET /v2/generate/{id}`, `GET /v2/generations[/{id}/download]`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | KeyProvider,
        *,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key: KeyProvider = api_key if callable(api_key) else _fixed_key(api_key)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"x-api-key": self._key(False), "accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def create_generation(self, request: GenerateRequest | str, *, idempotency_key: str) -> Generation:
        """Create a generation. `request` may be the exact JSON text to send (a retry after an uncertain
        outcome must repeat the first attempt byte for byte, with the same key)."""
        body = request if isinstance(request, str) else json.dumps(request.to_api(), ensure_ascii=False)
        response = self._send(
            "POST",
            "/v2/generate",
            content=body.encode(),
            headers={"Idempotency-Key": idempotency_key, "content-type": "application/json"},
        )
        return _parsed(Generation, response, "POST /v2/generate")

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
        return _parsed(Generation, response, "GET /v2/generate/{id}")

    def download_url(self, generation_id: str) -> str:
        """A fresh signed URL for a completed generation's output (the body is plain text)."""
        response = self._send("GET", f"/v2/generations/{generation_id}/download", accept="text/plain")
        return _text(response).strip().strip('"')

    def get_account(self) -> Account:
        """The account, organization, plan, limits and balance behind the key (`GET /v2/account`)."""
        return _parsed(Account, self._send("GET", "/v2/account"), "GET /v2/account")

    def estimate_cost(self, model: str, duration_seconds: float) -> CostEstimateAnswer:
        """sync.so's estimate for `duration_seconds` of output (at the endpoint's default fps); the
        documented alias answers where the main path does not exist (404)."""
        body = {"model": model, "duration": round(max(duration_seconds, 0.001), 3)}
        try:
            response = self._send("POST", ESTIMATE_PATHS[0], json=body)
        except SyncPermanentError as error:
            if error.status_code != 404:
                raise
            response = self._send("POST", ESTIMATE_PATHS[1], json=body)
        return _parsed(CostEstimateAnswer, response, "POST " + ESTIMATE_PATHS[0])

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
        try:
            # Documented as a bare array; tolerate a {"data": [...]} envelope too.
            return _GenerationList.model_validate_json(response.content).items()
        except (ValidationError, ValueError) as error:
            raise SyncRetryableError(
                "GET /v2/generations answered with a body that is not a list of generations",
                reason="bad_response",
                status_code=response.status_code,
            ) from error

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
        response = self._request(operation, method, path, headers, kwargs, extra)
        key_changed = False
        if response.status_code == 401:
            # The key may have been rotated since we cached it: read it once more.
            key_changed = self._reload_key()
            if key_changed and method == "GET":  # reads are free to repeat; creates count against the rate
                response = self._request(operation, method, path, headers, kwargs, extra)
        if response.is_success:
            return response
        error = error_from_response(response, operation)
        if isinstance(error, SyncRetryableError):
            error.key_changed = key_changed
        raise error

    def _reload_key(self) -> bool:
        fresh = self._key(True)
        changed = bool(fresh != self._http.headers.get("x-api-key"))
        self._http.headers["x-api-key"] = fresh
        return changed

    def _request(
        self,
        operation: str,
        method: str,
        path: str,
        headers: dict[str, str],
        kwargs: dict[str, Any],
        extra: dict[str, Any],
    ) -> httpx.Response:
        try:
            request = self._http.build_request(method, path, headers=headers, **kwargs, **extra)
            response = self._http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # No connection, so no request: sync.so cannot have acted on it.
            raise SyncRetryableError(
                f"{operation} could not connect ({type(exc).__name__})", reason="not_sent"
            ) from exc
        except httpx.TimeoutException as exc:
            raise SyncRetryableError(
                f"{operation} timed out ({type(exc).__name__})", reason="timeout"
            ) from exc
        except httpx.DecodingError as exc:  # (a transport that reads the body while it sends)
            raise SyncRetryableError(
                f"{operation} answered with a body that does not decode", reason="bad_response"
            ) from exc
        except httpx.HTTPError as exc:  # the connection broke, or too many redirects
            raise SyncRetryableError(
                f"{operation} could not connect ({type(exc).__name__})", reason="connection"
            ) from exc
        try:
            response.read()
        except httpx.DecodingError as exc:  # a body that does not match its Content-Encoding
            raise SyncRetryableError(
                f"{operation} answered {response.status_code} with a body that does not decode",
                reason="bad_response",
                status_code=response.status_code,
            ) from exc
        except httpx.TimeoutException as exc:
            raise SyncRetryableError(
                f"{operation} timed out ({type(exc).__name__})", reason="timeout"
            ) from exc
        except httpx.HTTPError as exc:  # the connection broke mid-answer
            raise SyncRetryableError(
                f"{operation} broke off ({type(exc).__name__})", reason="connection"
            ) from exc
        finally:
            response.close()
        return response
