"""The JobLifecycle state machine, seen from the functions: start it, wake it."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from lipsync.generation.deadlines import deadline_seconds, late_check_seconds, slot_release_at, watch_until

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

    from lipsync.config import LifecycleTimings
    from lipsync.jobs.model import Job


def execution_input(
    job: Job, generation_id: str, timings: LifecycleTimings, now: datetime | None = None
) -> dict[str, Any]:
    """What one generation's execution starts with: ids, the webhook wait, the polling schedule and
    the job's deadlines (see lipsync.generation.deadlines)."""
    started = now or datetime.now(UTC)
    output_seconds = (job.estimate or {}).get("seconds")
    allowed = deadline_seconds(job.model, output_seconds, timings.max_job_seconds)
    deadline = started + timedelta(seconds=allowed)
    return {
        "jobId": job.job_id,
        "generationId": generation_id,
        "webhookTimeoutSeconds": min(timings.webhook_timeout_seconds, allowed),
        "poll": {
            "firstIntervalSeconds": timings.poll_first_interval_seconds,
            "backoffRate": timings.poll_backoff_rate,
            "maxIntervalSeconds": timings.poll_max_interval_seconds,
            "lateCheckSeconds": late_check_seconds(timings.poll_max_interval_seconds),
            "createdAt": _iso(started),
            "deadline": _iso(deadline),
            "slotReleaseAt": _iso(slot_release_at(started, deadline)),
            "watchUntil": _iso(watch_until(started)),
        },
        "reconcile": {
            "attempt": 0,
            "terminal": False,
            "late": False,
            "nextWaitSeconds": timings.poll_first_interval_seconds,
        },
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


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
