"""Polling for a condition in tests that watch servers and processes work in the background."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05, what: str = "the condition"
) -> Any:
    """Call `check` until it returns something truthy and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout} s")
        time.sleep(interval)
