"""Admission control: at most `SyncPlanConcurrency` of this stack's generations in flight, creates
under the create rate, and nothing claimed that is not released.

One item in the admission table holds the plan's state:

    slot_<i>        {jobId, since, leaseUntil}: slot i is held by that job (absent: free)
    duration_<i>    how long the last generation on slot i took (for ETAs)
    recentCreates   when each of the last creates was sent (epoch seconds): the rate ledger
    pausedUntil     no dispatch before this (a 429 from another client, a rejected API key)
    accountConcurrency, accountReadAt
                    the plan's concurrent generations as sync.so's account last said (SyncPlanConcurrency
                    `auto`), and when it was read
    version         bumped by every claim: claims are optimistic and never double-book a slot

A claim is one transaction with the job's own change (QUEUED -> SUBMITTING), and a release is
one transaction with the job's next state (or a lone conditional delete of the slot), so a slot
and its job can never disagree after a crash. A cancelled transaction says why, item by item:
another writer (contention: read again and retry), the job moved on (skip it), the budget (hold
it), or an item DynamoDB cannot store (end that job, never retry it forever).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from boto3.dynamodb.conditions import Attr, ConditionBase
from pydantic import BaseModel, ConfigDict, Field

from lipsync.jobs import dynamo
from lipsync.jobs.model import is_final
from lipsync.jobs.transitions import F, holds_slot, note
from lipsync.plan.budget import SPEND_PREFIX, Charge, report_cost, settle

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from lipsync.jobs.model import Job
    from lipsync.jobs.store import DynamoJobStore
    from lipsync.jobs.transitions import Change
    from lipsync.plan.kicks import Kicker

PLAN_ID = "plan"
RATE_WINDOW_SECONDS = 61.0  # sync.so counts 60 s; a second of margin absorbs clock and network skew


class Contention(RuntimeError):
    """Another writer changed the plan at the same moment (DynamoDB's TransactionConflict, which
    botocore does not retry): nothing was written; the caller's own retry repeats the step."""


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"
    PLAN_CHANGED = "plan_changed"  # another dispatcher claimed or released meanwhile: read again
    JOB_MOVED = "job_moved"  # the job is no longer where the claim expected it
    OVER_BUDGET = "over_budget"  # the month's spend moved past the budget meanwhile
    TOO_LARGE = "too_large"  # the job's record cannot be stored (DynamoDB's item size limit)


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
    account_concurrency: int | None = None
    account_read_at: float = 0.0

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
            account_concurrency=int(item["accountConcurrency"]) if "accountConcurrency" in item else None,
            account_read_at=float(item.get("accountReadAt", 0)),
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
        """A slot whose create is due again (a crash, or an answer that left the outcome unknown)."""
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
        job: Change,
        *,
        renew: bool = False,
        charge: Charge | None = None,
    ) -> ClaimOutcome: ...

    def release(
        self,
        slot: int,
        job_id: str,
        *,
        job: Change | None = None,
        duration: float | None,
        charge: Charge | None = None,
    ) -> bool: ...

    def month_spend(self, month: str) -> float: ...

    def settle(self, job: Change, charge: Charge | None) -> bool: ...

    def set_lease(self, slot: int, job_id: str, lease_until: float) -> bool: ...

    def pause(self, until: float, reason: str, streak: int) -> None: ...

    def clear_throttle(self) -> None: ...

    def record_account(self, concurrency: int | None, at: float, *, stale: bool = False) -> None: ...

    def schedule_wake(self, at: float, now: float) -> bool: ...


@dataclass(frozen=True)
class _Cancelled:
    codes: list[str]  # per item: "None", "ConditionalCheckFailed", "TransactionConflict", ...

    def failed(self, index: int) -> bool:
        return index < len(self.codes) and self.codes[index] == "ConditionalCheckFailed"

    @property
    def conflict(self) -> bool:
        return "TransactionConflict" in self.codes

    @property
    def too_large(self) -> bool:
        return "ValidationError" in self.codes


