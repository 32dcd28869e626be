"""The issue's "done when": with `python -m local.stack` running, a pair uploaded with any S3 client
(boto3 against the state file's endpoint here) becomes a job that reaches the emulator's terminal
status through the webhook, with one POST in the emulator's request log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest

from local.media import make_sample_audio, make_sample_video

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_make_local_stack_serves_the_pipeline(tmp_path: Path) -> None:
    state_file = tmp_path / "stack.json"
    env = os.environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'common'}"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.stack",
            "--state-file",
            str(state_file),
            "--aws-port",
            "0",
            "--api-port",
            "0",
            "--sync-port",
            "0",
            "--parameter-overrides",
            "WebhookTimeoutSeconds=30",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not state_file.exists():
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.2)
        state = json.loads(state_file.read_text())
        session = boto3.Session(
            aws_access_key_id=state["aws_access_key_id"],
            aws_secret_access_key=state["aws_secret_access_key"],
            region_name=state["region"],
        )
        s3 = session.client("s3", endpoint_url=state["aws_endpoint_url"])
        make_sample_video(tmp_path / "clip.mp4")
        make_sample_audio(tmp_path / "clip.wav")
        s3.upload_file(str(tmp_path / "clip.mp4"), state["bucket"], "inputs/cli clip.mp4")
        s3.upload_file(str(tmp_path / "clip.wav"), state["bucket"], "inputs/cli clip.wav")

        dynamodb = session.client("dynamodb", endpoint_url=state["aws_endpoint_url"])
        deadline = time.monotonic() + 60
        while True:
            found = dynamodb.scan(TableName=state["jobs_table"])["Items"]
            items = [item for item in found if "status" in item]  # not the output-name claims
            if items and items[0]["status"]["S"] == "COMPLETED" and "finalizedAt" in items[0]:
                break
            assert time.monotonic() < deadline, f"no COMPLETED job: {items}"
            time.sleep(0.3)
        (job,) = items
        # Queued by intake, created by dispatch, ended by finalize's GET after the webhook woke it.
        sources = [entry["M"]["source"]["S"] for entry in job["history"]["L"]]
        assert sources == ["intake", "dispatch", "dispatch", "finalize"]
        assert job["finishedBy"]["S"] == "webhook"
        log = httpx.get(f"{state['emulator_admin_url']}/requests").json()
        posts = [r["path"] for r in log if r["method"] == "POST"]
        assert posts.count("/v2/generate") == 1  # one create
        assert set(posts) == {"/v2/generations/estimate", "/v2/generate"}  # and intake's estimate
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not state_file.exists()
