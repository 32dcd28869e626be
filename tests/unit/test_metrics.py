"""The metrics, as the EMF lines Powertools prints (what CloudWatch turns into metrics)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from lipsync.jobs.documents import job_document, write_job_document
from lipsync.jobs.model import Job
from lipsync.observability import count_by, metrics
from lipsync.queue.dispatch import DispatchReport, throttle_kind
from lipsync.queue.status import queue_gauges
from lipsync.syncso.client import SyncRetryableError
from tests.fakes import FakeStorage
from tests.tables import SeededStore, make_tables

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "LipsyncPipeline"
SERVICE = "lipsync-pipeline"


@pytest.fixture(autouse=True)
def _metrics() -> Iterator[None]:
    """The process-wide Metrics with the template's namespace and service, and an empty buffer."""
    saved = (metrics.namespace, metrics.service)
    metrics.namespace, metrics.service = NAMESPACE, SERVICE
    metrics.clear_metrics()
    yield
    metrics.clear_metrics()
    metrics.namespace, metrics.service = saved


def emitted(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """Flush the buffer, then every metric of every EMF line printed: name, unit, dimensions, values."""
    if metrics.metric_set:
        metrics.flush_metrics()
    found = []
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("{") or "_aws" not in line:
            continue
        blob = json.loads(line)
        (directive,) = blob["_aws"]["CloudWatchMetrics"]
        (dimensions,) = directive["Dimensions"]
        for metric in directive["Metrics"]:
            values = blob[metric["Name"]]
            found.append(
                {
                    "namespace": directive["Namespace"],
                    "name": metric["Name"],
                    "unit": metric["Unit"],
                    "dimensions": {name: blob[name] for name in dimensions},
                    "values": values if isinstance(values, list) else [values],
                }
            )
    return found


def named(lines: list[dict[str, Any]], name: str, by: str | None = None) -> list[dict[str, Any]]:
    """The lines of metric `name`: those with dimension `by`, or (None) those with `service` only."""
    wanted = {"service", by} if by else {"service"}
    return [line for line in lines if line["name"] == name and set(line["dimensions"]) == wanted]


def job(**fields: Any) -> Job:
    return Job.model_validate(
        {
            "jobId": "0123456789abcdef0123456789abcdef",
            "name": "campaign/a",
            "kind": "pair",
            "status": "COMPLETED",
            "bucket": "media-bucket",
            "model": "lipsync-2",
            "documentKey": "outputs/campaign/a.json",
            "outputKey": "outputs/campaign/a.mp4",
            "outputChecksum": "sha256:00",
            "generationId": "gen-1",
            "createdAt": "2026-11-29T10:00:00.000Z",
            "arrivedAt": "2026-11-29T10:00:02.000Z",
            "submittedAt": "2026-11-29T10:00:10.000Z",
            "finishedAt": "2026-11-29T10:01:10.000Z",
            "updatedAt": "2026-11-29T10:01:10.000Z",
        }
        | fields
    )


def load_handler(function: str) -> ModuleType:
    """A function's app.py as Lambda loads it (every function's module is called `app`)."""
    spec = importlib.util.spec_from_file_location(f"{function}_app", ROOT / "functions" / function / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_dimensioned_count_is_its_own_line_with_the_service_dimension(
    capsys: pytest.CaptureFixture[str],
) -> None:
    count_by("JobsFinished", "Outcome", "FAILED")
    line, total = emitted(capsys)
    assert line == {
        "namespace": NAMESPACE,
        "name": "JobsFinished",
        "unit": "Count",
        "dimensions": {"service": SERVICE, "Outcome": "FAILED"},
        "values": [1.0],
    }
    # ... and the total with the service dimension alone, which a single-metric alarm reads.
    assert total == line | {"dimensions": {"service": SERVICE}}


def test_a_finished_job_reports_its_outcome_and_timings_once_per_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_job_document(FakeStorage(), job())
    lines = emitted(capsys)
    (outcome,) = named(lines, "JobsFinished", by="Outcome")
    assert outcome["dimensions"] == {"service": SERVICE, "Outcome": "COMPLETED"}
    (failed,) = named(lines, "FailedJobPercent")
    assert (failed["unit"], failed["values"]) == ("Percent", [0.0])
    seconds = {line["name"]: line["values"] for line in lines if line["unit"] == "Seconds"}
    assert seconds == {
        "QueueWaitSeconds": [10.0],  # created -> submitted
        "GenerationSeconds": [60.0],  # submitted -> final status
        "UploadToOutputSeconds": [68.0],  # the upload that completed the job -> output
    }
    for line in lines:
        assert line["dimensions"]["service"] == SERVICE
        assert "jobId" not in line["dimensions"]


@pytest.mark.parametrize("status", ["FAILED", "TIMED_OUT", "STOPPED", "UNKNOWN", "REJECTED", "INVALID"])
def test_a_job_without_an_output_has_no_upload_to_output_time(
    status: str, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = job(status=status, outputChecksum=None)
    assert "uploadToOutputSeconds" not in job_document(unfinished)["timings"]
    write_job_document(FakeStorage(), unfinished)
    lines = emitted(capsys)
    assert named(lines, "JobsFinished", by="Outcome")[0]["dimensions"]["Outcome"] == status
    assert named(lines, "UploadToOutputSeconds") == []
    # FailedJobRateAlarm's Average: a failure counts 100, the input's own fault (REJECTED, INVALID) 0.
    (failed,) = named(lines, "FailedJobPercent")
    assert failed["values"] == [0.0 if status in {"REJECTED", "INVALID"} else 100.0]


@pytest.mark.parametrize(
    ("reason", "code", "kind"),
    [
        ("concurrency", "concurrency_limit_reached", "concurrency"),
        ("rate_limit", "rate_limit_exceeded", "rate"),
        ("rate_limit", None, "rate"),
        ("rate_limit", "too_many_uploads", "other"),
    ],
)
def test_429s_are_sorted_by_kind(reason: str, code: str | None, kind: str) -> None:
    error = SyncRetryableError("429", reason=reason, status_code=429, error_code=code)  # type: ignore[arg-type]
    assert throttle_kind(error) == kind


def test_the_dispatch_handler_reports_429s_by_kind(capsys: pytest.CaptureFixture[str]) -> None:
    dispatch = load_handler("dispatch")
    report = DispatchReport()
    for kind in ("concurrency", "concurrency", "rate"):
        report.throttle(kind)
    dispatch.report_metrics(report)
    throttled = {
        line["dimensions"]["Kind"]: line["values"] for line in named(emitted(capsys), "Throttled", by="Kind")
    }
    assert throttled == {"concurrency": [2.0], "rate": [1.0]}


def seed_queued(store: SeededStore, job_id: str, arrived: str) -> None:
    store.put(
        job(
            jobId=job_id,
            name=job_id,
            status="QUEUED",
            arrivedAt=arrived,
            queueKey=f"{arrived}#{job_id}",
            submittedAt=None,
            finishedAt=None,
            outputChecksum=None,
        )
    )


def test_queue_gauges_are_the_depth_and_the_heads_age() -> None:
    store = make_tables()[0]
    assert queue_gauges(store, now=0.0) == {"QueueDepth": 0, "OldestQueuedSeconds": 0.0}
    seed_queued(store, "b" * 32, "2026-11-29T10:00:30.000Z")
    seed_queued(store, "a" * 32, "2026-11-29T10:00:00.000Z")
    now = 1_795_946_460.0  # 2026-11-29T10:01:00Z
    assert queue_gauges(store, now) == {"QueueDepth": 2, "OldestQueuedSeconds": 60.0}


def test_the_sweep_reports_the_queue(capsys: pytest.CaptureFixture[str]) -> None:
    store = make_tables()[0]
    seed_queued(store, "a" * 32, "2026-11-29T10:00:00.000Z")
    load_handler("dispatch").report_queue(store)
    lines = emitted(capsys)
    (depth,) = named(lines, "QueueDepth")
    (oldest,) = named(lines, "OldestQueuedSeconds")
    assert (depth["values"], depth["unit"]) == ([1.0], "Count")
    assert oldest["unit"] == "Seconds"
    assert oldest["values"][0] > 0


def test_a_rejected_webhook_is_counted_by_reason_never_by_token(capsys: pytest.CaptureFixture[str]) -> None:
    from lipsync.generation.webhooks import WebhookRejectedError

    webhook = load_handler("webhook")
    answer = webhook.rejected(WebhookRejectedError(403, "the webhook URL's token is not valid", "bad_token"))
    assert answer.status_code == 403
    lines = emitted(capsys)
    (line,) = named(lines, "WebhooksRejected", by="Reason")
    assert line["dimensions"] == {"service": SERVICE, "Reason": "bad_token"}
    (total,) = named(lines, "WebhooksRejected")  # what RejectedWebhooksAlarm reads
    assert total["values"] == [1.0]
