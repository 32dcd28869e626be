"""`make bench`: numbers, not assertions.

1. Layer size: `sam build`, then compiled bytecode, measured unzipped and zipped.
2. Handler cold-import time: each handler imported in a fresh Python 3.12 process against the
   built layer, with and without the compiled bytecode (Lambda's /opt is read-only, so missing or
   stale .pyc files are recompiled on every cold start).
3. Per job, on the one-machine stack: Step Functions state transitions, Lambda invocations (counted
   by the function workers: intake, dispatch, webhook and the state machine's tasks) and sync.so
   API calls, for a webhook-on-time job and for a lost-webhook job whose generation takes ten
   simulated minutes (time scaled down 15x). Queueing costs no transitions: a job waits in the
   job queue (DynamoDB), and its execution starts when it is dispatched.
4. The AWS cost per 1,000 jobs from those counts and the list prices in shared/docs/references.md.
5. DynamoDB reads and writes per dispatched job, as the dispatcher's code paths make them.
6. Finalize's copy of a large output (BENCH_OUTPUT_GB, default 2.1 GB, generated on the fly behind a
   302 hop) into a moto server: MB/s, the copy's peak memory (tracemalloc and RSS, in its own
   process) and what moto's side costs (it keeps every part and the assembled object).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "app.py").exists())
IMPORT_RUNS = 7
SCALE = 15  # simulated seconds per real second in the lost-webhook run

# us-east-1 list prices (shared/docs/references.md §D.5-D.6).
PRICE_TRANSITION = 0.025 / 1000
PRICE_LAMBDA_REQUEST = 0.20 / 1_000_000
PRICE_LAMBDA_GB_SECOND = 0.0000166667
PRICE_REST_API_REQUEST = 3.50 / 1_000_000
PRICE_WRU = 0.625 / 1_000_000
PRICE_RRU = 0.125 / 1_000_000
PRICE_SQS_REQUEST = 0.40 / 1_000_000
PRICE_S3_PUT = 0.005 / 1000
PRICE_S3_GET = 0.0004 / 1000
# Billed duration per invocation in production (references.md §D.5 model, incl. 10-20 % cold starts),
# memory from template.yaml, and DynamoDB units per invocation read off the code paths.
LAMBDA_MODEL = {  # function: (seconds, GB, write units, read units), per invocation
    # One GetItem (is the job known?) and one conditional PutItem per S3 event; the estimate's
    # HEAD + ranged GET and sync.so call are in the billed time.
    "SubmitFunction": (0.6, 0.5, 2, 1),
    # A run that creates: plan GetItem, month's spend GetItem (with a budget), head Query, job GetItem;
    # claim transaction (plan + job + spend, x2), record UpdateItem (~2 KB), settle UpdateItem.
    "DispatchFunction": (0.5, 0.5, 6, 3),
    "WebhookFunction": (0.25, 0.5, 2, 1),
    "ArmWebhookFunction": (0.15, 0.5, 2, 0),
    "ReconcileFunction": (0.5, 0.5, 2, 1),
    "FinalizeFunction": (1.5, 1.0, 10, 1),  # release transaction (plan + job + spend, x2), output fields
}
DISPATCH_READS = {
    "plan GetItem (strong)": 1.0,
    "month's spend GetItem (strong, only with MonthlyBudgetUsd)": 1.0,
    "queue head Query (keys only)": 0.5,
    "job GetItem (strong)": 1.0,
}
DISPATCH_WRITES = {
    "claim transaction (plan + job + month's spend, x2)": 6,
    "record the generation": 2,
    "settle the lease": 1,
}


def heading(text: str) -> None:
    print(f"\n== {text}", flush=True)


# ---------------------------------------------------------------------------- layer + imports


def build_layer(build_dir: Path) -> Path:
    env = os.environ | {"SAM_CLI_TELEMETRY": "0"}
    subprocess.run(
        [sys.executable, "-m", "samcli", "build", "--build-dir", str(build_dir), "CommonLayer"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=env,
    )
    return build_dir / "CommonLayer"


def tree_size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def zipped_size(path: Path) -> int:
    with tempfile.TemporaryFile() as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(path))
        return handle.tell()


def import_ms(function: str, layer: Path) -> float:
    """Median wall time of `import app` in a fresh interpreter, as a Lambda cold start pays it."""
    code = "import time; t = time.perf_counter(); import app; print((time.perf_counter() - t) * 1000)"
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{ROOT / 'functions' / function}:{layer / 'python'}",
        "PYTHONDONTWRITEBYTECODE": "1",  # like /opt: nothing compiled at run time is kept
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_SERVICE_NAME": "bench",
    }
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
        for _ in range(IMPORT_RUNS)
    ]
    return statistics.median(runs)


def measure_layer_and_imports() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        heading("Layer (sam build CommonLayer)")
        layer = build_layer(Path(scratch) / "build")
        raw, packed = tree_size(layer), zipped_size(layer)
        print(f"without bytecode: {raw / 1e6:6.2f} MB unzipped, {packed / 1e6:6.2f} MB zipped")
        no_pyc = {function: import_ms(function, layer) for function in FUNCTIONS}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(layer)],
            check=True,
        )
        raw_pyc, packed_pyc = tree_size(layer), zipped_size(layer)
        print(
            f"with bytecode:    {raw_pyc / 1e6:6.2f} MB unzipped, {packed_pyc / 1e6:6.2f} MB zipped"
            " (what make build ships)"
        )
        with_pyc = {function: import_ms(function, layer) for function in FUNCTIONS}
        heading(f"Handler cold import, median of {IMPORT_RUNS} fresh processes (ms)")
        print(f"{'function':<14}{'no .pyc':>10}{'compiled':>10}")
        for function in FUNCTIONS:
            print(f"{function:<14}{no_pyc[function]:>10.0f}{with_pyc[function]:>10.0f}")


# ---------------------------------------------------------------------------- per job


def run_job(scenario: dict[str, Any], overrides: dict[str, str], processing_seconds: float) -> dict[str, Any]:
    from local.media import make_sample_audio, make_sample_video
    from local.stack import OneMachineStack
    from local.sync_emulator import EmulatorConfig

    with (
        tempfile.TemporaryDirectory() as scratch,
        OneMachineStack(
            parameter_overrides=overrides,
            emulator_config=EmulatorConfig(processing_seconds=processing_seconds),
            stack_name=f"bench-{int(time.time() * 1000)}",
        ) as stack,
    ):
        stack.emulator.set_scenario(scenario)
        bucket = stack.state["bucket"]
        video, audio = Path(scratch, "v.mp4"), Path(scratch, "a.wav")
        make_sample_video(video)
        make_sample_audio(audio)
        s3 = stack.client("s3")
        s3.upload_file(str(video), bucket, "inputs/bench.mp4")
        s3.upload_file(str(audio), bucket, "inputs/bench.wav")
        sfn = stack.client("stepfunctions")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            executions = sfn.list_executions(stateMachineArn=stack.state["state_machine_arn"])["executions"]
            if executions and executions[0]["status"] != "RUNNING":
                break
            time.sleep(0.5)
        else:
            raise RuntimeError("the bench job did not finish")
        history = sfn.get_execution_history(executionArn=executions[0]["executionArn"], maxResults=1000)[
            "events"
        ]
        transitions = sum(1 for event in history if event["type"].endswith("StateEntered"))
        stack.wait_idle(timeout=30)
        lambdas = Counter(
            {name: worker.invocations for name, worker in stack.workers.items() if worker.invocations}
        )
        webhooks = [hook for hook in stack.emulator.webhooks() if not hook.get("dropped")]
        calls = Counter(
            f"{r['method']} /v2/{r['path'].split('/v2/')[1].split('/')[0]}" for r in stack.emulator.requests()
        )
        return {
            "status": executions[0]["status"],
            "transitions": transitions,
            "lambdas": dict(lambdas),
            "api_calls": dict(calls),
            "webhooks": len(webhooks),
        }


def cost_per_thousand(job: dict[str, Any]) -> dict[str, float]:
    lambdas: dict[str, int] = job["lambdas"]
    lambda_cost = sum(
        count
        * (PRICE_LAMBDA_REQUEST + LAMBDA_MODEL[name][0] * LAMBDA_MODEL[name][1] * PRICE_LAMBDA_GB_SECOND)
        for name, count in lambdas.items()
    )
    dynamodb = sum(
        count * (LAMBDA_MODEL[name][2] * PRICE_WRU + LAMBDA_MODEL[name][3] * PRICE_RRU)
        for name, count in lambdas.items()
    )
    costs = {
        "Step Functions": job["transitions"] * PRICE_TRANSITION,
        "Lambda": lambda_cost,
        "API Gateway": job["webhooks"] * PRICE_REST_API_REQUEST,
        "DynamoDB": dynamodb,
        # Two S3 events (receive + delete each), two kicks (send, receive, delete each).
        "SQS": 10 * PRICE_SQS_REQUEST,
        # outputs .mp4 + .json; sync.so fetches 2 inputs; the estimate reads the audio's header
        # (a HEAD and a ranged GET, each billed as a GET).
        "S3": 2 * PRICE_S3_PUT + 4 * PRICE_S3_GET,
    }
    return {name: value * 1000 for name, value in costs.items()}


def measure_jobs() -> None:
    on_time = run_job(
        {},
        {"WebhookTimeoutSeconds": "30", "MaxJobSeconds": "120"},
        processing_seconds=1.0,
    )
    # Lost webhook, a ten-minute generation, production schedule (15 s x1.5, cap 120 s, webhook
    # timeout 120 s instead of 600 s so that polling does the work), scaled down SCALE times.
    lost = run_job(
        {"webhook": "drop"},
        {
            "WebhookTimeoutSeconds": str(120 // SCALE),
            "PollFirstIntervalSeconds": "1",
            "PollBackoffRate": "1.5",
            "PollMaxIntervalSeconds": str(120 // SCALE),
            "MaxJobSeconds": str(3600 // SCALE),
        },
        processing_seconds=600 / SCALE,
    )
    heading("Per job")
    for label, job in (("webhook on time", on_time), ("lost webhook, 10-min job", lost)):
        print(
            f"{label:<26} execution {job['status']}, {job['transitions']} state transitions, "
            f"Lambda {sum(job['lambdas'].values())} ({job['lambdas']}), sync.so calls {job['api_calls']}"
        )
    heading("AWS cost per 1,000 jobs (USD, us-east-1 list prices; sync.so itself is ~$1,200+)")
    for label, job in (("webhook on time", on_time), ("lost webhook, 10-min job", lost)):
        costs = cost_per_thousand(job)
        parts = ", ".join(f"{name} {value:.4f}" for name, value in costs.items())
        print(f"{label:<26} total {sum(costs.values()):.3f}  ({parts})")
    # Reads: the plan, the queue's depth and head, the held jobs' head and count, the month's spend.
    sweep = 1440 * (PRICE_LAMBDA_REQUEST + 0.3 * 0.5 * PRICE_LAMBDA_GB_SECOND + 6 * PRICE_RRU)
    print(f"{'the leak sweep':<26} {sweep * 30:.3f} per month, whatever the volume (1 run a minute)")
    heading("DynamoDB per dispatched job")
    reads = ", ".join(f"{name} {units:g}" for name, units in DISPATCH_READS.items())
    writes = ", ".join(f"{name} {units:g}" for name, units in DISPATCH_WRITES.items())
    print(f"reads  {sum(DISPATCH_READS.values()):g} RRU: {reads}")
    print(f"writes {sum(DISPATCH_WRITES.values()):g} WRU: {writes}")
    print("no Scan anywhere: the next job is the first item of the sparse queue-order index")


# ---------------------------------------------------------------------------- large output copy


def measure_large_output_copy() -> None:
    from tests.large_output import (
        SyntheticOutputServer,
        copy_in_child,
        make_bucket,
        rss_bytes,
        start_moto,
        stored_sha256,
        synthetic_sha256,
    )

    size = int(float(os.environ.get("BENCH_OUTPUT_GB", "2.1")) * 1e9)
    heading(f"Finalize's output copy: {size / 1e9:.2f} GB via a 302 hop into moto S3 (16 MiB parts)")
    server, endpoint = start_moto()
    try:
        make_bucket(endpoint)
        moto_before = rss_bytes()
        with SyntheticOutputServer(size) as source:
            report = copy_in_child(endpoint, source.url)
        moto_peak = rss_bytes("VmHWM") - moto_before
        stored_size, digest, _, tags = stored_sha256(endpoint)
    finally:
        server.stop()
    expected = synthetic_sha256(size)
    checks = stored_size == size and digest == expected == report.sha256 == tags.get("sha256")
    print(
        f"copied {report.size / 1e9:.2f} GB in {report.parts} parts, {report.seconds:.1f} s:"
        f" {report.mb_per_second:.0f} MB/s"
    )
    print(f"size and SHA-256 of the stored object {'match' if checks else 'DO NOT MATCH'}")
    print(
        f"copy process: tracemalloc peak {report.tracemalloc_peak / 1e6:.0f} MB,"
        f" RSS growth {report.rss_growth / 1e6:.0f} MB, files written: {len(report.files_written)}"
    )
    print(
        f"moto (this process): RSS growth up to {moto_peak / 1e6:.0f} MB; it holds the parts, then joins"
        " them into one object"
    )


def main() -> int:
    if os.environ.get("BENCH_ONLY") == "large-output":
        measure_large_output_copy()
        return 0
    if shutil.which("sam") is None and not (Path(sys.executable).parent / "sam").exists():
        print("sam is not installed; run make install first", file=sys.stderr)
        return 1
    measure_layer_and_imports()
    measure_jobs()
    measure_large_output_copy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
