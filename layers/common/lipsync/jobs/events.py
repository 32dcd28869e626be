"""`Job Finished` events on EventBridge: one per job, when its document is first written.

Delivery is at least once. The writers of a final document (intake's INVALID, the dispatcher's
REJECTED, the lifecycle's finalize and stop) publish the event after the document is in S3 and
before they set `finalizedAt`; a writer that fails in between is retried and publishes again. A
consumer that must act once deduplicates on `detail.jobId` (a job finishes once). The opposite
order (mark, then publish) could lose the event for good, which no retry repairs.
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

SOURCE = "lipsync.pipeline"
DETAIL_TYPE = "Job Finished"
BUS_ENV = "JOB_EVENT_BUS"
# The document's summary: what a downstream system routes on (cost fields join it later).
SUMMARY_FIELDS = (
    "jobId",
    "name",
    "status",
    "model",
    "generationId",
    "outputKey",
    "documentKey",
    "error",
    "outputDuration",
    "costUsd",
    "estimatedCostUsd",
    "retryOf",
    "createdAt",
    "arrivedAt",
    "submittedAt",
    "finishedAt",
    "finishedBy",
    "late",
    "renamedFrom",
    "timings",
)


class JobEventPublishError(RuntimeError):
    """EventBridge refused the event: the writer fails (and is retried) rather than drop it."""


class JobEvents(Protocol):
    def job_finished(self, document: dict[str, Any]) -> None: ...


def job_summary(document: dict[str, Any]) -> dict[str, Any]:
    """The fields of the document an event carries; `outputKey` only once the output is there."""
    estimate = document.get("estimate") or {}
    document = document | {"estimatedCostUsd": estimate.get("usd")}
    summary = {name: document[name] for name in SUMMARY_FIELDS if document.get(name) is not None}
    if not document.get("outputChecksum"):
        summary.pop("outputKey", None)
    return summary


class EventBridgeJobEvents:
    # `client` is a boto3 EventBridge client (the project installs no type stubs for it).
    def __init__(self, bus_name: str = "default", client: Any = None) -> None:
        self._client = client  # made on the first event: most invocations publish none
        self._bus = bus_name or "default"

    @property
    def _events(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("events")
        return self._client

    @classmethod
    def from_env(cls) -> EventBridgeJobEvents:
        return cls(os.environ.get(BUS_ENV) or "default")

    def job_finished(self, document: dict[str, Any]) -> None:
        summary = job_summary(document)
        answer = self._events.put_events(
            Entries=[
                {
                    "Source": SOURCE,
                    "DetailType": DETAIL_TYPE,
                    "Detail": json.dumps(summary),
                    "EventBusName": self._bus,
                    "Resources": [],
                }
            ]
        )
        if answer.get("FailedEntryCount"):
            entry = answer["Entries"][0]
            raise JobEventPublishError(
                f"EventBridge refused job {summary.get('jobId')}'s event: "
                f"{entry.get('ErrorCode')} {entry.get('ErrorMessage')}"
            )
