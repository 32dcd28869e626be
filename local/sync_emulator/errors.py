"""Error answers shaped like the real API's (NestJS-style JSON bodies)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class ApiError(Exception):
    """Raised anywhere in request handling; the server turns it into the HTTP answer."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.delay_seconds = 0.0  # an injected failure may be answered late (scenario delaySeconds)


def reason(status: int) -> str:
    """'Too Many Requests' for 429 etc. (NestJS puts this in the `error` field)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def bad_request(messages: list[str]) -> ApiError:
    """Schema-level validation failure: class-validator style list of messages."""
    return ApiError(400, {"statusCode": 400, "message": messages, "error": "Bad Request"})


def coded(
    status: int, error_code: str, message: str, suggestion: str | None = None, **extra: Any
) -> ApiError:
    """An error with a stable `errorCode` (what clients are told to branch on)."""
    body: dict[str, Any] = {"statusCode": status, "errorCode": error_code, "message": message}
    if suggestion is not None:
        body["suggestion"] = suggestion
    else:
        body["error"] = reason(status)
    body.update(extra)
    return ApiError(status, body)


def input_error(error_code: str, message: str, suggestion: str) -> ApiError:
    """422 for semantically invalid generation input."""
    return coded(422, error_code, message, suggestion)


def not_found(message: str = "Generation not found.") -> ApiError:
    return coded(404, "generation_not_found", message)
