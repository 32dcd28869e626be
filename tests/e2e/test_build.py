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
    assert list((layer / "lipsync" / "syncso" / "__pycache__").glob("models.cpython-312.pyc"))
    assert not (layer / "boto3").exists()  # the Lambda runtime provides boto3


# What Lambda's python3.12 runtime itself provides in /var/runtime: the AWS SDK and its dependencies.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for /var/runtime: only the SDK, linked from this venv (nothing else it holds)."""
    import boto3

    site = Path(boto3.__file__).resolve().parents[1]
    runtime = tmp_path_factory.mktemp("runtime")
    for name in RUNTIME_PACKAGES:
        (runtime / name).symlink_to(site / name)
    return runtime


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_built_handler_imports_with_only_its_code_the_layer_and_the_runtime(
    build_dir: Path, runtime_dir: Path, function: str
) -> None:
    code = build_dir / LOGICAL_IDS[function]
    assert (code / "app.py").exists()
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": f"{runtime_dir}:{code}:{build_dir / 'CommonLayer' / 'python'}",
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
