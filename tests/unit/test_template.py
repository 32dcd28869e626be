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
    invokable = {
        policy["LambdaInvokePolicy"]["FunctionName"]["Ref"]
        for policy in machine["Policies"]
        if "LambdaInvokePolicy" in policy
    }
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
    variables |= {variable for variable, _ in config.TUNABLES.values()}  # Tuning, else their defaults
    variables |= set(properties.get("Environment", {}).get("Variables", {}))
    source = (ROOT / properties["CodeUri"] / "app.py").read_text()
    if "lipsync.generation.wiring" in source:  # the lifecycle functions share their wiring
        source += (ROOT / "layers/common/lipsync/generation/wiring.py").read_text()
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
    for parameter in ("SyncApiKey", "SyncWebhookSecret"):
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


# ---------------------------------------------------------------- housekeeping, alarms, publishing
CLOUDWATCH_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827]
CLOUDWATCH_RETENTION_DAYS += [2192, 2557, 2922, 3288, 3653]
ALARM_TARGET = [{"Ref": "AlarmTopic"}]


def of_type(kind: str) -> dict[str, Any]:
    return {name: resource for name, resource in RESOURCES.items() if resource["Type"] == kind}


def test_log_retention_takes_only_cloudwatch_values_and_every_log_group_uses_it() -> None:
    parameter = TEMPLATE["Parameters"]["LogRetentionDays"]
    assert parameter["AllowedValues"] == CLOUDWATCH_RETENTION_DAYS
    assert parameter["Default"] in CLOUDWATCH_RETENTION_DAYS
    groups = of_type("AWS::Logs::LogGroup")
    assert groups
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_every_function_logs_to_its_own_group(name: str) -> None:
    target = FUNCTIONS[name]["Properties"]["LoggingConfig"]["LogGroup"]
    assert target == {"Ref": f"{name}LogGroup"}
    assert RESOURCES[f"{name}LogGroup"]["Type"] == "AWS::Logs::LogGroup"


