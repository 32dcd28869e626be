"""The JobLifecycle state machine, seen from the functions: start it, wake it."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient


class Workflow(Protocol):
    def start(self, job_id: str, execution_input: dict[str, Any]) -> None: ...

    def wake(self, task_token: str, output: dict[str, Any]) -> bool: ...


class StepFunctionsWorkflow:
    def __init__(self, state_machine_arn: str = "", client: SFNClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("stepfunctions")
        self._sfn = client
        self._arn = state_machine_arn

    def start(self, job_id: str, execution_input: dict[str, Any]) -> None:
        """One execution per job: the name is the job id, so a repeat start is a no-op."""
        with contextlib.suppress(self._sfn.exceptions.ExecutionAlreadyExists):
            self._sfn.start_execution(
                stateMachineArn=self._arn, name=job_id, input=json.dumps(execution_input)
            )

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
