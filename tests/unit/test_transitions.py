"""The transition table (lipsync/jobs/transitions.py), against the real jobs table (moto): each move
goes only from its sources to its targets, holds only while its guards hold, sets its lane, clears
what it says, and keeps the history bounded."""

from __future__ import annotations

from typing import Any

import pytest

from lipsync.jobs import transitions as t
from lipsync.jobs.model import IN_FLIGHT, WAITING, Job, JobStatus, is_final
from lipsync.jobs.transitions import TABLE, F, Lane, Move
from tests.tables import SeededStore, make_tables

JOB_ID = "0123456789abcdef0123456789abcdef"
AT = "2026-12-01T00:00:00.000Z"


def seeded(status: str, **extra: Any) -> tuple[SeededStore, Job]:
    store = make_tables()[0]
    job = store.put(
        Job.model_validate(
            {
                "jobId": JOB_ID,
                "name": "a",
                "kind": "pair",
                "status": status,
                "bucket": "b",
                "documentKey": "outputs/a.json",
                "createdAt": AT,
                "updatedAt": AT,
                "arrivedAt": AT,
                "queueKey": f"{AT}#{JOB_ID}",
                "generationId": "gen-1",
                "attempt": {
                    "key": f"{JOB_ID}.1",
                    "leaseId": "lease-1",
                    "slot": 0,
                    "body": {"sha256": "x", "size": 1, "text": "{}"},
                },
                "history": [{"status": status, "source": "intake", "at": AT}],
            }
            | extra
        )
    )
    return store, job


def raw(store: SeededStore) -> dict[str, Any]:
    return store.items[JOB_ID]


ALL = [str(status) for status in JobStatus]


@pytest.mark.parametrize("move", list(Move))
def test_each_move_applies_from_its_sources_only(move: Move) -> None:
    rule = TABLE[move]
    target = sorted(rule.targets)[0]
    for status in ALL:
        store, job = seeded(status)
        changed = store.apply(t.change(job, move, target, "poll"))
        if status in rule.sources:
            assert changed is not None, (move, status)
            assert changed.status == target
            assert changed.history[-1].status == target
        else:
            assert changed is None, (move, status)
            assert raw(store)["status"] == status  # nothing written


@pytest.mark.parametrize("move", list(Move))
def test_a_move_to_a_status_it_does_not_lead_to_is_a_programming_error(move: Move) -> None:
    _, job = seeded(sorted(TABLE[move].sources)[0])
    for status in ALL:
        if status not in TABLE[move].targets:
            with pytest.raises(ValueError, match="cannot move a job"):
                t.change(job, move, status, "poll")


def test_the_table_keeps_the_pipelines_promises() -> None:
    # Waiting jobs only ever go to SUBMITTING, a hold, or INVALID: nothing is sent from elsewhere.
    assert {target for rule in TABLE.values() if rule.sources & WAITING for target in rule.targets} == {
        "SUBMITTING",
        "BUDGET_HOLD",
        "QUEUED",
        "INVALID",
    }
    # Only sync.so's word (finish) leaves a generation that runs for a final API status.
    api_final = {"COMPLETED", "FAILED", "REJECTED", "CANCELED", "UNKNOWN"}
    assert {m for m, r in TABLE.items() if r.targets & api_final and r.sources - {"SUBMITTING"}} == {
        Move.FINISH
    }
    # A final status other than the pipeline's own STOPPED is never left.
    assert all(not (rule.sources & (api_final | {"INVALID"})) for rule in TABLE.values())
    assert not any(is_final(status) for status in IN_FLIGHT)


