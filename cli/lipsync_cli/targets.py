"""Which stack the command talks to.

- A deployed stack, by name: its CloudFormation outputs (MediaBucketName, ApiUrl, JobsTableName) and
  parameters (DefaultModel; DefaultOptions and PriceTableUsdPerSecond from Tuning), read with the
  user's own AWS credentials.
- The one-machine stack (`python -m local.stack --state-file PATH`), through its state file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import boto3
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from lipsync.config import TUNING_VARIABLE, TuningError, environment
from lipsync.endpoints import aws_endpoint, reachable_api_url
from lipsync_cli.errors import AwsError, NotFoundError, UsageError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_STATE_FILE = ".local-stack.json"
STACK_ENV = "LIPSYNC_STACK"
LOCAL_ENV = "LIPSYNC_LOCAL"
REQUIRED_OUTPUTS = ("MediaBucketName", "ApiUrl")


@dataclass(frozen=True)
class Target:
    """Everything a command needs to reach one stack."""

    description: str
    bucket: str
    api_url: str
    region: str
    credentials: Credentials
    endpoint_url: str | None = None  # moto's, for the one-machine stack
    jobs_table: str | None = None
    default_model: str = "lipsync-2"
    default_options: str = "{}"
    price_table: str = ""  # PriceTableUsdPerSecond (JSON; empty = list prices), for estimates
    outputs: dict[str, str] = field(default_factory=dict)

    def s3(self) -> S3Client:
        return boto3.client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.credentials.access_key,
            aws_secret_access_key=self.credentials.secret_key,
            aws_session_token=self.credentials.token,
        )


class CloudFormation(Protocol):
    def describe_stacks(self, *, StackName: str) -> Any: ...


def from_state_file(path: str | Path) -> Target:
    state_path = Path(path)
    try:
        state = json.loads(state_path.read_text())
    except FileNotFoundError:
        raise NotFoundError(
            f"no one-machine stack state file at {state_path} (start one with "
            f"`python -m local.stack --state-file {state_path}` or `make local-stack`)"
        ) from None
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{state_path} is not a one-machine stack state file: {error}") from None
    missing = [key for key in ("bucket", "api_url", "aws_endpoint_url", "region") if not state.get(key)]
    if missing or not isinstance(state, dict):
        raise UsageError(f"{state_path} is not a one-machine stack state file (missing {', '.join(missing)})")
    parameters = state.get("parameters") or {}
    return Target(
        description=f"one-machine stack {state.get('stack_name', '')} ({state_path})",
        bucket=state["bucket"],
        api_url=state["api_url"].rstrip("/"),
        region=state["region"],
        credentials=Credentials(state["aws_access_key_id"], state["aws_secret_access_key"]),
        endpoint_url=state["aws_endpoint_url"],
        jobs_table=state.get("jobs_table"),
        **_planning(parameters),
    )


class Planning(TypedDict):
    default_model: str
    default_options: str
    price_table: str


def _planning(parameters: dict[str, str]) -> Planning:
    """The stack's DefaultModel, and DefaultOptions and PriceTableUsdPerSecond from its Tuning (or
    their defaults), as the submit function reads them."""
    try:
        tuned = environment({TUNING_VARIABLE: parameters.get("Tuning") or ""})
    except TuningError as error:
        raise UsageError(f"the stack's {error}") from None
    return Planning(
        default_model=parameters.get("DefaultModel") or "lipsync-2",
        default_options=tuned["DEFAULT_OPTIONS"],
        price_table=tuned["PRICE_TABLE_USD_PER_SECOND"],
    )


def from_stack(name: str, cloudformation: CloudFormation, credentials: Credentials, region: str) -> Target:
    """A deployed stack, from its outputs; `cloudformation` is a boto3 client (or a fake of one)."""
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as error:
        message = error.response.get("Error", {}).get("Message", str(error))
        if "does not exist" in message:
            raise NotFoundError(f"no CloudFormation stack {name!r} in {region}") from None
        raise AwsError(f"CloudFormation describe_stacks {name!r}: {message}") from None
    except BotoCoreError as error:
        raise AwsError(f"CloudFormation describe_stacks {name!r}: {error}") from None
    if not stacks:
        raise NotFoundError(f"no CloudFormation stack {name!r} in {region}")
    stack = stacks[0]
    outputs = {item["OutputKey"]: item["OutputValue"] for item in stack.get("Outputs") or []}
    parameters = {
        item["ParameterKey"]: item.get("ParameterValue", "") for item in stack.get("Parameters") or []
    }
    missing = [key for key in REQUIRED_OUTPUTS if key not in outputs]
    if missing:
        raise UsageError(
            f"stack {name!r} ({stack.get('StackStatus', '?')}) has no {', '.join(missing)} output: "
            "is it this pipeline's stack, and did its deployment finish?"
        )
    return Target(
        description=f"stack {name} ({region})",
        bucket=outputs["MediaBucketName"],
        # Behind an AWS emulator (AWS_ENDPOINT_URL), the API is at the emulator's execute-api route.
        api_url=reachable_api_url(outputs["ApiUrl"], aws_endpoint()).rstrip("/"),
        region=region,
        credentials=credentials,
        jobs_table=outputs.get("JobsTableName"),
        **_planning(parameters),
        outputs=outputs,
    )


def resolve(
    *, stack: str | None, local: str | None, profile: str | None = None, region: str | None = None
) -> Target:
    """--stack NAME, --local [PATH], then $LIPSYNC_STACK, then $LIPSYNC_LOCAL, then ./.local-stack.json."""
    if stack and local:
        raise UsageError("give either --stack or --local, not both")
    stack = stack or (None if local else os.environ.get(STACK_ENV))
    if not stack:
        return from_state_file(local or os.environ.get(LOCAL_ENV) or DEFAULT_STATE_FILE)
    try:
        # Lambda and the other SDKs read AWS_REGION; boto3 reads only AWS_DEFAULT_REGION and the profile.
        session = boto3.Session(
            profile_name=profile, region_name=region or os.environ.get("AWS_REGION") or None
        )
        credentials = session.get_credentials()
    except BotoCoreError as error:
        raise AwsError(f"AWS credentials: {error}") from None
    if credentials is None:
        raise AwsError("no AWS credentials found (aws configure, AWS_PROFILE or --profile)")
    if not session.region_name:
        raise UsageError("no AWS region: give --region or set AWS_REGION")
    client = session.client("cloudformation")
    frozen = credentials.get_frozen_credentials()
    return from_stack(
        stack,
        client,
        Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token),
        session.region_name,
    )
