"""A bulk drop inside `make test` (the full 200-pair run is `make load`): every job ends, none is
dead-lettered or generated twice, and the plan's limit holds at sync.so. Timings are printed,
not asserted."""

from __future__ import annotations

import pytest

from local.load import load_stack, run_load

pytestmark = pytest.mark.integration

PAIRS, SLOTS, GENERATION_SECONDS = 30, 3, 1.0


def test_a_burst_of_pairs_drains_through_the_plan_without_loss_or_duplicates() -> None:
    with load_stack(SLOTS, GENERATION_SECONDS, name="e2e-burst") as stack:
        report = run_load(stack, PAIRS, SLOTS, GENERATION_SECONDS, timeout=240)
    print("\n" + "\n".join(report.lines()))
    assert report.completed == PAIRS, report.statuses
    assert report.dead_letters == 0
    assert report.duplicate_generations == 0
    assert report.generations == PAIRS
    assert report.max_in_flight <= SLOTS
    assert report.posts_per_job <= 1.05
    assert 1 <= report.estimates_per_job <= 2  # every job priced; a pair's two events may both ask