@pytest.mark.parametrize(
    ("move", "status", "guard", "stale"),
    [
        (Move.REQUEUE, "SUBMITTING", "attempt.leaseId", {"attempt": {"key": "k", "leaseId": "someone-else"}}),
        (Move.ACCEPT, "SUBMITTING", "attempt.leaseId", {"attempt": {"key": "k", "leaseId": "someone-else"}}),
        (Move.FINISH, "PROCESSING", "generationId", {"generationId": "gen-2"}),
        (Move.RESUBMIT, "PROCESSING", "generationId", {"generationId": "gen-2"}),
    ],
)
def test_a_move_holds_only_while_its_guard_holds(
    move: Move, status: str, guard: str, stale: dict[str, Any]
) -> None:
    store, job = seeded(status)
    store.put(Job.model_validate(job.model_dump(by_alias=True) | stale))  # another writer moved it on
    assert guard in TABLE[move].guards
    assert store.apply(t.change(job, move, sorted(TABLE[move].targets)[0], "poll")) is None


def test_lanes_follow_the_status() -> None:
    store, job = seeded("SUBMITTING")
    queued = store.apply(t.change(job, Move.REQUEUE, "QUEUED", "dispatch"))
    assert queued is not None
    assert (raw(store)["queue"], raw(store)["queueKey"]) == (Lane.QUEUED, f"{AT}#{JOB_ID}")  # its place kept
    assert "attempt" not in raw(store)
    store, job = seeded("PROCESSING")
    ended = store.apply(t.change(job, Move.FINISH, "FAILED", "poll"))
    assert ended is not None
    assert raw(store)["queue"] == Lane.ENDED
    assert store.lane_before(Lane.ENDED, "9999", 5) == [JOB_ID]
    store, job = seeded("QUEUED")
    claimed = store.apply(t.change(job, Move.CLAIM, "SUBMITTING", "dispatch"))
    assert claimed is not None
    assert "queue" not in raw(store)


def test_a_set_field_wins_over_a_clear_of_it_or_of_anything_under_it() -> None:
    store, job = seeded("QUEUED")
    attempt = {"key": f"{JOB_ID}.2", "leaseId": "new"}
    change = t.change(
        job, Move.CLAIM, "SUBMITTING", "dispatch", fields={F.ATTEMPT: attempt}, clear=[F.ATTEMPT_BODY]
    )
    assert F.ATTEMPT_BODY not in change.remove
    claimed = store.apply(change)
    assert claimed is not None
    assert claimed.attempt is not None
    assert claimed.attempt.key == f"{JOB_ID}.2"


def test_a_full_history_is_folded_not_grown() -> None:
    history = [
        {"status": "QUEUED" if n % 2 else "SUBMITTING", "source": "dispatch", "at": AT}
        for n in range(t.HISTORY_LIMIT)
    ]
    store, job = seeded("SUBMITTING", history=history)
    requeued = store.apply(t.change(job, Move.REQUEUE, "QUEUED", "dispatch", detail="rate_limit"))
    assert requeued is not None
    assert len(requeued.history) == t.HISTORY_LIMIT
    assert requeued.history[: t.HISTORY_KEPT_HEAD] == job.history[: t.HISTORY_KEPT_HEAD]
    assert "folded" in (requeued.history[t.HISTORY_KEPT_HEAD].detail or "")
    assert (requeued.history[-1].status, requeued.history[-1].detail) == ("QUEUED", "rate_limit")


def test_a_fold_loses_to_a_concurrent_append() -> None:
    history = [{"status": "SUBMITTING", "source": "dispatch", "at": AT}] * t.HISTORY_LIMIT
    store, job = seeded("SUBMITTING", history=history)
    store.put(job.model_copy(update={"history": [*job.history, job.history[-1]]}))  # another writer appended
    assert store.apply(t.change(job, Move.REQUEUE, "QUEUED", "dispatch")) is None


def test_a_long_detail_is_cut() -> None:
    store, job = seeded("PROCESSING")
    stopped = store.apply(t.change(job, Move.STOP, "STOPPED", "workflow", detail="x" * 5000))
    assert stopped is not None
    assert len(stopped.history[-1].detail or "") == t.DETAIL_LIMIT
