"""The one-machine stack: moto server provisioned from template.yaml, running the real handlers.

    from local.stack import OneMachineStack
    with OneMachineStack(parameter_overrides={"WebhookTimeoutSeconds": "3"}) as stack:
        stack.client("s3").put_object(Bucket=stack.state["bucket"], Key="inputs/a.mp4", Body=b"...")
        stack.wait_idle()

See docs/local-stack.md.
"""

from .stack import (
    CLI_PORTS,
    DOCKER_BRIDGE_HOST,
    SAM_LOCAL_PORTS,
    FunctionError,
    HookNotActive,
    OneMachineStack,
    Ports,
    TemplateError,
)

__all__ = [
    "CLI_PORTS",
    "DOCKER_BRIDGE_HOST",
    "SAM_LOCAL_PORTS",
    "FunctionError",
    "HookNotActive",
    "OneMachineStack",
    "Ports",
    "TemplateError",
]
