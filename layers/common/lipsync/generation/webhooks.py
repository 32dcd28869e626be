"""Both sides of the webhook race: the receiver (authenticate, record the signal, wake the job's
execution) and the execution's arm task (store the task token, or wake itself if the webhook won).

A webhook is a signal, not the truth: it never sets a job's status, error or generation. The
execution it wakes asks sync.so with an authenticated GET, and copies the output from the URL
that GET returns. A forged, replayed or lying delivery can cause at most one extra GET.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from boto3.dynamodb.conditions import Attr
from pydantic import ValidationError

from lipsync.jobs import transitions as t
from lipsync.jobs.model import Job, JobStatus, utc_now
from lipsync.jobs.transitions import F
from lipsync.syncso.models import Generation, is_terminal
from lipsync.syncso.webhook_auth import SignatureError, SignedForm, verify_job_token, verify_signature

if TYPE_CHECKING:
    from lipsync.generation.workflow import Workflow
    from lipsync.jobs.store import JobStore

MAX_BODY_BYTES = 256 * 1024


RejectReason = Literal[
    "too_large", "missing_token", "bad_token", "bad_signature", "unknown_job", "other_generation", "bad_body"
]


class WebhookRejectedError(Exception):
    """A delivery we refuse; `status_code` is the HTTP answer and `str()` is safe to return."""

    def __init__(self, status_code: int, message: str, reason: RejectReason) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.reason = reason  # the metric's dimension: one of a fixed few, never the token or a URL


@dataclass(frozen=True)
class WebhookResult:
    applied: bool  # False: the job has no generation yet (the signal is kept, nobody is woken)
    status: str
    woke_workflow: bool
    signed_form: SignedForm | None


class WebhookReceiver:
    def __init__(
        self,
        store: JobStore,
        workflow: Workflow,
        token_keys: Callable[[], list[str]],
        signing_secrets: Callable[[], list[str]],
    ) -> None:
        self._store = store
        self._workflow = workflow
        self._token_keys = token_keys
        self._signing_secrets = signing_secrets

    def receive(self, job_id: str, token: str | None, signature: str | None, body: bytes) -> WebhookResult:
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejectedError(413, f"body is larger than {MAX_BODY_BYTES} bytes", "too_large")
        if not token:
            raise WebhookRejectedError(401, "the webhook URL's token is missing", "missing_token")
        if not verify_job_token(self._token_keys(), job_id, token):
            raise WebhookRejectedError(403, "the webhook URL's token is not valid for this job", "bad_token")
        signed_form = self._check_signature(body, signature)
        generation = self._parse(body)
        job = self._store.get(job_id)
        if job is None:
            raise WebhookRejectedError(404, "no such job", "unknown_job")
        if job.generation_id and generation.id != job.generation_id:
            raise WebhookRejectedError(
                409, "the delivery is for another generation than this job's", "other_generation"
            )
        return self._signal(job, generation, signed_form)

    def _check_signature(self, body: bytes, signature: str | None) -> SignedForm | None:
        secrets = [secret for secret in self._signing_secrets() if secret]
        if not secrets:
            return None  # signing not configured for this stack: the per-job token alone authenticates
        try:
            return verify_signature(body, signature, secrets)
        except SignatureError as error:
            raise WebhookRejectedError(401, str(error), "bad_signature") from error

    @staticmethod
    def _parse(body: bytes) -> Generation:
        try:
            return Generation.model_validate_json(body)
        except ValidationError as error:
            if any(issue["type"] == "json_invalid" for issue in error.errors()):
                raise WebhookRejectedError(400, "body is not JSON", "bad_body") from error
            raise WebhookRejectedError(
                400, "body is not a generation (needs id and status)", "bad_body"
            ) from error

    def _signal(self, job: Job, generation: Generation, signed_form: SignedForm | None) -> WebhookResult:
        """Record that a delivery came and what it claimed, and wake the job's execution: its GET
        decides. Status, error and generation id are never taken from a webhook."""
        signal = {
            F.LAST_WEBHOOK_AT: utc_now(),
            F.WEBHOOK_STATUS: generation.status,
            F.WEBHOOK_GENERATION_ID: generation.id,
            **({F.WEBHOOK_SIGNATURE: signed_form} if signed_form else {}),
        }
        updated = self._store.apply(t.note(job.job_id, signal)) or job
        ours = updated.generation_id == generation.id
        token = updated.attempt.task_token if updated.attempt else None
        woke = bool(ours and is_terminal(generation.status) and token) and self._workflow.wake(
            token or "", {"webhookStatus": generation.status}
        )
        return WebhookResult(
            applied=ours, status=generation.status, woke_workflow=woke, signed_form=signed_form
        )


def parse_signing_secrets(secret_value: str) -> list[str]:
    """The signing-secrets secret holds {"current": ..., "previous": ...}; a bare string is one secret."""
    try:
        parsed = json.loads(secret_value)
    except ValueError:
        return [secret_value.strip()]
    if isinstance(parsed, dict):
        return [str(parsed.get(name) or "").strip() for name in ("current", "previous")]
    return [str(parsed).strip()] if isinstance(parsed, str) else []


def arm_webhook_wait(
    store: JobStore, workflow: Workflow, job_id: str, generation_id: str, task_token: str
) -> dict[str, Any]:
    """Store the task token. If a final webhook for this generation already arrived, wake right away.

    Each side is one atomic update that returns the whole record, so whichever comes second sees
    the other's write: the webhook finds the token, or this task finds the webhook's signal. A job
    that has moved on to another generation is woken at once: finalize then sees it is not its own.
    """
    # The execution starts just before the dispatcher records the generation: a job still SUBMITTING
    # with no generation yet is this execution's (the dispatcher wakes it if the webhook came first).
    not_recorded_yet = t.status_is(JobStatus.SUBMITTING) & Attr(F.GENERATION_ID).not_exists()
    job = store.apply(
        t.note(
            job_id,
            {F.ATTEMPT_TASK_TOKEN: task_token},
            when=(t.generation_is(generation_id) | not_recorded_yet) & Attr(F.ATTEMPT).exists(),
        )
    )
    if job is None:
        workflow.wake(task_token, {"webhookStatus": None, "movedOn": True})
        return {"armed": False, "webhookAlreadyArrived": False}
    early = (
        job.webhook_status
        if job.webhook_status
        and job.webhook_generation_id == generation_id
        and is_terminal(job.webhook_status)
        else None
    )
    if early:
        workflow.wake(task_token, {"webhookStatus": early})
    return {"armed": True, "webhookAlreadyArrived": early is not None}
