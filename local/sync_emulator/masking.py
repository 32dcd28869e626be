"""Hide secrets before anything is written to the request or webhook logs."""

from __future__ import annotations

from typing import Any

MASK = "***"
SECRET_HEADERS = frozenset({"x-api-key", "authorization", "cookie", "sync-signature"})
# Query parameters that carry credentials in presigned S3 / CloudFront / emulator URLs.
SECRET_QUERY_KEYS = frozenset(
    k.lower()
    for k in (
        "token",
        "X-Amz-Signature",
        "X-Amz-Credential",
        "X-Amz-Security-Token",
        "signature",
        "Signature",
    )
)


def mask_headers(headers: dict[str, str]) -> dict[str, str]:
    return {name: (MASK if name.lower() in SECRET_HEADERS else value) for name, value in headers.items()}


def mask_query_string(query: str, mask_all: bool = False) -> str:
    """Mask secret parameter values, keeping everything else byte-for-byte."""
    parts = []
    for part in query.split("&"):
        key, sep, _value = part.partition("=")
        if sep and (mask_all or key.lower() in SECRET_QUERY_KEYS):
            part = f"{key}={MASK}"
        parts.append(part)
    return "&".join(parts)


def mask_url(url: str, mask_all: bool = False) -> str:
    """Mask secrets in a URL's query string (all values when mask_all)."""
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    return f"{base}?{mask_query_string(query, mask_all)}{hash_sep}{fragment}"


def mask_json(value: Any) -> Any:
    """Mask secret query values in every URL-looking string inside a JSON value."""
    if isinstance(value, dict):
        return {k: mask_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_json(v) for v in value]
    if isinstance(value, str) and "://" in value and "?" in value:
        return mask_url(value)
    return value


def mask_query_params(params: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
    masked: dict[str, str | list[str]] = {}
    for key, value in params.items():
        if key.lower() in SECRET_QUERY_KEYS:
            masked[key] = [MASK] * len(value) if isinstance(value, list) else MASK
        else:
            masked[key] = value
    return masked
