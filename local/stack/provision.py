"""Create a SAM template's resources in moto, in dependency order.

Each resource type has one `_create_*` method that maps the template's properties onto
the AWS API calls CloudFormation would make, and records what `Ref` and `Fn::GetAtt`
return for it. Unknown resource types and event types are errors: a resource the
local stack silently skipped would make a wrong template pass its tests.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import string
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError

from .template import ACCOUNT_ID, REGION, Resolver, TemplateError, apply_globals, creation_order


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


@dataclass(frozen=True)
class ApiRoute:
    """One `Type: Api` event: what the front door serves and which function answers."""

    api: str
    stage: str
    method: str  # upper case, or ANY
    path: str  # API Gateway resource path, e.g. /webhooks/sync/{jobId}
    function: str
    iam_auth: bool


@dataclass(frozen=True)
class SqsSource:
    """One `Type: SQS` event: the event source mapping the poller emulates."""

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
    """One `Type: Schedule` event: an EventBridge rule with a rate expression."""

    function: str
    event: str  # the event's key under the function's Events
    rule_name: str
    rule_arn: str
    expression: str
    period_seconds: float
    input: Any  # the parsed Input, or None: Lambda gets EventBridge's scheduled event
    enabled: bool


@dataclass(frozen=True)
class RuleSource:
    """One `Type: EventBridgeRule` event: an event pattern on the default bus."""

    function: str
    event: str
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
    api_stages: dict[str, str] = field(default_factory=dict)  # Api logical id -> stage name
    outputs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was recorded but not enforced


IMPLICIT_API = "ServerlessRestApi"  # SAM's API for Api events without RestApiId

_RATE = re.compile(r"rate\((?P<value>\d+) (?P<unit>minute|minutes|hour|hours|day|days)\)")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_PLACEHOLDER = re.compile(r"\$\{[A-Za-z0-9_.:-]+\}")
_LAMBDA_ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}
_STATES_ASSUME = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def _dummy_zip() -> bytes:
    """moto needs a code package; the worker runs the code from the CodeUri directory instead."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", "Code runs from the template's CodeUri via the one-machine stack.\n")
    return buffer.getvalue()


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Provisioner:
    def __init__(
        self,
        template: dict[str, Any],
        template_dir: Path,
        resolver: Resolver,
        stack_name: str,
        client: Callable[[str], Any],  # boto3 client factory (clients are untyped here)
        front_door_url: str,
        check_handlers: bool = True,
    ) -> None:
        self.template = template
        self.template_dir = template_dir
        self.resolver = resolver
        self.stack_name = stack_name
        self.client = client
        self.front_door_url = front_door_url
        self.check_handlers = check_handlers
        self.result = ProvisionedStack()
        self._api_auth: dict[str, str | None] = {}  # Api logical id -> DefaultAuthorizer
        self._creators: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::Serverless::LayerVersion": self._create_layer,
            "AWS::SecretsManager::Secret": self._create_secret,
            "AWS::SQS::Queue": self._create_queue,
            "AWS::SQS::QueuePolicy": self._create_queue_policy,
            "AWS::DynamoDB::Table": self._create_table,
            "AWS::S3::Bucket": self._create_bucket,
            "AWS::S3::BucketPolicy": self._create_bucket_policy,
            "AWS::CloudWatch::Alarm": self._create_alarm,
            "AWS::Logs::LogGroup": self._create_log_group,
            "AWS::Serverless::Api": self._create_api,
            "AWS::Serverless::Function": self._create_function,
            "AWS::Serverless::StateMachine": self._create_state_machine,
            "AWS::StepFunctions::StateMachine": self._create_state_machine,
        }

    # ------------------------------------------------------------------ driver
    def run(self) -> ProvisionedStack:
        resources = apply_globals(self.template)
        # SAM turns a function's Events into resources of their own (rules, permissions, mappings)
        # that depend on the function and on what they name: they must not order the function.
        ordered = creation_order({n: _without_events(r) for n, r in resources.items()})
        for name in ordered:
            resource = resources[name]
            kind = resource.get("Type", "")
            condition = resource.get("Condition")
            if condition is not None and not self.resolver.condition(condition):
                continue
            creator = self._creators.get(kind)
            if creator is None:
                raise TemplateError(
                    f"{name}: resource type {kind!r} is not supported by the one-machine stack"
                )
            try:
                creator(name, resource.get("Properties") or {})
            except (TemplateError, BotoCoreError, ClientError) as error:
                raise TemplateError(f"{name} ({kind}): {error}") from error
            self.result.resources[name] = {
                "Type": kind,
                "Ref": self.resolver.refs.get(name),
                **self.resolver.attributes.get(name, {}),
            }
        for name in resources:  # template order: the first SQS source is the template's first
            if name not in self.result.functions:
                continue
            events = self.resolver.resolve((resources[name].get("Properties") or {}).get("Events") or {})
            for event_name, event in events.items():
                try:
                    self._add_event(name, event_name, event)
                except (TemplateError, BotoCoreError, ClientError) as error:
                    raise TemplateError(f"{name} (AWS::Serverless::Function): {error}") from error
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

    # ------------------------------------------------------------------ simple resources
    def _create_layer(self, name: str, props: dict[str, Any]) -> None:
        content = self.resolver.resolve(props.get("ContentUri"))
        if not isinstance(content, str):
            raise TemplateError("ContentUri must be a local directory for the one-machine stack")
        path = (self.template_dir / content).resolve()
        if not path.is_dir():
            raise TemplateError(f"ContentUri {content} is not a directory ({path})")
        # `sam build` output keeps packages under python/; the source layout has them at the top.
        python_dir = path / "python"
        self._set(name, str(python_dir if python_dir.is_dir() else path))

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
            "Tags": lambda v: s3.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": v}),
        }
        for key, value in props.items():
            if key in applied:
                applied[key](value)
            else:
                self.result.notes.append(f"{name}: bucket property {key} is not applied locally")
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
        self.client("cloudwatch").put_metric_alarm(**props)
        arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT_ID}:alarm:{props['AlarmName']}"
        self._set(name, props["AlarmName"], Arn=arn)

    def _create_log_group(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        group = props.get("LogGroupName") or f"/{self.stack_name}/{name}"
        self.client("logs").create_log_group(logGroupName=group)
        self._set(name, group, Arn=f"arn:aws:logs:{REGION}:{ACCOUNT_ID}:log-group:{group}:*")

    # ------------------------------------------------------------------ API and functions
    def _create_api(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        stage = props.get("StageName")
        if not stage:
            raise TemplateError("StageName is required")
        authorizer = (props.get("Auth") or {}).get("DefaultAuthorizer")
        if authorizer not in (None, "AWS_IAM", "NONE"):
            raise TemplateError(f"DefaultAuthorizer {authorizer!r}: the front door supports only AWS_IAM")
        api_id = self.client("apigateway").create_rest_api(
            name=props.get("Name") or self._physical_name(name)
        )["id"]
        self._add_api(name, stage, authorizer)
        self._set(name, api_id, RootResourceId=api_id)

    def _add_api(self, name: str, stage: str, authorizer: str | None) -> None:
        if stage in self.result.api_stages.values():
            raise TemplateError(
                f"two APIs use stage {stage!r}; the front door serves each API under its stage"
            )
        self.result.api_stages[name] = stage
        self._api_auth[name] = authorizer

    def _role(self, name: str, policies: Any, assume: dict[str, Any]) -> str:
        role_name = self._physical_name(f"{name}Role")
        iam = self.client("iam")
        arn = iam.create_role(RoleName=role_name, AssumeRolePolicyDocument=json.dumps(assume))["Role"]["Arn"]
        policies = policies if isinstance(policies, list) else [policies] if policies else []
        for index, policy in enumerate(policies):
            document = _policy_document(policy)
            if document is None:
                self.result.notes.append(f"{name}: policy {policy!r} recorded, not expanded")
                continue
            iam.put_role_policy(
                RoleName=role_name, PolicyName=f"{name}Policy{index}", PolicyDocument=json.dumps(document)
            )
        return str(arn)

    def _create_function(self, name: str, props: dict[str, Any]) -> None:
        # Events are added once every resource exists (see run()).
        props = self.resolver.resolve({k: v for k, v in props.items() if k != "Events"})
        if props.get("PackageType", "Zip") != "Zip" or "InlineCode" in props:
            raise TemplateError("only Zip functions with a local CodeUri are supported")
        runtime = str(props.get("Runtime", ""))
        if not runtime.startswith("python"):
            raise TemplateError(f"Runtime {runtime!r}: the workers run Python handlers only")
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError("CodeUri must be a local directory")
        code_dir = (self.template_dir / code_uri).resolve()
        handler = str(props.get("Handler", ""))
        self._check_handler(code_dir, handler)
        layer_dirs = tuple(Path(layer) for layer in props.get("Layers", []))
        for layer in layer_dirs:
            if not layer.is_dir():
                raise TemplateError(f"layer {layer} is not a layer of this template (only local layers run)")
        environment = {
            k: _text(v) for k, v in ((props.get("Environment") or {}).get("Variables") or {}).items()
        }
        role = props.get("Role") or self._role(name, props.get("Policies"), _LAMBDA_ASSUME)
        function_name = props.get("FunctionName") or self._physical_name(name)
        timeout, memory = int(props.get("Timeout", 3)), int(props.get("MemorySize", 128))
        created = self.client("lambda").create_function(
            FunctionName=function_name,
            Runtime=runtime,
            Role=role,
            Handler=handler,
            Code={"ZipFile": _dummy_zip()},
            Timeout=timeout,
            MemorySize=memory,
            Environment={"Variables": environment},
            Description=str(props.get("Description", "")),
        )
        arn = created["FunctionArn"]
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
            layer_dirs=layer_dirs,
            environment=environment,
            reserved_concurrency=reserved,
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

    def _add_event(self, function: str, event_name: str, event: dict[str, Any]) -> None:
        kind, props = event.get("Type"), event.get("Properties") or {}
        where = f"event {event_name}"
        if kind == "Api":
            api_id = props.get("RestApiId")
            if api_id is None:
                api = IMPLICIT_API
                if api not in self.result.api_stages:
                    self._add_api(api, "Prod", None)
            else:
                matches = [
                    n for n, r in self.resolver.refs.items() if r == api_id and n in self.result.api_stages
                ]
                if not matches:
                    raise TemplateError(
                        f"{where}: RestApiId {api_id!r} is not an AWS::Serverless::Api of this stack"
                    )
                api = matches[0]
            authorizer = (props.get("Auth") or {}).get("Authorizer", self._api_auth[api])
            if authorizer not in (None, "NONE", "AWS_IAM"):
                raise TemplateError(f"{where}: authorizer {authorizer!r} is not supported by the front door")
            if (props.get("Auth") or {}).get("ApiKeyRequired"):
                raise TemplateError(f"{where}: ApiKeyRequired is not supported by the front door")
            self.result.routes.append(
                ApiRoute(
                    api=api,
                    stage=self.result.api_stages[api],
                    method=str(props["Method"]).upper(),
                    path=str(props["Path"]),
                    function=function,
                    iam_auth=authorizer == "AWS_IAM",
                )
            )
        elif kind == "SQS":
            self._add_sqs_source(function, where, props)
        elif kind == "Schedule":
            self._add_schedule(function, event_name, props)
        elif kind == "EventBridgeRule":
            self._add_rule(function, event_name, props)
        else:
            raise TemplateError(f"{where}: event type {kind!r} is not supported by the one-machine stack")

    def _add_sqs_source(self, function: str, where: str, props: dict[str, Any]) -> None:
        queue_arn = str(props["Queue"])
        queue_name = queue_arn.rsplit(":", 1)[-1]
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
        self.result.sqs_sources.append(
            SqsSource(
                function=function,
                queue_arn=queue_arn,
                queue_url=queue_url,
                batch_size=batch_size,
                report_batch_item_failures="ReportBatchItemFailures"
                in props.get("FunctionResponseTypes", []),
                maximum_concurrency=int(concurrency) if concurrency is not None else None,
                enabled=_text(props.get("Enabled", True)) == "true",
                maximum_batching_window=window,
            )
        )

    def _rule_settings(self, where: str, props: dict[str, Any], supported: set[str]) -> tuple[Any, bool]:
        """The parsed Input and the enabled flag, after checking which properties are used."""
        for key in sorted(set(props) - supported):
            if key in ("RetryPolicy", "DeadLetterConfig"):
                self.result.notes.append(f"{where}: {key} recorded, not emulated (async retries: 2)")
            else:
                raise TemplateError(f"{where}: property {key} is not supported by the one-machine stack")
        if "Enabled" in props and "State" in props:
            raise TemplateError(f"{where}: Enabled and State are mutually exclusive")
        enabled = _text(props.get("Enabled", True)) == "true" and props.get("State", "ENABLED") == "ENABLED"
        parsed_input = None
        if "Input" in props:
            try:
                parsed_input = json.loads(str(props["Input"]))
            except ValueError as error:
                raise TemplateError(f"{where}: Input must be a JSON text ({error})") from None
        return parsed_input, enabled

    def _put_rule(
        self, function: str, rule_name: str, description: str, target_input: Any, **rule: Any
    ) -> str:
        """The rule, its Lambda target and the invoke permission SAM creates for an event."""
        events = self.client("events")
        arn = str(events.put_rule(Name=rule_name, Description=description, **rule)["RuleArn"])
        target: dict[str, Any] = {
            "Id": f"{function}Target"[:64],
            "Arn": self.resolver.attributes[function]["Arn"],
        }
        if target_input is not None:
            target["Input"] = json.dumps(target_input)
        events.put_targets(Rule=rule_name, Targets=[target])
        self.client("lambda").add_permission(
            FunctionName=self.result.functions[function].name,
            StatementId=f"{rule_name}Permission"[:100],
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=arn,
        )
        return arn

    def _add_schedule(self, function: str, event_name: str, props: dict[str, Any]) -> None:
        where = f"event {event_name}"
        supported = {"Schedule", "Input", "Enabled", "State", "Name", "Description"}
        parsed_input, enabled = self._rule_settings(where, props, supported)
        expression = str(props.get("Schedule", ""))
        period = _rate_seconds(expression)
        if period is None:
            raise TemplateError(
                f"{where}: Schedule {expression!r}: only rate(N minute[s]|hour[s]|day[s]) is emulated "
                "(EventBridge has no seconds; 1 takes the singular unit)"
            )
        rule_name = str(props.get("Name") or self._physical_name(f"{function}{event_name}"))
        arn = self._put_rule(
            function,
            rule_name,
            str(props.get("Description", "")),
            parsed_input,
            ScheduleExpression=expression,
            State="ENABLED" if enabled else "DISABLED",
        )
        self.result.schedules.append(
            ScheduleSource(function, event_name, rule_name, arn, expression, period, parsed_input, enabled)
        )

    def _add_rule(self, function: str, event_name: str, props: dict[str, Any]) -> None:
        where = f"event {event_name}"
        supported = {"Pattern", "Input", "State", "RuleName", "EventBusName", "Target"}
        parsed_input, enabled = self._rule_settings(where, props, supported)
        if props.get("EventBusName", "default") != "default":
            raise TemplateError(f"{where}: only the default event bus is emulated")
        pattern = props.get("Pattern")
        if not isinstance(pattern, dict) or not pattern:
            raise TemplateError(f"{where}: Pattern must be a non-empty event pattern")
        rule_name = str(props.get("RuleName") or self._physical_name(f"{function}{event_name}"))
        # moto validates the pattern as EventBridge would (arrays or objects, no empty arrays).
        arn = self._put_rule(
            function,
            rule_name,
            "",
            parsed_input,
            EventPattern=json.dumps(pattern),
            State="ENABLED" if enabled else "DISABLED",
        )
        if "aws.states" not in (pattern.get("source") or []):
            self.result.notes.append(
                f"{where}: rule {rule_name} provisioned; only Step Functions execution status changes "
                "are emitted locally"
            )
        self.result.rules.append(
            RuleSource(function, event_name, rule_name, arn, pattern, parsed_input, enabled)
        )

    def _create_state_machine(self, name: str, props: dict[str, Any]) -> None:
        props = self.resolver.resolve(props)
        if props.get("Events"):
            raise TemplateError("state machine Events are not supported by the one-machine stack")
        if "DefinitionUri" in props:
            uri = props["DefinitionUri"]
            if not isinstance(uri, str):
                raise TemplateError("DefinitionUri must be a local file")
            text = (self.template_dir / uri).read_text()
            if not uri.endswith(".json"):  # .asl.yaml: substitute on the JSON form
                text = json.dumps(yaml.safe_load(text))
        elif "DefinitionString" in props:
            text = str(props["DefinitionString"])
        elif "Definition" in props:
            text = json.dumps(props["Definition"])
        else:
            raise TemplateError("a state machine needs DefinitionUri, DefinitionString or Definition")
        for key, value in (props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + key + "}", _text(value))
        leftover = sorted(set(_PLACEHOLDER.findall(text)))
        if leftover:
            raise TemplateError(f"definition placeholders without DefinitionSubstitutions: {leftover}")
        role = (
            props.get("Role")
            or props.get("RoleArn")
            or self._role(name, props.get("Policies"), _STATES_ASSUME)
        )
        machine_name = props.get("Name") or props.get("StateMachineName") or self._physical_name(name, 80)
        arn = self.client("stepfunctions").create_state_machine(
            name=machine_name,
            definition=text,
            roleArn=role,
            type=props.get("Type", props.get("StateMachineType", "STANDARD")),
        )["stateMachineArn"]
        self._set(name, arn, Arn=arn, Name=machine_name)


# ---------------------------------------------------------------------- helpers
def _without_events(resource: dict[str, Any]) -> dict[str, Any]:
    if resource.get("Type") != "AWS::Serverless::Function":
        return resource
    properties = {k: v for k, v in (resource.get("Properties") or {}).items() if k != "Events"}
    return {**resource, "Properties": properties}


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


def _policy_document(policy: Any) -> dict[str, Any] | None:
    """A SAM `Policies` entry as an IAM policy document (None: a managed policy or unknown template)."""
    if isinstance(policy, dict) and "Statement" in policy:
        return _with_version(policy)
    if isinstance(policy, dict) and len(policy) == 1:
        template_name, args = next(iter(policy.items()))
        prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT_ID}:"
        expansions: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
            "LambdaInvokePolicy": lambda a: [
                {
                    "Effect": "Allow",
                    "Action": "lambda:InvokeFunction",
                    "Resource": prefix.format("lambda") + f"function:{a['FunctionName']}*",
                }
            ],
            "DynamoDBCrudPolicy": lambda a: [
                {
                    "Effect": "Allow",
                    "Action": [
                        "dynamodb:GetItem",
                        "dynamodb:PutItem",
                        "dynamodb:UpdateItem",
                        "dynamodb:DeleteItem",
                        "dynamodb:Query",
                        "dynamodb:Scan",
                    ],
                    "Resource": [
                        prefix.format("dynamodb") + f"table/{a['TableName']}",
                        prefix.format("dynamodb") + f"table/{a['TableName']}/index/*",
                    ],
                }
            ],
            "SQSPollerPolicy": lambda a: [
                {
                    "Effect": "Allow",
                    "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"],
                    "Resource": prefix.format("sqs") + str(a["QueueName"]),
                }
            ],
            "StepFunctionsExecutionPolicy": lambda a: [
                {
                    "Effect": "Allow",
                    "Action": "states:StartExecution",
                    "Resource": prefix.format("states") + f"stateMachine:{a['StateMachineName']}",
                }
            ],
        }
        if template_name in expansions and isinstance(args, dict):
            return {"Version": "2012-10-17", "Statement": expansions[template_name](args)}
    return None
