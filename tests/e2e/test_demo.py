"""`make demo` keeps working: every scenario ends COMPLETED, shows progress, and says where results are."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def run_demo(scenario: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`make demo SCENARIO=...`, as a newcomer runs it; fails the test unless it exits 0."""
    env = os.environ | {"PYTHONPATH": f"{ROOT}:{ROOT / 'layers' / 'common'}"}
    result = subprocess.run(
        [sys.executable, "-m", "local.demo", "--scenario", scenario, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize(("scenario", "finisher"), [("default", "webhook"), ("lost-webhook", "polling")])
def test_the_demo_runs_the_pipeline_end_to_end(tmp_path: Path, scenario: str, finisher: str) -> None:
    result = run_demo(scenario, tmp_path)
    assert f"ended COMPLETED (finished by {finisher})" in result.stdout
    assert "job is PENDING" in result.stdout
    assert "job is QUEUED" in result.stdout
    assert "workflow: -> Finalize" in result.stdout
    # 1 s of audio, lipsync-2 at the endpoint's 30 fps: 30 frames at $0.05 / 25.
    assert "cost: estimated $0.0600 for 1 s of output (from the audio, by sync.so's estimate endpoint)" in (
        result.stdout
    )
    assert "; cost $0.06" in result.stdout
    if scenario == "lost-webhook":
        assert "no webhook in time: falling back to polling" in result.stdout
    assert (tmp_path / "demo clip.mp4").read_bytes()[4:8] == b"ftyp"
    assert (tmp_path / "demo clip.json").exists()


def test_the_bulk_demo_shows_jobs_waiting_their_turn_and_finishing_in_order(tmp_path: Path) -> None:
    result = run_demo("bulk", tmp_path)
    assert "Finished in arrival order: bulk/clip-1, bulk/clip-2, bulk/clip-3, bulk/clip-4" in result.stdout
    assert "most generations in flight at sync.so: 1" in result.stdout
    assert result.stdout.count("ended COMPLETED") == 4
    for index in range(1, 5):
        assert (tmp_path / f"bulk/clip-{index}.mp4").read_bytes()[4:8] == b"ftyp"
