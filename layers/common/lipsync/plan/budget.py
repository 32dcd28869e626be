"""The budget guard: the month's spend, and the jobs it holds back.

The admission table keeps one item per month, `spend#<YYYY-MM>` with `usd`: what the jobs
dispatched that month count for. A job counts its estimate from the moment it is claimed (in
the claim's own transaction, under the condition that the month stays within the budget), then
what it really cost once it ends: nothing after a REJECTED create, a requeue or a FAILED
generation, its output's duration at the estimate's price after a COMPLETED one. A job whose
outcome is unknown (TIMED_OUT, STOPPED) keeps counting its estimate.

With `MonthlyBudgetUsd` set, a job whose estimate does not fit what is left waits in
BUDGET_HOLD (out of the queue, in the index's `held` partition with its place in line kept),
with its document saying why. Every sweep releases held jobs in arrival order while their
estimates fit: after the budget is raised, or when a new month starts. Spend is counted even
with the guard off, for the dashboard.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lipsync.observability import count_by, gauge, usd
from lipsync.plan.cost import CostEstimate, actual_cost

if TYPE_CHECKING:
    from lipsync.jobs.model import Job

SPEND_PREFIX = "spend#"


def month_of(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m")


def estimate_usd(job: Job) -> float:
    """What a job counts for until it ends (0 for a job recorded before estimates existed)."""
    return CostEstimate.model_validate(job.estimate).usd if job.estimate else 0.0


@dataclass(frozen=True)
class Charge:
    """A change to one month's spend, made in the same transaction as the job's own update."""

    month: str
    usd: float
    ceiling: float | None = None  # only if the month's spend is at most this before the change

    def job_fields(self, total: float) -> dict[str, object]:
        return {"budgetMonth": self.month, "chargedUsd": round(total, 4)}


def refund(job: Job) -> Charge | None:
    """Undo what a job counts for (a create that was refused, a generation that failed)."""
    if not job.budget_month or not job.charged_usd:
        return None
    return Charge(job.budget_month, -job.charged_usd)


def settle(job: Job) -> tuple[Charge | None, float | None]:
    """At a job's end: the change from its estimate to its cost, and that cost (None: unknown)."""
    cost = actual_cost(job)
    if cost is None or not job.budget_month:
        return None, cost
    return Charge(job.budget_month, round(cost - (job.charged_usd or 0.0), 4)), cost


@dataclass(frozen=True)
class BudgetGuard:
    monthly_usd: float | None  # None: off

    def admit(self, job: Job, month: str, spent: float) -> Charge | str:
        """The charge for dispatching `job` now, or why it must wait."""
        estimate = estimate_usd(job)
        if self.monthly_usd is None:
            return Charge(month, estimate)
        if spent + estimate > self.monthly_usd:
            return (
                f"its estimate of ${estimate:.2f} does not fit the monthly budget: ${spent:.2f} of "
                f"${self.monthly_usd:.2f} is spent or committed in {month}. It is released in arrival "
                "order when the budget (MonthlyBudgetUsd) is raised or the month ends"
            )
        return Charge(month, estimate, ceiling=round(self.monthly_usd - estimate, 4))

    def fits(self, job: Job, spent: float) -> bool:
        return self.monthly_usd is None or spent + estimate_usd(job) <= self.monthly_usd


def report_charge(charge: Charge) -> None:
    """A dispatched job's estimate, as the month's committed spend grows."""
    usd("EstimatedSpendUsd", charge.usd)


def report_cost(cost: float | None) -> None:
    if cost is not None:
        usd("ActualSpendUsd", cost)


def report_held() -> None:
    count_by("JobsHeld", "Outcome", "BUDGET_HOLD")


def report_budget(guard: BudgetGuard, spent: float, held: int) -> None:
    """The sweep's gauges: the month's spend against the budget, and how many jobs wait for it."""
    usd("MonthSpendUsd", spent)
    if guard.monthly_usd is not None:
        usd("MonthlyBudgetUsd", guard.monthly_usd)
    gauge("HeldJobs", held)
