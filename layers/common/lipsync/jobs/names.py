"""Output names: each `outputs/<stem>.*` belongs to one line of jobs (a job and its re-runs).

A job claims the stems it writes (its name, and its manifest's `outputFileName`) in the same
transaction that creates its record: an item `name:<stem>` in the jobs table (no status, so in
no index) holding the owner and its lineage. A re-run (`retryOf`, or the same bytes uploaded
again after a failure) shares its predecessor's lineage and takes the names over: its outputs
are what the user asked for again. Any other job that asks for a held name gets a distinct one,
`<stem>-<first 8 characters of its id>`, and its document says why (`renamedFrom`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

NAME_PREFIX = "name:"


@dataclass(frozen=True)
class NameClaim:
    stem: str  # outputs/<stem>.mp4 and outputs/<stem>.json
    owner: str  # the job id
    lineage: str  # the first job of its line

    def item(self) -> dict[str, Any]:
        return {"jobId": NAME_PREFIX + self.stem, "owner": self.owner, "lineage": self.lineage}


def distinct(stem: str, job_id: str) -> str:
    """The name a job gets when `stem` belongs to another line (the same for every redelivery)."""
    return f"{stem}-{job_id[:8]}"
