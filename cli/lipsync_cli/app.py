"""The argument parser and `main` (the `lipsync` console script)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from botocore.exceptions import BotoCoreError, ClientError

from lipsync_cli import commands
from lipsync_cli.errors import EXIT_CODES_HELP, CliError, Exit
from lipsync_cli.targets import DEFAULT_STATE_FILE

DESCRIPTION = """Start, watch and fetch lipsync jobs on a deployed stack or on the one-machine stack.

target (every command):
  --stack NAME      a deployed stack, found through its CloudFormation outputs with your AWS
                    credentials (AWS_PROFILE/--profile, AWS_REGION/--region); or $LIPSYNC_STACK
  --local [PATH]    the one-machine stack's state file (default ./.local-stack.json); or $LIPSYNC_LOCAL
  without either: $LIPSYNC_STACK, else $LIPSYNC_LOCAL, else ./.local-stack.json"""

EXAMPLES = """examples:
  lipsync --local submit clip.mp4 voice.wav                 # inputs/clip.mp4 + inputs/clip.wav
  lipsync --stack lipsync submit clip.mp4 voice.wav --model lipsync-2-pro --option sync_mode=loop
  lipsync submit clip.mp4 --text "Hello there" --voice VOICE_ID --name promo/hello
  lipsync submit clip.mp4 --segment 0:2.5:line1.wav --segment 4:7:line2.wav
  lipsync submit-manifest job.json --dry-run                # validate and estimate; nothing is uploaded
  lipsync watch 3f2a...            lipsync watch --all
  lipsync status 3f2a... --json    lipsync list --status FAILED    lipsync queue
  lipsync fetch 3f2a... results/   lipsync logs 3f2a...
  lipsync retry 3f2a... --dry-run  lipsync cost --since 2026-01-01
"""

Handler = Callable[[argparse.Namespace], int]


def _common() -> argparse.ArgumentParser:
    """Options every command takes, before or after its name (SUPPRESS keeps either from
    overwriting the other)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("target and output")
    group.add_argument("--stack", default=argparse.SUPPRESS, metavar="NAME", help="a deployed stack's name")
    group.add_argument(
        "--local",
        nargs="?",
        const=DEFAULT_STATE_FILE,
        default=argparse.SUPPRESS,
        metavar="PATH",
        help=f"the one-machine stack's state file (default {DEFAULT_STATE_FILE})",
    )
    group.add_argument("--profile", default=argparse.SUPPRESS, help="AWS profile (with --stack)")
    group.add_argument("--region", default=argparse.SUPPRESS, help="AWS region (with --stack)")
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="JSON on stdout, for scripts"
    )
    return common


