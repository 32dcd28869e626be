"""The budget guard over the real job store and admission table (moto, in process): estimates
counted at claim, holds, releases in arrival order, refunds and the settled cost, and their metrics."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync.config import IntakeSettings
from lipsync.generation.lifecycle import Slots
from lipsync.jobs import transitions as t
from lipsync.jobs.model import Job, JobStatus
from lipsync.jobs.transitions import Lane
from lipsync.observability import metrics
from lipsync.plan.admission import free_slot
from lipsync.plan.budget import month_of
from lipsync.plan.cost import CostEstimator
from lipsync.plan.prices import PriceTable
from lipsync.queue.dispatch import Dispatcher
from lipsync.queue.intake import Intake
from lipsync.sweep import sweep as run_sweep
from tests.media_bytes import wav_bytes
from tests.unit.test_dispatch import ENV, World, api_error, at
from tests.unit.test_metrics import _metrics, emitted, named  # noqa: F401

SECONDS = 4.0
ESTIMATE = round(SECONDS * 0.05 * 30 / 25, 4)  # lipsync-2 at the price table: $0.24 per job
MONTH = month_of(1000.0)


def drop(world: World, name: str, second: int) -> Job:
    """A pair with a 4 s voice, through an intake that estimates with the price table."""
    world.storage.put(f"inputs/{name}.mp4", f"video {name}".encode())
    world.storage.put(f"inputs/{name}.wav", wav_bytes(SECONDS))
    intake = Intake(
        IntakeSettings.from_env(ENV),
        world.store,
        world.storage,
        world.kicker,
        estimator=CostEstimator(PriceTable()),
    )
    event = world.storage.event(f"inputs/{name}.wav").model_copy(update={"event_time": at(second)})
    outcome, job = intake.handle(event)
    assert outcome == "queued"
    assert job is not None
    return job


def dispatcher(world: World, budget: str, concurrency: int = 10) -> Dispatcher:
    return world.dispatcher(concurrency, budget=budget)


def sweep(world: World, budget: str) -> None:
    run_sweep(dispatcher(world, budget), world.api.client(), Slots(world.admission, world.kicker))


def spent(world: World) -> float:
    return round(world.admission.month_spend(MONTH), 4)


def statuses(world: World) -> dict[str, str]:
    return {job.name: job.status for job in world.jobs()}


def test_intake_records_the_estimate(world: World) -> None:
    job = drop(world, "a", 1)
    assert job.estimate is not None
    assert job.estimate | {"usd": round(job.estimate["usd"], 4)} == {
        "usd": ESTIMATE,
        "model": "lipsync-2",
        "seconds": SECONDS,
        "basis": "audio",
        "source": "price-table",
        "usdPerSecond": 0.06,
    }


def test_without_a_budget_every_job_runs_and_the_spend_is_still_counted(world: World) -> None:
    for index in range(3):
        drop(world, f"j{index}", index)
    dispatcher(world, "").run()
    assert set(statuses(world).values()) == {"PENDING"}
    assert spent(world) == 3 * ESTIMATE
    assert {job.charged_usd for job in world.jobs()} == {ESTIMATE}


def test_a_job_that_does_not_fit_waits_in_budget_hold_and_says_why(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(4):
        drop(world, f"j{index}", index)
    dispatcher(world, "0.5").run()
    assert statuses(world) == {"j0": "PENDING", "j1": "PENDING", "j2": "BUDGET_HOLD", "j3": "BUDGET_HOLD"}
    assert len(world.posts()) == 2
    assert spent(world) == 2 * ESTIMATE
    held = world.job("j2")
    assert held.hold_reason is not None
    assert "$0.24 does not fit the monthly budget" in held.hold_reason
    assert "$0.48 of $0.50" in held.hold_reason
    document = world.storage.documents["outputs/j2.json"]
    assert (document["status"], document["holdReason"]) == ("BUDGET_HOLD", held.hold_reason)
    assert world.store.queue_head(10) == []  # out of the line, not failed, not lost
    assert world.store.queue_head(10, lane=Lane.HELD) == [
        world.job("j2").job_id,
        world.job("j3").job_id,
    ]
    lines = emitted(capsys)
    assert [line["values"] for line in named(lines, "JobsHeld", by="Outcome")] == [[1.0], [1.0]]
    assert named(lines, "JobsHeld", by="Outcome")[0]["dimensions"]["Outcome"] == "BUDGET_HOLD"
    assert sum(sum(line["values"]) for line in named(lines, "EstimatedSpendUsd")) == pytest.approx(
        2 * ESTIMATE
    )


def test_raising_the_budget_releases_held_jobs_in_arrival_order(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, second in (("late", 9), ("first", 1), ("second", 2), ("third", 3)):
        drop(world, name, second)
    dispatcher(world, "0.3").run()
    assert statuses(world) == {
        "first": "PENDING",
        "second": "BUDGET_HOLD",
        "third": "BUDGET_HOLD",
        "late": "BUDGET_HOLD",
    }
    sweep(world, "0.3")  # same budget: nothing moves
    assert world.job("second").status == "BUDGET_HOLD"
    metrics.clear_metrics()
    sweep(world, "0.75")  # room for two more: the two that arrived first
    assert statuses(world) == {
        "first": "PENDING",
        "second": "PENDING",
        "third": "PENDING",
        "late": "BUDGET_HOLD",
    }
    assert spent(world) == 3 * ESTIMATE
    released = world.job("second")
    assert [entry.status for entry in released.history][-4:] == [
        "BUDGET_HOLD",
        "QUEUED",
        "SUBMITTING",
        "PENDING",
    ]
    assert released.hold_reason is None
    gauges = {
        line["name"]: line["values"]
        for line in emitted(capsys)
        if line["name"] in ("HeldJobs", "MonthlyBudgetUsd", "MonthSpendUsd")
    }
    assert gauges == {"HeldJobs": [1.0], "MonthlyBudgetUsd": [0.75], "MonthSpendUsd": [0.72]}
    sweep(world, "")  # the guard turned off: everything goes
    assert set(statuses(world).values()) == {"PENDING"}


def test_parallel_dispatchers_never_spend_past_the_budget(world: World) -> None:
    for index in range(6):
        drop(world, f"j{index}", index)
    one, two = dispatcher(world, "0.5"), dispatcher(world, "0.5")
    stale = world.admission.read()
    one.run()
    from lipsync.queue.dispatch import DispatchReport

    # The second read the plan before the first claimed: its claim (and its charge) must fail.
    assert two._claim(stale, 5, world.store.queue_head(5), world.now[0], DispatchReport())[0] is None
    two.run()
    assert spent(world) <= 0.5
    assert sum(status == "PENDING" for status in statuses(world).values()) == 2


def test_a_requeued_create_stops_counting(world: World) -> None:
    drop(world, "a", 1)
    world.script.replies.append(api_error(429, "concurrency_limit_reached", retryAfterSeconds=10))
    dispatcher(world, "1").run()
    job = world.job("a")
    assert (job.status, job.budget_month, job.charged_usd) == ("QUEUED", None, None)
    assert spent(world) == 0


def test_a_refused_create_costs_nothing(world: World) -> None:
    drop(world, "a", 1)
    world.script.replies.append(api_error(422, "generation_input_video_invalid"))
    dispatcher(world, "1").run()
    job = world.job("a")
    assert (job.status, job.cost_usd, job.charged_usd) == ("REJECTED", 0.0, 0.0)
    assert world.storage.documents["outputs/a.json"]["costUsd"] == 0.0
    assert spent(world) == 0


def finished(world: World, name: str, **fields: Any) -> Job:
    job = world.job(name)
    changed = world.store.apply(t.note(job.job_id, fields))
    assert changed is not None
    return changed


def test_a_finished_job_settles_its_cost_against_the_month(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    drop(world, "done", 1)
    drop(world, "failed", 2)
    drop(world, "lost", 3)
    dispatcher(world, "").run()
    capsys.readouterr()
    done = free_slot(
        world.admission, world.kicker, finished(world, "done", status="COMPLETED", outputDuration=3.0)
    )
    failed = free_slot(world.admission, world.kicker, finished(world, "failed", status="FAILED"))
    lost = free_slot(world.admission, world.kicker, finished(world, "lost", status="TIMED_OUT"))
    assert (done.cost_usd, failed.cost_usd, lost.cost_usd) == (0.18, 0.0, None)
    assert world.job("done").cost_usd == 0.18
    assert world.job("done").charged_usd == 0.18
    assert world.job("lost").charged_usd == ESTIMATE  # an unknown end keeps its estimate
    assert spent(world) == round(0.18 + ESTIMATE, 4)
    assert [value for line in named(emitted(capsys), "ActualSpendUsd") for value in line["values"]] == [
        0.18,
        0.0,
    ]
    # Reported twice (a retried task): nothing changes.
    free_slot(world.admission, world.kicker, done)
    assert spent(world) == round(0.18 + ESTIMATE, 4)


def test_a_new_month_starts_from_nothing(world: World) -> None:
    drop(world, "a", 1)
    drop(world, "b", 2)
    dispatcher(world, "0.3").run()
    assert world.job("b").status == JobStatus.BUDGET_HOLD
    world.now[0] += 40 * 86400  # next month
    sweep(world, "0.3")
    assert world.job("b").status == "PENDING"
    assert world.job("b").budget_month == month_of(world.now[0]) != MONTH


def test_the_cost_is_settled_once_even_when_the_sweep_freed_the_slot_first(world: World) -> None:
    drop(world, "done", 1)
    dispatcher(world, "").run()
    job = finished(world, "done", status="COMPLETED", outputDuration=2.0)
    assert world.admission.release(job.slot or 0, job.job_id, duration=None)  # the sweep, in between
    settled = free_slot(world.admission, world.kicker, job)
    assert (settled.cost_usd, world.job("done").cost_usd, world.job("done").slot) == (0.12, 0.12, None)
    assert spent(world) == 0.12
    free_slot(world.admission, world.kicker, job)  # reported again
    assert spent(world) == 0.12
