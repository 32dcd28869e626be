"""Where this stack's own API is reached: at AWS, or through an AWS emulator's endpoint.

Against an emulator (AWS_ENDPOINT_URL set, as MiniStack and LocalStack set it for the functions
they run), `https://{api}.execute-api.{region}.amazonaws.com/{stage}` names no reachable host.
Both emulators serve the same stage at `{endpoint}/_aws/execute-api/{api}/{stage}`, so that is
the URL handed out (the webhook URL sync.so calls, the CLI's status routes). A custom URL
(PublicApiUrl) and every URL at AWS itself are left as they are.
"""

from __future__ import annotations

import os
import re

EXECUTE_API_URL = re.compile(
    r"^https://(?P<api>[a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?(?P<path>/.*)?$"
)
EMULATOR_ROUTE = "/_aws/execute-api/"


def aws_endpoint(environ: dict[str, str] | None = None) -> str | None:
    """The emulator endpoint the SDK uses (AWS_ENDPOINT_URL), or None at AWS (unset or empty)."""
    value = (os.environ if environ is None else environ).get("AWS_ENDPOINT_URL", "").strip()
    return value.rstrip("/") or None


def reachable_api_url(url: str, endpoint: str | None) -> str:
    """`url` as a caller reaches it when the stack runs behind `endpoint` (None: at AWS)."""
    match = EXECUTE_API_URL.match(url)
    if endpoint is None or match is None:
        return url
    return f"{endpoint.rstrip('/')}{EMULATOR_ROUTE}{match['api']}{match['path'] or ''}"