class DynamoAdmission:
    """`Admission` over the admission table, in transactions with the jobs table."""

    def __init__(self, table_name: str, store: DynamoJobStore, client: DynamoDBClient | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("dynamodb")
        self._client = client
        self._table = table_name
        self._store = store

    def read(self) -> PlanState:
        answer = self._client.get_item(
            TableName=self._table, Key=dynamo.item({"id": PLAN_ID}), ConsistentRead=True
        )
        return PlanState.from_item(dynamo.plain(answer.get("Item", {})))

    def _request(
        self,
        set_values: dict[str, Any],
        condition: ConditionBase,
        *,
        remove: tuple[str, ...] = (),
        item_id: str = PLAN_ID,
    ) -> dict[str, Any]:
        update = dynamo.update(set_values, remove)
        guard = dynamo.condition(condition)
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": dynamo.item({"id": item_id}),
            "UpdateExpression": update.text,
            "ConditionExpression": guard.text,
            "ExpressionAttributeNames": update.names | guard.names,
        }
        if values := update.values | guard.values:
            request["ExpressionAttributeValues"] = values
        return request

    def _transact(self, *updates: dict[str, Any]) -> _Cancelled | None:
        """None when every item was written; else why the transaction was cancelled."""
        from botocore.exceptions import ClientError

        try:
            items: Any = [{"Update": update} for update in updates]
            self._client.transact_write_items(TransactItems=items)
        except self._client.exceptions.TransactionCanceledException as error:
            return _Cancelled(dynamo.cancellation_codes(error))
        except ClientError as error:
            # Some DynamoDB implementations answer an item over 400 KB with a plain ValidationException.
            message = str(error.response.get("Error", {}).get("Message", ""))
            if error.response.get("Error", {}).get("Code") == "ValidationException" and "size" in message:
                return _Cancelled(["ValidationError"])
            raise
        return None

    def _update(self, request: dict[str, Any]) -> bool:
        try:
            self._client.update_item(**request)
        except self._client.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def claim(
        self,
        plan: PlanState,
        slot: int,
        holder: SlotHolder,
        per_minute: int,
        job: Change,
        *,
        renew: bool = False,
        charge: Charge | None = None,
    ) -> ClaimOutcome:
        """Take `slot` for the job (or, `renew`, keep it for another try of the same create) and one
        create from the rate, if nobody changed the plan since `plan` was read; the job's own change
        (with its condition) and its `charge` to the month's spend commit with it or not at all."""
        unchanged = Attr("version").not_exists() if plan.version == 0 else Attr("version").eq(plan.version)
        slot_name = f"slot_{slot}"
        held = Attr(f"{slot_name}.jobId").eq(holder.job_id) if renew else Attr(slot_name).not_exists()
        plan_update = self._request(
            {
                "version": plan.version + 1,
                slot_name: holder.model_dump(by_alias=True),
                "recentCreates": plan.ledger_with(holder.since, per_minute),
            },
            unchanged & held,
        )
        cancelled = self._transact(plan_update, self._store.request(job), *self._spend(charge))
        if cancelled is None:
            return ClaimOutcome.CLAIMED
        if cancelled.too_large:
            return ClaimOutcome.TOO_LARGE
        if cancelled.failed(1):
            return ClaimOutcome.JOB_MOVED
        if cancelled.failed(2):
            return ClaimOutcome.OVER_BUDGET
        return ClaimOutcome.PLAN_CHANGED  # the plan's version or slot, or a conflict: read again

    def release(
        self,
        slot: int,
        job_id: str,
        *,
        job: Change | None = None,
        duration: float | None,
        charge: Charge | None = None,
    ) -> bool:
        """Free `slot` if `job_id` still holds it (with the job's next state and its `charge`,
        atomically). False when the slot or the job's condition did not hold; `Contention` when
        another writer got in the way (nothing was written: try again)."""
        durations = {f"duration_{slot}": round(duration, 3)} if duration is not None else {}
        plan_update = self._request(
            durations, Attr(f"slot_{slot}.jobId").eq(job_id), remove=(f"slot_{slot}",)
        )
        if job is None:
            return self._update(plan_update)  # False: released before (an ending reported twice)
        cancelled = self._transact(plan_update, self._store.request(job), *self._spend(charge))
        if cancelled is not None and cancelled.conflict:
            raise Contention(f"the plan changed while slot {slot} of job {job_id} was being released")
        return cancelled is None

    def settle(self, job: Change, charge: Charge | None) -> bool:
        """The job's change and its charge, without a slot (the sweep freed it first)."""
        spend = self._spend(charge)
        if not spend:
            return self._store.apply(job) is not None
        cancelled = self._transact(self._store.request(job), *spend)
        if cancelled is not None and cancelled.conflict:
            raise Contention(f"the month's spend changed while job {job.job_id} was being settled")
        return cancelled is None

    def month_spend(self, month: str) -> float:
        answer = self._client.get_item(
            TableName=self._table, Key=dynamo.item({"id": SPEND_PREFIX + month}), ConsistentRead=True
        )
        return float(dynamo.plain(answer.get("Item", {})).get("usd", 0.0))

    def _spend(self, charge: Charge | None) -> list[dict[str, Any]]:
        """The month's spend item's update for `charge` (none for no charge)."""
        if charge is None or (charge.usd == 0 and charge.ceiling is None):
            return []
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": dynamo.item({"id": SPEND_PREFIX + charge.month}),
            "UpdateExpression": "ADD #usd :usd",
            "ExpressionAttributeNames": {"#usd": "usd"},
            "ExpressionAttributeValues": {":usd": dynamo.serialize(round(charge.usd, 4))},
        }
        if charge.ceiling is not None:  # the budget's check, atomic with the claim
            guard = dynamo.condition(Attr("usd").not_exists() | Attr("usd").lte(charge.ceiling))
            request["ConditionExpression"] = guard.text
            request["ExpressionAttributeNames"] |= guard.names
            request["ExpressionAttributeValues"] |= guard.values
        return [request]

    def set_lease(self, slot: int, job_id: str, lease_until: float) -> bool:
        """0 when the create is recorded; a later time to send an uncertain create again."""
        return self._update(
            self._request({f"slot_{slot}.leaseUntil": lease_until}, Attr(f"slot_{slot}.jobId").eq(job_id))
        )

    def pause(self, until: float, reason: str, streak: int) -> None:
        # Already paused for longer: keep that.
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(
                **self._request(
                    {"pausedUntil": until, "pauseReason": reason, "throttleStreak": streak},
                    Attr("pausedUntil").not_exists() | Attr("pausedUntil").lt(until),
                )
            )

    def schedule_wake(self, at: float, now: float) -> bool:
        """True for the one caller that should send the delayed kick for `at`: nobody has one pending,
        or the pending one is later (the earliest wake wins; that run schedules the next)."""
        return self._update(
            self._request(
                {"wakeAt": at},
                Attr("wakeAt").not_exists() | Attr("wakeAt").lte(now) | Attr("wakeAt").gt(at),
            )
        )

    def clear_throttle(self) -> None:
        self._client.update_item(
            **self._request({"throttleStreak": 0}, Attr("id").exists(), remove=("pauseReason",))
        )

    def record_account(self, concurrency: int | None, at: float, *, stale: bool = False) -> None:
        """What the account said of the plan's concurrency (None: it did not say; keep the last).
        `stale`: an answer hinted the plan changed; the next dispatcher run reads the account again."""
        values: dict[str, Any] = {"accountReadAt": 0.0 if stale else at}
        if concurrency is not None:
            values["accountConcurrency"] = concurrency
        guard: ConditionBase
        if stale:  # never read yet: the next run reads it anyway
            guard = Attr("accountReadAt").exists()
        else:  # a later read won
            guard = Attr("accountReadAt").not_exists() | Attr("accountReadAt").lt(at)
        with contextlib.suppress(self._client.exceptions.ConditionalCheckFailedException):
            self._client.update_item(**self._request(values, guard))


