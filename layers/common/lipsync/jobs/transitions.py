"""Every change of a job's status, in one table: from where, to where, what must still hold, and
what is set and cleared. Nothing else writes a job's status or builds its conditions.

`change(job, MOVE, to, source, ...)` turns one row into a `Change`: the conditional write the
job store runs alone, or admission control runs inside a transaction with the plan's slots.
The condition is always "the status is one of the row's sources, and the row's guards still hold
what they held in `job` as it was read", so duplicate, late and out-of-order callers change
nothing. `note(...)` does the same for field updates that are not a status change.

The lane (`queue`, the partition of the sparse `queue-order` index) follows the new status:
`queued` and `held` are the waiting line and the budget hold, in arrival order; `ended` holds
final jobs whose ending (document and Job Finished event) is not yet announced, so the sweep
finds any that a crash left behind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from boto3.dynamodb.conditions import Attr, ConditionBase

from lipsync.jobs.model import (
    IN_FLIGHT,
    HistoryEntry,
    Job,
    JobStatus,
    Source,
    is_final,
    utc_now,
)

S = JobStatus
HISTORY_LIMIT = 60  # entries kept; older ones are folded into one (a 402 pause can bounce a job for days)
HISTORY_KEPT_HEAD = 10
DETAIL_LIMIT = 300


class F:
    """The job record's attribute names (dotted for the attempt's fields)."""

    STATUS: Final = "status"
    API_STATUS: Final = "apiStatus"
    LANE: Final = "queue"
    LANE_KEY: Final = "queueKey"
    UPDATED_AT: Final = "updatedAt"
    HISTORY: Final = "history"
    ERROR: Final = "error"
    GENERATION_ID: Final = "generationId"
    GENERATIONS: Final = "generations"
    EXECUTION_NAME: Final = "executionName"
    SUBMITTED_AT: Final = "submittedAt"
    DEADLINE_AT: Final = "deadlineAt"
    FINISHED_AT: Final = "finishedAt"
    FINISHED_BY: Final = "finishedBy"
    CONFIRMED_AT: Final = "confirmedAt"
    FINALIZED_AT: Final = "finalizedAt"
    LATE: Final = "late"
    RESUBMISSIONS: Final = "resubmissions"
    KEY_COUNTER: Final = "keyCounter"
    OUTPUT_URL: Final = "attempt.outputUrl"
    OUTPUT_DURATION: Final = "outputDuration"
    OUTPUT_CHECKSUM: Final = "outputChecksum"
    OUTPUT_VERSION_ID: Final = "outputVersionId"
    OUTPUT_SIZE: Final = "outputSize"
    COST_USD: Final = "costUsd"
    BUDGET_MONTH: Final = "budgetMonth"
    CHARGED_USD: Final = "chargedUsd"
    HOLD_REASON: Final = "holdReason"
    RETRIED_BY: Final = "retriedBy"
    REUPLOAD: Final = "reupload"
    ARRIVED_AT: Final = "arrivedAt"
    WEBHOOK_STATUS: Final = "webhookStatus"
    WEBHOOK_GENERATION_ID: Final = "webhookGenerationId"
    LAST_WEBHOOK_AT: Final = "lastWebhookAt"
    WEBHOOK_SIGNATURE: Final = "webhookSignature"
    ATTEMPT: Final = "attempt"
    ATTEMPT_BODY: Final = "attempt.body"
    ATTEMPT_SLOT: Final = "attempt.slot"
    ATTEMPT_LEASE: Final = "attempt.leaseId"
    ATTEMPT_LEASE_UNTIL: Final = "attempt.leaseUntil"
    ATTEMPT_SENDS: Final = "attempt.sends"
    ATTEMPT_FIRST_SENT_AT: Final = "attempt.firstSentAt"
    ATTEMPT_UNCERTAIN_SINCE: Final = "attempt.uncertainSince"
    ATTEMPT_LAST_ERROR: Final = "attempt.lastError"
    ATTEMPT_TASK_TOKEN: Final = "attempt.taskToken"  # nosec B105 # noqa: S105 - a field name


class Lane(StrEnum):
    QUEUED = "queued"
    HELD = "held"
    ENDED = "ended"  # final; document and event not yet written


class Move(StrEnum):
    HOLD = "hold"  # the estimate does not fit the month's budget
    UNHOLD = "unhold"  # the budget allows it now: back in line, in its place
    CLAIM = "claim"  # a plan slot and an attempt (key, body, lease), before the first POST
    UNSERVABLE = "unservable"  # its request cannot be stored or read back: it ends, the queue moves on
    REQUEUE = "requeue"  # sync.so certainly created nothing: back to the front, the attempt dropped
    ACCEPT = "accept"  # sync.so made the generation (201, an adopted id, or an idempotent replay)
    REFUSE = "refuse"  # a 4xx that says the request itself is wrong
    ABANDON_CREATE = "abandon_create"  # no answer at all for as long as a create is worth waiting
    OBSERVE = "observe"  # sync.so says it is processing
    FINISH = "finish"  # sync.so's final answer, read back by a GET (late ones too)
    TIME_OUT = "time_out"  # past its deadline: still watched, still holding its slot for a while
    RESUBMIT = "resubmit"  # a confirmed transient failure: back to the front for one more generation
    STOP = "stop"  # the pipeline stops following it (workflow ended, or the watch window closed)


API_FINAL = frozenset({S.COMPLETED, S.FAILED, S.REJECTED, S.CANCELED, S.UNKNOWN})
BUDGET_FIELDS = (F.BUDGET_MONTH, F.CHARGED_USD)
SIGNAL_FIELDS = (F.WEBHOOK_STATUS, F.WEBHOOK_GENERATION_ID, F.LAST_WEBHOOK_AT, F.WEBHOOK_SIGNATURE)


@dataclass(frozen=True)
class Rule:
    sources: frozenset[str]
    targets: frozenset[str]
    guards: tuple[str, ...] = ()  # must still hold what the job held when it was read
    clears: tuple[str, ...] = ()


_GENERATION_RUNS = frozenset({S.PENDING, S.PROCESSING, S.TIMED_OUT})
TABLE: dict[Move, Rule] = {
    Move.HOLD: Rule(frozenset({S.QUEUED}), frozenset({S.BUDGET_HOLD})),
    Move.UNHOLD: Rule(frozenset({S.BUDGET_HOLD}), frozenset({S.QUEUED}), clears=(F.HOLD_REASON,)),
    Move.CLAIM: Rule(frozenset({S.QUEUED}), frozenset({S.SUBMITTING}), clears=(F.HOLD_REASON,)),
    Move.UNSERVABLE: Rule(frozenset({S.QUEUED}), frozenset({S.INVALID}), clears=(F.ATTEMPT,)),
    Move.REQUEUE: Rule(
        frozenset({S.SUBMITTING}),
        frozenset({S.QUEUED}),
        guards=(F.ATTEMPT_LEASE,),
        clears=(F.ATTEMPT, *BUDGET_FIELDS),
    ),
    Move.ACCEPT: Rule(
        frozenset({S.SUBMITTING}),
        frozenset({S.PENDING, S.PROCESSING} | API_FINAL),
        guards=(F.ATTEMPT_LEASE,),
        clears=(F.ATTEMPT_BODY, F.ATTEMPT_LEASE, F.ATTEMPT_LEASE_UNTIL, F.ATTEMPT_LAST_ERROR),
    ),
    Move.REFUSE: Rule(
        frozenset({S.SUBMITTING}), frozenset({S.REJECTED}), guards=(F.ATTEMPT_LEASE,), clears=(F.ATTEMPT,)
    ),
    Move.ABANDON_CREATE: Rule(
        frozenset({S.SUBMITTING}), frozenset({S.STOPPED}), guards=(F.ATTEMPT_LEASE,), clears=(F.ATTEMPT,)
    ),
    Move.OBSERVE: Rule(frozenset({S.PENDING}), frozenset({S.PROCESSING}), guards=(F.GENERATION_ID,)),
    Move.FINISH: Rule(_GENERATION_RUNS | {S.STOPPED}, API_FINAL, guards=(F.GENERATION_ID,)),
    Move.TIME_OUT: Rule(
        frozenset({S.PENDING, S.PROCESSING}), frozenset({S.TIMED_OUT}), guards=(F.GENERATION_ID,)
    ),
    Move.RESUBMIT: Rule(
        _GENERATION_RUNS,
        frozenset({S.QUEUED}),
        guards=(F.GENERATION_ID,),
        clears=(
            F.ATTEMPT,
            F.GENERATION_ID,
            F.CONFIRMED_AT,
            F.ERROR,
            F.DEADLINE_AT,
            F.OUTPUT_DURATION,
            *SIGNAL_FIELDS,
            *BUDGET_FIELDS,
        ),
    ),
    Move.STOP: Rule(_GENERATION_RUNS, frozenset({S.STOPPED}), guards=(F.GENERATION_ID,)),
}


@dataclass
class Change:
    """One conditional update of a job record (run alone, or as one item of a transaction)."""

    job_id: str
    set: dict[str, Any] = field(default_factory=dict)
    remove: list[str] = field(default_factory=list)
    condition: ConditionBase = field(default_factory=lambda: Attr("jobId").exists())
    history: list[dict[str, Any]] = field(default_factory=list)  # entries to append

    def also(self, condition: ConditionBase) -> Change:
        """The same change, with one more condition."""
        self.condition = self.condition & condition
        return self


def lane_key(moment: str, job_id: str) -> str:
    return f"{moment}#{job_id}"


def _value(job: Job, path: str) -> Any:
    value: Any = job.model_dump(by_alias=True)
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _holds(job: Job, path: str) -> ConditionBase:
    value = _value(job, path)
    return Attr(path).not_exists() if value is None else Attr(path).eq(value)


def _status_in(statuses: Iterable[str]) -> ConditionBase:
    ordered = sorted(statuses)
    return Attr(F.STATUS).eq(ordered[0]) if len(ordered) == 1 else Attr(F.STATUS).is_in(ordered)


def _history(job: Job, entry: HistoryEntry, change: Change) -> None:
    """Append `entry`; a full history is folded (its first and last entries kept) under a guard
    that nobody appended meanwhile."""
    stored = entry.model_dump(exclude_none=True)
    if len(job.history) < HISTORY_LIMIT:
        change.history.append(stored)
        return
    tail = HISTORY_LIMIT - HISTORY_KEPT_HEAD - 2
    folded = len(job.history) - HISTORY_KEPT_HEAD - tail
    marker = HistoryEntry(
        status=job.history[HISTORY_KEPT_HEAD].status,
        source=job.history[HISTORY_KEPT_HEAD].source,
        at=job.history[HISTORY_KEPT_HEAD].at,
        detail=f"{folded} earlier changes folded",
    )
    kept = [*job.history[:HISTORY_KEPT_HEAD], marker, *job.history[-tail:]]
    change.set[F.HISTORY] = [item.model_dump(exclude_none=True) for item in kept] + [stored]
    change.also(Attr(F.HISTORY).size().eq(len(job.history)))


def change(
    job: Job,
    move: Move,
    to: str,
    source: Source,
    *,
    fields: Mapping[str, Any] | None = None,
    clear: Iterable[str] = (),
    detail: str | None = None,
    now: str | None = None,
) -> Change:
    """The conditional write for moving `job` (as read) to `to` by `move`, with `fields` set."""
    rule = TABLE[move]
    if to not in rule.targets:
        raise ValueError(f"{move} cannot move a job to {to} (only to {', '.join(sorted(rule.targets))})")
    moment = now or utc_now()
    update = Change(job.job_id, condition=_status_in(rule.sources))
    for guard in rule.guards:
        update.also(_holds(job, guard))
    update.set = {**dict(fields or {}), F.STATUS: to, F.UPDATED_AT: moment}
    if to == S.QUEUED:
        update.set[F.LANE] = Lane.QUEUED
        update.set.setdefault(F.LANE_KEY, job.queue_key or lane_key(job.arrived_at or moment, job.job_id))
    elif to == S.BUDGET_HOLD:
        update.set[F.LANE] = Lane.HELD
    elif is_final(to):
        # Due for the sweep from now, unless the caller says when (a COMPLETED job's copy has longer).
        update.set[F.LANE] = Lane.ENDED
        update.set.setdefault(F.LANE_KEY, lane_key(moment, job.job_id))
    removed = [*rule.clears, *clear]
    if F.LANE not in update.set:
        removed.append(F.LANE)
    # A path set here wins over a clear of it or of anything under it (DynamoDB refuses overlaps).
    update.remove = [
        path
        for path in dict.fromkeys(removed)
        if not any(path == kept or path.startswith(kept + ".") for kept in update.set)
    ]
    text = detail[:DETAIL_LIMIT] if detail else None
    _history(job, HistoryEntry(status=to, source=source, at=moment, detail=text), update)
    return update


def note(
    job_id: str,
    fields: Mapping[str, Any],
    *,
    clear: Iterable[str] = (),
    when: ConditionBase | None = None,
) -> Change:
    """Fields that are not a status change (signals, tokens, output details), under `when`."""
    update = Change(job_id, set={**dict(fields), F.UPDATED_AT: utc_now()}, remove=list(clear))
    if when is not None:
        update.also(when)
    return update


# ------------------------------------------------------------------ conditions callers combine
def generation_is(generation_id: str) -> ConditionBase:
    return Attr(F.GENERATION_ID).eq(generation_id)


def lease_is(lease_id: str | None) -> ConditionBase:
    path = F.ATTEMPT_LEASE
    return Attr(path).not_exists() if lease_id is None else Attr(path).eq(lease_id)


def holds_slot(slot: int) -> ConditionBase:
    return Attr(F.ATTEMPT_SLOT).eq(slot)


def status_is(*statuses: str) -> ConditionBase:
    return _status_in(statuses)


def in_flight() -> ConditionBase:
    return _status_in(IN_FLIGHT)


def not_announced() -> ConditionBase:
    return Attr(F.FINALIZED_AT).not_exists()
