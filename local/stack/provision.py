"""Create a CloudFormation template's resources in moto, in dependency order.

The template is what the SAM transform produced (local/stack/transform.py): roles with
their generated policies, functions, permissions, event source mappings, rules, the
REST API's OpenAPI body, the state machine. Each resource type has one `_create_*`
method that makes the AWS API calls CloudFormation would make and records what `Ref`
and `Fn::GetAtt` return for it. What moto only stores (event source mappings, rules,
the API) is also handed to the stack's emulators as `SqsSource`/`ScheduleSource`/
`RuleSource`/`ApiRoute`. An unknown resource type is an error: a resource the local
stack silently skipped would make a wrong template pass its tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
import string
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError

from .template import ACCOUNT_ID, REGION, Resolver, TemplateError, creation_order
from .transform import Artifacts


@dataclass(frozen=True)
class FunctionSpec:
    """A function as its worker runs it: code, handler and the resolved environment."""

    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    code_dir: Path
    layer_dirs: tuple[Path, ...]
    environment: dict[str, str]
    reserved_concurrency: int | None = None  # ReservedConcurrentExecutions
    dead_letter_arn: str | None = None  # DeadLetterConfig.TargetArn: failed async invocations go there


@dataclass(frozen=True)
class ApiRoute:
    """One operation of a REST API's body: what the front door serves and which function answers."""

    api: str  # the AWS::ApiGateway::RestApi's logical id
    stage: str
    method: str  # upper case, or ANY
    path: str  # API Gateway resource path, e.g. /webhooks/sync/{jobId}
    function: str
    iam_auth: bool


@dataclass(frozen=True)
class SqsSource:
    """One AWS::Lambda::EventSourceMapping on an SQS queue: what the poller emulates."""

    function: str
    queue_arn: str
    queue_url: str
    batch_size: int
    report_batch_item_failures: bool
    maximum_concurrency: int | None
    enabled: bool
    maximum_batching_window: int = 0  # MaximumBatchingWindowInSeconds


@dataclass(frozen=True)
class ScheduleSource:
    """One Lambda target of an AWS::Events::Rule with a rate expression."""

    function: str
    event: str  # the rule's logical id
    rule_name: str
    rule_arn: str
    expression: str
    period_seconds: float
    input: Any  # the parsed Input, or None: Lambda gets EventBridge's scheduled event
    enabled: bool


@dataclass(frozen=True)
class RuleSource:
    """One Lambda target of an AWS::Events::Rule with an event pattern on the default bus."""

    function: str
    event: str  # the rule's logical id
    rule_name: str
    rule_arn: str
    pattern: dict[str, Any]
    input: Any  # the parsed Input (replaces the event), or None
    enabled: bool


@dataclass
class ProvisionedStack:
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)  # logical id -> Type, Ref, attributes
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[ApiRoute] = field(default_factory=list)
    sqs_sources: list[SqsSource] = field(default_factory=list)
    schedules: list[ScheduleSource] = field(default_factory=list)
    rules: list[RuleSource] = field(default_factory=list)
    api_stages: dict[str, str] = field(default_factory=dict)  # RestApi logical id -> stage name
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was recorded but not enforced
    template: dict[str, Any] = field(default_factory=dict)  # the CloudFormation that was provisioned
    skipped: dict[str, str] = field(default_factory=dict)  # logical id -> why it is not created


# Resource types of a translated template that the one-machine stack does not create, and why.
NOT_NEEDED_LOCALLY = {
    "AWS::ApiGateway::Account": "the account's CloudWatch role for API Gateway logs; no logs locally",
}

_RATE = re.compile(r"rate\((?P<value>\d+) (?P<unit>minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z0-9_.:-]+\}")
_INTEGRATION_URI = re.compile(
    r"^arn:[^:]+:apigateway:[^:]+:lambda:path/[^/]+/functions/(?P<arn>[^/]+)/invocations$"
)
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "x-amazon-apigateway-any-method"}