def free_slot(admission: Admission, kicker: Kicker, job: Job, *, duration: float | None = None) -> Job:
    """Give a job's slot back (if it still holds one), settle what a finished job cost against the
    month's spend, and wake the dispatcher for the next job. Returns the job as now known.

    The plan item, the job's slot and cost, and the spend change in one transaction; an ending
    reported twice (a retried task, the execution-ended event) finds nothing to free or settle and
    changes nothing. A job whose slot went earlier (a TIMED_OUT one that finished late) is settled
    on its own. `Contention` propagates: the caller's retry (Step Functions, the sweep) repeats it.
    """
    charge, cost = settle(job)
    settling = cost is not None and job.cost_usd is None and is_final(job.status)
    fields: dict[str, Any] = {}
    if settling and cost is not None:
        fields = {F.COST_USD: cost} | (charge.job_fields(cost) if charge else {})
    unsettled = Attr(F.COST_USD).not_exists()
    slot = job.slot
    if slot is None:
        if not settling:
            return job
        if not admission.settle(note(job.job_id, fields, when=unsettled), charge):
            return job  # settled before
    else:
        when = holds_slot(slot) & unsettled if settling else holds_slot(slot)
        change = note(job.job_id, fields, clear=[F.ATTEMPT_SLOT], when=when)
        if admission.release(
            slot, job.job_id, job=change, duration=duration, charge=charge if settling else None
        ):
            kicker.kick(0, "slot freed")
        elif not admission.settle(change, charge if settling else None):
            return job  # freed and settled before: an ending reported twice
        # else the sweep freed the plan's slot first: the job's slot and cost are settled all the same
    if settling:
        report_cost(cost)
    attempt = job.attempt.model_copy(update={"slot": None}) if job.attempt else None
    update: dict[str, Any] = {"attempt": attempt}
    if settling:
        update |= {"cost_usd": cost, "charged_usd": cost if charge else job.charged_usd}
    return job.model_copy(update=update)