def _submission_flags(parser: argparse.ArgumentParser) -> None:
    """What `submit`, `submit-manifest` and `retry` share."""
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="validate, show the uploads and the cost estimate; upload nothing",
    )
    parser.add_argument(
        "--no-wait", action="store_true", help="do not wait (up to 30 s) for the stack to record the job"
    )


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="lipsync",
        description=DESCRIPTION,
        epilog=f"{EXAMPLES}\n{EXIT_CODES_HELP}",
        formatter_class=formatter,
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, handler: Handler, help_text: str, epilog: str = "") -> argparse.ArgumentParser:
        command = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=formatter,
            epilog=f"{epilog}\n{EXIT_CODES_HELP}" if epilog else EXIT_CODES_HELP,
        )
        command.set_defaults(handler=handler)
        return command

    submit = add(
        "submit",
        commands.submit,
        "upload a video and an audio file (or --text) as one job",
        "Without --model/--option/--text/--segment the pair goes to inputs/<name>.<ext> and runs with the\n"
        "stack's DefaultModel and DefaultOptions; otherwise the media go to media/<name>/ and a manifest\n"
        "to jobs/<name>.json. Dubbing and other API fields: use submit-manifest.\n\n"
        "--segment START:END:AUDIO voices the video from START to END seconds with AUDIO (repeatable;\n"
        "AUDIO files become audio inputs with refIds s1, s2, ...); with segments, give no AUDIO.\n\n"
        "The estimate is the output's length (read from the local files' headers) at the stack's\n"
        "PriceTableUsdPerSecond; the stack itself asks sync.so for its estimate when the job arrives.\n\n"
        "examples:\n"
        "  lipsync submit clip.mp4 voice.wav\n"
        "  lipsync submit clip.mp4 voice.wav --name campaign/clip-1 --model lipsync-2-pro \\\n"
        "      --option sync_mode=cut_off --option temperature=0.6\n"
        "  lipsync submit clip.mp4 --text 'Hello' --voice VOICE_ID --dry-run\n"
        "  lipsync submit clip.mp4 --segment 0:2.5:line1.wav --segment 4:7:line2.wav --dry-run\n"
        '  lipsync submit clip.mp4 voice.wav --dry-run --json   # the estimate as "estimate": {...}',
    )
    submit.add_argument("video", metavar="VIDEO", help="the video file")
    submit.add_argument("audio", metavar="AUDIO", nargs="?", help="the audio file (or --text, or --segment)")
    submit.add_argument("--name", help="the job's name (outputs/<name>.mp4); default: the video's file name")
    submit.add_argument("--model", help="a sync.so model (default: the stack's DefaultModel)")
    submit.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a sync.so option (repeatable); VALUE is JSON when it parses: temperature=0.5, "
        "active_speaker_detection.auto_detect=true",
    )
    submit.add_argument("--text", help="a script to speak (ElevenLabs text-to-speech) instead of AUDIO")
    submit.add_argument("--voice", metavar="VOICE_ID", help="the ElevenLabs voice id for --text")
    submit.add_argument(
        "--segment",
        action="append",
        metavar="START:END:AUDIO",
        help="voice the video from START to END seconds with the AUDIO file (repeatable), "
        "e.g. --segment 0:2.5:line1.wav --segment 4:7:line2.wav",
    )
    _submission_flags(submit)

    manifest = add(
        "submit-manifest",
        commands.submit_manifest,
        "validate a manifest (a sync.so generate body) with the submit function's rules, then upload it",
        "Input URLs may be https URLs, keys in the bucket, s3://<bucket>/<key>, or local files\n"
        "(relative to the manifest): those are uploaded to media/<name>/ and the manifest is rewritten.\n"
        "The estimate reads local files' lengths; inputs already in the bucket or behind https URLs\n"
        "are not read, so their estimate is an upper bound (basis upper-bound).\n\n"
        "examples:\n"
        "  lipsync submit-manifest campaign/intro-es.json\n"
        "  lipsync submit-manifest job.json --dry-run            # valid? what would it cost?\n"
        '  lipsync submit-manifest job.json --dry-run --json     # ... as JSON, with "estimate": {...}',
    )
    manifest.add_argument("file", metavar="FILE", help="the manifest (.json)")
    manifest.add_argument("--name", help="the job's name (default: the manifest's name, else the file's)")
    _submission_flags(manifest)

    status = add(
        "status",
        commands.status,
        "a job's record (place in line and ETA while queued)",
        "example:\n  lipsync status 3f2a9c... --json",
    )
    status.add_argument("job", metavar="JOB", help="the job id")

    listing = add(
        "list",
        commands.list_jobs,
        "jobs, most recently updated first",
        "examples:\n  lipsync list\n  lipsync list --status FAILED --limit 50",
    )
    listing.add_argument(
        "--status", type=str.upper, help="only jobs with this status (QUEUED, COMPLETED, FAILED, ...)"
    )
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-100, default 20)")
    listing.add_argument("--cursor", help="the next page (printed after a full page)")

    add(
        "queue",
        commands.queue,
        "the job queue: queued, in flight, ETA to drain",
        "example:\n  lipsync queue --json",
    )

    watch = add(
        "watch",
        commands.watch,
        "live progress until the job (or every waiting and in-flight job) is final",
        "Exit status 0 when every watched job COMPLETED, 1 when any ended otherwise.\n\n"
        "examples:\n  lipsync watch 3f2a9c...\n  lipsync watch --all --timeout 600",
    )
    watch.add_argument("job", metavar="JOB", nargs="?", help="the job id")
    watch.add_argument("--all", action="store_true", help="every job that is waiting or in flight")
    watch.add_argument("--interval", type=float, default=2.0, help="seconds between polls (default 2)")
    watch.add_argument("--timeout", type=float, help="give up after this many seconds (exit 5)")

    fetch = add(
        "fetch",
        commands.fetch,
        "download a job's video and its document (outputs/<name>.json)",
        "example:\n  lipsync fetch 3f2a9c... results/",
    )
    fetch.add_argument("job", metavar="JOB", help="the job id")
    fetch.add_argument("dest", metavar="DEST", nargs="?", default=".", help="a directory (default: .)")

    logs = add(
        "logs",
        commands.logs,
        "a job's history: every status, when, and what set it",
        "example:\n  lipsync logs 3f2a9c...",
    )
    logs.add_argument("job", metavar="JOB", help="the job id")

    retry = add(
        "retry",
        commands.retry,
        "run a job that did not succeed again, as a new job that names the old one",
        "Re-runs a job that ended FAILED, REJECTED, TIMED_OUT, STOPPED, UNKNOWN or CANCELED. The new job\n"
        "is a manifest, jobs/<name>.retry-<UTC time>.json, with the old job's name (the output goes to\n"
        'the same outputs/<name>.mp4), "retryOf": <old job id>, and the old request: a manifest job\'s\n'
        "exact manifest version, or a pair job's model and inputs pinned to their versions. The stack\n"
        "records the link both ways (retryOf on the new job, retriedBy on the old one).\n"
        "COMPLETED and INVALID jobs are refused (exit 6: fix an INVALID job's input and submit it\n"
        "again); so are jobs still waiting or in flight (exit 7).\n\n"
        "examples:\n"
        "  lipsync retry 3f2a9c...\n"
        "  lipsync retry 3f2a9c... --dry-run          # the manifest and the estimate; nothing uploaded\n"
        '  lipsync retry 3f2a9c... --no-wait --json  # the new job\'s id is "jobId"',
    )
    retry.add_argument("job", metavar="JOB", help="the id of the job to run again")
    _submission_flags(retry)

    spend = add(
        "cost",
        commands.cost,
        "spend by day and model: estimates, actual costs, and jobs whose cost is not known yet",
        "Each job counts on the UTC day it finished (or was created, while it has not finished).\n"
        "estimated: the sum of the jobs' estimates; actual: the sum of their costs once known\n"
        "(COMPLETED: the output's length at the estimate's price; FAILED, REJECTED, CANCELED and\n"
        "INVALID: nothing); cost unknown: jobs still running, or whose output length is not known.\n\n"
        "examples:\n"
        "  lipsync cost                               # this month (UTC) so far\n"
        "  lipsync cost --since 2026-01-01 --until 2026-01-31\n"
        "  lipsync cost --since 2026-01-01 --json",
    )
    spend.add_argument(
        "--since", metavar="YYYY-MM-DD", help="from this UTC day (default: the 1st of this month)"
    )
    spend.add_argument("--until", metavar="YYYY-MM-DD", help="to this UTC day, inclusive (default: today)")
    return parser


COMMANDS = frozenset(
    {"submit", "submit-manifest", "status", "list", "queue", "watch", "fetch", "logs", "retry", "cost"}
)


def _bare_local(argv: Sequence[str]) -> list[str]:
    """`--local` right before a command name means the default state file, not a file named so."""
    tokens = list(argv)
    for index, word in enumerate(tokens[:-1]):
        if word == "--local" and tokens[index + 1] in COMMANDS:
            tokens.insert(index + 1, DEFAULT_STATE_FILE)
            break
    return tokens


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_bare_local(sys.argv[1:] if argv is None else argv))  # usage: exit 2
    handler: Handler = args.handler
    try:
        return int(handler(args))
    except CliError as error:
        print(f"lipsync: {error.message}", file=sys.stderr)
        return int(error.code)
    except (ClientError, BotoCoreError) as error:
        print(f"lipsync: AWS error: {error}", file=sys.stderr)
        return int(Exit.AWS)
    except KeyboardInterrupt:
        print("lipsync: interrupted", file=sys.stderr)
        return int(Exit.INTERRUPTED)
