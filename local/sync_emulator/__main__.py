"""`python -m local.sync_emulator`: run the emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType

from . import EmulatorConfig, SyncEmulator


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _env_flag(name: str, default: bool) -> bool:
    """0/1 (also false/true, no/yes, off/on); anything else stops with a clear message."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value not in ("0", "1", "false", "true", "no", "yes", "off", "on"):
        raise SystemExit(f"{name} must be 0 or 1, not {raw!r}")
    return value in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m local.sync_emulator", description="Local sync.so API v2 emulator."
    )
    p.add_argument("--host", default=_env("SYNC_EMULATOR_HOST", "127.0.0.1"))
    p.add_argument(
        "--port", type=int, default=int(_env("SYNC_EMULATOR_PORT", "8089")), help="0 picks a free port"
    )
    p.add_argument("--api-key", default=_env("SYNC_EMULATOR_API_KEY", "sk-emulator"))
    p.add_argument("--webhook-secret", default=_env("SYNC_EMULATOR_WEBHOOK_SECRET", "whsec_emulator"))
    p.add_argument(
        "--processing-seconds", type=float, default=float(_env("SYNC_EMULATOR_PROCESSING_SECONDS", "3.0"))
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=int(_env("SYNC_EMULATOR_CONCURRENCY", "3")),
        help="plan limit on PENDING+PROCESSING generations",
    )
    p.add_argument(
        "--rate-limit",
        type=int,
        default=int(_env("SYNC_EMULATOR_RATE_LIMIT", "60")),
        help="create requests per rolling minute",
    )
    p.add_argument(
        "--rate-limit-counts-accepted-only",
        dest="rate_limit_counts_all",
        action="store_false",
        default=_env_flag("SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL", True),
        help="count only accepted creates against --rate-limit (default: every create request, "
        "refused ones included; env SYNC_EMULATOR_RATE_LIMIT_COUNTS_ALL=0/1)",
    )
    p.add_argument(
        "--concurrency-retry-after-seconds",
        type=float,
        default=float(_env("SYNC_EMULATOR_CONCURRENCY_RETRY_AFTER_SECONDS", "10")),
        help="the fixed retryAfterSeconds / Retry-After of concurrency_limit_reached 429s",
    )
    p.add_argument(
        "--output-url-ttl-seconds",
        type=float,
        default=float(_env("SYNC_EMULATOR_OUTPUT_URL_TTL_SECONDS", "3600")),
    )
    p.add_argument(
        "--public-url",
        default=os.environ.get("SYNC_EMULATOR_PUBLIC_URL"),
        help="base URL put into outputUrl (default: the listening address)",
    )
    p.add_argument("--log-requests", action="store_true", help="print one stderr line per HTTP request")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        api_key=args.api_key,
        webhook_secret=args.webhook_secret,
        processing_seconds=args.processing_seconds,
        concurrency=args.concurrency,
        rate_limit=args.rate_limit,
        rate_limit_counts_all=args.rate_limit_counts_all,
        concurrency_retry_after_seconds=args.concurrency_retry_after_seconds,
        output_url_ttl_seconds=args.output_url_ttl_seconds,
        public_url=args.public_url,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    emulator = SyncEmulator(config, host=args.host, port=args.port, log_requests=args.log_requests).start()
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    print(f"sync emulator listening on {emulator.url}", flush=True)
    stop.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