def test_the_state_machine_logs_errors_without_execution_data_and_may_deliver_them() -> None:
    machine = RESOURCES["JobLifecycle"]["Properties"]
    logging = machine["Logging"]
    assert logging["Level"] == "ERROR"
    assert logging["IncludeExecutionData"] is False  # inputs carry task tokens and presigned URLs
    assert logging["Destinations"] == [
        {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": ["JobLifecycleLogGroup", "Arn"]}}}
    ]
    granted = {
        action
        for policy in machine["Policies"]
        for statement in policy.get("Statement", [])
        if statement["Resource"] == "*"
        for action in statement["Action"]
    }
    # What Step Functions needs to set up CloudWatch Logs delivery (AWS's documented list).
    assert granted == {
        "logs:CreateLogDelivery",
        "logs:GetLogDelivery",
        "logs:UpdateLogDelivery",
        "logs:DeleteLogDelivery",
        "logs:ListLogDeliveries",
        "logs:PutResourcePolicy",
        "logs:DescribeResourcePolicies",
        "logs:DescribeLogGroups",
    }


def test_every_alarm_notifies_the_alarm_topic_when_one_is_configured() -> None:
    alarms = of_type("AWS::CloudWatch::Alarm")
    assert {"SubmitDeadLetterAlarm", "DispatchPausedAlarm"} <= set(alarms)
    for name, alarm in alarms.items():
        assert alarm["Properties"].get("AlarmActions") == ALARM_TARGET, name
        assert alarm["Properties"].get("OKActions") == ALARM_TARGET, name
    assert "Condition" not in RESOURCES["AlarmTopic"]  # always there: subscribe anything to it
    subscription = RESOURCES["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"]["Protocol"] == "email"


def test_the_bucket_aborts_stale_uploads_expires_old_versions_and_optionally_media() -> None:
    rules = RESOURCES["MediaBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    plain = {rule["Id"]: rule for rule in rules if "Id" in rule}
    assert plain["AbortIncompleteMultipartUploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    assert "Prefix" not in plain["AbortIncompleteMultipartUploads"]
    assert plain["ExpireNoncurrentVersions"]["NoncurrentVersionExpiration"] == {
        "NoncurrentDays": {"Fn::FindInMap": ["Constants", "Retention", "NoncurrentVersionDays"]}
    }
    optional = {}
    for rule in rules:
        if "Fn::If" in rule:
            condition, body, otherwise = rule["Fn::If"]
            assert otherwise == {"Ref": "AWS::NoValue"}
            optional[body["Prefix"]] = (condition, body["ExpirationInDays"])
    assert optional == {
        "inputs/": ("ExpireInputs", {"Ref": "InputExpirationDays"}),
        "jobs/": ("ExpireInputs", {"Ref": "InputExpirationDays"}),
        "outputs/": ("ExpireOutputs", {"Ref": "OutputExpirationDays"}),
    }
    for parameter in ("InputExpirationDays", "OutputExpirationDays"):
        assert TEMPLATE["Parameters"][parameter]["Default"] == 0  # keep forever unless asked


def test_the_architecture_parameter_sets_the_functions_and_the_layer() -> None:
    assert TEMPLATE["Parameters"]["Architecture"]["AllowedValues"] == ["x86_64", "arm64"]
    assert TEMPLATE["Globals"]["Function"]["Architectures"] == [{"Ref": "Architecture"}]
    layer = RESOURCES["CommonLayer"]
    assert layer["Properties"]["CompatibleArchitectures"] == [{"Ref": "Architecture"}]
    assert layer["Metadata"]["BuildArchitecture"] == {"Ref": "Architecture"}
    assert not any("Architectures" in function["Properties"] for function in FUNCTIONS.values())


def test_every_shared_checkov_skip_gives_its_reason_and_applies_to_several_resources() -> None:
    import yaml  # type: ignore[import-untyped]

    text = (ROOT / ".checkov.yaml").read_text()
    skipped = yaml.safe_load(text)["skip-check"]
    assert skipped
    lines = text.splitlines()
    for check in skipped:
        index = lines.index(f"  - {check}")
        assert lines[index - 1].lstrip().startswith("#"), f"{check} has no reason above it"
    in_metadata = {
        skip["id"]
        for resource in RESOURCES.values()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    }
    assert not in_metadata & set(skipped)  # one place each


def test_every_checkov_skip_gives_its_reason() -> None:
    skips = [
        (name, skip)
        for name, resource in RESOURCES.items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips
    for name, skip in skips:
        assert re.fullmatch(r"CKV2?_AWS_\d+", skip["id"]), (name, skip)
        assert len(skip.get("comment", "")) > 30, (name, skip)


def test_the_application_is_ready_for_the_serverless_application_repository() -> None:
    app = TEMPLATE["Metadata"]["AWS::ServerlessRepo::Application"]
    required = {"Name", "Description", "Author", "SpdxLicenseId", "LicenseUrl", "ReadmeUrl", "Labels"}
    required |= {"HomePageUrl", "SemanticVersion", "SourceCodeUrl"}
    assert required <= set(app)
    assert (ROOT / app["LicenseUrl"]).is_file()
    assert (ROOT / app["ReadmeUrl"]).is_file()
    assert re.fullmatch(r"\d+\.\d+\.\d+", app["SemanticVersion"])
    assert app["SpdxLicenseId"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert all(re.fullmatch(r"[a-zA-Z0-9+\-_:/@]{1,127}", label) for label in app["Labels"])
    assert 1 <= len(app["Labels"]) <= 10
    assert app["SemanticVersion"] in (ROOT / "CHANGELOG.md").read_text()


def test_samconfig_has_a_default_and_a_prod_environment() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    default_stack = config["default"]["global"]["parameters"]["stack_name"]
    prod_stack = config["prod"]["global"]["parameters"]["stack_name"]
    assert default_stack != prod_stack
    prod = config["prod"]["deploy"]["parameters"]
    assert prod["confirm_changeset"] is True
    # Read as SAM reads them: Tuning's JSON keeps its quotes only inside single quotes.
    from samcli.cli.types import CfnParameterOverridesType

    overrides = CfnParameterOverridesType().convert(tuple(prod["parameter_overrides"]), None, None)
    assert json.loads(overrides["Tuning"]) == {"LogLevel": "WARNING"}
    assert set(overrides) <= set(TEMPLATE["Parameters"])
    assert not {"SyncApiKey", "SyncWebhookSecret"} & set(overrides)


# ---------------------------------------------------------------------------- timings that cannot work


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"WEBHOOK_TIMEOUT_SECONDS": "7200", "MAX_JOB_SECONDS": "3600"}, "must not exceed MaxJobSeconds"),
        ({"POLL_FIRST_INTERVAL_SECONDS": "300", "POLL_MAX_INTERVAL_SECONDS": "60"}, "PollMaxIntervalSeconds"),
        ({"MAX_JOB_SECONDS": "172800"}, "less than or equal to 86400"),
    ],
)
def test_timings_that_cannot_work_fail_the_dispatchers_cold_start_with_the_reason(
    overrides: dict[str, str], message: str
) -> None:
    """Issue 14, item 14: WebhookTimeoutSeconds was checked against neither MaxJobSeconds nor the
    state machine's own TimeoutSeconds (CloudFormation rules cannot compare two numbers)."""
    from pydantic import ValidationError

    from lipsync.config import LifecycleTimings

    timings = {
        "WEBHOOK_TIMEOUT_SECONDS": "600",
        "POLL_FIRST_INTERVAL_SECONDS": "15",
        "POLL_BACKOFF_RATE": "1.5",
        "POLL_MAX_INTERVAL_SECONDS": "120",
        "MAX_JOB_SECONDS": "21600",
    }
    LifecycleTimings.model_validate(timings)
    with pytest.raises(ValidationError, match=message):
        LifecycleTimings.model_validate(timings | overrides)


def test_the_state_machine_outlives_every_job_it_can_watch() -> None:
    from lipsync.config import MAX_DEADLINE_SECONDS, LifecycleTimings
    from lipsync.generation.deadlines import WATCH_SECONDS

    assert MAX_DEADLINE_SECONDS < WATCH_SECONDS < ASL["TimeoutSeconds"]
    (limit,) = [c for c in LifecycleTimings.model_fields["max_job_seconds"].metadata if hasattr(c, "le")]
    assert limit.le == MAX_DEADLINE_SECONDS  # and the webhook timeout may not exceed it (above)


def test_the_webhook_route_has_throttle_limits_of_its_own() -> None:
    settings = TEMPLATE["Resources"]["Api"]["Properties"]["MethodSettings"]
    by_route = {(s["ResourcePath"], s["HttpMethod"]): s for s in settings}
    webhook, rest = by_route[("/~1webhooks~1sync~1{jobId}", "POST")], by_route[("/*", "*")]
    assert webhook["ThrottlingRateLimit"] > rest["ThrottlingRateLimit"]
    assert webhook["ThrottlingBurstLimit"] > rest["ThrottlingBurstLimit"]


def test_copy_retries_wait_ever_longer_up_to_five_minutes_and_outlast_the_watch() -> None:
    """Issue 14, item 6: copy failures went to RecordFailure minutes after the first error, and a loop
    after a terminal poll spun with nextWaitSeconds 0. Now Step Functions' Retry owns the waits."""
    from lipsync.generation.deadlines import WATCH_SECONDS

    retries = {tuple(r["ErrorEquals"]): r for r in ASL["States"]["Finalize"]["Retry"]}
    copy = retries[("OutputNotCopiedYet",)]
    assert copy["IntervalSeconds"] >= 1
    assert copy["BackoffRate"] > 1
    assert copy["MaxDelaySeconds"] <= 300
    waits = [
        min(copy["MaxDelaySeconds"], copy["IntervalSeconds"] * copy["BackoffRate"] ** n)
        for n in range(copy["MaxAttempts"])
    ]
    assert sum(waits) > WATCH_SECONDS  # Finalize itself gives up at the end of the watch
    assert retries[("GenerationNotFinished",)]["MaxAttempts"] == 0
    catches = {tuple(c["ErrorEquals"]): c["Next"] for c in ASL["States"]["Finalize"]["Catch"]}
    assert catches[("GenerationNotFinished",)] == "WaitBeforePoll"
    for name, state in ASL["States"].items():
        if state["Type"] == "Wait" and "Seconds" in state:
            assert state["Seconds"] >= 1, name


def test_execution_ended_events_are_retried_and_kept_when_they_cannot_be_handled() -> None:
    """Issue 14, item 8: the ExecutionEnded rule had no RetryPolicy and no dead-letter queue."""
    dispatch = FUNCTIONS["DispatchFunction"]["Properties"]
    rule = dispatch["Events"]["ExecutionEnded"]["Properties"]
    assert rule["RetryPolicy"]["MaximumRetryAttempts"] > 0
    assert rule["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": ["DispatchDeadLetterQueue", "Arn"]}
    assert dispatch["DeadLetterQueue"] == {
        "Type": "SQS",
        "TargetArn": {"Fn::GetAtt": ["DispatchDeadLetterQueue", "Arn"]},
    }
    alarm = TEMPLATE["Resources"]["DispatchDeadLetterAlarm"]["Properties"]
    assert alarm["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["DispatchDeadLetterQueue", "QueueName"]}


# ---------------------------------------------------------------------------- the first deploy


def test_the_guided_deploy_asks_at_most_twelve_parameters_and_what_a_user_must_decide() -> None:
    """`sam deploy --guided` asks every template parameter; Tuning holds the rest."""
    parameters = TEMPLATE["Parameters"]
    assert len(parameters) <= 12, sorted(parameters)
    assert {
        "SyncApiKey",
        "SyncWebhookSecret",
        "SyncPlanConcurrency",
        "MonthlyBudgetUsd",
        "AlarmEmail",
    } <= set(parameters)
    assert "Default" not in parameters["SyncApiKey"]
    assert "Default" not in parameters["MonthlyBudgetUsd"]  # a paid API: the budget is asked for
    assert parameters["SyncPlanConcurrency"]["Default"] == "1"  # the smallest plan, never over-assumed
    for value in ("1", "15", "auto"):
        assert re.fullmatch(parameters["SyncPlanConcurrency"]["AllowedPattern"], value)
    for value in ("0", "three", "-1"):
        assert not re.fullmatch(parameters["SyncPlanConcurrency"]["AllowedPattern"], value)
    assert parameters["Tuning"]["Default"] == "{}"


def test_the_tuning_parameter_names_every_key_the_code_accepts() -> None:
    from lipsync.config import TUNABLES

    description = TEMPLATE["Parameters"]["Tuning"]["Description"]
    keys = description.split(":", 1)[1].split("(README", 1)[0]
    named = {key.strip() for key in keys.split(",")}
    assert named == set(TUNABLES)
    assert TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["TUNING"] == {"Ref": "Tuning"}


@pytest.mark.parametrize("value", ["off", "0", "250", "99.50"])
def test_the_budget_takes_a_number_of_dollars_or_off(value: str) -> None:
    from lipsync.config import BudgetSettings

    assert re.fullmatch(TEMPLATE["Parameters"]["MonthlyBudgetUsd"]["AllowedPattern"], value)
    expected = None if value == "off" else float(value)
    assert BudgetSettings.from_env({"MONTHLY_BUDGET_USD": value}).monthly_budget_usd == expected


def test_intake_counts_deliveries_against_the_queues_own_limit() -> None:
    from lipsync.config import IntakeSettings

    constant = TEMPLATE["Mappings"]["Constants"]["Queue"]["SubmitMaxReceiveCount"]
    redrive = RESOURCES["SubmitQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["maxReceiveCount"] == {"Fn::FindInMap": ["Constants", "Queue", "SubmitMaxReceiveCount"]}
    assert IntakeSettings.model_fields["max_receive_count"].default == constant
