"""The budget guard through the real template, functions and emulator: each job is estimated at
intake (the emulator's estimate endpoint), counted when dispatched, settled at its output's length;
a job that does not fit `MonthlyBudgetUsd` waits in BUDGET_HOLD, and raising the parameter (as
`sam deploy --parameter-overrides` does) releases held jobs in arrival order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from local.stack import OneMachineStack
from tests.e2e.conftest import Media, Pipeline, start_stack
from tests.waiting import eventually

pytestmark = pytest.mark.integration

# The sample audio is 1 s: lipsync-2 at the endpoint's 30 fps is 30 frames at $0.05 / 25 = $0.06.
ESTIMATE = 0.06


@pytest.fixture(scope="module")
def budgeted() -> Iterator[OneMachineStack]:
    running = start_stack("e2e-budget", {"MonthlyBudgetUsd": "0.1", "SyncPlanConcurrency": "1"})
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def pipeline(budgeted: OneMachineStack, media: Media) -> Iterator[Pipeline]:
    yield Pipeline(budgeted, media)
    budgeted.wait_idle(timeout=30)


def status(pipeline: Pipeline, name: str) -> str:
    return str(pipeline.jobs(name)[0]["status"])


def metric_lines(stack: OneMachineStack, function: str, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stack.function_logs(function).splitlines() if f'"{name}"' in line]
    return [line for line in lines if "_aws" in line]


def test_a_job_over_budget_waits_and_raising_the_budget_releases_held_jobs_in_order(
    pipeline: Pipeline,
) -> None:
    first = pipeline.drop_pair("first")
    done = pipeline.wait_job(first)
    assert done["status"] == "COMPLETED"
    estimate = done["estimate"]
    assert (estimate["source"], estimate["basis"], float(estimate["usd"])) == ("api", "audio", ESTIMATE)
    cost = float(done["costUsd"])
    assert cost == pytest.approx(ESTIMATE * float(done["outputDuration"]), abs=1e-4)
    assert pipeline.document(done)["costUsd"] == cost

    held = []
    for stem in ("second", "third", "fourth"):
        held.append(pipeline.drop_pair(stem))
        time.sleep(0.05)  # distinct arrival times
    for name in held:
        pipeline.wait_job(name, lambda job: job["status"] == "BUDGET_HOLD")
    document = pipeline.document(held[0])
    assert document["status"] == "BUDGET_HOLD"
    assert "does not fit the monthly budget" in document["holdReason"]
    assert "MonthlyBudgetUsd" in document["holdReason"]
    time.sleep(3)  # a sweep or two: held jobs stay held, none is failed or sent
    assert [status(pipeline, name) for name in held] == ["BUDGET_HOLD"] * 3
    assert len(pipeline.generation_posts()) == 1
    queue = pipeline.signed_get("/queue").json()
    assert (queue["heldForBudget"], queue["queued"]) == (3, 0)
    assert queue["monthSpendUsd"] == pytest.approx(cost, abs=1e-4)
    eventually(
        lambda: (
            metric_lines(pipeline.stack, "DispatchFunction", "HeldJobs")
            and metric_lines(pipeline.stack, "DispatchFunction", "HeldJobs")[-1]["HeldJobs"] == [3.0]
        ),
        timeout=10,
        what="the sweep's HeldJobs gauge",
    )
    assert metric_lines(pipeline.stack, "DispatchFunction", "JobsHeld")

    # Room for two more estimates: the two that arrived first go, the last one keeps waiting.
    changed = pipeline.stack.update_parameters({"MonthlyBudgetUsd": f"{cost + 2 * ESTIMATE + 0.01:.2f}"})
    assert changed == ["DispatchFunction"]
    for name in held[:2]:
        assert pipeline.wait_job(name)["status"] == "COMPLETED"
    assert status(pipeline, held[2]) == "BUDGET_HOLD"
    second = pipeline.jobs(held[0])[0]
    assert [entry["status"] for entry in second["history"]][:3] == ["QUEUED", "BUDGET_HOLD", "QUEUED"]

    pipeline.stack.update_parameters({"MonthlyBudgetUsd": "off"})  # the guard off: the rest go
    assert pipeline.wait_job(held[2])["status"] == "COMPLETED"
    assert len(pipeline.generation_posts()) == 4
    estimates = pipeline.api_calls("POST", "/v2/generations/estimate")
    assert 4 <= len(estimates) <= 8  # one per job, or two when both of a pair's events race to it
