"""Admission control: at most `SyncPlanConcurrency` of this stack's generations in flight, creates
under the create rate, and nothing claimed that is not released.

One item in the admission table holds the plan's state:

    slot_<i>        {jobId, since, leaseUntil}: slot i is held by that job (absent: free)
    duration_<i>    how long the last generation on slot i took (for ETAs)
    recentCreates   when each of the last creates was sent (epoch seconds): the rate ledger
    pausedUntil     no dispatch before this (a 429 from another client, a rejected API key)
    version         bumped by every claim: claims are optimistic and never double-book a slot

A claim is one transaction with the job's own update (QUEUED -> SUBMITTING), and a release is
one transaction with the job's next state (or a lone conditional delete of the slot), so a slot
and its job can never disagree after a crash: there is no leak window. `Dispatcher.sweep` frees
slots whose job is no longer in flight anyway, as a second line of defence.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from lipsync.jobs.store import Codec, DynamoJobStore, Update
from lipsync.plan.budget import SPEND_PREFIX, Charge, report_cost, settle

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from lipsync.jobs.model import Job
    from lipsync.plan.kicks import Kicker

PLAN_ID = "plan"
RATE_WINDOW_SECONDS = 61.0  # sync.so counts 60 s; a second of margin absorbs clock and network skew


class SlotHolder(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    job_id: str = Field(alias="jobId")
    since: float
    lease_until: float = Field(0.0, alias="leaseUntil")  # > 0 while the create is not yet recorded


class PlanState(BaseModel):
    """The admission item as read."""

    version: int = 0
    slots: dict[int, SlotHolder] = Field(default_factory=dict)
    durations: dict[int, float] = Field(default_factory=dict)
    recent_creates: list[float] = Field(default_factory=list)
    paused_until: float = 0.0
    pause_reason: str | None = None
    throttle_streak: int = 0

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> PlanState:
        slots = {int(k[5:]): SlotHolder.model_validate(v) for k, v in item.items() if k.startswith("slot_")}
        durations = {int(k[9:]): float(v) for k, v in item.items() if k.startswith("duration_")}
        return cls(
            version=int(item.get("version", 0)),
            slots=slots,
            durations=durations,
            recent_creates=[float(t) for t in item.get("recentCreates", [])],
            paused_until=float(item.get("pausedUntil", 0)),
            pause_reason=item.get("pauseReason"),
            throttle_streak=int(item.get("throttleStreak", 0)),
        )

    def free_slot(self, limit: int) -> int | None:
        """The lowest free slot, if fewer than `limit` are held (a lowered limit drains first)."""
        if len(self.slots) >= limit:
            return None
        return next(index for index in range(limit + len(self.slots)) if index not in self.slots)

    def rate_wait(self, now: float, per_minute: int) -> float:
        """Seconds until one more create fits the rate (0: now)."""
        window = sorted(t for t in self.recent_creates if t > now - RATE_WINDOW_SECONDS)
        if len(window) < per_minute:
            return 0.0
        return window[-per_minute] + RATE_WINDOW_SECONDS - now

    def ledger_with(self, now: float, per_minute: int) -> list[float]:
        window = [t for t in self.recent_creates if t > now - RATE_WINDOW_SECONDS]
        return [*window, now][-per_minute:]

    def expired_lease(self, now: float) -> tuple[int, SlotHolder] | None:
        """A slot whose create was not recorded in time (a crash, or an uncertain answer to retry)."""
        due = [(h.lease_until, i) for i, h in self.slots.items() if 0 < h.lease_until <= now]
        if not due:
            return None
        index = min(due)[1]
        return index, self.slots[index]

    def mean_generation_seconds(self) -> float | None:
        values = list(self.durations.values())
        return sum(values) / len(values) if values else None


class Admission(Protocol):
    def read(self) -> PlanState: ...

    def claim(
        self,
        plan: PlanState,
        slot: int,
        holder: SlotHolder,
        per_minute: int,
        job: Update,
        *,
        renew: bool = False,
        charge: Charge | None = None,
    ) -> bool: ...

    def release(
        self,
        slot: int,
        job_id: str,
        *,
        job: Update | None = None,
        duration: float | None,
        charge: Charge | None = None,
    ) -> bool: ...

    def month_spend(self, month: str) -> float: ...

    def settle(self, job: Update, charge: Charge | None) -> bool: ...

    def set_lease(self, slot: int, job_id: str, lease_until: float) -> bool: ...

    def pause(self, until: float, reason: str, streak: int) -> None: ...

    def clear_throttle(self) -> None: ...

    def schedule_wake(self, at: float, now: float) -> bool: ...


class DynamoAdmission:
    """`Admission` over the admission table, in transactions with the jobs table."""

    def __init__(self, table_name: str, store: DynamoJobStore, client: DynamoDBClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table_name
        self._store = store
        self._codec = Codec()

    def read(self) -> PlanState:
        answer = self._client.get_item(
            TableName=self._table, Key=self._codec.item({"id": PLAN_ID}), ConsistentRead=True
        )
        return PlanState.from_item(self._codec.plain(answer.get("Item", {})))

    def _plan_update(
        self,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._codec.item({"id": PLAN_ID}),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
        }
        if values:
            request["ExpressionAttributeValues"] = self._codec.item(values)
        return request

    def _transact(self, *updates: dict[str, Any]) -> bool:
        try:
            items: Any = [{"Update": update} for update in updates]
            self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.TransactionCanceledException:
            return False  # a condition did not hold: somebody else got there first
        return True

    def claim(
        self,
        plan: PlanState,
        slot: int,
        holder: SlotHolder,
        per_minute: int,
        job: Update,
        *,
        renew: bool = False,
        charge: Charge | None = None,
    ) -> bool:
        """Take `slot` for the job (or, `renew`, keep it for another try of the same create) and one
        create from the rate, if nobody changed the plan since `plan` was read; the job's own update
        (with its condition) and its `charge` to the month's spend commit with it or not at all."""
        condition = "attribute_not_exists(#version)" if plan.version == 0 else "#version = :version"
        values: dict[str, Any] = {
            ":next": plan.version + 1,
            ":holder": holder.model_dump(by_alias=True),
            ":ledger": plan.ledger_with(holder.since, per_minute),
        }
        if plan.version:
            values[":version"] = plan.version
        if renew:
            values[":job"] = holder.job_id
        plan_update = self._plan_update(
            "SET #version = :next, #slot = :holder, recentCreates = :ledger",
            condition + (" AND #slot.jobId = :job" if renew else " AND attribute_not_exists(#slot)"),
            {"#version": "version", "#slot": f"slot_{slot}"},
            values,
        )
        return self._transact(plan_update, self._store.update_request(job), *self._spend(charge))

    def release(
        self,
        slot: int,
        job_id: str,
        *,
        job: Update | None = None,
        duration: float | None,
        charge: Charge | None = None,
    ) -> bool:
        """Free `slot` if `job_id` still holds it (with the job's next state and its `charge`, atomically)."""
        expression = "REMOVE #slot"
        values: dict[str, Any] = {":job": job_id}
        names = {"#slot": f"slot_{slot}"}
        if duration is not None:
            expression = "SET #duration = :duration " + expression
            names["#duration"] = f"duration_{slot}"
            values[":duration"] = round(duration, 3)
        plan_update = self._plan_update(expression, "#slot.jobId = :job", names, values)
        if job is not None:
            return self._transact(plan_update, self._store.update_request(job), *self._spend(charge))
        try:
            self._client.update_item(**plan_update)
        except self._client.exceptions.ConditionalCheckFailedException:
            return False  # released before (an ending is reported twice): nothing to do
        return True

    def settle(self, job: Update, charge: Charge | None) -> bool:
        """The job's update and its charge, without a slot (the sweep freed it first)."""
        return self._transact(self._store.update_request(job), *self._spend(charge))

    def month_spend(self, month: str) -> float:
        answer = self._client.get_item(
            TableName=self._table, Key=self._codec.item({"id": SPEND_PREFIX + month}), ConsistentRead=True
        )
        return float(self._codec.plain(answer.get("Item", {})).get("usd", 0.0))

    def _spend(self, charge: Charge | None) -> list[dict[str, Any]]:
        """The month's spend item's update for `charge` (none for no charge)."""
        if charge is None or (charge.usd == 0 and charge.ceiling is None):
            return []
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._codec.item({"id": SPEND_PREFIX + charge.month}),
            "UpdateExpression": "ADD usd :usd",
            "ExpressionAttributeValues": self._codec.item({":usd": round(charge.usd, 4)}),
        }
        if charge.ceiling is not None:  # the budget's check, atomic with the claim
            request["ConditionExpression"] = "attribute_not_exists(usd) OR usd <= :ceiling"
            request["ExpressionAttributeValues"] |= self._codec.item({":ceiling": charge.ceiling})
        return [request]

    def set_lease(self, slot: int, job_id: str, lease_until: float) -> bool:
        """0 when the create is recorded; a later time to retry an uncertain create then."""
        try:
            self._client.update_item(
                **self._plan_update(
                    "SET #slot.leaseUntil = :until",
                    "#slot.jobId = :job",
                    {"#slot": f"slot_{slot}"},
                    {":until": lease_until, ":job": job_id},
                )
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def pause(self, until: float, reason: str, streak: int) -> None:
        # Already paused for longer: keep that.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                **self._plan_update(
                    "SET pausedUntil = :until, pauseReason = :reason, throttleStreak = :streak",
                    "attribute_not_exists(pausedUntil) OR pausedUntil < :until",
                    {},
                    {":until": until, ":reason": reason, ":streak": streak},
                )
            )

    def schedule_wake(self, at: float, now: float) -> bool:
        """True for the one caller that should send the delayed kick for `at`: nobody has one pending,
        or the pending one is later (the earliest wake wins; that run schedules the next)."""
        try:
            self._client.update_item(
                **self._plan_update(
                    "SET wakeAt = :at",
                    "attribute_not_exists(wakeAt) OR wakeAt <= :now OR wakeAt > :at",
                    {},
                    {":at": at, ":now": now},
                )
            )
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def clear_throttle(self) -> None:
        self._client.update_item(
            **self._plan_update(
                "SET throttleStreak = :zero REMOVE pauseReason",
                "attribute_exists(id)",
                {},
                {":zero": 0},
            )
        )


def free_slot(admission: Admission, kicker: Kicker, job: Job, *, duration: float | None = None) -> Job:
    """Give a finished job's slot back (if it still holds one), settle what it cost against the
    month's spend, and wake the dispatcher for the next job. Returns the job as now stored.

    The plan item, the job's `slot` and cost, and the spend change in one transaction; an ending
    reported twice (a retried task, the execution-ended event) finds nothing to free and changes nothing.
    """
    if job.slot is None:
        return job
    charge, cost = settle(job)
    fields: dict[str, Any] = {}
    if cost is not None:
        fields = {"costUsd": cost} | (charge.job_fields(cost) if charge else {})
    update = Update(
        job.job_id, set=fields, remove=("slot",), condition="slot = :slot", values={":slot": job.slot}
    )
    if admission.release(job.slot, job.job_id, job=update, duration=duration, charge=charge):
        kicker.kick(0, "slot freed")
    elif not admission.settle(update, charge):
        return job  # settled before: an ending reported twice
    # else the sweep freed the plan's slot first (the job was final): its cost is settled all the same
    report_cost(cost)
    return job.model_copy(
        update={"slot": None, "cost_usd": cost, "charged_usd": cost if charge else job.charged_usd}
    )
