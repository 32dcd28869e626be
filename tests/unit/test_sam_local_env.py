"""The template works with `sam local` and stays right for AWS and for AWS emulators.

SAM applies `--env-vars` only to variables the template declares, so Globals declares
AWS_ENDPOINT_URL as `AWS::NoValue`: `sam local` sees a declared variable with a blank default
(which env.json overrides), and CloudFormation drops it, so a deployed function sees what its
platform gives (nothing at AWS; an emulator's own endpoint, which MiniStack injects only when the
variable is absent). A blank value, as `sam local` passes without env.json, is AWS itself
(proved here with botocore, no network).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from cfnlint.decode import decode

from local.stack import SAM_LOCAL_PORTS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE: dict[str, Any] = decode(str(ROOT / "template.yaml"))[0]
GLOBAL_VARIABLES: dict[str, Any] = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]
FUNCTIONS = {
    name: resource["Properties"]
    for name, resource in TEMPLATE["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}
# Lambda sets these itself; a template may not declare them (and must not need to).
RESERVED = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "_HANDLER",
}


@pytest.mark.parametrize("service", ["s3", "dynamodb", "sqs", "stepfunctions", "secretsmanager"])
def test_an_empty_aws_endpoint_url_is_the_aws_endpoint(monkeypatch: pytest.MonkeyPatch, service: str) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    unset = boto3.client(service, region_name="us-east-1").meta.endpoint_url  # type: ignore[call-overload]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "")
    empty = boto3.client(service, region_name="us-east-1").meta.endpoint_url  # type: ignore[call-overload]
    assert empty == unset
    assert empty.startswith("https://")
    assert empty.endswith(".amazonaws.com")
    # ... while a value is honoured (so the check above is not vacuous).
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://172.17.0.1:4566")
    pointed = boto3.client(service, region_name="us-east-1").meta.endpoint_url  # type: ignore[call-overload]
    assert pointed == "http://172.17.0.1:4566"


def test_globals_declare_aws_endpoint_url_for_sam_local_only() -> None:
    assert GLOBAL_VARIABLES["AWS_ENDPOINT_URL"] == {"Ref": "AWS::NoValue"}


def test_sam_local_applies_env_json_to_the_declared_endpoint() -> None:
    """SAM CLI's own resolution: blank without env.json, env.json's value with it."""
    from samcli.lib.providers.sam_function_provider import SamFunctionProvider
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider
    from samcli.local.lambdafn.env_vars import EnvironmentVariables

    stacks, _ = SamLocalStackProvider.get_stacks(str(ROOT / "template.yaml"))
    function = SamFunctionProvider(stacks).get("SubmitFunction")
    assert function is not None
    assert function.environment is not None
    declared = function.environment["Variables"]

    def resolved(overrides: dict[str, str]) -> dict[str, str]:
        return dict(EnvironmentVariables(variables=declared, override_values=overrides).resolve())

    assert resolved({})["AWS_ENDPOINT_URL"] == ""
    env = json.loads((ROOT / "events" / "env.json").read_text())["SubmitFunction"]
    assert resolved(env)["AWS_ENDPOINT_URL"] == env["AWS_ENDPOINT_URL"]
    assert "NOT_DECLARED" not in resolved({"NOT_DECLARED": "x"})  # why the template must declare it


def test_the_transform_leaves_the_endpoint_for_cloudformation_to_drop() -> None:
    """The SAM transform hands `AWS::NoValue` to every function; resolving it removes the variable
    (the one-machine stack's resolver does as CloudFormation does; `make deploy-test` proves it in
    a real `sam deploy`)."""
    from local.stack.template import Resolver
    from local.stack.transform import translate

    transformed, _ = translate(TEMPLATE, {"SyncApiKey": "k", "AWS::Region": "us-east-1"})
    functions = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    assert len(functions) == len(FUNCTIONS)
    resolver = Resolver(transformed, {}, {}, set())
    for function in functions:
        variables = function["Properties"]["Environment"]["Variables"]
        assert variables["AWS_ENDPOINT_URL"] == {"Ref": "AWS::NoValue"}
        kept = resolver.resolve({key: variables[key] for key in ("AWS_ENDPOINT_URL", "AWS_RETRY_MODE")})
        assert kept == {"AWS_RETRY_MODE": "standard"}


def test_no_reserved_variable_is_declared() -> None:
    assert not RESERVED & set(GLOBAL_VARIABLES)
    for name, properties in FUNCTIONS.items():
        declared = set(properties.get("Environment", {}).get("Variables", {}))
        assert not RESERVED & declared, f"{name} declares {sorted(RESERVED & declared)}"


def test_env_json_sets_only_declared_variables_at_the_bridge_address() -> None:
    """SAM silently drops variables the template does not declare: each one env.json sets must be."""
    env = json.loads((ROOT / "events" / "env.json").read_text())
    assert set(env) == set(FUNCTIONS)
    for name, variables in env.items():
        declared = set(GLOBAL_VARIABLES) | set(FUNCTIONS[name].get("Environment", {}).get("Variables", {}))
        assert set(variables) <= declared, f"{name}: {sorted(set(variables) - declared)} would be dropped"
        assert not RESERVED & set(variables)
        assert variables["AWS_ENDPOINT_URL"] == f"http://{SAM_LOCAL_PORTS.host}:{SAM_LOCAL_PORTS.aws}"
        assert "127.0.0.1" not in json.dumps(variables), f"{name}: a container cannot reach loopback"
