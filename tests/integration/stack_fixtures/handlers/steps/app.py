"""A function with behaviours chosen by the event: report, sleep, raise, fail once, crash."""

import os
import time
from typing import Any

import shared_util

_invocations = 0  # survives between invocations only in a warm worker
_flaky_seen: set[str] = set()


class BoomError(Exception):
    pass


class FlakyError(Exception):
    pass


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _invocations
    _invocations += 1
    action = event.get("action")
    started = time.time()
    if action == "sleep":
        time.sleep(float(event["seconds"]))
    elif action == "raise":
        raise BoomError(event.get("message", "boom"))
    elif action == "flaky" and event["key"] not in _flaky_seen:
        _flaky_seen.add(event["key"])
        raise FlakyError("the first attempt fails")
    elif action == "crash":
        os._exit(3)
    return {
        "action": action,
        "started": started,
        "ended": time.time(),
        "env": dict(os.environ),
        "pid": os.getpid(),
        "invocations": _invocations,
        "cwd": os.getcwd(),
        "layer": shared_util.describe(),
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
    }
