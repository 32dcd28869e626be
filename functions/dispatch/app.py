"""Dispatch: admission control in front of sync.so's plan.

Three event sources, one owner of the plan's slots:
- SQS kicks from the dispatch queue (a job queued, a slot freed, a delay over): dispatch what fits;
- the schedule: sweep (free slots whose job is no longer in flight), then dispatch;
- EventBridge "Step Functions Execution Status Change" (FAILED, TIMED_OUT, ABORTED): the job's
  ending is written and its slot freed, whatever stopped the execution.
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import Any, NamedTuple

from aws_lambda_powertools.utilities.typing import LambdaContext

from lipsync.config import DispatchSettings, LifecycleTimings, PlanLimits, TokenKeys, secret_reader
from lipsync.generation.lifecycle import Slots, stop, workflow_error
from lipsync.generation.workflow import StepFunctionsWorkflow
from lipsync.jobs.events import EventBridgeJobEvents
from lipsync.jobs.model import job_id_of_execution
from lipsync.jobs.store import DynamoJobStore
from lipsync.observability import count, count_by, gauge, lambda_handler, logger, seconds
from lipsync.plan.admission import DynamoAdmission
from lipsync.plan.kicks import SqsKicker
from lipsync.queue.dispatch import Dispatcher, DispatchReport
from lipsync.queue.status import queue_gauges
from lipsync.storage import S3Storage
from lipsync.sweep import sweep
from lipsync.syncso.client import SyncClient


class Wiring(NamedTuple):
    dispatcher: Dispatcher
    slots: Slots
    store: DynamoJobStore
    storage: S3Storage
    sync: SyncClient
    events: EventBridgeJobEvents


@cache
def wiring() -> Wiring:
    settings = DispatchSettings.from_env()
    limits = PlanLimits.from_env()
    store = DynamoJobStore(settings.jobs_table)
    admission = DynamoAdmission(settings.admission_table, store)
    kicker = SqsKicker(settings.dispatch_queue_url)
    sync = SyncClient(settings.sync_api_base_url, secret_reader(settings.sync_api_key_secret))
    storage = S3Storage(settings.media_bucket)
    events = EventBridgeJobEvents.from_env()
    return Wiring(
        Dispatcher(
            settings=settings,
            limits=limits,
            timings=LifecycleTimings.from_env(),
            store=store,
            admission=admission,
            storage=storage,
            sync=sync,
            workflow=StepFunctionsWorkflow(settings.state_machine_arn),
            kicker=kicker,
            token_key=TokenKeys(settings.webhook_token_key_secret).current,
            events=events,
        ),
        Slots(admission, kicker, limits.transient_retries),
        store,
        storage,
        sync,
        events,
    )


def report_metrics(report: DispatchReport) -> None:
    count("JobsDispatched", len(report.created))
    for reason, jobs in report.requeued.items():
        count(f"Requeued{reason.title().replace('_', '')}", jobs)
    if report.uncertain:
        count("CreateOutcomeUncertain", report.uncertain)
    if report.paused:
        count("DispatchPaused")
    if report.unknown_statuses:
        count("UnknownApiStatus", len(report.unknown_statuses))
    if report.released:
        count("SlotsRecovered", report.released)
    if report.announced:
        count("EndingsRecovered", report.announced)
    if report.unservable:
        count("JobsUnservable", report.unservable)
    if report.stopped:
        count("CreatesAbandoned", report.stopped)
    for kind, creates in report.throttled.items():
        count_by("Throttled", "Kind", kind, creates)


def report_queue(store: DynamoJobStore) -> None:
    """Once a minute (the sweep): how many jobs wait and how long the head has waited."""
    gauges = queue_gauges(store, time.time())
    gauge("QueueDepth", gauges["QueueDepth"])
    seconds("OldestQueuedSeconds", gauges["OldestQueuedSeconds"])


def execution_ended(detail: dict[str, Any]) -> dict[str, Any]:
    wired = wiring()
    name = str(detail["name"])
    execution_input = json.loads(detail.get("input") or "{}")
    job_id = execution_input.get("jobId") or job_id_of_execution(name)
    logger.append_keys(job_id=job_id, execution=name, execution_status=detail.get("status"))
    error = workflow_error(f"{detail.get('status')}", detail.get("cause") or detail.get("error"))
    return stop(
        wired.store,
        wired.storage,
        wired.sync,
        wired.slots,
        job_id,
        execution_input.get("generationId"),
        error,
        wired.events,
    )


@lambda_handler
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if event.get("detail-type") == "Step Functions Execution Status Change":
        result = execution_ended(event["detail"])
        count("ExecutionsEndedAbnormally")
        logger.warning("execution ended without finalizing", extra=result)
        return result
    run = wiring().dispatcher
    budget = context.get_remaining_time_in_millis() / 1000 - 15  # leave time to record a last create
    wired = wiring()
    report = sweep(run, wired.sync, wired.slots, budget) if event.get("sweep") else run.run(budget)
    report_metrics(report)
    if event.get("sweep"):
        report_queue(wiring().store)
    logger.info("dispatch", extra=report.log_fields())
    return {"created": len(report.created), "stoppedBecause": report.stopped_because}
