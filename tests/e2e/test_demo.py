"""`make demo` keeps working: both scenarios end COMPLETED, show progress, and say where results are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("scenario", "finisher"), [("default", "webhook"), ("lost-webhook", "polling")])
def test_the_demo_runs_the_pipeline_end_to_end(tmp_path: Path, scenario: str, finisher: str) -> None:
    env = os.environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'common'}"}
    result = subprocess.run(
        [sys.executable, "-m", "local.demo", "--scenario", scenario, "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ended COMPLETED (finished by {finisher})" in result.stdout
    assert "job is PENDING" in result.stdout
    assert "workflow: -> Finalize" in result.stdout
    if scenario == "lost-webhook":
        assert "no webhook in time: falling back to polling" in result.stdout
    assert (tmp_path / "demo clip.mp4").read_bytes()[4:8] == b"ftyp"
    assert (tmp_path / "demo clip.json").exists()
