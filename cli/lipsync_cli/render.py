"""Output: JSON for scripts (`--json`), readable text otherwise, and the live `watch` display."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from lipsync_cli.costs import SpendReport, SpendRow

# How far along a status is, for the progress bars (final statuses are 100 %).
PROGRESS = {"QUEUED": 10, "BUDGET_HOLD": 10, "SUBMITTING": 25, "PENDING": 40, "PROCESSING": 70}
FINAL_STYLE = {"COMPLETED": "green"}
WAITING_STYLE = {"BUDGET_HOLD": "yellow"}
# What an estimate's output length was measured from (lipsync.cost.Basis).
BASIS = {
    "audio": "of output from the audio",
    "video": "of output from the video",
    "shorter": "of output: the shorter of video and audio (cut_off)",
    "text": "of output from the script's length",
    "segments": "of output from the video and its segments",
    "upper-bound": "of output at most: an input's length is not known here",
}
PRICE_TABLES = {"list": "list price table", "stack": "the stack's price table"}


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
        return WAITING_STYLE.get(status, "cyan")
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
        ("held", job.get("holdReason")),
        ("place in line", job.get("placeInLine")),
        ("eta", f"{job['etaSeconds']} s" if "etaSeconds" in job else None),
        ("model", job.get("model")),
        ("estimate", estimate_text(job["estimate"]) if job.get("estimate") else None),
        ("cost", usd(job["costUsd"]) if job.get("costUsd") is not None else None),
        ("retry of", job.get("retryOf")),
        ("retried by", ", ".join(job.get("retriedBy") or []) or None),
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
    if queue.get("heldForBudget"):
        table.add_row(
            "held for budget", f"[yellow]{queue['heldForBudget']}[/] (lipsync list --status BUDGET_HOLD)"
        )
    if queue.get("monthSpendUsd") is not None:
        table.add_row("spent this month", f"{usd(queue['monthSpendUsd'])} (spent or committed; lipsync cost)")
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


def usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.4f}"


def estimate_text(estimate: dict[str, Any], price_table: str | None = None) -> str:
    """E.g. "$0.24 (4.0 s of output from the audio, list price table)"."""
    source = (
        "sync.so's estimate"
        if estimate.get("source") == "api"
        else PRICE_TABLES.get(price_table or "", "price table")
    )
    basis = BASIS.get(estimate.get("basis", ""), "of output")
    note = f"; {estimate['note']}" if estimate.get("note") else ""
    return f"{usd(estimate.get('usd', 0))} ({estimate.get('seconds', 0):.1f} s {basis}, {source}{note})"


def spend_text(report: SpendReport) -> Table:
    table = Table(
        box=None,
        pad_edge=False,
        title=f"spend from {report.since} to {report.until} (UTC days: finished, else created)",
        title_justify="left",
        caption="actual: the costs known so far; cost unknown: jobs not finished, or whose output "
        "length sync.so did not report",
        caption_justify="left",
    )
    table.add_column("day")
    table.add_column("model", overflow="fold")
    for column in ("jobs", "estimated", "actual", "cost unknown"):
        table.add_column(column, justify="right")

    def row(label: str, line: SpendRow, *, end_section: bool = False, style: str | None = None) -> None:
        table.add_row(
            label,
            line.model or "all",
            str(line.jobs),
            usd(line.estimated_usd),
            usd(line.actual_usd),
            str(line.cost_unknown) if line.cost_unknown else "",
            end_section=end_section,
            style=style,
        )

    if not report.total.jobs:
        table.add_row("no jobs", "", "", "", "", "")
        return table
    for index, line in enumerate(report.rows):
        row(line.day or "", line, end_section=index == len(report.rows) - 1)
    for index, line in enumerate(report.by_model):
        row("all days", line, end_section=index == len(report.by_model) - 1)
    row("total", report.total, style="bold")
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
    if summary.get("retryOf"):
        table.add_row("retry of", f"{summary['retryOf']} ({summary.get('retryOfStatus', '?')})")
    if summary.get("estimate"):
        table.add_row("estimate", estimate_text(summary["estimate"], summary.get("priceTable")))
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
        if job.get("holdReason"):
            detail = job["holdReason"]
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
