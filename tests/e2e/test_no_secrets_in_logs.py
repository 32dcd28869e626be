"""Invariant 6: API keys, webhook secrets, URL tokens, task tokens and signed URLs never appear in
the functions' logs or in job documents, on the happy path or the failing ones."""

from __future__ import annotations

import json
import re

import pytest

from lipsync.syncso.webhook_auth import job_token
from tests.e2e.conftest import WEBHOOK_SECRET, Pipeline

pytestmark = pytest.mark.integration


def test_no_secret_reaches_a_log_or_a_document(pipeline: Pipeline) -> None:
    name = pipeline.drop_pair("secrets")
    job = pipeline.wait_job(name)
    pipeline.stack.emulator.set_scenario({"outcome": "FAILED", "outputUrlTtlSeconds": 0})
    failed = pipeline.wait_job(pipeline.drop_pair("secrets-failed"))
    pipeline.drop_manifest("secrets-invalid", {"input": [{"type": "video", "url": "s3://elsewhere/x.mp4"}]})
    pipeline.wait_job(f"{pipeline.prefix}/secrets-invalid")

    secrets = {
        "API key": pipeline.stack.emulator.config.api_key,
        "signing secret": WEBHOOK_SECRET,
        "token key": pipeline.token_key(),
        "task token": job["attempt"]["taskToken"],
        "failed job's task token": failed["attempt"]["taskToken"],
        "webhook URL token": job_token(pipeline.token_key(), job["jobId"]),
    }
    signed_url = re.compile(r"(X-Amz-Signature|signature)=[0-9a-f]{16,}", re.IGNORECASE)
    texts = {function: pipeline.stack.function_logs(function) for function in pipeline.stack.workers}
    texts |= {f"document {n}": json.dumps(pipeline.document(n)) for n in (name, failed["name"])}
    for where, text in texts.items():
        for what, value in secrets.items():
            assert value not in text, f"the {what} appears in {where}"
        assert not signed_url.search(text), f"a signed URL appears in {where}"
