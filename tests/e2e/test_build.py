"""`make build`: sam build succeeds, ships bytecode, and the built artifacts import on their own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(path.name for path in (ROOT / "functions").iterdir() if (path / "app.py").exists())
LOGICAL_IDS = {
    "arm_webhook": "ArmWebhookFunction",
    "dispatch": "DispatchFunction",
    "finalize": "FinalizeFunction",
    "reconcile": "ReconcileFunction",
    "status": "StatusFunction",
    "submit": "SubmitFunction",
    "webhook": "WebhookFunction",
}


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("sam") / "build"
    subprocess.run(["make", "--no-print-directory", "build", f"BUILD_DIR={target}"], cwd=ROOT, check=True)
    return target


def test_the_layer_holds_the_shared_package_its_dependencies_and_bytecode(build_dir: Path) -> None:
    layer = build_dir / "CommonLayer" / "python"
    for package in ("lipsync", "pydantic", "pydantic_core", "httpx", "aws_lambda_powertools"):
        assert (layer / package).is_dir(), package
    assert list((layer / "lipsync" / "__pycache__").glob("models.cpython-312.pyc"))
    assert not (layer / "boto3").exists()  # the Lambda runtime provides boto3


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_built_handler_imports_with_only_its_code_and_the_layer(build_dir: Path, function: str) -> None:
    code = build_dir / LOGICAL_IDS[function]
    assert (code / "app.py").exists()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{code}:{build_dir / 'CommonLayer' / 'python'}",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    # -S: no site-packages, so nothing from the dev venv can stand in for the layer.
    script = "import app, sys; assert callable(app.handler); print(sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-S", "-c", script], cwd=code, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "lipsync.config" in result.stdout
    assert (
        "boto3"
        not in subprocess.run(
            [sys.executable, "-S", "-c", "import app, sys; print(sorted(sys.modules))"],
            cwd=code,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )  # boto3 is imported lazily, on the paths that use it
