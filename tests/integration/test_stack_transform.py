"""The one-machine stack provisions what the SAM transform produces from template.yaml, nothing else.

`sam deploy` hands CloudFormation the output of `aws-sam-translator`; local/stack/transform.py
runs the same translator. These checks compare moto's resources with that output: every
resource is created (or skipped for a stated reason), each role carries exactly the
generated policies, and the permissions, mappings, rules and API methods are the generated ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.stack import OneMachineStack
from local.stack.provision import NOT_NEEDED_LOCALLY
from local.stack.template import ACCOUNT_ID, REGION, Resolver, load_template, resolve_parameters
from local.stack.transform import translate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack() -> Iterator[OneMachineStack]:
    with OneMachineStack(
        ROOT / "template.yaml", check_handlers=False, stack_name="transform-check"
    ) as running:
        yield running


@pytest.fixture(scope="module")
def translated(stack: OneMachineStack) -> tuple[dict[str, Any], Resolver]:
    """template.yaml translated afresh, and a resolver that knows the ids moto gave each resource."""
    template = load_template(ROOT / "template.yaml")
    parameters = resolve_parameters(template, {k: str(v) for k, v in stack.parameters.items()})
    pseudo = {
        "AWS::StackName": stack.stack_name,
        "AWS::StackId": stack.stack_id,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT_ID,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    cloudformation, _ = translate(template, {**parameters, **pseudo})
    resolver = Resolver(cloudformation, parameters, pseudo, set(cloudformation["Resources"]))
    for name, created in stack.provisioned.resources.items():
        resolver.refs[name] = created["Ref"]
        resolver.attributes[name] = {k: v for k, v in created.items() if k not in ("Type", "Ref")}
    return cloudformation, resolver


def _of_type(cloudformation: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource.get("Properties") or {}
        for name, resource in cloudformation["Resources"].items()
        if resource["Type"] == kind
    }


def test_every_translated_resource_is_provisioned_or_skipped_for_a_reason(
    stack: OneMachineStack, translated: tuple[dict[str, Any], Resolver]
) -> None:
    cloudformation, resolver = translated
    assert cloudformation == stack.provisioned.template  # the stack provisioned this very translation
    for name, resource in cloudformation["Resources"].items():
        condition = resource.get("Condition")
        if name in stack.provisioned.skipped:
            reason = stack.provisioned.skipped[name]
            expected = (
                f"Condition {condition} is false"
                if condition and not resolver.condition(condition)
                else NOT_NEEDED_LOCALLY[resource["Type"]]
            )
            assert reason == expected, name
        else:
            assert stack.provisioned.resources[name]["Type"] == resource["Type"], name
    assert set(stack.provisioned.resources) | set(stack.provisioned.skipped) == set(
        cloudformation["Resources"]
    )
    # What the transform makes of the SAM resources is really there (no hand-written SAM left).
    kinds = {r["Type"] for r in stack.provisioned.resources.values()}
    assert not {k for k in kinds if k.startswith("AWS::Serverless::")}
    assert {"AWS::IAM::Role", "AWS::Lambda::Permission", "AWS::Lambda::EventSourceMapping"} <= kinds
    assert {"AWS::Events::Rule", "AWS::ApiGateway::RestApi", "AWS::ApiGateway::Stage"} <= kinds


def test_each_role_carries_exactly_the_generated_policies(
    stack: OneMachineStack, translated: tuple[dict[str, Any], Resolver]
) -> None:
    cloudformation, resolver = translated
    iam = stack.client("iam")
    roles = _of_type(cloudformation, "AWS::IAM::Role")
    assert roles
    for name, properties in roles.items():
        expected = resolver.resolve(properties)
        role_name = stack.provisioned.resources[name]["Ref"]
        role = iam.get_role(RoleName=role_name)["Role"]
        assert role["AssumeRolePolicyDocument"] == expected["AssumeRolePolicyDocument"], name
        inline = {
            policy: iam.get_role_policy(RoleName=role_name, PolicyName=policy)["PolicyDocument"]["Statement"]
            for policy in iam.list_role_policies(RoleName=role_name)["PolicyNames"]
        }
        assert inline == {
            p["PolicyName"]: p["PolicyDocument"]["Statement"] for p in expected.get("Policies", [])
        }, name
        attached = iam.list_attached_role_policies(RoleName=role_name)["AttachedPolicies"]
        assert sorted(p["PolicyArn"] for p in attached) == sorted(expected.get("ManagedPolicyArns", [])), name
    for name, properties in _of_type(cloudformation, "AWS::Lambda::Function").items():
        configured = stack.client("lambda").get_function(FunctionName=stack.workers[name].spec.name)
        assert configured["Configuration"]["Role"] == resolver.resolve(properties["Role"]), name
        assert configured["Configuration"]["Architectures"] == resolver.resolve(properties["Architectures"])
    for name, properties in _of_type(cloudformation, "AWS::StepFunctions::StateMachine").items():
        machine = stack.client("stepfunctions").describe_state_machine(
            stateMachineArn=stack.provisioned.resources[name]["Ref"]
        )
        assert machine["roleArn"] == resolver.resolve(properties["RoleArn"]), name


def test_invoke_permissions_are_the_generated_ones(
    stack: OneMachineStack, translated: tuple[dict[str, Any], Resolver]
) -> None:
    cloudformation, resolver = translated
    expected: dict[str, set[tuple[str, str, str | None]]] = {}
    for properties in _of_type(cloudformation, "AWS::Lambda::Permission").values():
        resolved = resolver.resolve(properties)
        expected.setdefault(resolved["FunctionName"], set()).add(
            (resolved["Action"], resolved["Principal"], resolved.get("SourceArn"))
        )
    assert expected
    for spec in stack.provisioned.functions.values():
        statements: list[dict[str, Any]] = []
        if spec.name in expected:
            policy = json.loads(stack.client("lambda").get_policy(FunctionName=spec.name)["Policy"])
            statements = policy["Statement"]
        granted = {
            (
                s["Action"],
                s["Principal"]["Service"],
                (s.get("Condition") or {}).get("ArnLike", {}).get("AWS:SourceArn"),
            )
            for s in statements
        }
        assert granted == expected.get(spec.name, set()), spec.logical_id


def test_event_sources_and_routes_are_the_generated_ones(
    stack: OneMachineStack, translated: tuple[dict[str, Any], Resolver]
) -> None:
    cloudformation, resolver = translated
    mappings = {
        (m["EventSourceArn"], m["FunctionArn"], m["BatchSize"])
        for m in stack.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    }
    sources = set()
    for properties in _of_type(cloudformation, "AWS::Lambda::EventSourceMapping").values():
        resolved = resolver.resolve(properties)
        function = next(f for f in stack.provisioned.functions.values() if f.name == resolved["FunctionName"])
        assert (resolved["EventSourceArn"], function.arn, resolved["BatchSize"]) in mappings
        sources.add(
            (
                function.logical_id,
                resolved["EventSourceArn"],
                resolved["BatchSize"],
                resolved.get("MaximumBatchingWindowInSeconds", 0),
                (resolved.get("ScalingConfig") or {}).get("MaximumConcurrency"),
                "ReportBatchItemFailures" in resolved.get("FunctionResponseTypes", []),
            )
        )
    assert sources == {
        (
            s.function,
            s.queue_arn,
            s.batch_size,
            s.maximum_batching_window,
            s.maximum_concurrency,
            s.report_batch_item_failures,
        )
        for s in stack.provisioned.sqs_sources
    }
    assert {p.source.queue_arn for p in stack.pollers} == {s.queue_arn for s in stack.provisioned.sqs_sources}

    events = stack.client("events")
    emulated = {(s.event, s.function) for s in stack.provisioned.schedules} | {
        (r.event, r.function) for r in stack.provisioned.rules
    }
    generated = set()
    for name, properties in _of_type(cloudformation, "AWS::Events::Rule").items():
        resolved = resolver.resolve(properties)
        rule = events.describe_rule(Name=stack.provisioned.resources[name]["Ref"])
        assert rule.get("ScheduleExpression") == resolved.get("ScheduleExpression"), name
        if "EventPattern" in resolved:
            assert json.loads(rule["EventPattern"]) == resolved["EventPattern"], name
        targets = events.list_targets_by_rule(Rule=rule["Name"])["Targets"]
        assert [(t["Id"], t["Arn"], t.get("Input")) for t in targets] == [
            (t["Id"], t["Arn"], t.get("Input")) for t in resolved["Targets"]
        ]
        for target in resolved["Targets"]:
            function = next(f for f in stack.provisioned.functions.values() if f.arn == target["Arn"])
            generated.add((name, function.logical_id))
    assert emulated == generated

    apigateway = stack.client("apigateway")
    routes = set()
    for name, properties in _of_type(cloudformation, "AWS::ApiGateway::RestApi").items():
        body = resolver.resolve(properties["Body"])
        api_id = stack.provisioned.resources[name]["Ref"]
        resources = {r["path"]: r for r in apigateway.get_resources(restApiId=api_id)["items"]}
        for path, operations in body["paths"].items():
            for method, operation in operations.items():
                iam = any("AWS_IAM" in requirement for requirement in operation.get("security", []))
                configured = apigateway.get_method(
                    restApiId=api_id, resourceId=resources[path]["id"], httpMethod=method.upper()
                )
                assert configured["authorizationType"] == ("AWS_IAM" if iam else "NONE")
                uri = operation["x-amazon-apigateway-integration"]["uri"]
                assert configured["methodIntegration"]["uri"] == uri
                function = next(f for f in stack.provisioned.functions.values() if f.arn in uri)
                routes.add((name, method.upper(), path, function.logical_id, iam))
    assert routes == {(r.api, r.method, r.path, r.function, r.iam_auth) for r in stack.provisioned.routes}
