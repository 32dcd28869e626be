"""The README's Deploy section documents every template parameter."""

from __future__ import annotations

import re
from pathlib import Path

from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]


def deploy_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Deploy\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def documented_parameters() -> set[str]:
    """Every `Name` in the first column of the parameter table (rows may group several)."""
    section = deploy_section()
    table = section[section.index("| parameter | default | meaning |") :].split("\n\n", 1)[0]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        first_cell = row.split("|")[1]
        names |= set(re.findall(r"`([A-Za-z0-9]+)`", first_cell))
    return names


def test_every_template_parameter_is_in_the_readme_table_and_no_other() -> None:
    parameters = set(decode(str(ROOT / "template.yaml"))[0]["Parameters"])
    documented = documented_parameters()
    assert not parameters - documented, (
        f"missing from README's Deploy table: {sorted(parameters - documented)}"
    )
    assert not documented - parameters, f"not template parameters: {sorted(documented - parameters)}"


def test_every_stack_output_the_readme_names_exists() -> None:
    outputs = set(decode(str(ROOT / "template.yaml"))[0]["Outputs"])
    section = deploy_section()
    table = section[section.index("| output | what |") :].split("\n\n", 1)[0]
    named = {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}
    assert named
    assert named <= outputs, sorted(named - outputs)
    assert {"MediaBucketName", "WebhookUrlPrefix"} <= named


def test_the_tuning_table_lists_every_key_with_its_default() -> None:
    from lipsync.config import TUNABLES

    section = deploy_section()
    table = section[section.index("| key | default | meaning |") :].split("\n\n", 1)[0]
    rows = {}
    for row in table.splitlines()[2:]:
        key, default = (cell.strip() for cell in row.split("|")[1:3])
        rows[key.strip("`")] = default.strip("`")
    assert set(rows) == set(TUNABLES)
    for key, (_, default) in TUNABLES.items():
        assert rows[key] == (default or "empty"), key
