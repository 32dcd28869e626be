"""template.yaml and the state machine definition agree with each other and with the code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = decode(str(ROOT / "template.yaml"))[0]
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
ASL_PATH = ROOT / "statemachine" / "job_lifecycle.asl.json"
ASL: dict[str, Any] = json.loads(ASL_PATH.read_text())
FUNCTIONS = {
    name: resource for name, resource in RESOURCES.items() if resource["Type"] == "AWS::Serverless::Function"
}


def test_every_asl_placeholder_has_a_substitution_and_none_is_unused() -> None:
    machine = RESOURCES["JobLifecycle"]["Properties"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", ASL_PATH.read_text()))
    assert placeholders == set(machine["DefinitionSubstitutions"])
    assert machine["DefinitionUri"] == "statemachine/job_lifecycle.asl.json"


def test_every_lambda_the_state_machine_calls_may_be_invoked_by_it() -> None:
    machine = RESOURCES["JobLifecycle"]["Properties"]
    invokable = {policy["LambdaInvokePolicy"]["FunctionName"]["Ref"] for policy in machine["Policies"]}
    substituted = {value["Fn::GetAtt"][0] for value in machine["DefinitionSubstitutions"].values()}
    assert substituted == invokable


def test_every_state_is_reachable_and_every_transition_exists() -> None:
    states = ASL["States"]
    targets = {ASL["StartAt"]}
    for state in states.values():
        targets |= {state[key] for key in ("Next", "Default") if key in state}
        targets |= {choice["Next"] for choice in state.get("Choices", [])}
        targets |= {catch["Next"] for catch in state.get("Catch", [])}
    assert targets == set(states)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_handler_path_exists(name: str) -> None:
    properties = FUNCTIONS[name]["Properties"]
    module, function = properties["Handler"].rsplit(".", 1)
    source = ROOT / properties["CodeUri"] / f"{module}.py"
    assert source.exists()
    assert re.search(rf"^def {function}\(", source.read_text(), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_environment_variable_a_handler_reads_is_set(name: str) -> None:
    """Each settings model's required env vars are set for the function that loads it."""
    from lipsync import config

    properties = FUNCTIONS[name]["Properties"]
    variables = set(TEMPLATE["Globals"]["Function"]["Environment"]["Variables"])
    variables |= set(properties.get("Environment", {}).get("Variables", {}))
    source = (ROOT / properties["CodeUri"] / "app.py").read_text()
    used = {cls for cls in dir(config) if cls.endswith("Settings") and f"{cls}." in source}
    used |= {"LifecycleTimings"} if "LifecycleTimings" in source else set()
    assert used, f"{name} loads no settings"
    for settings in used:
        model = getattr(config, settings)
        required = {field.validation_alias for field in model.model_fields.values() if field.is_required()}
        assert required <= variables, f"{name} misses {sorted(required - variables)} for {settings}"


def test_no_secret_is_passed_as_a_plain_environment_variable() -> None:
    for name, function in FUNCTIONS.items():
        for variable, value in function["Properties"].get("Environment", {}).get("Variables", {}).items():
            assert value != {"Ref": "SyncApiKey"}, f"{name}.{variable} carries the API key itself"
            assert value != {"Ref": "SyncWebhookSecret"}, f"{name}.{variable} carries the signing secret"
    for parameter in ("SyncApiKey", "SyncWebhookSecret", "SyncWebhookPreviousSecret"):
        assert TEMPLATE["Parameters"][parameter]["NoEcho"] is True


def test_bucket_notifications_cover_only_the_input_prefixes() -> None:
    rules = [
        rule["Value"]
        for config in RESOURCES["MediaBucket"]["Properties"]["NotificationConfiguration"][
            "QueueConfigurations"
        ]
        for rule in config["Filter"]["S3Key"]["Rules"]
    ]
    assert sorted(rules) == ["inputs/", "jobs/"]


def test_each_function_policy_names_specific_resources() -> None:
    """Least privilege: no wildcard actions or resources in any function policy."""
    for name, function in FUNCTIONS.items():
        for policy in function["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []):
                actions = (
                    statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
                )
                assert all("*" not in action for action in actions), name
                assert statement["Resource"] != "*", name
