"""What a submission will cost (`--dry-run`, submit, retry) and what jobs cost (`cost`).

Both reuse the layer's own rules (lipsync.plan.cost): the estimate is `output_seconds` over the planned
request, priced by `CostEstimator` with the stack's `PriceTableUsdPerSecond` only (sync.so's
estimate endpoint is the submit function's to call; the CLI never calls sync.so). Durations come
from the local files about to be uploaded (`media_seconds`, their headers); an input already in
the bucket or behind an https URL has no duration here, so the estimate becomes an upper bound.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from lipsync.jobs.model import Job, JobStatus
from lipsync.media_duration import media_seconds
from lipsync.plan.cost import (
    Basis,
    CostEstimate,
    CostEstimator,
    output_seconds,
)
from lipsync.plan.prices import DEFAULT_PRICES_USD_PER_SECOND, PriceTable
from lipsync_cli.errors import UsageError
from lipsync_cli.submission import Submission
from lipsync_cli.targets import Target

NO_MODEL = "-"  # INVALID jobs never got one
KNOWN_LENGTH_NOTE = "the output's length as the original job's estimate measured it"


def price_table(target: Target) -> tuple[PriceTable, str]:
    """The stack's price table and which it is ("list": the list prices, "stack": its own).
    A table the submit function would refuse at cold start is refused here too."""
    try:
        table = PriceTable.from_json(target.price_table)
    except ValueError as error:
        raise UsageError(
            f"the stack's PriceTableUsdPerSecond (Tuning) is not valid, so its submit function cannot "
            f"start either: {error}"
        ) from None
    return table, "list" if table.prices == DEFAULT_PRICES_USD_PER_SECOND else "stack"


def file_seconds(path: Path) -> float | None:
    """A local media file's duration from its headers; None when it cannot be read."""
    try:
        with path.open("rb") as stream:
            return media_seconds(stream, path.suffix.lstrip("."))
    except OSError:
        return None


def estimate_submission(
    submission: Submission, prices: PriceTable, *, known: tuple[float, Basis] | None = None
) -> CostEstimate | None:
    """The validated submission's estimate (None before validation). `known`: the output's length
    when it is already known (a retry re-runs the inputs its original job's estimate measured)."""
    plan = submission.plan
    if plan is None or plan.template is None or plan.model is None:
        return None
    if known is not None:
        estimate = CostEstimator(prices).estimate(plan.model, *known)
        notes = [KNOWN_LENGTH_NOTE, *([estimate.note] if estimate.note else [])]
        return estimate.model_copy(update={"note": "; ".join(notes)})
    local = submission.local_files
    durations = {
        index: file_seconds(local[ref.key]) if ref.key in local else None
        for index, ref in plan.template.presign.items()
    }
    return CostEstimator(prices).estimate(plan.model, *output_seconds(plan.template.body, durations))


# ---------------------------------------------------------------------------- the spend report


def parse_day(value: str, flag: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r}: expected a day as YYYY-MM-DD, e.g. 2026-01-31") from None


def day_range(since: str | None, until: str | None, *, today: date) -> tuple[date, date]:
    """--since (default: the first of this month, UTC) to --until (default: today), inclusive."""
    first = parse_day(since, "--since") if since else today.replace(day=1)
    last = parse_day(until, "--until") if until else today
    if first > last:
        raise UsageError(f"--since {first} is after --until {last}")
    return first, last


def job_day(job: Job) -> date | None:
    """The UTC day a job counts on: when it finished, else when it was created."""
    stamp = job.finished_at or job.created_at
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


def known_cost(job: Job) -> float | None:
    """What the job cost, when known: its costUsd; nothing for an INVALID job (sync.so was never
    called); None while it runs, or when its output's length was never reported."""
    if job.cost_usd is not None:
        return job.cost_usd
    return 0.0 if job.status == JobStatus.INVALID else None


class SpendRow(BaseModel):
    """Jobs of one day and model (or every day, or every model), and what they cost."""

    model_config = ConfigDict(populate_by_name=True)

    day: str | None = None  # None: every day in the range
    model: str | None = None  # None: every model
    jobs: int = 0
    estimated_usd: float = Field(0.0, alias="estimatedUsd")  # the sum of their estimates
    actual_usd: float = Field(0.0, alias="actualUsd")  # the sum of the costs known so far
    cost_unknown: int = Field(0, alias="costUnknown")  # jobs whose cost is not known (yet)

    def add(self, job: Job) -> None:
        self.jobs += 1
        if job.estimate:
            self.estimated_usd = round(self.estimated_usd + CostEstimate.model_validate(job.estimate).usd, 4)
        cost = known_cost(job)
        if cost is None:
            self.cost_unknown += 1
        else:
            self.actual_usd = round(self.actual_usd + cost, 4)


class SpendReport(BaseModel):
    since: date
    until: date
    rows: list[SpendRow]  # by day, then model
    by_model: list[SpendRow] = Field(alias="byModel")
    total: SpendRow

    model_config = ConfigDict(populate_by_name=True)

    def stored(self) -> dict[str, Any]:
        """As `cost --json` prints it."""
        return self.model_dump(mode="json", by_alias=True)


def spend_report(jobs: list[Job], since: date, until: date) -> SpendReport:
    """Spend by day and model over [since, until] (UTC days, inclusive)."""
    rows: dict[tuple[str, str], SpendRow] = {}
    models: dict[str, SpendRow] = {}
    total = SpendRow()
    for job in jobs:
        day = job_day(job)
        if day is None or not since <= day <= until:
            continue
        model = job.model or NO_MODEL
        rows.setdefault((day.isoformat(), model), SpendRow(day=day.isoformat(), model=model)).add(job)
        models.setdefault(model, SpendRow(model=model)).add(job)
        total.add(job)
    return SpendReport(
        since=since,
        until=until,
        rows=[rows[key] for key in sorted(rows)],
        by_model=[models[key] for key in sorted(models)],
        total=total,
    )
