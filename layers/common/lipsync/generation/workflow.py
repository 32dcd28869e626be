"""The JobLifecycle state machine, seen from the functions: start it, wake it."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

    from lipsync.config import LifecycleTimings


def execution_input(
    job_id: str, generation_id: str, timings: LifecycleTimings, now: datetime | None = None
) -> dict[str, Any]:
    """What one generation's execution starts with: ids, the webhook wait and the polling schedule."""
    started = now or datetime.now(UTC)
    deadline = started + timedelta(seconds=timings.max_job_seconds)
    return {
        "jobId": job_id,
        "generationId": generation_id,
        "webhookTimeoutSeconds": timings.webhook_timeout_seconds,
        "poll": {
            "firstIntervalSeconds": timings.poll_first_interval_seconds,
            "backoffRate": timings.poll_backoff_rate,
            "maxIntervalSeconds": timings.poll_max_interval_seconds,
            "deadline": deadline.isoformat().replace("+00:00", "Z"),
        },
        "reconcile": {
            "attempt": 0,
            "terminal": False,
            "nextWaitSeconds": timings.poll_first_interval_seconds,
        },
    }


class Workflow(Protocol):
    def start(self, name: str, execution_input: dict[str, Any]) -> None: ...

    def wake(self, task_token: str, output: dict[str, Any]) -> bool: ...


class StepFunctionsWorkflow:
    def __init__(self, state_machine_arn: str = "", client: SFNClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("stepfunctions")
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, name: str, execution_input: dict[str, Any]) -> None:
        """One execution per generation, named after it (see Job.next_execution_name): a repeat is a no-op."""
        with contextlib.suppress(self._sfn.exceptions.ExecutionAlreadyExists):
            self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=json.dumps(execution_input))

    def wake(self, task_token: str, output: dict[str, Any]) -> bool:
        """Complete the webhook wait; False if it is already over (timed out, or woken by the other side)."""
        try:
            self._sfn.send_task_success(taskToken=task_token, output=json.dumps(output))
        except (
            self._sfn.exceptions.TaskTimedOut,
            self._sfn.exceptions.InvalidToken,
            self._sfn.exceptions.TaskDoesNotExist,
        ):
            return False
        return True
