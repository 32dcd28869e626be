"""Exit codes, and the errors that carry them (a user error never prints a traceback)."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    JOB_NOT_COMPLETED = 1  # watch/fetch: the job ended FAILED, REJECTED, INVALID, TIMED_OUT, ...
    USAGE = 2  # bad arguments, a missing local file, a manifest that fails validation
    NOT_FOUND = 3  # no such job, stack or state file
    AWS = 4  # AWS, credentials, signature or network error
    WATCH_TIMEOUT = 5  # watch --timeout elapsed before a final status
    NOT_RETRYABLE = 6  # retry: the job COMPLETED, or is INVALID (fix its input and submit again)
    NOT_FINISHED = 7  # retry: the job is still waiting or in flight (watch it first)
    INTERRUPTED = 130


EXIT_CODES_HELP = """exit codes:
  0  success
  1  the job ended without COMPLETED (watch, fetch): FAILED, REJECTED, INVALID, TIMED_OUT, ...
  2  usage or validation error (bad arguments, missing file, invalid manifest); nothing uploaded
  3  not found: the job, the stack or the state file
  4  AWS, credentials, signature or network error
  5  watch --timeout elapsed before every job was final
  6  retry: the job cannot be re-run (it COMPLETED, or it is INVALID: fix the input instead)
  7  retry: the job has not finished yet (waiting, held or in flight); nothing uploaded
  130 interrupted (Ctrl-C)"""


class CliError(Exception):
    """An error for the user: its message, and the exit code that says what kind it is."""

    code: Exit = Exit.USAGE

    def __init__(self, message: str, code: Exit | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class UsageError(CliError):
    code = Exit.USAGE


class NotFoundError(CliError):
    code = Exit.NOT_FOUND


class AwsError(CliError):
    code = Exit.AWS
