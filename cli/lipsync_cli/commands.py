"""One function per command: each takes the parsed arguments and returns an exit code."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lipsync.jobs.model import IN_FLIGHT, Job, JobStatus, is_final
from lipsync.plan.cost import Basis, CostEstimate
from lipsync_cli import costs, render, retries, submission
from lipsync_cli.api import StatusApi
from lipsync_cli.errors import AwsError, CliError, Exit, NotFoundError
from lipsync_cli.targets import Target, resolve

WAITING_STATUSES = [JobStatus.QUEUED, JobStatus.BUDGET_HOLD, *sorted(IN_FLIGHT)]
RECORD_WAIT_SECONDS = 30.0  # submit: how long to wait for the uploads to become a job record
PAGE_SIZE = 100  # the list route's largest page


def target_of(args: argparse.Namespace) -> Target:
    return resolve(
        stack=getattr(args, "stack", None),
        local=getattr(args, "local", None),
        profile=getattr(args, "profile", None),
        region=getattr(args, "region", None),
    )


def _wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def _submit(
    args: argparse.Namespace,
    built: submission.Submission,
    *,
    target: Target | None = None,
    retry_of: Job | None = None,
) -> int:
    """Validate (reading the bucket only), estimate, then upload unless --dry-run, and wait for the
    job's record. A dry run uploads nothing and calls nothing that spends."""
    target = target or target_of(args)
    prices, table = costs.price_table(target)
    s3 = target.s3()
    submission.validate(built, target, s3)
    built.estimate = costs.estimate_submission(built, prices, known=_measured(retry_of))
    built.price_table = table
    if not args.dry_run:
        submission.upload(built, target, s3)
    summary = built.summary(target.bucket, dry_run=args.dry_run)
    if retry_of is not None:
        summary |= {"retryOf": retry_of.job_id, "retryOfStatus": retry_of.status}
        if retry_of.retried_by:
            summary["warnings"].append(
                f"job {retry_of.job_id} was already retried by {', '.join(retry_of.retried_by)}"
            )
    if built.job_id and not args.no_wait:
        job = _recorded(StatusApi(target), built.job_id)
        summary["status"] = job.get("status") if job else None
        if job and job.get("error"):
            summary["error"] = job["error"]
    if _wants_json(args):
        render.print_json(summary)
    else:
        out = render.console()
        out.print(render.submission_text(summary))
        if retry_of is not None and args.dry_run:
            out.print("manifest:")
            out.print_json(data=summary["manifest"])
        if built.job_id:
            out.print(f"watch it with: lipsync watch {built.job_id}")
    if summary.get("status") == JobStatus.INVALID:
        return Exit.USAGE
    return Exit.OK


def _measured(job: Job | None) -> tuple[float, Basis] | None:
    """The output length a retried job's estimate measured from the same inputs, if it has one."""
    if job is None or not job.estimate:
        return None
    estimate = CostEstimate.model_validate(job.estimate)
    return estimate.seconds, estimate.basis


def _recorded(api: StatusApi, job_id: str) -> dict[str, Any] | None:
    """The job once the submit function has recorded it (it reads S3 events from a queue)."""
    deadline = time.monotonic() + RECORD_WAIT_SECONDS
    while True:
        try:
            return api.job(job_id)
        except NotFoundError:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)


def submit(args: argparse.Namespace) -> int:
    built = submission.pair_submission(
        args.video,
        args.audio,
        name=args.name,
        model=args.model,
        options=submission.parse_options(args.option or []),
        text=args.text,
        voice=args.voice,
        segments=[submission.parse_segment(text) for text in args.segment or []],
    )
    return _submit(args, built)


def submit_manifest(args: argparse.Namespace) -> int:
    return _submit(args, submission.manifest_submission(args.file, name=args.name))


def retry(args: argparse.Namespace) -> int:
    target = target_of(args)
    old = retries.job_record(StatusApi(target).job(args.job))
    retries.check_retryable(old)
    manifest = retries.retry_manifest(old, target.s3())
    key = retries.retry_key(old.name, datetime.now(UTC))
    return _submit(args, submission.keyed_manifest_submission(key, manifest), target=target, retry_of=old)


def _all_jobs(api: StatusApi) -> list[Job]:
    """Every job record, page by page."""
    found: list[Job] = []
    cursor = None
    while True:
        answer = api.jobs(limit=PAGE_SIZE, cursor=cursor)
        found.extend(retries.job_record(job) for job in answer.get("jobs", []))
        cursor = answer.get("nextCursor")
        if not cursor:
            return found


def cost(args: argparse.Namespace) -> int:
    since, until = costs.day_range(args.since, args.until, today=datetime.now(UTC).date())
    report = costs.spend_report(_all_jobs(StatusApi(target_of(args))), since, until)
    if _wants_json(args):
        render.print_json(report.stored())
    else:
        render.console().print(render.spend_text(report))
    return Exit.OK


def status(args: argparse.Namespace) -> int:
    job = StatusApi(target_of(args)).job(args.job)
    if _wants_json(args):
        render.print_json(job)
    else:
        render.console().print(render.job_text(job))
    return Exit.OK


