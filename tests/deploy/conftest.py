"""A real `sam deploy`: MiniStack (an offline AWS emulator whose CloudFormation applies the SAM
transform itself) on loopback, the sync.so emulator as the API, and the built template deployed,
unmodified, with the SAM CLI as a user runs it. `make deploy-test` installs MiniStack into its own
venv (.venv-ministack: it pins botocore exactly); see ../shared/docs/local-aws-testing.md §6.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from local.sync_emulator import EmulatorConfig, SyncEmulator
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
MINISTACK_PYTHON = ROOT / ".venv-ministack" / "bin" / "python"
SAM = Path(sys.executable).parent / "sam"
REGION = "us-east-1"
API_KEY = "sk-deploy-test-key"
STACK_NAME = "lipsync-deploy-test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class MiniStack:
    """MiniStack in a subprocess of its own venv, on 127.0.0.1 only, with a clean environment:
    its functions inherit MiniStack's environment, so nothing of this shell's may leak into them."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "ministack.log"

    def start(self) -> None:
        if not MINISTACK_PYTHON.exists():
            raise RuntimeError(
                f"{MINISTACK_PYTHON} is missing: run `make deploy-test` (it installs MiniStack)"
            )
        environment = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.workdir),
            "BIND_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            # Without these MiniStack also opens an IoT listener on 0.0.0.0:8883.
            "IOT_MTLS_ENABLED": "0",
            "IOT_MTLS_PORT": "off",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(MINISTACK_PYTHON), "-m", "ministack"],
                cwd=self.workdir,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        eventually(self._ready, timeout=60, interval=0.2, what="MiniStack to answer")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"MiniStack exited ({self.process.returncode}): {self.log()[-2000:]}")
        try:
            return httpx.get(f"{self.endpoint}/_ministack/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def aws_env(self) -> dict[str, str]:
        """What a user's shell has when it talks to this emulator: its endpoint, fake credentials."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "SAM_CLI_TELEMETRY": "0",
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )


@dataclass
class Deployed:
    ministack: MiniStack
    emulator: SyncEmulator
    build_dir: Path
    workdir: Path
    outputs: dict[str, str]
    deploy_output: str

    def run(
        self, *command: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """A command as a user runs it against the emulator (their shell: endpoint, credentials)."""
        environment = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        result = subprocess.run(
            list(command),
            cwd=self.workdir,
            env=environment | self.ministack.aws_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command[:4])} … exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def lipsync(
        self, *arguments: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.run(
            str(Path(sys.executable).parent / "lipsync"),
            "--stack",
            STACK_NAME,
            *arguments,
            check=check,
            timeout=timeout,
        )

    def object_json(self, key: str) -> dict[str, Any]:
        body = self.ministack.client("s3").get_object(Bucket=self.outputs["MediaBucketName"], Key=key)["Body"]
        return dict(json.loads(body.read()))


def deploy_parameters(emulator_url: str) -> list[str]:
    """What a first deploy gives (the guided deploy's questions), pointed at the sync.so emulator."""
    tuning = {"SyncApiBaseUrl": emulator_url, "WebhookTimeoutSeconds": 5, "PollFirstIntervalSeconds": 1}
    # SAM's --parameter-overrides keeps a value's double quotes only inside single quotes.
    return [
        f"SyncApiKey={API_KEY}",
        "SyncPlanConcurrency=1",
        "MonthlyBudgetUsd=5",
        f"Tuning='{json.dumps(tuning)}'",
    ]


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    workdir = tmp_path_factory.mktemp("deploy")
    build_dir = workdir / "build"
    subprocess.run(
        ["make", "--no-print-directory", "build", f"BUILD_DIR={build_dir}"],
        cwd=ROOT,
        check=True,
    )
    emulator = SyncEmulator(
        EmulatorConfig(api_key=API_KEY, processing_seconds=2.0, concurrency=1), host="127.0.0.1", port=0
    )
    emulator.start()
    ministack = MiniStack(workdir)
    ministack.start()
    try:
        deployment = Deployed(ministack, emulator, build_dir, workdir, {}, "")
        result = deployment.run(
            str(SAM),
            "deploy",
            "--template-file",
            str(build_dir / "template.yaml"),
            "--stack-name",
            STACK_NAME,
            "--resolve-s3",
            "--no-confirm-changeset",
            "--no-fail-on-empty-changeset",
            "--capabilities",
            "CAPABILITY_IAM",
            "CAPABILITY_AUTO_EXPAND",
            "--parameter-overrides",
            *deploy_parameters(emulator.url),
        )
        deployment.deploy_output = result.stdout + result.stderr
        (stack,) = ministack.client("cloudformation").describe_stacks(StackName=STACK_NAME)["Stacks"]
        deployment.outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs", [])}
        yield deployment
        deleted = deployment.run(
            str(SAM), "delete", "--stack-name", STACK_NAME, "--no-prompts", "--region", REGION
        )
        assert "Deleted successfully" in deleted.stdout, deleted.stdout
    finally:
        ministack.stop()
        emulator.stop()