def _dummy_zip() -> bytes:
    """moto needs a code package; the worker runs the code from the local directory instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(
            "README.txt", "Code runs from the template's local CodeUri via the one-machine stack.\n"
        )
    return buffer.getvalue()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else _text(value).lower() == "true"


@cache
def _aws_managed_policy_data() -> dict[str, Any]:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    parsed: dict[str, Any] = json.loads(aws_managed_policies_data)
    return parsed


def ensure_aws_managed_policy(arn: str) -> None:
    """Make an AWS managed policy attachable in the in-process moto.

    moto loads AWS's managed policies only with `iam.load_aws_managed_policies`, a setting
    its config API does not take and that applies only when the IAM backend is created;
    CloudFormation attaches them by ARN. Add just the ones a template names.
    """
    from moto.iam.models import AWSManagedPolicy, iam_backends

    backend = iam_backends[ACCOUNT_ID]["global"]
    if arn in backend.managed_policies:
        return
    match = re.fullmatch(r"arn:aws:iam::aws:policy(?P<path>/(?:.*/)?)(?P<name>[^/]+)", arn)
    data = _aws_managed_policy_data().get(match["name"]) if match else None
    if match is None or data is None or data.get("Path") != match["path"]:
        raise TemplateError(f"managed policy {arn} is not an AWS managed policy moto knows")
    policy = AWSManagedPolicy.from_data(match["name"], ACCOUNT_ID, "global", data)
    backend.aws_managed_policies.append(policy)
    backend.managed_policies[policy.arn] = policy


class Provisioner:
    def __init__(
        self,
        template: dict[str, Any],
        artifacts: Artifacts,
        template_dir: Path,
        resolver: Resolver,
        stack_name: str,
        client: Callable[[str], Any],  # boto3 client factory (clients are untyped here)
        check_handlers: bool = True,
    ) -> None:
        self.template = template
        self.artifacts = artifacts
        self.template_dir = template_dir
        self.resolver = resolver
        self.stack_name = stack_name
        self.client = client
        self.check_handlers = check_handlers
        self.result = ProvisionedStack(template=template)
        self._layers: dict[str, Path] = {}  # layer version ARN -> local directory
        self._bodies: dict[str, dict[str, Any]] = {}  # RestApi logical id -> resolved body
        self._mappings: dict[SqsSource, str] = {}  # -> the EventSourceMapping's logical id
        self._creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::IAM::Role": self._create_role,
            "AWS::Lambda::LayerVersion": self._create_layer,
            "AWS::Lambda::Function": self._create_function,
            "AWS::Lambda::Permission": self._create_permission,
            "AWS::Lambda::EventSourceMapping": self._create_event_source_mapping,
            "AWS::Events::Rule": self._create_rule,
            "AWS::ApiGateway::RestApi": self._create_rest_api,
            "AWS::ApiGateway::Deployment": self._create_deployment,
            "AWS::ApiGateway::Stage": self._create_stage,
            "AWS::StepFunctions::StateMachine": self._create_state_machine,
            "AWS::SecretsManager::Secret": self._create_secret,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::SQS::QueuePolicy": self._create_queue_policy,
            "AWS::SNS::Topic": self._create_topic,
            "AWS::SNS::Subscription": self._create_subscription,
            "AWS::SNS::TopicPolicy": self._create_topic_policy,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::S3::BucketPolicy": self._create_bucket_policy,
            "AWS::CloudWatch::Alarm": self._create_alarm,
            "AWS::CloudWatch::Dashboard": self._create_dashboard,
            "AWS::Logs::LogGroup": self._create_log_group,
        }

    # ------------------------------------------------------------------ driver
    def run(self) -> ProvisionedStack:
        resources: dict[str, Any] = self.template.get("Resources") or {}
        for name, resource in resources.items():  # fail before creating anything
            kind = resource.get("Type", "")
            if kind not in self._creators and kind not in NOT_NEEDED_LOCALLY:
                raise TemplateError(
                    f"{name}: resource type {kind!r} is not supported by the one-machine stack"
                )
        for name in creation_order(resources):
            resource = resources[name]
            kind = resource.get("Type", "")
            condition = resource.get("Condition")
            if condition is not None and not self.resolver.condition(condition):
                self.result.skipped[name] = f"Condition {condition} is false"
                continue
            if kind in NOT_NEEDED_LOCALLY:
                self.result.skipped[name] = NOT_NEEDED_LOCALLY[kind]
                continue
            try:
                self._creators[kind](name, resource.get("Properties") or {})
            except (TemplateError, BotoCoreError, ClientError) as error:
                raise TemplateError(f"{name} ({kind}): {error}") from error
            self.result.resources[name] = {
                "Type": kind,
                "Ref": self.resolver.refs.get(name),
                **self.resolver.attributes.get(name, {}),
            }
        # The template's order (the stack's state names the first mapping's queue the submit queue).
        order = {name: index for index, name in enumerate(resources)}
        self.result.sqs_sources.sort(key=lambda source: order[self._mappings[source]])
        for api, body in self._bodies.items():
            try:
                self._add_routes(api, body)
            except TemplateError as error:
                raise TemplateError(f"{api} (AWS::ApiGateway::RestApi): {error}") from error
        for name, output in (self.template.get("Outputs") or {}).items():
            if "Condition" in output and not self.resolver.condition(output["Condition"]):
                continue
            try:
                self.result.outputs[name] = self.resolver.resolve(output["Value"])
            except TemplateError as error:
                raise TemplateError(f"Outputs.{name}: {error}") from None
        return self.result

    def _set(self, name: str, ref: Any, **attributes: Any) -> None:
        self.resolver.refs[name] = ref
        self.resolver.attributes[name] = attributes

    def _physical_name(self, name: str, limit: int = 64) -> str:
        return f"{self.stack_name}-{name}"[:limit]

    def _function_by(self, key: str, value: Any, where: str) -> str:
        """The logical id of this stack's function whose name or ARN is `value`."""
        for logical_id, spec in self.result.functions.items():
            if value in (spec.name, spec.arn) or (key == "arn" and str(value).startswith(spec.arn + ":")):
                return logical_id
        raise TemplateError(f"{where}: {value!r} is not a function of this stack")

    # ------------------------------------------------------------------ IAM
    def _create_role(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        role_name = props.get("RoleName") or self._physical_name(name)
        iam = self.client("iam")
        kwargs: dict[str, Any] = {
            "RoleName": role_name,
            "AssumeRolePolicyDocument": json.dumps(props["AssumeRolePolicyDocument"]),
            "Path": props.get("Path", "/"),
        }
        if props.get("Tags"):
            kwargs["Tags"] = props["Tags"]
        if "PermissionsBoundary" in props:
            kwargs["PermissionsBoundary"] = props["PermissionsBoundary"]
        role = iam.create_role(**kwargs)["Role"]
        for policy in props.get("Policies") or []:
            iam.put_role_policy(
                RoleName=role_name,
                PolicyName=policy["PolicyName"],
                # IAM defaults a missing Version to 2008-10-17; moto rejects documents without one.
                PolicyDocument=json.dumps(_with_version(policy["PolicyDocument"])),
            )
        for arn in props.get("ManagedPolicyArns") or []:
            if ":iam::aws:policy/" in arn:
                ensure_aws_managed_policy(arn)
            iam.attach_role_policy(RoleName=role_name, PolicyArn=arn)
        self._set(name, role_name, Arn=role["Arn"], RoleId=role["RoleId"])

    # ------------------------------------------------------------------ Lambda
    def _create_layer(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        path = self.artifacts.local_path(props.get("Content"), self.template_dir, "Content")
        if not path.is_dir():
            raise TemplateError(f"the layer's ContentUri is not a directory ({path})")
        kwargs: dict[str, Any] = {
            "LayerName": props.get("LayerName") or self._physical_name(name, 140),
            "Content": {"ZipFile": _dummy_zip()},
        }
        for key in ("Description", "CompatibleRuntimes", "CompatibleArchitectures", "LicenseInfo"):
            if key in props:
                kwargs[key] = props[key]
        arn = str(self.client("lambda").publish_layer_version(**kwargs)["LayerVersionArn"])
        # `sam build` output keeps packages under python/; the source layout has them at the top.
        self._layers[arn] = path / "python" if (path / "python").is_dir() else path
        self._set(name, arn)

    def _create_function(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        if props.get("PackageType", "Zip") != "Zip" or "ZipFile" in (props.get("Code") or {}):
            raise TemplateError("only Zip functions with a local CodeUri are supported")
        runtime = str(props.get("Runtime", ""))
        if not runtime.startswith("python"):
            raise TemplateError(f"Runtime {runtime!r}: the workers run Python handlers only")
        code_dir = self.artifacts.local_path(props.get("Code"), self.template_dir, "Code")
        handler = str(props.get("Handler", ""))
        self._check_handler(code_dir, handler)
        layers = [str(layer) for layer in props.get("Layers", [])]
        unknown = [layer for layer in layers if layer not in self._layers]
        if unknown:
            raise TemplateError(f"layers {unknown} are not layers of this template (only local layers run)")
        environment = {
            k: _text(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()
        }
        function_name = props.get("FunctionName") or self._physical_name(name)
        timeout, memory = int(props.get("Timeout", 3)), int(props.get("MemorySize", 128))
        kwargs: dict[str, Any] = {
            "FunctionName": function_name,
            "Runtime": runtime,
            "Role": props["Role"],
            "Handler": handler,
            "Code": {"ZipFile": _dummy_zip()},
            "Timeout": timeout,
            "MemorySize": memory,
            "Environment": {"Variables": environment},
            "Description": str(props.get("Description", "")),
            "Layers": layers,
        }
        if "Architectures" in props:
            kwargs["Architectures"] = props["Architectures"]
        if "TracingConfig" in props:
            kwargs["TracingConfig"] = props["TracingConfig"]
        if props.get("Tags"):
            kwargs["Tags"] = {t["Key"]: t["Value"] for t in props["Tags"]}
        arn = self.client("lambda").create_function(**kwargs)["FunctionArn"]
        reserved = props.get("ReservedConcurrentExecutions")
        if reserved is not None:
            reserved = int(reserved)
            self.client("lambda").put_function_concurrency(
                FunctionName=function_name, ReservedConcurrentExecutions=reserved
            )
        self.result.functions[name] = FunctionSpec(
            logical_id=name,
            name=function_name,
            arn=arn,
            handler=handler,
            runtime=runtime,
            timeout=timeout,
            memory_size=memory,
            code_dir=code_dir,
            layer_dirs=tuple(self._layers[layer] for layer in layers),
            environment=environment,
            reserved_concurrency=reserved,
            dead_letter_arn=(props.get("DeadLetterConfig") or {}).get("TargetArn"),
        )
        self._set(name, function_name, Arn=arn)

    def _check_handler(self, code_dir: Path, handler: str) -> None:
        module, _, function = handler.rpartition(".")
        if not module or not function:
            raise TemplateError(f"Handler {handler!r} must look like module.function")
        if not self.check_handlers:
            return
        if not code_dir.is_dir():
            raise TemplateError(f"CodeUri {code_dir} is not a directory")
        module_path = code_dir / module.replace(".", "/")
        if not (module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file()):
            raise TemplateError(
                f"Handler {handler!r}: no module {module_path.relative_to(code_dir)}.py in {code_dir}"
            )

    def _create_permission(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        function = self._function_by("name", props["FunctionName"], "FunctionName")
        kwargs: dict[str, Any] = {
            "FunctionName": self.result.functions[function].name,
            "StatementId": name[:100],
            "Action": props["Action"],
            "Principal": props["Principal"],
        }
        for key in ("SourceArn", "SourceAccount", "EventSourceToken", "PrincipalOrgID"):
            if key in props:
                kwargs[key] = props[key]
        self.client("lambda").add_permission(**kwargs)
        self._set(name, name)

    def _create_event_source_mapping(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        where = "EventSourceMapping"
        source_arn = str(props.get("EventSourceArn", ""))
        if not source_arn.startswith("arn:aws:sqs:"):
            raise TemplateError(f"{where}: only SQS event sources are emulated, not {source_arn!r}")
        function = self._function_by("name", props["FunctionName"], "FunctionName")
        queue_name = source_arn.rsplit(":", 1)[-1]
        queue_url = self.client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"]
        batch_size = int(props.get("BatchSize", 10))
        window = int(props.get("MaximumBatchingWindowInSeconds", 0))
        concurrency = (props.get("ScalingConfig") or {}).get("MaximumConcurrency")
        # The checks Lambda's CreateEventSourceMapping makes, so a template AWS rejects fails here too.
        if not 0 <= window <= 300:
            raise TemplateError(f"{where}: MaximumBatchingWindowInSeconds must be 0..300")
        if queue_name.endswith(".fifo") and (batch_size > 10 or window):
            raise TemplateError(f"{where}: a FIFO queue allows BatchSize <= 10 and no batching window")
        if not 1 <= batch_size <= 10000 or (batch_size > 10 and window == 0):
            raise TemplateError(
                f"{where}: BatchSize must be 1..10 (up to 10000 with MaximumBatchingWindowInSeconds > 0)"
            )
        if concurrency is not None and not 2 <= int(concurrency) <= 1000:
            raise TemplateError(f"{where}: ScalingConfig.MaximumConcurrency must be 2..1000")
        response_types = list(props.get("FunctionResponseTypes") or [])
        enabled = _flag(props.get("Enabled"), True)
        # Held disabled in moto: moto would otherwise run the function inside SendMessage,
        # without partial batch failures; the stack's poller consumes the queue instead.
        mapping = self.client("lambda").create_event_source_mapping(
            EventSourceArn=source_arn,
            FunctionName=self.result.functions[function].arn,
            BatchSize=batch_size,
            MaximumBatchingWindowInSeconds=window,
            FunctionResponseTypes=response_types,
            Enabled=False,
        )
        source = SqsSource(
            function=function,
            queue_arn=source_arn,
            queue_url=queue_url,
            batch_size=batch_size,
            report_batch_item_failures="ReportBatchItemFailures" in response_types,
            maximum_concurrency=int(concurrency) if concurrency is not None else None,
            enabled=enabled,
            maximum_batching_window=window,
        )
        self.result.sqs_sources.append(source)
        self._mappings[source] = name
        self._set(name, mapping["UUID"], Id=mapping["UUID"])

    # ------------------------------------------------------------------ EventBridge
    def _create_rule(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        supported = {
            "Name",
            "Description",
            "ScheduleExpression",
            "EventPattern",
            "State",
            "Targets",
            "EventBusName",
        }
        for key in sorted(set(props) - supported):
            raise TemplateError(f"rule property {key} is not supported by the one-machine stack")
        if str(props.get("EventBusName", "default")) not in (
            "default",
            f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/default",
        ):
            raise TemplateError("only the default event bus is emulated")
        expression, pattern = props.get("ScheduleExpression"), props.get("EventPattern")
        if (expression is None) == (pattern is None):
            raise TemplateError("a rule needs exactly one of ScheduleExpression and EventPattern")
        period = None
        if expression is not None:
            period = _rate_seconds(str(expression))
            if period is None:
                raise TemplateError(
                    f"ScheduleExpression {expression!r}: only rate(N minute[s]|hour[s]|day[s]) is emulated "
                    "(EventBridge has no seconds; 1 takes the singular unit)"
                )
        elif not isinstance(pattern, dict) or not pattern:
            raise TemplateError("EventPattern must be a non-empty event pattern")
        state = str(props.get("State", "ENABLED"))
        rule_name = str(props.get("Name") or self._physical_name(name))
        events = self.client("events")
        rule: dict[str, Any] = {
            "Name": rule_name,
            "State": state,
            "Description": str(props.get("Description", "")),
        }
        if expression is not None:
            rule["ScheduleExpression"] = expression
        else:
            rule["EventPattern"] = json.dumps(pattern)  # moto validates it as EventBridge would
        arn = str(events.put_rule(**rule)["RuleArn"])
        targets = props.get("Targets") or []
        for target in targets:
            unsupported = sorted(set(target) - {"Id", "Arn", "Input", "RetryPolicy", "DeadLetterConfig"})
            if unsupported:
                raise TemplateError(f"target {target.get('Id')}: {unsupported} are not supported")
            for key in ("RetryPolicy", "DeadLetterConfig"):
                if key in target:
                    self.result.notes.append(
                        f"{name}: target {key} recorded, not emulated (async retries: 2)"
                    )
            parsed_input = None
            if "Input" in target:
                try:
                    parsed_input = json.loads(str(target["Input"]))
                except ValueError as error:
                    raise TemplateError(
                        f"target {target['Id']}: Input must be a JSON text ({error})"
                    ) from None
            function = self._function_by("arn", target["Arn"], f"target {target['Id']}")
            enabled = state == "ENABLED"
            if period is not None:
                self.result.schedules.append(
                    ScheduleSource(
                        function, name, rule_name, arn, str(expression), period, parsed_input, enabled
                    )
                )
            else:
                rule_pattern: dict[str, Any] = dict(pattern or {})
                self.result.rules.append(
                    RuleSource(function, name, rule_name, arn, rule_pattern, parsed_input, enabled)
                )
        if targets:
            events.put_targets(
                Rule=rule_name,
                Targets=[
                    {
                        k: v
                        for k, v in t.items()
                        if k in ("Id", "Arn", "Input", "RetryPolicy", "DeadLetterConfig")
                    }
                    for t in targets
                ],
            )
        if pattern is not None and "aws.states" not in (pattern.get("source") or []):
            self.result.notes.append(
                f"{name}: rule {rule_name} provisioned; only Step Functions execution status changes "
                "are emitted locally"
            )
        self._set(name, rule_name, Arn=arn)

    # ------------------------------------------------------------------ API Gateway
    def _create_rest_api(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        body = props.get("Body")
        if body is None and "BodyS3Location" in props:
            path = self.artifacts.local_path(props["BodyS3Location"], self.template_dir, "DefinitionUri")
            body = yaml.safe_load(path.read_text())
        if not isinstance(body, dict) or not isinstance(body.get("paths"), dict):
            raise TemplateError("the front door needs the API's OpenAPI Body (paths)")
        apigateway = self.client("apigateway")
        title = (body.get("info") or {}).get("title")
        # An id derived from the stack and the resource, as the bucket's name is: the same every run,
        # so the stage URL in events/env.json stays right (moto honours its `_custom_id_` tag).
        digest = hashlib.sha256(f"{self.stack_name}/{name}".encode()).hexdigest()
        api_id = apigateway.create_rest_api(
            name=str(props.get("Name") or title or self._physical_name(name)),
            tags={"_custom_id_": digest[:10]},
        )["id"]
        root = next(r["id"] for r in apigateway.get_resources(restApiId=api_id)["items"] if r["path"] == "/")
        resource_ids = {"/": root}
        for path, operations in body["paths"].items():
            parent = "/"
            for segment in [s for s in path.split("/") if s]:
                current = f"{parent.rstrip('/')}/{segment}"
                if current not in resource_ids:
                    resource_ids[current] = apigateway.create_resource(
                        restApiId=api_id, parentId=resource_ids[parent], pathPart=segment
                    )["id"]
                parent = current
            for method, operation in _operations(operations):
                http_method = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
                integration = operation.get("x-amazon-apigateway-integration") or {}
                apigateway.put_method(
                    restApiId=api_id,
                    resourceId=resource_ids[parent],
                    httpMethod=http_method,
                    authorizationType="AWS_IAM" if _iam_auth(operation, body, f"{method} {path}") else "NONE",
                )
                if integration:
                    apigateway.put_integration(
                        restApiId=api_id,
                        resourceId=resource_ids[parent],
                        httpMethod=http_method,
                        type=str(integration.get("type", "")).upper(),
                        integrationHttpMethod=str(integration.get("httpMethod", "POST")),
                        uri=str(integration.get("uri", "")),
                    )
        self._bodies[name] = body
        self._set(name, api_id, RootResourceId=root)

    def _api_of(self, api_id: Any) -> str:
        for logical_id in self._bodies:
            if self.resolver.refs.get(logical_id) == api_id:
                return logical_id
        raise TemplateError(f"RestApiId {api_id!r} is not an AWS::ApiGateway::RestApi of this stack")

    def _create_deployment(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        kwargs: dict[str, Any] = {
            "restApiId": props["RestApiId"],
            "description": str(props.get("Description", "")),
        }
        if props.get("StageName"):
            kwargs["stageName"] = props["StageName"]
        deployment = self.client("apigateway").create_deployment(**kwargs)["id"]
        self._set(name, deployment)

    def _create_stage(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        api = self._api_of(props["RestApiId"])
        stage = str(props["StageName"])
        apigateway = self.client("apigateway")
        existing = {s["stageName"] for s in apigateway.get_stages(restApiId=props["RestApiId"])["item"]}
        if stage not in existing:
            kwargs: dict[str, Any] = {
                "restApiId": props["RestApiId"],
                "stageName": stage,
                "deploymentId": props["DeploymentId"],
            }
            if "TracingEnabled" in props:
                kwargs["tracingEnabled"] = _flag(props["TracingEnabled"], False)
            if "Variables" in props:
                kwargs["variables"] = props["Variables"]
            apigateway.create_stage(**kwargs)
        for key in ("AccessLogSetting", "MethodSettings"):
            if key in props:
                self.result.notes.append(f"{name}: {key} recorded, not enforced by the front door")
        if api in self.result.api_stages:
            raise TemplateError(f"API {api} has two stages; the front door serves one stage per API")
        if stage in self.result.api_stages.values():
            raise TemplateError(
                f"two APIs use stage {stage!r}; the front door serves each API under its stage"
            )
        self.result.api_stages[api] = stage
        self._set(name, stage)

    def _add_routes(self, api: str, body: dict[str, Any]) -> None:
        stage = self.result.api_stages.get(api)
        if stage is None:
            raise TemplateError("the API has no AWS::ApiGateway::Stage to serve")
        for path, operations in body["paths"].items():
            for method, operation in _operations(operations):
                where = f"{method} {path}"
                integration = operation.get("x-amazon-apigateway-integration")
                if (
                    not isinstance(integration, dict)
                    or str(integration.get("type", "")).lower() != "aws_proxy"
                ):
                    raise TemplateError(
                        f"{where}: the front door serves Lambda proxy (aws_proxy) integrations only"
                    )
                match = _INTEGRATION_URI.match(str(integration.get("uri", "")))
                if match is None:
                    raise TemplateError(
                        f"{where}: integration uri {integration.get('uri')!r} names no function"
                    )
                self.result.routes.append(
                    ApiRoute(
                        api=api,
                        stage=stage,
                        method="ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
                        path=path,
                        function=self._function_by("arn", match["arn"], where),
                        iam_auth=_iam_auth(operation, body, where),
                    )
                )

    # ------------------------------------------------------------------ Step Functions
    def _create_state_machine(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        if "DefinitionS3Location" in props:
            path = self.artifacts.local_path(
                props["DefinitionS3Location"], self.template_dir, "DefinitionUri"
            )
            text = path.read_text()
            if path.suffix != ".json":  # .asl.yaml: substitute on the JSON form
                text = json.dumps(yaml.safe_load(text))
        elif "DefinitionString" in props:
            text = str(props["DefinitionString"])
        elif "Definition" in props:
            text = json.dumps(props["Definition"])
        else:
            raise TemplateError("a state machine needs DefinitionS3Location, DefinitionString or Definition")
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + key + "}", _text(value))
        leftover = sorted(set(_PLACEHOLDER.findall(text)))
        if leftover:
            raise TemplateError(f"definition placeholders without DefinitionSubstitutions: {leftover}")
        machine_name = props.get("StateMachineName") or self._physical_name(name, 80)
        kwargs: dict[str, Any] = {
            "name": machine_name,
            "definition": text,
            "roleArn": props["RoleArn"],
            "type": props.get("StateMachineType", "STANDARD"),
        }
        if "LoggingConfiguration" in props:
            # Not handed to moto: its interpreter fails every waitForTaskToken task of a machine
            # with a logging configuration (`'>' not supported between instances of 'dict' and 'int'`).
            self.result.notes.append(f"{name}: LoggingConfiguration recorded, not applied (moto)")
        if "TracingConfiguration" in props:
            kwargs["tracingConfiguration"] = {
                "enabled": _flag(props["TracingConfiguration"].get("Enabled"), False)
            }
        if props.get("Tags"):
            kwargs["tags"] = [{"key": t["Key"], "value": t["Value"]} for t in props["Tags"]]
        arn = self.client("stepfunctions").create_state_machine(**kwargs)["stateMachineArn"]
        self._set(name, arn, Arn=arn, Name=machine_name)

    # ------------------------------------------------------------------ plain resources
    def _create_secret(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        if "SecretString" in props:
            value = _text(props["SecretString"])
        elif "GenerateSecretString" in props:
            value = _generate_secret(props["GenerateSecretString"])
        else:
            raise TemplateError("a secret needs SecretString or GenerateSecretString")
        secret_name = props.get("Name") or self._physical_name(name, 512)
        kwargs: dict[str, Any] = {"Name": secret_name, "SecretString": value}
        if "Description" in props:
            kwargs["Description"] = props["Description"]
        arn = self.client("secretsmanager").create_secret(**kwargs)["ARN"]
        self._set(name, arn, Id=arn)

    def _create_queue(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        fifo = _text(props.get("FifoQueue", "false")) == "true"
        default_name = self._physical_name(name, 75) + (".fifo" if fifo else "")
        queue_name = props.pop("QueueName", default_name)
        tags = {t["Key"]: t["Value"] for t in props.pop("Tags", [])}
        attributes: dict[str, str] = {}
        for key, value in props.items():
            if key in ("RedrivePolicy", "RedriveAllowPolicy"):
                policy = dict(value)
                if "maxReceiveCount" in policy:
                    policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
                attributes[key] = json.dumps(policy)
            else:
                attributes[key] = _text(value)
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=queue_name, Attributes=attributes, tags=tags)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self._set(name, url, Arn=arn, QueueName=queue_name, QueueUrl=url)

    def _create_queue_policy(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        for url in props["Queues"]:
            self.client("sqs").set_queue_attributes(
                QueueUrl=url, Attributes={"Policy": json.dumps(_with_version(props["PolicyDocument"]))}
            )
        self._set(name, f"{self.stack_name}-{name}")

    def _create_topic(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        topic_name = props.get("TopicName") or self._physical_name(name, 256)
        attributes = {
            key: _text(props[key])
            for key in ("DisplayName", "KmsMasterKeyId", "FifoTopic", "ContentBasedDeduplication")
            if key in props
        }
        tags = [{"Key": t["Key"], "Value": t["Value"]} for t in props.get("Tags") or []]
        sns = self.client("sns")
        arn = sns.create_topic(Name=topic_name, Attributes=attributes, Tags=tags)["TopicArn"]
        for subscription in props.get("Subscription") or []:
            sns.subscribe(TopicArn=arn, Protocol=subscription["Protocol"], Endpoint=subscription["Endpoint"])
        self._set(name, arn, TopicArn=arn, TopicName=topic_name)

    def _create_subscription(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        attributes = {
            key: json.dumps(props[key]) if isinstance(props[key], dict) else _text(props[key])
            for key in ("FilterPolicy", "FilterPolicyScope", "RawMessageDelivery", "RedrivePolicy")
            if key in props
        }
        arn = self.client("sns").subscribe(
            TopicArn=props["TopicArn"],
            Protocol=props["Protocol"],
            Endpoint=props.get("Endpoint", ""),
            Attributes=attributes,
            ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        if props["Protocol"] in ("email", "email-json"):
            self.result.notes.append(f"{name}: {props['Protocol']} subscription recorded; no mail is sent")
        self._set(name, arn, Arn=arn)

    def _create_topic_policy(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        for topic in props["Topics"]:
            self.client("sns").set_topic_attributes(
                TopicArn=topic,
                AttributeName="Policy",
                AttributeValue=json.dumps(_with_version(props["PolicyDocument"])),
            )
        self._set(name, f"{self.stack_name}-{name}")

    def _create_table(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        table_name = props.get("TableName") or self._physical_name(name, 255)
        billing = props.get("BillingMode", "PROVISIONED")
        kwargs: dict[str, Any] = {
            "TableName": table_name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": billing,
        }
        if "ProvisionedThroughput" in props:
            kwargs["ProvisionedThroughput"] = _throughput(props["ProvisionedThroughput"])
        for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in props:
                indexes = [dict(index) for index in props[key]]
                for index in indexes:
                    if "ProvisionedThroughput" in index:
                        index["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
                kwargs[key] = indexes
        if "StreamSpecification" in props:
            kwargs["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
        if "SSESpecification" in props:
            sse = props["SSESpecification"]
            kwargs["SSESpecification"] = {"Enabled": _text(sse.get("SSEEnabled")) == "true"} | {
                k: v for k, v in sse.items() if k in ("SSEType", "KMSMasterKeyId")
            }
        if "DeletionProtectionEnabled" in props:
            kwargs["DeletionProtectionEnabled"] = _text(props["DeletionProtectionEnabled"]) == "true"
        dynamodb = self.client("dynamodb")
        description = dynamodb.create_table(**kwargs)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and _text(ttl.get("Enabled")) == "true":
            dynamodb.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        pitr = props.get("PointInTimeRecoverySpecification")
        if pitr and _text(pitr.get("PointInTimeRecoveryEnabled")) == "true":
            dynamodb.update_continuous_backups(
                TableName=table_name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        self._set(name, table_name, Arn=description["TableArn"], StreamArn=description.get("LatestStreamArn"))

    def _create_bucket(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        bucket = props.pop("BucketName", None) or self._physical_name(name.lower(), 63).lower()
        s3 = self.client("s3")
        s3.create_bucket(Bucket=bucket)
        applied = {
            "VersioningConfiguration": lambda v: s3.put_bucket_versioning(
                Bucket=bucket, VersioningConfiguration={"Status": v["Status"]}
            ),
            "BucketEncryption": lambda v: s3.put_bucket_encryption(
                Bucket=bucket,
                ServerSideEncryptionConfiguration={
                    "Rules": [_encryption_rule(r) for r in v["ServerSideEncryptionConfiguration"]]
                },
            ),
            "PublicAccessBlockConfiguration": lambda v: s3.put_public_access_block(
                Bucket=bucket,
                PublicAccessBlockConfiguration={k: _text(x) == "true" for k, x in v.items()},
            ),
            "OwnershipControls": lambda v: s3.put_bucket_ownership_controls(
                Bucket=bucket, OwnershipControls=v
            ),
            "NotificationConfiguration": lambda v: s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration=_notification_configuration(v)
            ),
            "LifecycleConfiguration": lambda v: s3.put_bucket_lifecycle_configuration(
                Bucket=bucket, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in v["Rules"]]}
            ),
            "Tags": lambda v: s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": v}),
        }
        for key, value in props.items():
            if key in applied:
                applied[key](value)
            else:
                self.result.notes.append(f"{name}: bucket property {key} is not applied locally")
        if "LifecycleConfiguration" in props:
            self.result.notes.append(f"{name}: lifecycle rules stored in moto, never run")
        arn = f"arn:aws:s3:::{bucket}"
        self._set(
            name,
            bucket,
            Arn=arn,
            DomainName=f"{bucket}.s3.amazonaws.com",
            RegionalDomainName=f"{bucket}.s3.{REGION}.amazonaws.com",
        )

    def _create_bucket_policy(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        json.dumps(
            _with_version(props["PolicyDocument"])
        )  # resolved and serialisable, like CloudFormation needs
        # Not applied: moto evaluates bucket policies without their Conditions, so the template's
        # "deny when aws:SecureTransport is false" would deny every request on loopback.
        self.result.notes.append(f"{name}: resolved but not applied (moto ignores policy conditions)")
        self._set(name, props["Bucket"])

    def _create_alarm(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        props.setdefault("AlarmName", self._physical_name(name, 255))
        for key in ("Period", "EvaluationPeriods", "DatapointsToAlarm"):
            if key in props:
                props[key] = int(props[key])
        if "Threshold" in props:
            props["Threshold"] = float(props["Threshold"])
        if "ActionsEnabled" in props:
            props["ActionsEnabled"] = _flag(props["ActionsEnabled"], True)
        self.client("cloudwatch").put_metric_alarm(**props)
        arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{props['AlarmName']}"
        self._set(name, props["AlarmName"], Arn=arn)

    def _create_dashboard(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        dashboard = props.get("DashboardName") or self._physical_name(name, 255)
        json.loads(props["DashboardBody"])  # CloudFormation refuses a body that is not JSON; so do we
        self.client("cloudwatch").put_dashboard(DashboardName=dashboard, DashboardBody=props["DashboardBody"])
        self._set(name, dashboard)

    def _create_log_group(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        group = props.get("LogGroupName") or self._physical_name(name, 512)
        logs = self.client("logs")
        logs.create_log_group(logGroupName=group)
        if "RetentionInDays" in props:
            logs.put_retention_policy(logGroupName=group, retentionInDays=int(props["RetentionInDays"]))
        self._set(name, group, Arn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{group}:*")


# ---------------------------------------------------------------------- helpers
def _operations(operations: Any) -> list[tuple[str, dict[str, Any]]]:
    """The (method, operation) pairs of one OpenAPI path item."""
    if not isinstance(operations, dict):
        return []
    return [
        (m.lower(), op) for m, op in operations.items() if m.lower() in _HTTP_METHODS and isinstance(op, dict)
    ]


def _iam_auth(operation: dict[str, Any], body: dict[str, Any], where: str) -> bool:
    """Whether an operation requires SigV4 (AWS_IAM); other authorizers are errors."""
    security = operation.get("security", body.get("security")) or []
    names = {name for requirement in security if isinstance(requirement, dict) for name in requirement}
    if names - {"AWS_IAM", "NONE"}:
        raise TemplateError(
            f"{where}: authorizers {sorted(names - {'AWS_IAM', 'NONE'})} are not supported by the front door"
        )
    return "AWS_IAM" in names


def _lifecycle_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """One CloudFormation lifecycle rule -> the S3 API's shape."""
    converted: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if "Id" in rule:
        converted["ID"] = rule["Id"]
    prefix = rule.get("Prefix")
    converted["Filter"] = {"Prefix": prefix} if prefix is not None else {"Prefix": ""}
    if "ExpirationInDays" in rule or "ExpiredObjectDeleteMarker" in rule:
        expiration: dict[str, Any] = {}
        if "ExpirationInDays" in rule:
            expiration["Days"] = int(rule["ExpirationInDays"])
        if "ExpiredObjectDeleteMarker" in rule:
            expiration["ExpiredObjectDeleteMarker"] = _flag(rule["ExpiredObjectDeleteMarker"], False)
        converted["Expiration"] = expiration
    noncurrent = rule.get("NoncurrentVersionExpiration")
    if noncurrent is not None:
        converted["NoncurrentVersionExpiration"] = {"NoncurrentDays": int(noncurrent["NoncurrentDays"])}
    elif "NoncurrentVersionExpirationInDays" in rule:
        converted["NoncurrentVersionExpiration"] = {
            "NoncurrentDays": int(rule["NoncurrentVersionExpirationInDays"])
        }
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort is not None:
        converted["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(abort["DaysAfterInitiation"])
        }
    unknown = sorted(
        set(rule)
        - {
            "Id",
            "Status",
            "Prefix",
            "ExpirationInDays",
            "ExpiredObjectDeleteMarker",
            "NoncurrentVersionExpiration",
            "NoncurrentVersionExpirationInDays",
            "AbortIncompleteMultipartUpload",
        }
    )
    if unknown:
        raise TemplateError(
            f"lifecycle rule {rule.get('Id')}: {unknown} are not supported by the one-machine stack"
        )
    return converted


def _rate_seconds(expression: str) -> float | None:
    """The period of an EventBridge `rate(...)` expression, None if it is not a valid one."""
    match = _RATE.fullmatch(expression.strip())
    if match is None:
        return None
    value, unit = int(match["value"]), match["unit"]
    if value < 1 or (value == 1) != (not unit.endswith("s")):
        return None
    return float(value * _UNIT_SECONDS[unit.rstrip("s")])


def _throughput(value: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in value.items()}


def _encryption_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    converted = dict(rule)
    if "ServerSideEncryptionByDefault" in converted:  # CloudFormation's name for the API's field
        converted["ApplyServerSideEncryptionByDefault"] = converted.pop("ServerSideEncryptionByDefault")
    return converted


def _with_version(document: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", **document}


def _notification_configuration(value: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration shape -> the S3 API's."""

    def target(entry: Mapping[str, Any], cfn_key: str, api_key: str) -> dict[str, Any]:
        converted: dict[str, Any] = {api_key: entry[cfn_key], "Events": [entry["Event"]]}
        rules = ((entry.get("Filter") or {}).get("S3Key") or {}).get("Rules")
        if rules:
            converted["Filter"] = {"Key": {"FilterRules": rules}}
        return converted

    result: dict[str, Any] = {}
    kinds = (
        ("QueueConfigurations", "Queue", "QueueArn"),
        ("LambdaConfigurations", "Function", "LambdaFunctionArn"),
        ("TopicConfigurations", "Topic", "TopicArn"),
    )
    for section, cfn_key, api_key in kinds:
        if section in value:
            result[section] = [target(e, cfn_key, api_key) for e in value[section]]
    if "EventBridgeConfiguration" in value:
        result["EventBridgeConfiguration"] = {}
    return result


def _generate_secret(spec: Mapping[str, Any]) -> str:
    """What Secrets Manager's GetRandomPassword does for GenerateSecretString."""

    def flag(key: str) -> bool:
        return _text(spec.get(key, False)) == "true"

    alphabet = ""
    if not flag("ExcludeLowercase"):
        alphabet += string.ascii_lowercase
    if not flag("ExcludeUppercase"):
        alphabet += string.ascii_uppercase
    if not flag("ExcludeNumbers"):
        alphabet += string.digits
    if not flag("ExcludePunctuation"):
        alphabet += string.punctuation
    if flag("IncludeSpace"):
        alphabet += " "
    alphabet = "".join(c for c in alphabet if c not in str(spec.get("ExcludeCharacters", "")))
    password = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
    if "SecretStringTemplate" in spec:
        document = json.loads(spec["SecretStringTemplate"])
        document[spec["GenerateStringKey"]] = password
        return json.dumps(document)
    return password