def list_jobs(args: argparse.Namespace) -> int:
    answer = StatusApi(target_of(args)).jobs(status=args.status, limit=args.limit, cursor=args.cursor)
    if _wants_json(args):
        render.print_json(answer)
        return Exit.OK
    out = render.console()
    if not answer.get("jobs"):
        out.print(f"no {args.status or ''} jobs".replace("  ", " "))
    else:
        out.print(render.jobs_table(answer["jobs"]))
    if answer.get("nextCursor"):
        out.print(
            f"more: lipsync list --cursor {answer['nextCursor']}"
            + (f" --status {args.status}" if args.status else "")
        )
    return Exit.OK


def queue(args: argparse.Namespace) -> int:
    answer = StatusApi(target_of(args)).queue()
    if _wants_json(args):
        render.print_json(answer)
    else:
        render.console().print(render.queue_text(answer))
    return Exit.OK


def logs(args: argparse.Namespace) -> int:
    job = StatusApi(target_of(args)).job(args.job)
    if _wants_json(args):
        render.print_json(
            {"jobId": job.get("jobId"), "status": job.get("status"), "history": job.get("history", [])}
        )
    else:
        render.console().print(render.history_table(job))
    return Exit.OK


def _waiting_job_ids(api: StatusApi) -> list[str]:
    found: list[str] = []
    for waiting in WAITING_STATUSES:
        cursor = None
        while True:
            answer = api.jobs(status=waiting, limit=100, cursor=cursor)
            found.extend(job["jobId"] for job in answer.get("jobs", []) if job["jobId"] not in found)
            cursor = answer.get("nextCursor")
            if not cursor:
                break
    return found


def _ended(job: dict[str, Any]) -> bool:
    """Final and written out: its document and cost are there (a final status alone comes a moment
    before them)."""
    return is_final(job["status"]) and bool(job.get("finalizedAt"))


def watch(args: argparse.Namespace) -> int:
    if bool(args.job) == bool(args.all):
        raise CliError("give a JOB or --all", Exit.USAGE)
    api = StatusApi(target_of(args))
    deadline = time.monotonic() + args.timeout if args.timeout else None
    latest: dict[str, dict[str, Any]] = {}
    ids = [args.job] if args.job else _waiting_job_ids(api)
    display = None if _wants_json(args) else render.WatchDisplay(render.console(stderr=True))
    try:
        if display:
            display.__enter__()
        while True:
            if args.all:
                ids.extend(job_id for job_id in _waiting_job_ids(api) if job_id not in ids)
            for job_id in ids:
                if job_id in latest and _ended(latest[job_id]):
                    continue
                latest[job_id] = api.job(job_id)
                if display:
                    display.update(latest[job_id], _ended(latest[job_id]))
            if all(_ended(job) for job in latest.values()):
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(args.interval)
    finally:
        if display:
            display.__exit__(None, None, None)
    jobs = list(latest.values())
    if _wants_json(args):
        render.print_json(jobs[0] if args.job else {"jobs": jobs})
    elif not jobs:
        render.console().print("no jobs waiting or in flight")
    unfinished = [job for job in jobs if not _ended(job)]
    if unfinished:
        render.console(stderr=True).print(
            f"lipsync: {len(unfinished)} job(s) still not final after {args.timeout} s"
        )
        return Exit.WATCH_TIMEOUT
    failed = [job for job in jobs if job["status"] != JobStatus.COMPLETED]
    for job in failed:
        message = (job.get("error") or {}).get("message", "")
        render.console(stderr=True).print(
            f"lipsync: job {job['jobId']} ({job.get('name')}) ended {job['status']}"
            + (f": {message}" if message else "")
        )
    return Exit.JOB_NOT_COMPLETED if failed else Exit.OK


def fetch(args: argparse.Namespace) -> int:
    target = target_of(args)
    job = StatusApi(target).job(args.job)
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    s3 = target.s3()
    written: dict[str, str] = {}
    wanted = [("document", job.get("documentKey"), None)]
    if job.get("status") == JobStatus.COMPLETED and job.get("outputKey"):
        wanted.insert(0, ("video", job["outputKey"], job.get("outputVersionId")))
    for label, key, version_id in wanted:
        if not key:
            continue
        path = dest / Path(key).name
        extra = {"VersionId": version_id} if version_id else None
        try:
            s3.download_file(target.bucket, key, str(path), ExtraArgs=extra)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code in {"404", "NoSuchKey", "NotFound"}:
                if label == "video":
                    raise NotFoundError(
                        f"job {args.job} is COMPLETED but s3://{target.bucket}/{key} is gone"
                    ) from None
                continue  # the document is written when the job finishes
            raise AwsError(f"downloading s3://{target.bucket}/{key}: {code} {error}") from None
        except BotoCoreError as error:
            raise AwsError(f"downloading s3://{target.bucket}/{key}: {error}") from None
        written[label] = str(path)
    result = {"jobId": job.get("jobId"), "status": job.get("status"), "files": written}
    if _wants_json(args):
        render.print_json(result)
    else:
        for label, saved in written.items():
            render.console().print(f"{label}: {saved}")
    if job.get("status") != JobStatus.COMPLETED:
        state = (
            "still " + job["status"]
            if not is_final(job.get("status", ""))
            else "ended " + job.get("status", "?")
        )
        render.console(stderr=True).print(f"lipsync: job {args.job} {state}; there is no video to fetch")
        return Exit.JOB_NOT_COMPLETED
    return Exit.OK
