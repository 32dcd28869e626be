"""What the queue looks like from outside: a job's place in line and ETA, and the whole queue."""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lipsync.jobs.model import Job, JobStatus
from lipsync.jobs.transitions import Lane
from lipsync.plan.budget import month_of

if TYPE_CHECKING:
    from lipsync.config import PlanLimits
    from lipsync.jobs.store import JobStore
    from lipsync.plan.admission import Admission

ASSUMED_GENERATION_SECONDS = 60.0  # until this stack has timed one (sync.so: most take 30-120 s)


def _eta_seconds(jobs_ahead_and_this: int, slots: int, generation_seconds: float) -> int:
    """Waves of `slots` generations each, this job's own included."""
    return math.ceil(jobs_ahead_and_this / max(1, slots)) * math.ceil(generation_seconds)


def queued_view(job: Job, store: JobStore, admission: Admission, limits: PlanLimits) -> dict[str, Any]:
    """The public record, with `placeInLine` (1 = next) and `etaSeconds` for a QUEUED job."""
    view = job.public_view()
    if job.status != JobStatus.QUEUED or not job.queue_key:
        return view
    place = store.count_queued(before=job.queue_key) + 1
    plan = admission.read()
    mean = plan.mean_generation_seconds() or ASSUMED_GENERATION_SECONDS
    slots = limits.slots(plan.account_concurrency)
    return view | {"placeInLine": place, "etaSeconds": _eta_seconds(place, slots, mean)}


def queue_summary(store: JobStore, admission: Admission, limits: PlanLimits, now: float) -> dict[str, Any]:
    plan = admission.read()
    queued = store.count_queued()
    mean = plan.mean_generation_seconds()
    slots = limits.slots(plan.account_concurrency)
    return {
        "queued": queued,
        "inFlight": len(plan.slots),
        "slots": slots,
        # "auto": the plan's limit as sync.so's account last said (SyncPlanConcurrency=auto).
        "slotsFrom": "account" if limits.follows_account else "SyncPlanConcurrency",
        "createRatePerMinute": limits.creates_per_minute,
        "recentGenerationSeconds": round(mean, 1) if mean else None,
        "etaToDrainSeconds": _eta_seconds(queued, slots, mean or ASSUMED_GENERATION_SECONDS) if queued else 0,
        "paused": {"reason": plan.pause_reason, "untilEpochSeconds": plan.paused_until}
        if plan.paused_until > now
        else None,
        "heldForBudget": store.count_queued(lane=Lane.HELD),
        "monthSpendUsd": round(admission.month_spend(month_of(now)), 4),
    }


def queue_gauges(store: JobStore, now: float) -> dict[str, float]:
    """The queue's depth and the age of its oldest job (the head), in seconds, for the metrics:
    one COUNT query, one head query and one GetItem."""
    depth = store.count_queued()
    oldest = 0.0
    head = store.queue_head(1) if depth else []
    job = store.get(head[0]) if head else None
    if job is not None and job.status == JobStatus.QUEUED:
        arrived = datetime.fromisoformat(job.arrived_at or job.created_at).timestamp()
        oldest = max(0.0, round(now - arrived, 3))
    return {"QueueDepth": depth, "OldestQueuedSeconds": oldest}
