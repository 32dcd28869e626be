"""The inside of a function worker: a tiny Lambda Python runtime (run as a script, not imported).

The parent (`workers.FunctionWorker`) starts `python _runtime.py <config-json>` with the
function's environment and cwd = CodeUri. Requests arrive as JSON lines on stdin;
answers go as JSON lines to a separate pipe (the `response_fd` in the config), because
the handler's stdout and stderr are the function's logs.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any

# Running a script puts its own directory first on sys.path; the handler must not see
# the stack's modules, only CodeUri + layers (PYTHONPATH) like in Lambda.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)


class LambdaContext:
    """The attributes and method of the Lambda Python context object."""

    def __init__(self, config: dict[str, Any], request_id: str, deadline: float) -> None:
        self.function_name: str = config["function_name"]
        self.function_version = "$LATEST"
        self.invoked_function_arn: str = config["function_arn"]
        self.memory_limit_in_mb: int = int(config["memory_size"])
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name: str = config["log_stream_name"]
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _error(exc: BaseException, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "stackTrace": traceback.format_tb(exc.__traceback__),
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    response = os.fdopen(config["response_fd"], "w", buffering=1)
    # Line buffering so logs reach the log file as they are written (and survive a kill).
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        response.write(json.dumps(message) + "\n")

    module_name, _, function_name = config["handler"].rpartition(".")
    started = time.time()
    print(f"INIT_START Runtime Version: {config['runtime']} Function: {config['function_name']}", flush=True)
    try:
        handler = getattr(importlib.import_module(module_name.replace("/", ".")), function_name)
        init_error = None
    except AttributeError as exc:
        init_error = _error(exc, "Runtime.HandlerNotFound")
    except Exception as exc:  # any import failure is Lambda's ImportModuleError
        init_error = _error(exc, "Runtime.ImportModuleError")
        init_error["errorMessage"] = f"Unable to import module '{module_name}': {exc}"
    init_ms = (time.time() - started) * 1000

    for line in sys.stdin:
        request = json.loads(line)
        request_id = request["request_id"]
        print(f"START RequestId: {request_id} Version: $LATEST", flush=True)
        begun = time.time()
        if init_error is not None:
            print(f"[ERROR] {init_error['errorType']}: {init_error['errorMessage']}", file=sys.stderr)
            answer({"errored": True, "payload": json.dumps(init_error)})
            sys.exit(1)  # Lambda retries the init on the next invoke: a fresh worker
        context = LambdaContext(config, request_id, begun + float(config["timeout"]))
        try:
            result = handler(request["event"], context)
            try:
                message = {"errored": False, "payload": json.dumps(result)}
            except (TypeError, ValueError) as exc:
                message = {"errored": True, "payload": json.dumps(_error(exc, "Runtime.MarshalError"))}
        except Exception as exc:  # the handler's error becomes Lambda's error payload
            print(f"[ERROR] {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc()
            message = {"errored": True, "payload": json.dumps(_error(exc))}
        duration = (time.time() - begun) * 1000
        print(f"END RequestId: {request_id}", flush=True)
        init = f"\tInit Duration: {init_ms:.2f} ms" if init_ms else ""
        print(
            f"REPORT RequestId: {request_id}\tDuration: {duration:.2f} ms\t"
            f"Memory Size: {config['memory_size']} MB{init}",
            flush=True,
        )
        init_ms = 0.0
        answer(message)


if __name__ == "__main__":
    main()
