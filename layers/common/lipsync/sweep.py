"""The minute sweep: the second line of defence behind every event-driven path.

Each minute (the dispatcher's schedule) it

1. frees plan slots whose job is not in flight on them any more (a crash between two writes);
   frees the slot of a job that has held it past any bound a workflow would have kept it for,
   and stops a job that nothing has followed past its whole watch window;
2. announces endings nobody wrote: final jobs still in the `ended` lane a minute after they
   ended get their slot freed, their cost settled, their document and Job Finished event;
3. releases held jobs whose estimate now fits the budget, in arrival order;
4. dispatches, as a kick would.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lipsync.generation.deadlines import WATCH_SECONDS
from lipsync.generation.lifecycle import Slots, stop
from lipsync.jobs.documents import announce
from lipsync.jobs.model import IN_FLIGHT, JobError, JobStatus, is_final
from lipsync.jobs.transitions import Lane, lane_key
from lipsync.plan.admission import Contention, free_slot

if TYPE_CHECKING:
    from lipsync.queue.dispatch import Dispatcher, DispatchReport
    from lipsync.syncso.client import SyncClient

ANNOUNCE_AFTER_SECONDS = 10.0  # an ending's own writer writes it within a second; a double is harmless
ANNOUNCE_BATCH = 25
ABANDONED_MARGIN_SECONDS = 3600.0


def sweep(dispatcher: Dispatcher, sync: SyncClient, slots: Slots, seconds: float = 40.0) -> DispatchReport:
    store, admission, now = dispatcher.store, dispatcher.admission, dispatcher.clock()
    released = 0
    # A workflow gives a slot back at twice the deadline at the latest (lipsync.generation.deadlines).
    slot_bound = 2 * dispatcher.timings.max_job_seconds + ABANDONED_MARGIN_SECONDS
    for slot, holder in admission.read().slots.items():
        job = store.get(holder.job_id)
        if job is None or job.slot != slot or job.status not in IN_FLIGHT:
            released += admission.release(slot, holder.job_id, duration=None)
        elif job.status == JobStatus.SUBMITTING:
            continue  # the create's lease decides (lipsync.queue.dispatch)
        elif holder.since < now - WATCH_SECONDS - ABANDONED_MARGIN_SECONDS:
            error = JobError(code="job_abandoned", message="no workflow followed the job to its end")
            stop(store, dispatcher.storage, sync, slots, job.job_id, None, error, dispatcher.events)
            released += 1
        elif holder.since < now - slot_bound:
            free_slot(admission, dispatcher.kicker, job)
            released += 1
    announced = _announce_leftovers(dispatcher, now)
    unheld = dispatcher.release_held()
    report = dispatcher.run(seconds)
    report.released, report.announced, report.unheld = released, announced, unheld
    return report


def _announce_leftovers(dispatcher: Dispatcher, now: float) -> int:
    """Final jobs whose ending was not written a minute after it happened."""
    store = dispatcher.store
    before = datetime.fromtimestamp(now - ANNOUNCE_AFTER_SECONDS, UTC).isoformat(timespec="milliseconds")
    announced = 0
    for job_id in store.lane_before(Lane.ENDED, lane_key(before.replace("+00:00", "Z"), ""), ANNOUNCE_BATCH):
        job = store.get(job_id)
        if job is None or job.finalized_at or not is_final(job.status):
            continue
        try:
            job = free_slot(dispatcher.admission, dispatcher.kicker, job)
        except Contention:
            continue  # the next sweep
        announce(store, dispatcher.storage, job, dispatcher.events)
        announced += 1
    return announced
