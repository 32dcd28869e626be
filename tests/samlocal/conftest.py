"""`sam local` for real: Docker, the stand-in Lambda image, and the commands events/README.md gives.

Not in the default `pytest` run (pyproject's testpaths); `make sam-local` starts Docker and runs
these. Without a Docker daemon every test here fails with the reason: nothing is skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "events" / "README.md"
MARKER = "<!-- sam-local-commands"


def documented_commands() -> list[str]:
    """The lines of the fenced block after the marker in events/README.md."""
    text = DOC.read_text()
    start = text.index(MARKER)
    block = re.search(r"```bash\n(.*?)```", text[start:], re.DOTALL)
    assert block, f"no ```bash block after {MARKER} in {DOC}"
    return [line for line in block.group(1).splitlines() if line.strip()]


@dataclass(frozen=True)
class Shell:
    """The environment the block's setup lines leave (activate, exports), for the other lines."""

    env: dict[str, str]

    def run(self, line: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", line], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start(self, line: str, log: Path) -> subprocess.Popen[bytes]:
        """A line that ends in `&`: started in the background, in its own process group."""
        assert line.endswith("&"), line
        with log.open("wb") as out:
            return subprocess.Popen(
                ["bash", "-c", f"exec {line[:-1].strip()}"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


@pytest.fixture(scope="session")
def docker() -> None:
    answer = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if answer.returncode != 0:
        pytest.fail(f"these tests need a running Docker daemon (make sam-local starts one): {answer.stderr}")


@pytest.fixture(scope="session")
def shell(docker: None) -> Shell:
    """Run the block's `.`/`export` lines once, in a clean environment: credentials and region come
    only from the doc's exports, as they would for a user."""
    base = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "SAM_", "MOTO_", "VIRTUAL_ENV"))
    }
    base["SAM_CLI_TELEMETRY"] = "0"
    setup = [line for line in documented_commands() if line.startswith((". ", "export "))]
    dump = subprocess.run(
        ["bash", "-c", "set -e\n" + "\n".join(setup) + "\nenv -0"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        check=True,
        timeout=900,  # a cold image build
    )
    env = dict(item.split("=", 1) for item in dump.stdout.split("\0") if "=" in item)
    assert env.get("LAMBDA_IMAGE"), dump.stderr
    return Shell(env)


@pytest.fixture(scope="session")
def commands() -> list[str]:
    return documented_commands()


def invocation(commands: list[str], function: str, event: str) -> str:
    wanted = f"sam local invoke {function} "
    lines = [c for c in commands if c.startswith(wanted) and shlex.split(c)[-1] == f"events/{event}"]
    assert len(lines) == 1, f"events/README.md has {len(lines)} commands for {function} with {event}"
    return lines[0]


@pytest.fixture(scope="session")
def cleanup_containers(shell: Shell) -> Iterator[None]:
    """sam local removes its containers; make sure none of our image's outlives the run."""
    yield
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"ancestor={shell.env['LAMBDA_IMAGE']}"],
        capture_output=True,
        text=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
