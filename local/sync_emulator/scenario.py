"""Fault-injection scenario: defaults, validation and merging (schema in docs/emulator.md)."""

from __future__ import annotations

import copy
from typing import Any

from .errors import bad_request

WEBHOOK_MODES = ("deliver", "drop", "duplicate", "reorder")
OUTCOMES = ("COMPLETED", "FAILED", "REJECTED", "NEVER")
STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "REJECTED")
# A create whose Idempotency-Key is still in use by an unanswered request: 409, or wait and replay.
DUPLICATE_MODES = ("conflict", "wait")
# An outage of the whole API for a while: every /v2 request answers 503, or the connection is
# dropped without an answer (nothing reaches the service either way: nothing is created).
OUTAGE_MODES = ("unavailable", "drop")

DEFAULTS: dict[str, Any] = {
    "webhook": "deliver",
    "webhookDelaySeconds": 0,
    "webhookStatuses": ["COMPLETED", "FAILED"],
    "createFailures": [],
    "getFailures": [],
    "outcome": "COMPLETED",
    "outcomeErrorCode": None,
    "outcomeError": None,
    "processingSeconds": None,
    "outputUrlTtlSeconds": None,
    "latencySeconds": 0,
    "outputDownloadFailures": 0,
    "concurrentDuplicate": "conflict",
    "outage": None,
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _check_failures(key: str, value: Any, errors: list[str]) -> None:
    if not isinstance(value, list):
        errors.append(f"{key} must be an array")
        return
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            errors.append(f"{key}.{i} must be an object")
            continue
        if not (isinstance(entry.get("status"), int) and 400 <= entry["status"] <= 599):
            errors.append(f"{key}.{i}.status must be an HTTP error status (400-599)")
        if not (isinstance(entry.get("count", 1), int) and entry.get("count", 1) >= 0):
            errors.append(f"{key}.{i}.count must be a non-negative integer")
        if not _number(entry.get("retryAfterSeconds", 0)):
            errors.append(f"{key}.{i}.retryAfterSeconds must be a non-negative number")
        if not isinstance(entry.get("afterCreate", False), bool):
            errors.append(f"{key}.{i}.afterCreate must be a boolean")
        if not _number(entry.get("delaySeconds", 0)):
            errors.append(f"{key}.{i}.delaySeconds must be a non-negative number")


def validate(update: Any) -> None:
    """400 for anything the scheduler would not understand (a typo must not pass silently)."""
    if not isinstance(update, dict):
        raise bad_request(["scenario must be a JSON object"])
    errors: list[str] = []
    for key, value in update.items():
        if key not in DEFAULTS:
            errors.append(f"unknown scenario key '{key}' (known: {', '.join(DEFAULTS)})")
        elif value is None:
            continue  # null resets a key to its default
        elif key == "webhook" and value not in WEBHOOK_MODES:
            errors.append(f"webhook must be one of {', '.join(WEBHOOK_MODES)}")
        elif key == "outcome" and value not in OUTCOMES:
            errors.append(f"outcome must be one of {', '.join(OUTCOMES)}")
        elif key == "concurrentDuplicate" and value not in DUPLICATE_MODES:
            errors.append(f"concurrentDuplicate must be one of {', '.join(DUPLICATE_MODES)}")
        elif key == "webhookStatuses" and not (isinstance(value, list) and all(v in STATUSES for v in value)):
            errors.append(f"webhookStatuses must be a list of {', '.join(STATUSES)}")
        elif key in ("createFailures", "getFailures"):
            _check_failures(key, value, errors)
        elif key in ("webhookDelaySeconds", "processingSeconds", "outputUrlTtlSeconds", "latencySeconds"):
            if not _number(value):
                errors.append(f"{key} must be a non-negative number")
        elif key == "outputDownloadFailures" and not (isinstance(value, int) and value >= 0):
            errors.append(f"{key} must be a non-negative integer")
        elif key in ("outcomeErrorCode", "outcomeError") and not isinstance(value, str):
            errors.append(f"{key} must be a string")
        elif key == "outage" and not (
            isinstance(value, dict)
            and _number(value.get("seconds"))
            and value.get("mode", "unavailable") in OUTAGE_MODES
        ):
            errors.append(f"outage must be {{seconds: number, mode: {' | '.join(OUTAGE_MODES)}}}")
    if errors:
        raise bad_request(errors)


def merge(current: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Shallow merge: given keys replace the current ones; null restores the default."""
    merged = copy.deepcopy(current)
    for key, value in update.items():
        merged[key] = copy.deepcopy(DEFAULTS[key]) if value is None else copy.deepcopy(value)
    for entries in (merged["createFailures"], merged["getFailures"]):
        for entry in entries:
            entry.setdefault("count", 1)
    return merged


def initial() -> dict[str, Any]:
    return copy.deepcopy(DEFAULTS)
