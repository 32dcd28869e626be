"""Webhook: sync.so's POST /webhooks/sync/{jobId}?token=... -> authenticate, record, wake. Answers fast."""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import TokenKeys, WebhookSettings, read_secret
from lipsync.generation.webhooks import WebhookReceiver, WebhookRejectedError, parse_signing_secrets
from lipsync.generation.workflow import StepFunctionsWorkflow
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import count, count_by, lambda_handler, logger

app = APIGatewayRestResolver()


@cache
def receiver() -> WebhookReceiver:
    settings = WebhookSettings.from_env()
    return WebhookReceiver(
        store=DynamoJobStore(settings.jobs_table),
        workflow=StepFunctionsWorkflow(),
        # Read through a few minutes' cache on every delivery, so a rotated secret is picked up.
        token_keys=TokenKeys(settings.webhook_token_key_secret).keys,
        signing_secrets=lambda: parse_signing_secrets(read_secret(settings.webhook_signing_secrets)),
    )


def raw_body() -> bytes:
    event = app.current_event
    body = event.body or ""
    return base64.b64decode(body) if event.is_base64_encoded else body.encode()


@app.post("/webhooks/sync/<job_id>")
def sync_webhook(job_id: str) -> dict[str, Any]:
    event = app.current_event
    logger.append_keys(job_id=job_id)
    # sync.so documents Sync-Signature; one payload reference names X-Signature-Primary instead.
    signature = event.headers.get("sync-signature") or event.headers.get("x-signature-primary")
    result = receiver().receive(job_id, event.query_string_parameters.get("token"), signature, raw_body())
    count("WebhooksApplied" if result.applied else "WebhooksIgnored")
    logger.info(
        "webhook received",
        extra={
            "status": result.status,
            "applied": result.applied,
            "woke": result.woke_workflow,
            "signed_form": result.signed_form,
        },
    )
    return {"ok": True, "applied": result.applied}


@app.exception_handler(WebhookRejectedError)  # type: ignore[untyped-decorator]
def rejected(error: WebhookRejectedError) -> Response[dict[str, str]]:
    count_by("WebhooksRejected", "Reason", error.reason)
    logger.warning(
        "webhook rejected",
        extra={"status_code": error.status_code, "reason": str(error), "reason_code": error.reason},
    )
    return Response(
        status_code=error.status_code,
        content_type=content_types.APPLICATION_JSON,
        body={"message": str(error)},
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
