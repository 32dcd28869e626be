"""SyncPlanConcurrency=auto on the one-machine stack: the dispatcher reads the plan's limit from
sync.so's account (the emulator's `GET /v2/account`) and fills exactly that many slots."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from local.stack import OneMachineStack
from tests.e2e.conftest import ROOT, Media, Pipeline, start_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def auto_plan() -> Iterator[OneMachineStack]:
    running = start_stack("e2e-auto", {"SyncPlanConcurrency": "auto"}, concurrency=2, processing_seconds=2.0)
    try:
        yield running
    finally:
        running.stop()


def test_the_account_sets_how_many_generations_run_at_once(auto_plan: OneMachineStack, media: Media) -> None:
    pipeline = Pipeline(auto_plan, media)
    names = [pipeline.drop_pair(f"auto-{index}") for index in range(2)]  # both at once on 2 slots
    jobs = [pipeline.wait_job(name) for name in names]
    assert {job["status"] for job in jobs} == {"COMPLETED"}
    stats = auto_plan.emulator.stats()
    assert stats["maxActive"] == 2  # the account's limit: not the default 1, never over it
    assert not any(stats["rejected"].values())  # no 429 was needed to find it
    assert [r for r in auto_plan.emulator.requests() if r["path"] == "/v2/account"]
    event = json.loads((ROOT / "events" / "status-queue.json").read_text())
    queue = auto_plan.invoke("StatusFunction", event)
    assert (json.loads(queue["body"])["slots"], json.loads(queue["body"])["slotsFrom"]) == (2, "account")
