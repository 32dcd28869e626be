"""Output: JSON for scripts (`--json`), readable text otherwise, and the live `watch` display."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

# How far along a status is, for the progress bars (final statuses are 100 %).
PROGRESS = {"QUEUED": 10, "SUBMITTING": 25, "PENDING": 40, "PROCESSING": 70}
FINAL_STYLE = {"COMPLETED": "green"}


PIPED_WIDTH = 240  # piped text keeps keys and ids on one line (for grep), terminals wrap to fit


def console(stderr: bool = False) -> Console:
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal:
        out.width = max(out.width, PIPED_WIDTH)
    return out


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def status_style(status: str) -> str:
    if status in PROGRESS:
        return "cyan"
    return FINAL_STYLE.get(status, "red")


def job_text(job: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    status = job.get("status", "?")
    rows: list[tuple[str, Any]] = [
        ("job", job.get("jobId")),
        ("name", job.get("name")),
        (
            "status",
            f"[{status_style(status)}]{status}[/]"
            + (f" (sync.so: {job['apiStatus']})" if job.get("apiStatus") not in (None, status) else ""),
        ),
        ("place in line", job.get("placeInLine")),
        ("eta", f"{job['etaSeconds']} s" if "etaSeconds" in job else None),
        ("model", job.get("model")),
        ("generation", job.get("generationId")),
        ("output", job.get("outputKey")),
        ("document", job.get("documentKey")),
        ("created", job.get("createdAt")),
        ("finished", job.get("finishedAt")),
        ("finished by", job.get("finishedBy")),
    ]
    if job.get("error"):
        error = job["error"]
        where = f"{error['field']}: " if error.get("field") else ""
        code = f" [{error['code']}]" if error.get("code") else ""
        rows.append(("error", f"[red]{where}{error.get('message', '')}{code}[/]"))
    rows.extend(("warning", warning) for warning in job.get("warnings") or [])
    for label, value in rows:
        if value is not None:
            table.add_row(label, str(value))
    return table


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("job", "name", "status", "model", "updated"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        status = job.get("status", "?")
        table.add_row(
            job.get("jobId", ""),
            job.get("name", ""),
            f"[{status_style(status)}]{status}[/]",
            job.get("model") or "",
            job.get("updatedAt", ""),
        )
    return table


def queue_text(queue: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("queued", str(queue.get("queued", 0)))
    table.add_row("in flight", f"{queue.get('inFlight', 0)} of {queue.get('slots', '?')} slots")
    table.add_row("eta to drain", f"{queue.get('etaToDrainSeconds', 0)} s")
    if queue.get("recentGenerationSeconds") is not None:
        table.add_row("recent generation", f"{queue['recentGenerationSeconds']} s")
    if queue.get("createRatePerMinute") is not None:
        table.add_row("create rate", f"{queue['createRatePerMinute']} / min")
    paused = queue.get("paused")
    table.add_row(
        "paused",
        f"[red]{paused.get('reason')}[/] until {paused.get('untilEpochSeconds')}" if paused else "no",
    )
    return table


def history_table(job: dict[str, Any]) -> Table:
    table = Table(box=None, pad_edge=False)
    for column in ("at", "status", "by", "detail"):
        table.add_column(column, overflow="fold")
    for entry in job.get("history") or []:
        status = entry.get("status", "?")
        table.add_row(
            entry.get("at", ""),
            f"[{status_style(status)}]{status}[/]",
            entry.get("source", ""),
            entry.get("detail") or "",
        )
    return table


def submission_text(summary: dict[str, Any]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    verb = "would upload" if summary["dryRun"] else "uploaded"
    for upload in summary["uploads"]:
        table.add_row(verb, f"{upload['key']} ({upload['bytes']} bytes)")
    for label, key in (("job", "jobId"), ("name", "name"), ("model", "model"), ("output", "outputKey")):
        if summary.get(key):
            table.add_row(label, str(summary[key]))
    if summary.get("status"):
        status = summary["status"]
        table.add_row("status", f"[{status_style(status)}]{status}[/]")
    elif summary.get("jobId"):
        table.add_row("status", "[yellow]not recorded yet[/] (the stack has not seen the uploads yet)")
    if summary.get("error"):
        error = summary["error"]
        table.add_row(
            "error",
            f"[red]{error.get('field') + ': ' if error.get('field') else ''}{error.get('message')}[/]",
        )
    for warning in summary.get("warnings") or []:
        table.add_row("warning", f"[yellow]{warning}[/]")
    if summary["dryRun"]:
        table.add_row("dry run", "valid; nothing uploaded")
    return table


class WatchDisplay:
    """One progress bar per job, updated in place until every job is final."""

    def __init__(self, out: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.fields[name]}", style="bold"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("{task.fields[detail]}", style="dim"),
            TimeElapsedColumn(),
            console=out,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> WatchDisplay:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, job: dict[str, Any], final: bool) -> None:
        job_id = job.get("jobId", "?")
        status = job.get("status", "?")
        detail = f"#{job['placeInLine']} in line, ~{job['etaSeconds']} s" if "placeInLine" in job else ""
        if final and job.get("error"):
            detail = job["error"].get("message", "")
        fields = {
            "name": job.get("name", job_id),
            "status": f"[{status_style(status)}]{status}[/]",
            "detail": detail,
        }
        completed = 100 if final else PROGRESS.get(status, 0)
        if job_id not in self._tasks:
            self._tasks[job_id] = self._progress.add_task("", total=100, completed=completed, **fields)
        else:
            self._progress.update(self._tasks[job_id], completed=completed, **fields)
        if final:
            self._progress.stop_task(self._tasks[job_id])
