"""`python -m local.stack --state-file PATH [--host ADDRESS]`: serve the one-machine stack until a signal."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from local.sync_emulator import EmulatorConfig

from .stack import CLI_PORTS, DOCKER_BRIDGE_HOST, OneMachineStack, Ports, write_atomically
from .template import TemplateError


def _overrides(pairs: list[str]) -> dict[str, str]:
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--parameter-overrides: expected Key=Value, got {pair!r}")
        overrides[key] = value
    return overrides


def main(argv: list[str] | None = None) -> int:
    defaults = EmulatorConfig()
    parser = argparse.ArgumentParser(prog="python -m local.stack", description=__doc__)
    parser.add_argument(
        "--state-file", required=True, help="where to write the stack's JSON state once it is ready"
    )
    parser.add_argument(
        "--template", default="template.yaml", help="SAM template to provision (default: %(default)s)"
    )
    parser.add_argument("--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stack-name", default="lipsync-local")
    parser.add_argument("--sync-processing-seconds", type=float, default=defaults.processing_seconds)
    parser.add_argument("--sync-concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--sync-rate-limit", type=int, default=defaults.rate_limit)
    parser.add_argument(
        "--host",
        default=CLI_PORTS.host,
        help="the address every server listens on (default: %(default)s); for `sam local`, Docker's "
        f"bridge address ({DOCKER_BRIDGE_HOST}) so that containers reach the stack",
    )
    parser.add_argument("--aws-port", type=int, default=CLI_PORTS.aws, help="moto server (0: any free port)")
    parser.add_argument("--api-port", type=int, default=CLI_PORTS.api, help="API Gateway front door")
    parser.add_argument("--sync-port", type=int, default=CLI_PORTS.sync, help="sync.so emulator")
    parser.add_argument(
        "--function-concurrency",
        type=int,
        default=4,
        help="parallel invocations per function without ReservedConcurrentExecutions (default: %(default)s)",
    )
    parser.add_argument(
        "--schedule-period-seconds",
        type=float,
        help="fire every Schedule event this often instead of its rate(...)",
    )
    parser.add_argument(
        "--env-file",
        help="also write `sam local invoke --env-vars` content here (default: <state file>.env.json)",
    )
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    config = EmulatorConfig(
        processing_seconds=args.sync_processing_seconds,
        concurrency=args.sync_concurrency,
        rate_limit=args.sync_rate_limit,
    )
    stack = OneMachineStack(
        template_path=args.template,
        parameter_overrides=_overrides(args.parameter_overrides),
        emulator_config=config,
        stack_name=args.stack_name,
        state_file=args.state_file,
        ports=Ports(aws=args.aws_port, api=args.api_port, sync=args.sync_port, host=args.host),
        function_concurrency=args.function_concurrency,
        schedule_period_seconds=args.schedule_period_seconds,
    )
    try:
        stack.start()
    except TemplateError as error:
        print(f"local.stack: template error: {error}", file=sys.stderr)
        return 2
    env_file = Path(args.env_file or str(Path(args.state_file).with_suffix("")) + ".env.json")
    try:
        # This process's own AWS clients (and anything it spawns) talk to moto.
        os.environ.update(stack.aws_env())
        state = stack.state
        # Atomically, as the state file: a reader that sees the file sees all of it.
        write_atomically(env_file, json.dumps(stack.sam_local_env(), indent=2) + "\n")
        print(f"local.stack: ready; state in {args.state_file}, sam local env vars in {env_file}", flush=True)
        print(
            f"  try: AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws --region us-east-1 "
            f"--endpoint-url {state['aws_endpoint_url']} s3 cp my.mp4 s3://{state['bucket']}/inputs/my.mp4",
            flush=True,
        )
        while not stop.wait(0.5):
            pass
        print("local.stack: shutting down", flush=True)
    finally:
        stack.stop()
        if not args.env_file:  # a file the user named (say events/env.json) is theirs to keep
            env_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
