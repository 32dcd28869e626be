"""The SAM template as CloudFormation: what `aws-sam-translator` (the transform behind `sam deploy`) makes.

`sam deploy` uploads local code and definitions to S3 and hands CloudFormation a template
whose `CodeUri`/`ContentUri`/`DefinitionUri` are S3 URIs; the `AWS::Serverless-2016-10-31`
transform then expands Globals, policy templates, implicit roles, event sources and the
API's OpenAPI body. Here each local path becomes a placeholder S3 URI before the
transform and is mapped back afterwards (`Artifacts`), so the one-machine stack runs
the code from the template's own directories (sources, or `sam build` output).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from .template import REGION, TemplateError

ARTIFACT_BUCKET = "one-machine-stack-local-artifacts"

# SAM resource type -> properties that may name a local file or directory.
_LOCAL_URIS = {
    "AWS::Serverless::Function": ("CodeUri",),
    "AWS::Serverless::LayerVersion": ("ContentUri",),
    "AWS::Serverless::StateMachine": ("DefinitionUri",),
    "AWS::Serverless::Api": ("DefinitionUri",),
    "AWS::Serverless::HttpApi": ("DefinitionUri",),
}

# What `sam validate` would look up in IAM (ListPolicies, Scope=AWS) for `Policies: [<name>]`:
# the AWS managed policies a template may name. Offline, a fixed map.
MANAGED_POLICIES = {
    name: f"arn:aws:iam::aws:policy/{path}{name}"
    for path, name in (
        ("service-role/", "AWSLambdaBasicExecutionRole"),
        ("service-role/", "AWSLambdaSQSQueueExecutionRole"),
        ("service-role/", "AWSLambdaVPCAccessExecutionRole"),
        ("service-role/", "AWSLambdaRole"),
        ("", "AWSXrayWriteOnlyAccess"),
        ("", "AWSLambdaExecute"),
        ("", "AmazonS3ReadOnlyAccess"),
        ("", "AmazonDynamoDBReadOnlyAccess"),
        ("", "CloudWatchLambdaInsightsExecutionRolePolicy"),
    )
}


@dataclass
class Artifacts:
    """Placeholder S3 locations -> the local paths they stand for (relative to the template)."""

    paths: dict[str, str] = field(default_factory=dict)  # S3 key -> local path as written

    def placeholder(self, logical_id: str, prop: str, local: str) -> str:
        key = f"{logical_id}/{prop}"
        self.paths[key] = local
        return f"s3://{ARTIFACT_BUCKET}/{key}"

    def local_path(self, location: Any, template_dir: Path, where: str) -> Path:
        """The local path behind an S3 location ({S3Bucket,S3Key} or {Bucket,Key})."""
        if not isinstance(location, dict):
            raise TemplateError(f"{where}: expected an S3 location, got {location!r}")
        bucket = location.get("S3Bucket", location.get("Bucket"))
        key = location.get("S3Key", location.get("Key"))
        if bucket != ARTIFACT_BUCKET or key not in self.paths:
            raise TemplateError(
                f"{where}: s3://{bucket}/{key} is not a local path of the template "
                "(the one-machine stack runs local code and definitions only)"
            )
        return (template_dir / self.paths[key]).resolve()


def translate(
    sam_template: dict[str, Any], parameter_values: dict[str, Any]
) -> tuple[dict[str, Any], Artifacts]:
    """The CloudFormation template the SAM transform makes of `sam_template`.

    `parameter_values`: the stack's parameters and pseudo parameters, as CloudFormation
    passes them to the transform. A template without the SAM transform is returned as is.
    """
    template = copy.deepcopy(sam_template)
    artifacts = Artifacts()
    transforms = template.get("Transform")
    transforms = [transforms] if isinstance(transforms, str) else list(transforms or [])
    if not any(str(t).startswith("AWS::Serverless") for t in transforms):
        if any(str(r.get("Type", "")).startswith("AWS::Serverless::") for r in _resources(template)):
            raise TemplateError("AWS::Serverless::* resources need `Transform: AWS::Serverless-2016-10-31`")
        return template, artifacts
    for logical_id, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") if isinstance(resource, dict) else None
        if not isinstance(properties, dict):
            continue
        for prop in _LOCAL_URIS.get(str(resource.get("Type")), ()):
            value = properties.get(prop)
            if isinstance(value, str) and not value.startswith("s3://"):
                properties[prop] = artifacts.placeholder(logical_id, prop, value)
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    try:
        translated: dict[str, Any] = translator.translate(
            template,
            parameter_values=dict(parameter_values),
            get_managed_policy_map=lambda: dict(MANAGED_POLICIES),
        )
    except InvalidDocumentException as error:
        causes = "; ".join(str(cause) for cause in error.causes)
        raise TemplateError(f"the SAM transform rejects the template: {causes}") from None
    return translated, artifacts


def _resources(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in (template.get("Resources") or {}).values() if isinstance(r, dict)]
