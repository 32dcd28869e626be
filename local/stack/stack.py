"""OneMachineStack: moto server + sync.so emulator + the template's resources + function workers."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
from botocore.config import Config
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import BaseWSGIServer, make_server

from local.sync_emulator import EmulatorConfig, SyncEmulator

from .aws_middleware import MotoServer
from .events import Delivery, EventSources
from .front_door import FrontDoor
from .provision import ProvisionedStack, Provisioner
from .sqs_poller import SqsPoller
from .template import ACCOUNT_ID, REGION, Resolver, TemplateError, load_template, resolve_parameters
from .transform import translate
from .workers import (
    MOTO_ACCESS_KEY,
    MOTO_SECRET_KEY,
    FunctionWorker,
    HookNotActive,
    hook_active,
    lambda_aws_env,
    register,
    unregister,
)

ACCESS_KEY, SECRET_KEY = MOTO_ACCESS_KEY, MOTO_SECRET_KEY

_active: list[OneMachineStack] = []  # moto's backends are process-wide; see stop()
_active_lock = threading.Lock()


class FunctionError(Exception):
    """The function's handler failed; `payload` is Lambda's error payload (errorType, errorMessage, ...)."""

    def __init__(self, function: str, payload: Any) -> None:
        self.function = function
        self.payload = payload
        details = payload if isinstance(payload, dict) else {}
        self.error_type = str(details.get("errorType", "Unknown"))
        self.error_message = str(details.get("errorMessage", payload))
        super().__init__(f"{function} failed: {self.error_type}: {self.error_message}")


@dataclass(frozen=True)
class Ports:
    """Where the stack listens: one address, three ports (0 picks a free one).

    The CLI's fixed ports make events/env.json valid; `host` is loopback unless containers must
    reach the stack (`sam local`: Docker's bridge address, see SAM_LOCAL_PORTS).
    """

    aws: int = 0
    api: int = 0
    sync: int = 0
    host: str = "127.0.0.1"

    @staticmethod
    def urls(ports: Ports) -> tuple[str, str, str]:
        return (
            f"http://{ports.host}:{ports.aws}",
            f"http://{ports.host}:{ports.api}",
            f"http://{ports.host}:{ports.sync}",
        )


CLI_PORTS = Ports(aws=4566, api=3000, sync=8089)
# Docker's default bridge (docker0) on the host: what `sam local` containers reach the stack at.
DOCKER_BRIDGE_HOST = "172.17.0.1"
SAM_LOCAL_PORTS = Ports(aws=CLI_PORTS.aws, api=CLI_PORTS.api, sync=CLI_PORTS.sync, host=DOCKER_BRIDGE_HOST)


class OneMachineStack:
    """The pipeline's AWS side on loopback, provisioned from `template.yaml`.

    Use as a context manager (or `start()`/`stop()`). One process may run several stacks
    only with different `stack_name`s: moto keeps its resources in process-wide memory.
    """

    def __init__(
        self,
        template_path: str | Path = "template.yaml",
        parameter_overrides: dict[str, str] | None = None,
        emulator_config: EmulatorConfig | None = None,
        stack_name: str = "lipsync-local",
        state_file: str | Path | None = None,
        check_handlers: bool = True,
        ports: Ports | None = None,
        function_concurrency: int = 4,
        schedule_period_seconds: float | None = None,
    ) -> None:
        self.template_path = Path(template_path).resolve()
        self.parameter_overrides = dict(parameter_overrides or {})
        self.stack_name = stack_name
        # Derived from the name, so resource names (the bucket's) are the same every run (events/env.json).
        stack_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"lipsync-local/{stack_name}")
        self.stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT_ID}:stack/{stack_name}/{stack_uuid}"
        self.state_file = Path(state_file) if state_file else None
        self.check_handlers = check_handlers
        self.ports = ports or Ports()
        # Parallel invocations per function unless its ReservedConcurrentExecutions says otherwise.
        self.function_concurrency = function_concurrency
        # Replaces every schedule's rate, so tests need not wait minutes for a tick.
        self.schedule_period_seconds = schedule_period_seconds
        self.emulator = SyncEmulator(
            emulator_config or EmulatorConfig(), host=self.ports.host, port=self.ports.sync
        )
        self.front_door = FrontDoor({ACCESS_KEY: SECRET_KEY}, host=self.ports.host, port=self.ports.api)
        self.state: dict[str, Any] = {}
        self.parameters: dict[str, Any] = {}
        self.provisioned = ProvisionedStack()
        self.workers: dict[str, FunctionWorker] = {}  # logical id -> worker
        self.pollers: list[SqsPoller] = []
        self.event_sources: EventSources | None = None
        self.endpoint_url = ""
        self._moto: MotoServer | None = None
        self._moto_loopback: BaseWSGIServer | None = None  # see _start_servers
        self._session = boto3.Session(
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()
        self._log_dir = tempfile.TemporaryDirectory(prefix=f"{stack_name}-logs-")
        self._started: list[str] = []  # what stop() has to undo

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> OneMachineStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> OneMachineStack:
        with _active_lock:
            if any(s.stack_name == self.stack_name for s in _active):
                raise RuntimeError(f"a stack named {self.stack_name!r} is already running in this process")
            _active.append(self)
        self._started.append("active")
        try:
            self._start_servers()
            self._provision()
            self._start_workers()
            self.state = self._build_state()
            if self.state_file:
                write_atomically(self.state_file, json.dumps(self.state, indent=2) + "\n")
                self._started.append("state-file")
        except BaseException:
            self.stop()
            raise
        return self

    def _start_servers(self) -> None:
        self.emulator.start()
        self._started.append("emulator")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request otherwise
        self._moto = MotoServer(ip_address=self.ports.host, port=self.ports.aws)
        self._moto.start()
        self._started.append("moto")
        host, port = self._moto.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        if host not in ("127.0.0.1", "localhost"):
            # The Step Functions interpreter calls http://localhost:$MOTO_PORT whatever moto binds:
            # serve the same app (the same backends, the same middleware) on loopback too.
            self._moto_loopback = make_server(
                "127.0.0.1", port, self._moto.middleware, True, request_handler=MotoRequestHandler
            )
            threading.Thread(
                target=self._moto_loopback.serve_forever, name="moto-loopback", daemon=True
            ).start()
        # The Step Functions interpreter calls http://localhost:$MOTO_PORT; ThreadedMotoServer doesn't set it.
        os.environ["MOTO_PORT"] = str(port)
        config = {"stepfunctions": {"execute_state_machine": True}}  # run executions, not just record them
        httpx.post(f"{self.endpoint_url}/moto-api/config", json=config, timeout=10).raise_for_status()
        self.front_door.start()
        self._started.append("front-door")

    def _provision(self) -> None:
        template = load_template(self.template_path)
        self.parameters = resolve_parameters(template, self._parameter_values(template))
        pseudo = self._pseudo_parameters()
        # What CloudFormation provisions: the SAM transform's output, given the stack's parameters.
        cloudformation, artifacts = translate(template, {**self.parameters, **pseudo})
        resources = set(cloudformation.get("Resources") or {})
        resolver = Resolver(cloudformation, self.parameters, pseudo, resources)
        self._started.append("resources")
        self.provisioned = Provisioner(
            cloudformation,
            artifacts,
            self.template_path.parent,
            resolver,
            self.stack_name,
            self.client,
            check_handlers=self.check_handlers,
        ).run()

    def _pseudo_parameters(self) -> dict[str, str]:
        return {
            "AWS::StackName": self.stack_name,
            "AWS::StackId": self.stack_id,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    def update_parameters(self, overrides: dict[str, str]) -> list[str]:
        """What `sam deploy --parameter-overrides` does to the functions: every environment variable
        that a parameter sets takes the new value, in moto's function configuration and in fresh
        execution environments (running invocations finish with the old one). Returns the functions
        changed. Other resources keep their configuration: recreate the stack for those."""
        template = load_template(self.template_path)
        self.parameter_overrides |= overrides
        self.parameters = resolve_parameters(template, self._parameter_values(template))
        cloudformation, _ = translate(template, {**self.parameters, **self._pseudo_parameters()})
        changed = []
        for name, worker in self.workers.items():
            props = cloudformation["Resources"][name].get("Properties") or {}
            variables = (props.get("Environment") or {}).get("Variables") or {}
            environment = dict(worker.spec.environment)
            for variable, value in variables.items():
                if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in self.parameters:
                    environment[variable] = str(self.parameters[value["Ref"]])
            if environment != worker.spec.environment:
                self.client("lambda").update_function_configuration(
                    FunctionName=worker.spec.name, Environment={"Variables": environment}
                )
                worker.refresh(dataclasses.replace(worker.spec, environment=environment))
                changed.append(name)
        self.state = self._build_state()
        if self.state_file:
            write_atomically(self.state_file, json.dumps(self.state, indent=2) + "\n")
        return changed

    def _stack_supplied_parameters(self, template: dict[str, Any]) -> dict[str, str]:
        """Values the stack knows better than the template defaults (only for declared parameters)."""
        config = self.emulator.config
        supplied = {
            "SyncApiKey": config.api_key,
            "SyncWebhookSecret": config.webhook_secret,
            "MonthlyBudgetUsd": "off",  # required of a user; a test that wants a budget sets one
        }
        tuning = {"SyncApiBaseUrl": self.emulator.url}
        stages = [
            r.get("Properties", {}).get("StageName")
            for r in (template.get("Resources") or {}).values()
            if r.get("Type") in ("AWS::Serverless::Api", "AWS::ApiGateway::Stage")
        ]
        if stages and isinstance(stages[0], str):
            tuning["PublicApiUrl"] = f"{self.front_door.url}/{stages[0]}"
        supplied["Tuning"] = json.dumps(tuning)
        return {k: v for k, v in supplied.items() if k in (template.get("Parameters") or {})}

    def _parameter_values(self, template: dict[str, Any]) -> dict[str, str]:
        """What the stack supplies, under the overrides. Overrides named after Tuning keys
        (WebhookTimeoutSeconds=5, as tests and the demo give them) fold into the Tuning JSON, as a
        user writes it for `sam deploy`; a Tuning override merges over the supplied keys."""
        from lipsync.config import TUNABLES

        supplied = self._stack_supplied_parameters(template)
        merged = {**supplied, **{k: v for k, v in self.parameter_overrides.items() if k not in TUNABLES}}
        if "Tuning" in supplied:
            tuned = {k: v for k, v in self.parameter_overrides.items() if k in TUNABLES}
            tuning = json.loads(supplied["Tuning"]) | json.loads(
                self.parameter_overrides.get("Tuning") or "{}"
            )
            merged["Tuning"] = json.dumps(tuning | tuned)
        return merged

    def _start_workers(self) -> None:
        aws_env = lambda_aws_env(self.endpoint_url)
        self.workers = {
            name: FunctionWorker(
                spec,
                aws_env,
                Path(self._log_dir.name) / f"{name}.log",
                concurrency=spec.reserved_concurrency
                if spec.reserved_concurrency is not None
                else self.function_concurrency,
            )
            for name, spec in self.provisioned.functions.items()
        }
        register({w.spec.name: w for w in self.workers.values()})
        self._started.append("workers")
        api_ids = {
            name: str(self.provisioned.resources.get(name, {}).get("Ref", name))
            for name in self.provisioned.api_stages
        }
        self.front_door.configure(self.provisioned.routes, api_ids, self._invoke_for_event)
        for source in self.provisioned.sqs_sources:
            if source.enabled:
                # Lambda scales a mapping up to MaximumConcurrency, else up to the function's own limit.
                concurrency = source.maximum_concurrency or self.workers[source.function].concurrency
                poller = SqsPoller(source, self.client("sqs"), self._invoke_for_event, concurrency)
                poller.start()
                self.pollers.append(poller)
        machines = [
            str(r["Ref"])
            for r in self.provisioned.resources.values()
            if r["Type"] == "AWS::StepFunctions::StateMachine"
        ]
        self.event_sources = EventSources(
            self.provisioned.schedules,
            self.provisioned.rules,
            machines,
            self.client("stepfunctions"),
            self._invoke_for_event,
            self.schedule_period_seconds,
            dead_letter=self._dead_letter,
        )
        self.event_sources.start()

    def stop(self) -> None:
        """Stop event sources, executions, pollers, workers, servers; safe twice or after a failed start."""
        started, self._started = self._started, []
        if self.event_sources is not None:
            # Before the executions are aborted: shutdown must not fire status-change events.
            self.event_sources.stop()
            self.event_sources = None
        if "resources" in started:
            self._stop_executions()
        for poller in self.pollers:
            poller.stop()
        self.pollers = []
        if "front-door" in started:
            self.front_door.stop()
        if "workers" in started:
            for worker in self.workers.values():
                worker.stop()
            unregister([w.spec.name for w in self.workers.values()])
        with _active_lock:
            others = [s for s in _active if s is not self]
            if "active" in started:
                _active.remove(self)
            if "moto" in started and self._moto is not None:
                if not others:
                    # Backends are process-wide: clear them so the next stack starts from nothing.
                    httpx.post(f"{self.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
                self._moto.stop()
                if self._moto_loopback is not None:
                    self._moto_loopback.shutdown()
                    self._moto_loopback.server_close()
                    self._moto_loopback = None
                if others:
                    os.environ["MOTO_PORT"] = others[-1].endpoint_url.rsplit(":", 1)[1]
        if "emulator" in started:
            self.emulator.stop()
        if "state-file" in started and self.state_file:
            self.state_file.unlink(missing_ok=True)

    def _stop_executions(self) -> None:
        """Abort running executions: moto runs each in a thread that would outlive the stack."""
        sfn = self.client("stepfunctions")
        try:
            for machine in sfn.list_state_machines()["stateMachines"]:
                running = sfn.list_executions(
                    stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"
                )
                for execution in running["executions"]:
                    sfn.stop_execution(executionArn=execution["executionArn"])
        except Exception:  # shutting down anyway; leftovers die with the process
            logging.getLogger(__name__).exception("could not stop running executions")

    # ------------------------------------------------------------------ using the stack
    def client(self, service: str) -> Any:
        """A boto3 client against moto (fake credentials, us-east-1); cached, thread-safe to share."""
        with self._clients_lock:
            if service not in self._clients:
                # Invokes wait for the handler: allow Lambda's longest timeout. No retries: fail visibly.
                config = Config(read_timeout=930, retries={"total_max_attempts": 1}, max_pool_connections=50)
                session: Any = self._session  # boto3-stubs only type literal service names
                self._clients[service] = session.client(
                    service, endpoint_url=self.endpoint_url, config=config
                )
            return self._clients[service]

    def aws_env(self) -> dict[str, str]:
        """Environment variables that point AWS SDKs and the CLI at this stack's moto."""
        return lambda_aws_env(self.endpoint_url)

    def sam_local_env(self, ports: Ports | None = None) -> dict[str, dict[str, str]]:
        """`sam local invoke --env-vars` content: each function's resolved environment, pointed at
        this stack (at `ports`, default where it listens), with secret names instead of ARNs.

        SAM applies only variables the template declares (Globals declares AWS_ENDPOINT_URL, as AWS::NoValue);
        credentials and the region are Lambda's reserved variables: `sam local` passes the caller's
        own (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION from the shell) into the container.
        """
        aws, api, sync = (int(url.rsplit(":", 1)[1].split("/")[0]) for url in self._urls())
        target = ports or Ports(aws=aws, api=api, sync=sync, host=self.ports.host)
        rewrites = dict(zip(self._urls(), Ports.urls(target), strict=True))
        secret_names = {
            resource["Ref"]: resource["Ref"].split(":secret:", 1)[1].rsplit("-", 1)[0]
            for resource in self.provisioned.resources.values()
            if resource["Type"] == "AWS::SecretsManager::Secret"
        }

        def local(value: str) -> str:
            for running, wanted in rewrites.items():
                value = value.replace(running, wanted)
            return str(secret_names.get(value, value))

        endpoint = {"AWS_ENDPOINT_URL": Ports.urls(target)[0]}
        return {
            name: {key: local(value) for key, value in spec.environment.items()} | endpoint
            for name, spec in sorted(self.provisioned.functions.items())
        }

    def _urls(self) -> tuple[str, str, str]:
        return self.endpoint_url, str(self.front_door.url), self.emulator.url

    def invoke(self, function: str, event: Any) -> Any:
        """Invoke a function (logical id) through moto's Lambda API; raises FunctionError on failure."""
        result, errored = self._invoke_for_event(function, event)
        if errored:
            raise FunctionError(function, result)
        return result

    def _dead_letter(self, delivery: Delivery) -> None:
        """What Lambda does with an async event that failed every attempt: the function's
        DeadLetterConfig queue gets it, with the error as message attributes."""
        arn = self.workers[delivery.function].spec.dead_letter_arn
        if not arn:
            return
        sqs = self.client("sqs")
        url = sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
        result = delivery.result if isinstance(delivery.result, dict) else {}
        sqs.send_message(
            QueueUrl=url,
            MessageBody=json.dumps(delivery.event),
            MessageAttributes={
                "ErrorCode": {"DataType": "String", "StringValue": str(result.get("errorType", "Unhandled"))},
                "ErrorMessage": {
                    "DataType": "String",
                    "StringValue": str(result.get("errorMessage", ""))[:1000],
                },
            },
        )

    def _invoke_for_event(self, function: str, event: Any) -> tuple[Any, bool]:
        worker = self.workers.get(function)
        if worker is None:
            raise KeyError(f"no function {function!r} in this stack (have: {sorted(self.workers)})")
        if not hook_active():
            raise HookNotActive("moto's LambdaFunction._invoke_lambda is not patched: handlers would not run")
        before = worker.invocations
        response = self.client("lambda").invoke(
            FunctionName=worker.spec.name, Payload=json.dumps(event).encode()
        )
        payload = json.loads(response["Payload"].read() or b"null")
        if worker.invocations == before:
            raise HookNotActive(f"moto answered for {function} without running its worker")
        return payload, "FunctionError" in response

    # ------------------------------------------------------------------ AWS faults
    def inject_aws_fault(
        self,
        function: str,
        operation: str,
        *,
        count: int = 1,
        status: int = 400,
        code: str = "ThrottlingException",
        message: str = "Rate exceeded",
    ) -> None:
        """Answer the next `count` requests `function` (logical id) makes for `operation`
        ("dynamodb:UpdateItem", "states:StartExecution", "s3:PutObject", ...) with this AWS error.

        botocore retries throttling and 5xx errors itself (legacy mode: 5 attempts, DynamoDB 10;
        standard: 3): to make the error reach the handler, inject at least that many.
        """
        if function not in self.workers:
            raise KeyError(f"no function {function!r} in this stack (have: {sorted(self.workers)})")
        if self._moto is None:
            raise RuntimeError("the stack is not running: start it first")
        self._moto.middleware.inject_fault(
            function, operation, count=count, status=status, code=code, message=message
        )

    def clear_aws_faults(self) -> None:
        """Drop injected faults that have not fired yet."""
        if self._moto is None:
            raise RuntimeError("the stack is not running: start it first")
        self._moto.middleware.clear_faults()

    def aws_fault_hits(self) -> dict[tuple[str, str], int]:
        """How many injected faults fired, per (function, operation)."""
        if self._moto is None:
            raise RuntimeError("the stack is not running: start it first")
        return self._moto.middleware.fault_hits()

    def aws_calls(self) -> dict[tuple[str, str], int]:
        """How many AWS requests each function made, per (function, operation), faulted ones included."""
        if self._moto is None:
            raise RuntimeError("the stack is not running: start it first")
        return self._moto.middleware.calls()

    def function_logs(self, function: str) -> str:
        """Everything the function's worker printed so far (all cold starts), Lambda-style."""
        return self.workers[function].log_path.read_text(errors="replace")

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until every SQS event source found its queue empty (after this call) with no batch in flight.

        Messages that wait out a visibility timeout after a failure do not count as work.
        """
        started = time.monotonic()
        while not all(p.idle_since is not None and p.idle_since >= started for p in self.pollers):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"SQS pollers still busy after {timeout} s")
            time.sleep(0.05)

    # ------------------------------------------------------------------ state
    def _build_state(self) -> dict[str, Any]:
        resources = self.provisioned.resources
        declared_resources = list(load_template(self.template_path).get("Resources") or {})

        def first(kind: str, key: str = "Ref") -> Any:
            """The template's first resource of a kind (in the template's order, not creation order)."""
            return next(
                (
                    resources[n].get(key)
                    for n in declared_resources
                    if resources.get(n, {}).get("Type") == kind
                ),
                None,
            )

        submit_queue_url = self.provisioned.sqs_sources[0].queue_url if self.provisioned.sqs_sources else None
        dead_letter_queue_url = None
        if submit_queue_url:
            attributes = self.client("sqs").get_queue_attributes(
                QueueUrl=submit_queue_url, AttributeNames=["RedrivePolicy"]
            )["Attributes"]
            target = json.loads(attributes.get("RedrivePolicy", "{}")).get("deadLetterTargetArn")
            dead_letter_queue_url = next(
                (r["Ref"] for r in resources.values() if r.get("Arn") == target), None
            )
        stage = next(iter(self.provisioned.api_stages.values()), None)
        declared = load_template(self.template_path).get("Parameters") or {}
        return {
            "stack_name": self.stack_name,
            "stack_id": self.stack_id,
            "template": str(self.template_path),
            "pid": os.getpid(),
            "aws_endpoint_url": self.endpoint_url,
            "region": REGION,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "bucket": first("AWS::S3::Bucket"),
            "jobs_table": first("AWS::DynamoDB::Table"),
            "state_machine_arn": first("AWS::Serverless::StateMachine")
            or first("AWS::StepFunctions::StateMachine"),
            "submit_queue_url": submit_queue_url,
            "dead_letter_queue_url": dead_letter_queue_url,
            "front_door_url": self.front_door.url,
            "api_url": f"{self.front_door.url}/{stage}" if stage else None,
            "sync_api_url": self.emulator.url,
            "emulator_admin_url": f"{self.emulator.url}/_emulator",
            "functions": {name: spec.name for name, spec in self.provisioned.functions.items()},
            "function_log_dir": self._log_dir.name,
            "parameters": {
                k: "****" if str((declared.get(k) or {}).get("NoEcho", "")).lower() == "true" else v
                for k, v in self.parameters.items()
            },
            "resources": resources,
            "event_rules": [
                {
                    "function": s.function,
                    "event": s.event,
                    "rule_name": s.rule_name,
                    "rule_arn": s.rule_arn,
                    "schedule": s.expression,
                    "enabled": s.enabled,
                }
                for s in self.provisioned.schedules
            ]
            + [
                {
                    "function": r.function,
                    "event": r.event,
                    "rule_name": r.rule_name,
                    "rule_arn": r.rule_arn,
                    "pattern": r.pattern,
                    "enabled": r.enabled,
                }
                for r in self.provisioned.rules
            ],
            "outputs": self.provisioned.outputs,
            "notes": self.provisioned.notes,
        }


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


__all__ = ["FunctionError", "HookNotActive", "OneMachineStack", "TemplateError"]
