"""How long a generation may take before its job is TIMED_OUT, and what happens after.

sync.so publishes generation times (product/generation-times): sync-3 takes about 10-15 minutes
for a 30 s clip and 45-55 minutes for a 2-minute one; lipsync-2 about 4-8 minutes for 2 minutes.
A job's deadline is twice that for its model and output length, plus ten minutes, never less than
fifteen minutes and never more than `MaxJobSeconds`. Past it the job is TIMED_OUT, which is not
the end: sync.so may still finish (and bill) the generation.

- The slot stays held while sync.so may still count the generation, until as long again as the
  deadline allowed has passed (the deadline doubled): then it is freed for the next job.
- The job is watched at a low rate (every `late_check_seconds`, and at once when a webhook comes)
  until `WATCH_SECONDS` after the create. A final answer then finishes it like any other, marked
  `late`; with none by then it is STOPPED.
"""

from __future__ import annotations

from datetime import datetime, timedelta

GENERATION_SECONDS_PER_OUTPUT_SECOND = {
    "sync-3": 30.0,
    "react-1": 30.0,
    "lipsync-2-pro": 8.0,
    "lipsync-2": 4.0,
    "lipsync-1.9.0-beta": 4.0,
}
UNKNOWN_MODEL_RATE = 30.0  # the slowest published rate
SAFETY_FACTOR = 2.0
BASE_SECONDS = 600.0
MIN_DEADLINE_SECONDS = 900.0
UNKNOWN_LENGTH_SECONDS = 300.0  # sync.so's audio limit
WATCH_SECONDS = 48 * 3600  # a generation is followed this long after its create, then STOPPED
LATE_CHECK_MAX_SECONDS = 600.0


def deadline_seconds(model: str | None, output_seconds: float | None, max_job_seconds: int) -> int:
    """The deadline (seconds after the create) for a generation of `output_seconds` on `model`."""
    rate = GENERATION_SECONDS_PER_OUTPUT_SECOND.get(model or "", UNKNOWN_MODEL_RATE)
    expected = rate * (output_seconds if output_seconds else UNKNOWN_LENGTH_SECONDS)
    scaled = max(MIN_DEADLINE_SECONDS, BASE_SECONDS + SAFETY_FACTOR * expected)
    return int(min(scaled, max_job_seconds))


def late_check_seconds(poll_max_interval_seconds: int) -> int:
    """How often a job past its deadline is looked at: five polling intervals, ten minutes at most."""
    return int(min(LATE_CHECK_MAX_SECONDS, 5 * poll_max_interval_seconds))


def slot_release_at(created: datetime, deadline: datetime) -> datetime:
    """When a TIMED_OUT job gives its slot back although sync.so has not said it ended."""
    return deadline + (deadline - created)


def watch_until(created: datetime) -> datetime:
    return created + timedelta(seconds=WATCH_SECONDS)
