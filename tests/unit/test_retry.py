"""A re-run (`lipsync retry`) is a new job whose manifest names the old one in `retryOf`."""

from __future__ import annotations

import json

from lipsync.config import IntakeSettings
from lipsync.queue.intake import Intake
from tests.unit.test_dispatch import ENV, World, at


def intake(world: World) -> Intake:
    return Intake(IntakeSettings.from_env(ENV), world.store, world.storage, world.kicker)


def rerun(world: World, old_job_id: str, key: str) -> str:
    manifest = {
        "name": "a",
        "retryOf": old_job_id,
        "input": [{"type": "video", "url": "inputs/a.mp4"}, {"type": "audio", "url": "inputs/a.wav"}],
    }
    world.storage.put(key, json.dumps(manifest).encode())
    outcome, job = intake(world).handle(world.storage.event(key))
    assert outcome == "queued"
    assert job is not None
    return job.job_id


def test_the_new_job_and_the_old_one_name_each_other(world: World) -> None:
    old = world.drop_pair("a", at(1))
    first = rerun(world, old.job_id, "jobs/a.retry-1.json")
    second = rerun(world, old.job_id, "jobs/a.retry-2.json")
    assert world.store.get(first).retry_of == old.job_id  # type: ignore[union-attr]
    assert world.store.get(old.job_id).retried_by == [first, second]  # type: ignore[union-attr]
    # A redelivered S3 event links nothing twice.
    intake(world).handle(world.storage.event("jobs/a.retry-2.json"))
    assert world.store.get(old.job_id).retried_by == [first, second]  # type: ignore[union-attr]
    assert world.store.get(first).name == "a"  # type: ignore[union-attr]
    pinned = world.store.get(first).pinned_inputs  # type: ignore[union-attr]
    assert {index: ref.key for index, ref in pinned.items()} == {0: "inputs/a.mp4", 1: "inputs/a.wav"}
