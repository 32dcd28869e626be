"""Function workers: each function's real handler in a long-lived subprocess, like a warm Lambda.

moto routes every invocation (Step Functions tasks, `lambda.invoke()`, S3 notifications)
through `LambdaFunction._invoke_lambda`; `install_hook()` replaces that one method so
the invocation reaches the worker registered under the function's name.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from moto.awslambda.models import LambdaFunction

from .provision import FunctionSpec
from .template import REGION

_RUNTIME = Path(__file__).with_name("_runtime.py")
_LOG_TAIL_BYTES = 4096  # Lambda's LogType=Tail returns the last 4 KB


class FunctionWorker:
    """One function's warm worker: started on first use, restarted after a crash or timeout."""

    def __init__(self, spec: FunctionSpec, aws_env: Mapping[str, str], log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.cold_starts = 0
        self.invocations = 0
        self._aws_env = dict(aws_env)
        self._lock = threading.Lock()  # one invocation at a time per worker
        self._process: subprocess.Popen[bytes] | None = None
        self._response_fd: int | None = None
        self._buffer = b""
        log_path.touch()

    def environment(self) -> dict[str, str]:
        """Exactly what the function sees: its template variables plus Lambda's own."""
        spec = self.spec
        return {
            **spec.environment,
            **self._aws_env,
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "PYTHONPATH": os.pathsep.join([str(spec.code_dir), *map(str, spec.layer_dirs)]),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
        }

    # ------------------------------------------------------------------ lifecycle
    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        config = {
            "response_fd": write_fd,
            "handler": self.spec.handler,
            "function_name": self.spec.name,
            "function_arn": self.spec.arn,
            "memory_size": self.spec.memory_size,
            "timeout": self.spec.timeout,
            "runtime": self.spec.runtime,
            "log_stream_name": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}",
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(_RUNTIME), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.spec.code_dir if self.spec.code_dir.is_dir() else None,
                env=self.environment(),
                pass_fds=(write_fd,),
            )
        os.close(write_fd)  # only the child writes; EOF then means the child is gone
        self._response_fd = read_fd
        self._buffer = b""
        self.cold_starts += 1

    def stop(self) -> None:
        with self._lock:
            self._kill()

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdin:
                self._process.stdin.close()
            self._process = None
        if self._response_fd is not None:
            os.close(self._response_fd)
            self._response_fd = None

    def _log(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    # ------------------------------------------------------------------ invoke
    def invoke(self, event: Any) -> tuple[str, bool, str]:
        """Run the handler; returns moto's `(payload_json, errored, logs)`."""
        request_id = str(uuid.uuid4())
        with self._lock:
            self.invocations += 1
            if self._process is None or self._process.poll() is not None:
                self._kill()
                self._start()
            assert self._process is not None
            assert self._process.stdin is not None
            log_start = self.log_path.stat().st_size
            try:
                request = {"request_id": request_id, "event": event}
                self._process.stdin.write(json.dumps(request).encode() + b"\n")
                self._process.stdin.flush()
                line = self._read_line(time.monotonic() + self.spec.timeout)
            except TimeoutError:
                line = self._timed_out(request_id)
            except BrokenPipeError:
                line = None
            if line is None:  # the worker died mid-invocation (os._exit, segfault, OOM kill...)
                code = self._process.wait() if self._process else None
                self._kill()
                error = {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"Runtime exited with status {code}",
                }
                line = json.dumps({"errored": True, "payload": json.dumps(error)})
            message = json.loads(line)
            payload, errored = message["payload"], message["errored"]
            with self.log_path.open("rb") as log:
                log.seek(max(log_start, self.log_path.stat().st_size - _LOG_TAIL_BYTES))
                logs = log.read().decode("utf-8", "replace")
            return payload, errored, logs

    def _timed_out(self, request_id: str) -> str:
        """Kill the worker (the next invoke is a cold start) and answer like Lambda does."""
        self._kill()
        text = f"Task timed out after {self.spec.timeout:.2f} seconds"
        self._log(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} {text}")
        error = {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {request_id} Error: {text}"}
        return json.dumps({"errored": True, "payload": json.dumps(error)})

    def _read_line(self, deadline: float) -> str | None:
        """The next answer line, or None when the worker died; TimeoutError after the deadline."""
        assert self._response_fd is not None
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self._response_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._response_fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()


# ---------------------------------------------------------------------- the moto hook
_registry: dict[str, FunctionWorker] = {}  # function name -> worker, across all stacks in this process
_registry_lock = threading.Lock()
_original_invoke_lambda = LambdaFunction._invoke_lambda


class HookNotActive(RuntimeError):
    """moto would run the function without our workers (Docker or nothing)."""


def _invoke_through_worker(self: LambdaFunction, event: Any = None) -> tuple[str, bool, str]:
    worker = _registry.get(self.function_name)
    if worker is None:
        message = f"function {self.function_name} is not served by a running one-machine stack"
        return json.dumps({"errorType": "Runtime.Unavailable", "errorMessage": message}), True, message
    if isinstance(event, (str, bytes)):
        event = json.loads(event) if event else {}
    payload, errored, logs = worker.invoke(event)
    # Keep moto's CloudWatch Logs view of the function, as its Docker path does.
    self.logs_backend.ensure_log_group(self.logs_group_name)
    self.save_logs(logs)
    return payload, errored, logs


def hook_active() -> bool:
    return LambdaFunction._invoke_lambda is _invoke_through_worker


def register(workers: Mapping[str, FunctionWorker]) -> None:
    with _registry_lock:
        clash = sorted(set(workers) & set(_registry))
        if clash:
            raise RuntimeError(f"functions {clash} are already served by another stack in this process")
        _registry.update(workers)
        LambdaFunction._invoke_lambda = _invoke_through_worker  # type: ignore[method-assign]


def unregister(names: list[str]) -> None:
    with _registry_lock:
        for name in names:
            _registry.pop(name, None)
        if not _registry:
            LambdaFunction._invoke_lambda = _original_invoke_lambda  # type: ignore[method-assign]


def lambda_aws_env(endpoint_url: str) -> dict[str, str]:
    """The AWS part of a worker's environment: moto's endpoint and fake credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
