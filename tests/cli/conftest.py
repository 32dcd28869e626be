"""The `lipsync` command line against the one-machine stack (its state file, as a user's would be).

Commands run in process through `lipsync_cli.app.main`, which is exactly what the console script
calls; one test runs the installed `.venv/bin/lipsync` itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lipsync_cli.app import main
from local.media import make_sample_audio, make_sample_video
from local.stack import OneMachineStack
from local.sync_emulator import EmulatorConfig
from tests.e2e.conftest import TIMINGS  # production timings scaled to seconds

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Cli:
    stack: OneMachineStack
    state_file: Path
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str) -> Result:
        self.capsys.readouterr()
        code = main(["--local", str(self.state_file), *argv])
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)

    @property
    def bucket(self) -> str:
        return str(self.stack.state["bucket"])

    def keys(self, prefix: str) -> list[str]:
        answer = self.stack.client("s3").list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for item in answer.get("Contents", [])]

    def read(self, key: str) -> bytes:
        return self.stack.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()


@dataclass(frozen=True)
class MediaFiles:
    video: Path
    audio: Path


@pytest.fixture(scope="session")
def cli_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OneMachineStack, Path]]:
    state_file = tmp_path_factory.mktemp("cli-stack") / ".local-stack.json"
    stack = OneMachineStack(
        template_path=ROOT / "template.yaml",
        parameter_overrides=TIMINGS | {"SyncPlanConcurrency": "3"},
        emulator_config=EmulatorConfig(processing_seconds=0.5, concurrency=3),
        stack_name="cli",
        state_file=state_file,
    ).start()
    try:
        yield stack, state_file
    finally:
        stack.stop()


@pytest.fixture
def cli(cli_stack: tuple[OneMachineStack, Path], capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(cli_stack[0], cli_stack[1], capsys)


@pytest.fixture(scope="session")
def media_files(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    folder = tmp_path_factory.mktemp("cli-media")
    return MediaFiles(make_sample_video(folder / "clip.mp4"), make_sample_audio(folder / "voice.wav"))


@pytest.fixture
def name() -> str:
    """A job name of this test's own."""
    return f"cli-{uuid.uuid4().hex[:8]}"
