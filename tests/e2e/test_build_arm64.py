"""`Architecture=arm64`: sam build puts aarch64 wheels in the layer, and no x86-64 binary."""

from __future__ import annotations

import os
import struct
import subprocess
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EM_X86_64 = 62
EM_AARCH64 = 183


def elf_machine(path: Path) -> int | None:
    """The ELF header's e_machine, or None for a file that is not ELF."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    byte_order = "<" if header[5] == 1 else ">"
    machine: int = struct.unpack(f"{byte_order}H", header[18:20])[0]
    return machine


def test_the_arm64_layer_holds_aarch64_wheels_only(tmp_path: Path) -> None:
    build_dir = tmp_path / "build"
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "sam"),
            "build",
            "CommonLayer",
            "--template-file",
            str(ROOT / "template.yaml"),
            "--build-dir",
            str(build_dir),
            "--no-cached",
            "--parameter-overrides",
            "Architecture=arm64",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not listed in CompatibleArchitectures" not in result.stdout + result.stderr

    layer = build_dir / "CommonLayer" / "python"
    machines = Counter(
        (path.relative_to(layer).parts[0], elf_machine(path))
        for path in layer.rglob("*.so*")
        if path.is_file() and elf_machine(path) is not None
    )
    assert ("pydantic_core", EM_AARCH64) in machines, machines
    assert {machine for _, machine in machines} == {EM_AARCH64}, machines
    assert list((layer / "pydantic_core").glob("_pydantic_core.cpython-312-aarch64-linux-gnu.so"))
