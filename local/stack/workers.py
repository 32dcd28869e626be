"""Function workers: each function's real handler in a pool of long-lived subprocesses (warm Lambdas).

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


class _Sandbox:
    """One worker subprocess: a warm Lambda execution environment running one invocation at a time."""

    def __init__(self, worker: FunctionWorker) -> None:
        self._worker = worker
        self._process: subprocess.Popen[bytes] | None = None
        self._response_fd: int | None = None
        self._buffer = b""

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        spec = self._worker.spec
        read_fd, write_fd = os.pipe()
        config = {
            "response_fd": write_fd,
            "handler": spec.handler,
            "function_name": spec.name,
            "function_arn": spec.arn,
            "memory_size": spec.memory_size,
            "timeout": spec.timeout,
            "runtime": spec.runtime,
            "log_stream_name": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}",
        }
        # Every sandbox appends to the function's one log file (O_APPEND: lines do not tear).
        with self._worker.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(_RUNTIME), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=spec.code_dir if spec.code_dir.is_dir() else None,
                env=self._worker.environment(),
                pass_fds=(write_fd,),
            )
        os.close(write_fd)  # only the child writes; EOF then means the child is gone
        self._response_fd = read_fd
        self._buffer = b""

    def signal_kill(self) -> None:
        """Kill the process only; safe while another thread waits on it (it then sees EOF)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def kill(self) -> None:
        """Kill and release everything; only by the thread that owns the sandbox (or for an idle one)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            if self._process.stdin:
                self._process.stdin.close()
            self._process = None
        if self._response_fd is not None:
            os.close(self._response_fd)
            self._response_fd = None

    def invoke(self, request_id: str, event: Any) -> tuple[str, bool, str]:
        """Run one invocation (the caller owns the sandbox): moto's `(payload_json, errored, logs)`."""
        worker = self._worker
        if self._process is None or self._process.stdin is None:
            raise RuntimeError(f"{worker.spec.name}: the sandbox has no running worker process")
        log_start = worker.log_path.stat().st_size
        try:
            request = {"request_id": request_id, "event": event}
            self._process.stdin.write(json.dumps(request).encode() + b"\n")
            self._process.stdin.flush()
            line = self._read_line(time.monotonic() + worker.spec.timeout)
        except TimeoutError:
            line = self._timed_out(request_id)
        except BrokenPipeError:
            line = None
        if line is None:  # the worker died mid-invocation (os._exit, segfault, OOM kill, stop()...)
            code = self._process.wait() if self._process else None
            self.kill()
            error = {"errorType": "Runtime.ExitError", "errorMessage": f"Runtime exited with status {code}"}
            line = json.dumps({"errored": True, "payload": json.dumps(error)})
        message = json.loads(line)
        # The tail is what the log file got meanwhile; concurrent sandboxes' lines can be interleaved.
        with worker.log_path.open("rb") as log:
            log.seek(max(log_start, worker.log_path.stat().st_size - _LOG_TAIL_BYTES))
            logs = log.read().decode("utf-8", "replace")
        return message["payload"], message["errored"], logs

    def _timed_out(self, request_id: str) -> str:
        """Kill this sandbox (its next use is a cold start) and answer like Lambda does."""
        self.kill()
        text = f"Task timed out after {self._worker.spec.timeout:.2f} seconds"
        self._worker.log(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {request_id} {text}")
        error = {"errorType": "Sandbox.Timedout", "errorMessage": f"RequestId: {request_id} Error: {text}"}
        return json.dumps({"errored": True, "payload": json.dumps(error)})

    def _read_line(self, deadline: float) -> str | None:
        """The next answer line, or None when the worker died; TimeoutError after the deadline."""
        if self._response_fd is None:
            raise RuntimeError("the sandbox has no response pipe: start its worker first")
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


class FunctionWorker:
    """One function's pool of warm worker subprocesses, like Lambda's execution environments.

    Concurrent invocations run in parallel, each in its own subprocess: an idle one is reused
    (the most recently used first), a new one is started (a cold start) while fewer than
    `concurrency` exist; beyond that an invocation waits for a free one (a throttled event
    source retries, it does not fail). A timeout or crash kills only that subprocess.
    """

    def __init__(
        self, spec: FunctionSpec, aws_env: Mapping[str, str], log_path: Path, concurrency: int = 4
    ) -> None:
        self.spec = spec
        self.log_path = log_path
        self.concurrency = concurrency  # ReservedConcurrentExecutions, else the stack's default
        self.cold_starts = 0
        self.invocations = 0
        self.peak_concurrency = 0  # most invocations ever running at once
        self._aws_env = dict(aws_env)
        self._pool = threading.Condition()
        self._idle: list[_Sandbox] = []
        self._busy: set[_Sandbox] = set()
        self._generation = 0  # bumped by stop(): sandboxes busy then are not reused
        log_path.touch()

    @property
    def running(self) -> int:
        """Invocations running right now."""
        with self._pool:
            return len(self._busy)

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
            # Local only: botocore adds `app/<id>` to every request's User-Agent, which is how the
            # moto middleware tells which function made a call (fault injection).
            "AWS_SDK_UA_APP_ID": spec.logical_id,
            "LAMBDA_TASK_ROOT": str(spec.code_dir),
            "_HANDLER": spec.handler,
            "PYTHONPATH": os.pathsep.join([str(spec.code_dir), *map(str, spec.layer_dirs)]),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
        }

    def refresh(self, spec: FunctionSpec) -> None:
        """A new configuration: idle execution environments go, busy ones are not reused."""
        with self._pool:
            self.spec = spec
            idle, self._idle = self._idle, []
            self._generation += 1
        for sandbox in idle:
            sandbox.kill()

    def log(self, line: str) -> None:
        with self.log_path.open("a") as log:
            log.write(line + "\n")

    def stop(self) -> None:
        """Kill every subprocess; invocations still running answer Runtime.ExitError."""
        with self._pool:
            idle, busy = self._idle, list(self._busy)
            self._idle = []
            self._generation += 1
        for sandbox in idle:
            sandbox.kill()
        for sandbox in busy:
            sandbox.signal_kill()  # its invoking thread cleans up

    # ------------------------------------------------------------------ invoke
    def invoke(self, event: Any) -> tuple[str, bool, str]:
        """Run the handler in a free subprocess; returns moto's `(payload_json, errored, logs)`."""
        request_id = str(uuid.uuid4())
        if self.concurrency < 1:  # ReservedConcurrentExecutions: 0 throttles every invocation
            error = {"errorType": "TooManyRequestsException", "errorMessage": "Rate Exceeded."}
            return json.dumps(error), True, ""
        with self._pool:
            self.invocations += 1
            while not self._idle and len(self._busy) >= self.concurrency:
                self._pool.wait()
            sandbox = self._idle.pop() if self._idle else _Sandbox(self)
            self._busy.add(sandbox)
            self.peak_concurrency = max(self.peak_concurrency, len(self._busy))
            generation = self._generation
        try:
            if not sandbox.alive():
                sandbox.kill()
                sandbox.start()
                with self._pool:
                    self.cold_starts += 1
            return sandbox.invoke(request_id, event)
        finally:
            with self._pool:
                self._busy.discard(sandbox)
                reuse = sandbox.alive() and generation == self._generation
                if reuse:
                    self._idle.append(sandbox)
                self._pool.notify()
            if not reuse:
                sandbox.kill()


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


MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"  # nosec B105 # noqa: S105 - moto's fake credentials


def lambda_aws_env(endpoint_url: str) -> dict[str, str]:
    """The AWS part of a worker's environment: moto's endpoint and fake credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": MOTO_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": MOTO_SECRET_KEY,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }
