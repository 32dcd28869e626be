"""The front door: API Gateway (REST, v1) on loopback, as `sam local start-api` provides it.

moto cannot route API Gateway calls in server mode, so this server turns each HTTP
request into the Lambda proxy event API Gateway would send, for the routes the
template declares as `Type: Api` events, under each API's stage (`/v1/...`). Routes
with AWS_IAM auth verify the SigV4 signature against the stack's fake credentials.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from .provision import ApiRoute
from .template import ACCOUNT_ID, REGION

MAX_PAYLOAD_BYTES = 10 * 1024 * 1024  # API Gateway's request payload limit
MAX_CLOCK_SKEW_SECONDS = 300

# (function logical id, event) -> (handler result, errored)
Invoker = Callable[[str, dict[str, Any]], tuple[Any, bool]]

_MISSING_TOKEN = {"message": "Missing Authentication Token"}
_BAD_SIGNATURE = {
    "message": "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
}
_AUTH_HEADER = re.compile(
    r"AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),\s*Signature=(?P<signature>[0-9a-f]+)"
)


class _Denied(Exception):
    def __init__(self, status: int, body: dict[str, str]) -> None:
        super().__init__(body["message"])
        self.status, self.body = status, body


def match_path(template: str, path: str) -> dict[str, str] | None:
    """Path parameters if `path` matches the API Gateway resource path `template` ({name}, {name+})."""
    wanted = [s for s in template.split("/") if s]
    given = [s for s in path.split("/") if s]
    params: dict[str, str] = {}
    for index, segment in enumerate(wanted):
        if index >= len(given):
            return None
        if segment.startswith("{") and segment.endswith("+}"):
            params[segment[1:-2]] = "/".join(given[index:])
            return params
        if segment.startswith("{") and segment.endswith("}"):
            params[segment[1:-1]] = given[index]
        elif segment != given[index]:
            return None
    return params if len(wanted) == len(given) else None


def _specificity(route: ApiRoute) -> tuple[int, int]:
    """API Gateway prefers literal segments over variables, and variables over greedy ones."""
    segments = [s for s in route.path.split("/") if s]
    return (sum(s.endswith("+}") for s in segments), sum(s.startswith("{") for s in segments))


class FrontDoor:
    def __init__(self, credentials: dict[str, str], host: str = "127.0.0.1", port: int = 0) -> None:
        self.credentials = credentials  # access key id -> secret key
        self.routes: list[ApiRoute] = []
        self.api_ids: dict[str, str] = {}  # Api logical id -> its rest api id (for requestContext.apiId)
        self.invoke: Invoker | None = None
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.front_door = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, name="front-door", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def configure(self, routes: list[ApiRoute], api_ids: dict[str, str], invoke: Invoker) -> None:
        self.routes = sorted(routes, key=_specificity)
        self.api_ids = api_ids
        self.invoke = invoke

    def find_route(self, method: str, full_path: str) -> tuple[ApiRoute, str, dict[str, str]] | None:
        stage, _, rest = full_path.lstrip("/").partition("/")
        path = "/" + rest
        for route in self.routes:
            params = match_path(route.path, path) if route.stage == stage else None
            if params is not None and route.method in (method, "ANY"):
                return route, path, params
        return None

    def verify_sigv4(self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes) -> str:
        """The access key of a valid AWS4-HMAC-SHA256 signature; raises _Denied otherwise."""
        header_map = {name.lower(): value for name, value in headers}
        authorization = header_map.get("authorization")
        if not authorization:
            raise _Denied(403, _MISSING_TOKEN)
        match = _AUTH_HEADER.match(authorization)
        if not match:
            raise _Denied(
                403,
                {
                    "message": "Authorization header requires 'Credential', 'SignedHeaders' and "
                    "'Signature' parameters (AWS4-HMAC-SHA256)."
                },
            )
        access_key, date, region, service, terminator = (match["credential"].split("/") + [""] * 5)[:5]
        secret = self.credentials.get(access_key)
        if secret is None:
            raise _Denied(403, {"message": "The security token included in the request is invalid."})
        if region != REGION or service != "execute-api" or terminator != "aws4_request":
            raise _Denied(
                403,
                {"message": f"Credential should be scoped to region {REGION!r} and service 'execute-api'."},
            )
        timestamp = header_map.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            raise _Denied(
                403, {"message": "Authorization header requires existence of a 'X-Amz-Date' header."}
            ) from None
        if abs(time.time() - signed_at.timestamp()) > MAX_CLOCK_SKEW_SECONDS or not timestamp.startswith(
            date
        ):
            raise _Denied(403, {"message": f"Signature expired: {timestamp} is outside the 5 minute window."})
        signed = match["signed"].split(";")
        request = AWSRequest(
            method=method,
            url=f"http://{header_map.get('host', '')}{raw_path}",
            headers={name: header_map.get(name, "") for name in signed},
            data=body,
        )
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(access_key, secret), "execute-api", REGION)
        expected = signer.signature(
            signer.string_to_sign(request, signer.canonical_request(request)), request
        )
        if not hmac.compare_digest(expected, match["signature"]):
            raise _Denied(403, _BAD_SIGNATURE)
        return access_key

    def build_event(
        self,
        handler: BaseHTTPRequestHandler,
        route: ApiRoute,
        path: str,
        params: dict[str, str],
        body: bytes,
        access_key: str | None,
    ) -> dict[str, Any]:
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        client_ip = handler.client_address[0]
        door_port = self._server.server_address[1]
        forwarded = [
            ("X-Forwarded-For", client_ip),
            ("X-Forwarded-Port", str(door_port)),
            ("X-Forwarded-Proto", "http"),
        ]
        for name, value in [*handler.headers.items(), *forwarded]:
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        query = parse_qsl(urlsplit(handler.path).query, keep_blank_values=True)
        multi_query: dict[str, list[str]] = {}
        for name, value in query:
            multi_query.setdefault(name, []).append(value)
        try:
            text, is_base64 = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, is_base64 = base64.b64encode(body).decode(), True
        now = datetime.now(UTC)
        identity: dict[str, Any] = {
            "cognitoIdentityPoolId": None,
            "accountId": None,
            "cognitoIdentityId": None,
            "caller": None,
            "sourceIp": client_ip,
            "principalOrgId": None,
            "accessKey": None,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": None,
            "userAgent": handler.headers.get("User-Agent"),
            "user": None,
        }
        if access_key is not None:
            identity |= {
                "accessKey": access_key,
                "accountId": ACCOUNT_ID,
                "caller": access_key,
                "user": access_key,
                "userArn": f"arn:aws:iam::{ACCOUNT_ID}:user/{access_key}",
            }
        return {
            "resource": route.path,
            "path": path,
            "httpMethod": handler.command,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": dict(query) or None,
            "multiValueQueryStringParameters": multi_query or None,
            "pathParameters": params or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": uuid.uuid4().hex[:6],
                "resourcePath": route.path,
                "httpMethod": handler.command,
                "extendedRequestId": uuid.uuid4().hex[:16],
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{route.stage}{path}",
                "accountId": ACCOUNT_ID,
                "protocol": handler.request_version,
                "stage": route.stage,
                "domainPrefix": self.api_ids.get(route.api, route.api),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "requestId": str(uuid.uuid4()),
                "identity": identity,
                "domainName": handler.headers.get("Host", ""),
                "apiId": self.api_ids.get(route.api, route.api),
            },
            "body": text if body else None,
            "isBase64Encoded": is_base64,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the functions' logs are the interesting ones

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        self.send_response(status)
        names = {name.lower() for name, _ in headers}
        if "content-type" not in names:
            headers = [*headers, ("Content-Type", "application/json")]
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        self._send(
            status,
            json.dumps(body).encode(),
            [("x-amzn-ErrorType", "ForbiddenException")] if status == 403 else [],
        )

    def _dispatch(self) -> None:
        door: FrontDoor = self.server.front_door  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""  # read even when too long: clients see the 413
        if length > MAX_PAYLOAD_BYTES:
            self._send_json(413, {"message": "Request Too Long"})
            return
        found = door.find_route(self.command, urlsplit(self.path).path)
        if found is None or door.invoke is None:
            self._send_json(403, _MISSING_TOKEN)
            return
        route, path, params = found
        try:
            access_key = (
                door.verify_sigv4(self.command, self.path, list(self.headers.items()), body)
                if route.iam_auth
                else None
            )
        except _Denied as denied:
            self._send_json(denied.status, denied.body)
            return
        result, errored = door.invoke(
            route.function, door.build_event(self, route, path, params, body, access_key)
        )
        if errored or not isinstance(result, dict) or not isinstance(result.get("statusCode", 200), int):
            self._send_json(502, {"message": "Internal server error"})
            return
        headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            headers += [(name, str(v)) for v in values]
        raw = result.get("body") or ""
        payload = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode()
        self._send(int(result.get("statusCode", 200)), payload, headers)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch
