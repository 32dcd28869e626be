"""A WSGI layer in front of moto: what moto lets through that AWS would not, and injected faults.

- **Presigned URL expiry.** moto does not check it; here a request with SigV4 query
  authentication past `X-Amz-Date + X-Amz-Expires` (or SigV2 `Expires` in the past) gets
  S3's 403 `AccessDenied` "Request has expired", and `X-Amz-Expires` over 7 days S3's 400.
- **Fault injection.** Every function worker runs with `AWS_SDK_UA_APP_ID=<logical id>`,
  so botocore ends each request's User-Agent with `app/<logical id>`. A fault registered
  for (function, "service:Operation") answers the next matching requests with that
  protocol's error shape instead of reaching moto.

The operation comes from `X-Amz-Target` (JSON protocols), the `Action` parameter (query
protocol), or botocore's own model of the REST routes (S3, Lambda): the most specific
operation whose method, path, literal query keys and required query/header members fit.
"""

from __future__ import annotations

import functools
import io
import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, parse_qsl
from xml.sax.saxutils import escape  # nosec B406 # escapes text we write; parses nothing

import botocore.session
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

MAX_PRESIGNED_SECONDS = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week

_APP_ID = re.compile(r"(?:^|\s)app/(?P<id>\S+)")
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/\s,]+/\d{8}/[^/\s,]+/(?P<service>[^/\s,]+)/aws4_request")
_SMITHY_RPC = re.compile(r"^/service/[^/]+/operation/(?P<operation>[^/]+)$")
_BOTOCORE_NAMES = {"states": "stepfunctions"}  # IAM/signing prefix -> botocore service name
_PREFIXES = {"monitoring": "cloudwatch"}  # signing name -> IAM prefix, where they differ
# The `__type` namespace of JSON errors where known; botocore only reads what follows '#'.
_JSON_NAMESPACES = {"dynamodb": "com.amazonaws.dynamodb.v20120810"}


@dataclass
class _Fault:
    remaining: int
    status: int
    code: str
    message: str


@dataclass(frozen=True)
class _Route:
    """One REST operation of a botocore service model."""

    operation: str
    method: str
    path: re.Pattern[str]
    literal_query: tuple[tuple[str, str], ...]
    required_query: tuple[str, ...]
    required_headers: tuple[str, ...]  # as WSGI environ keys

    @property
    def specificity(self) -> int:
        return len(self.literal_query) + len(self.required_query) + len(self.required_headers)


@functools.cache
def _service_model(prefix: str) -> Any:
    return botocore.session.get_session().get_service_model(_BOTOCORE_NAMES.get(prefix, prefix))


@functools.cache
def _rest_routes(prefix: str) -> tuple[_Route, ...]:
    model = _service_model(prefix)
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        path, _, query = operation.http["requestUri"].partition("?")
        pattern = "".join(
            "(.+)" if part.endswith("+}") else "[^/]+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^}]+\})", path)
        )
        shape = operation.input_shape
        required = set(shape.required_members) if shape is not None else set()
        members = shape.members if shape is not None else {}
        located = [
            (m.serialization.get("location"), m.serialization.get("name", n))
            for n, m in members.items()
            if n in required
        ]
        routes.append(
            _Route(
                operation=name,
                method=operation.http["method"],
                path=re.compile(f"^{pattern.rstrip('/') or '/'}/?$"),
                literal_query=tuple(parse_qsl(query, keep_blank_values=True)),
                required_query=tuple(n for where, n in located if where == "querystring"),
                required_headers=tuple(
                    "HTTP_" + n.upper().replace("-", "_") for where, n in located if where == "header"
                ),
            )
        )
    return tuple(routes)


def supported_operation(operation: str) -> tuple[str, str]:
    """Check "service:Operation" against botocore's models; returns (prefix, operation)."""
    prefix, sep, name = operation.partition(":")
    if not sep or not prefix or not name:
        raise ValueError(f"operation must look like 'dynamodb:UpdateItem', got {operation!r}")
    try:
        model = _service_model(prefix)
    except Exception as error:
        raise ValueError(f"unknown service {prefix!r} in {operation!r}") from error
    if name not in model.operation_names:
        raise ValueError(f"{prefix} has no operation {name!r}")
    if model.protocol not in ("json", "rest-json", "rest-xml", "query"):
        raise ValueError(
            f"{prefix} speaks {model.protocol}; faults are injected for JSON, query and REST only"
        )
    return prefix, name


def _query(environ: dict[str, Any]) -> dict[str, list[str]]:
    return parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)


class AwsMiddleware:
    """Wraps moto's WSGI app: presigned URL expiry, then injected faults, then moto."""

    def __init__(self, app: WsgiApp, clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self._clock = clock
        self._lock = threading.Lock()
        self._faults: dict[tuple[str, str], deque[_Fault]] = {}
        self._hits: Counter[tuple[str, str]] = Counter()
        self._calls: Counter[tuple[str, str]] = Counter()
        # moto's TransactWriteItems deep-copies every table it touches, unlocked, to roll back on a
        # failed condition: a concurrent write makes that copy fail ("dictionary changed size during
        # iteration", a 500). DynamoDB itself is atomic per request, so one request at a time here
        # changes no outcome our code can see; it only keeps moto from crashing under parallel Lambdas.
        self._dynamodb = threading.Lock()

    # ------------------------------------------------------------------ fault table
    def inject_fault(
        self, function: str, operation: str, *, count: int, status: int, code: str, message: str
    ) -> None:
        prefix, name = supported_operation(operation)
        if count < 1:
            raise ValueError("count must be at least 1")
        with self._lock:
            self._faults.setdefault((function, f"{prefix}:{name}"), deque()).append(
                _Fault(count, status, code, message)
            )

    def clear_faults(self) -> None:
        """Forget faults that have not fired yet (hits and calls are kept)."""
        with self._lock:
            self._faults.clear()

    def fault_hits(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._hits)

    def calls(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._calls)

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        expired = self._presign_rejection(environ)
        if expired is not None:
            return self._respond(start_response, environ, *expired)
        match = _APP_ID.search(environ.get("HTTP_USER_AGENT", ""))
        if match is not None:
            operation = self._operation(environ)
            if operation is not None:
                fault = self._take_fault(match["id"], operation)
                if fault is not None:
                    return self._respond(start_response, environ, *_error_response(operation, fault))
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            with self._dynamodb:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)

    def _take_fault(self, function: str, operation: str) -> _Fault | None:
        key = (function, operation)
        with self._lock:
            self._calls[key] += 1
            queue = self._faults.get(key)
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining == 0:
                queue.popleft()
            self._hits[key] += 1
            return fault

    @staticmethod
    def _respond(
        start_response: StartResponse,
        environ: dict[str, Any],
        status: int,
        headers: dict[str, str],
        body: bytes,
    ) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD") == "HEAD":
            body = b""  # a HEAD answer has the status and headers only
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        start_response(
            f"{status} {reason}",
            [*headers.items(), ("Content-Length", str(len(body)))],
        )
        return [body]

    # ------------------------------------------------------------------ presigned URLs
    def _presign_rejection(self, environ: dict[str, Any]) -> tuple[int, dict[str, str], bytes] | None:
        query = _query(environ)
        now = self._clock()
        if query.get("X-Amz-Algorithm") == ["AWS4-HMAC-SHA256"] and "X-Amz-Date" in query:
            try:
                signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
                expires = int(query.get("X-Amz-Expires", ["0"])[0])
            except ValueError:
                return None  # malformed: moto answers as it does
            if expires > MAX_PRESIGNED_SECONDS:
                message = (
                    "X-Amz-Expires must be less than a week (in seconds) that is, "
                    "the given X-Amz-Expires must be less than 604800 seconds"
                )
                return _s3_error(400, "AuthorizationQueryParametersError", message)
            deadline = signed.timestamp() + expires
            if "X-Amz-Expires" in query and now > deadline:
                return _s3_error(
                    403, "AccessDenied", "Request has expired", {"X-Amz-Expires": str(expires)}, deadline, now
                )
        elif {"AWSAccessKeyId", "Signature", "Expires"} <= set(query):
            try:
                deadline = float(int(query["Expires"][0]))
            except ValueError:
                return None
            if now > deadline:
                return _s3_error(403, "AccessDenied", "Request has expired", {}, deadline, now)
        return None

    # ------------------------------------------------------------------ operations
    def _operation(self, environ: dict[str, Any]) -> str | None:
        """The request's "service:Operation", None when it cannot be told."""
        scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None:
            credential = _query(environ).get("X-Amz-Credential", [""])[0]
            scope = _CREDENTIAL_SCOPE.search(f"Credential={credential}")
        if scope is None:
            return None
        signing = scope["service"]
        prefix = _PREFIXES.get(signing, signing)
        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return f"{prefix}:{target.rsplit('.', 1)[-1]}"
        path = environ.get("PATH_INFO", "")
        rpc = _SMITHY_RPC.match(path)
        if rpc is not None:
            return f"{prefix}:{rpc['operation']}"
        try:
            protocol = _service_model(prefix).protocol
        except Exception:
            return None
        if protocol == "query":
            action = _query(environ).get("Action") or parse_qs(_read_form(environ)).get("Action")
            return f"{prefix}:{action[0]}" if action else None
        if prefix == "s3":
            path = _path_style(environ, path)
        return _rest_operation(prefix, environ, path)


def _read_form(environ: dict[str, Any]) -> str:
    """A form body, read and put back for moto."""
    if not environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        return ""
    try:
        size = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return ""
    body = environ["wsgi.input"].read(size) if size else b""
    environ["wsgi.input"] = io.BytesIO(body)
    return body.decode("utf-8", "replace")


def _path_style(environ: dict[str, Any], path: str) -> str:
    """S3 virtual-hosted requests (bucket.localhost, bucket.s3.amazonaws.com) as path-style paths."""
    host = environ.get("HTTP_HOST", "").split(":", 1)[0]
    if host.endswith(".localhost"):
        return f"/{host.removesuffix('.localhost')}{path}"
    if host.endswith(".amazonaws.com") and ".s3" in host and not host.startswith("s3"):
        return f"/{host.split('.s3', 1)[0]}{path}"
    return path


def _rest_operation(prefix: str, environ: dict[str, Any], path: str) -> str | None:
    method = environ.get("REQUEST_METHOD", "")
    query = _query(environ)
    best: _Route | None = None
    for route in _rest_routes(prefix):
        if route.method != method or not route.path.match(path):
            continue
        if any(k not in query or (v and query[k] != [v]) for k, v in route.literal_query):
            continue
        if any(q not in query for q in route.required_query) or any(
            h not in environ for h in route.required_headers
        ):
            continue
        if best is None or route.specificity > best.specificity:
            best = route
    return f"{prefix}:{best.operation}" if best else None


# ---------------------------------------------------------------------- error shapes
def _request_id() -> str:
    return str(uuid.uuid4())


def _error_response(operation: str, fault: _Fault) -> tuple[int, dict[str, str], bytes]:
    """AWS's error answer for the operation's protocol."""
    prefix = operation.split(":", 1)[0]
    model = _service_model(prefix)
    request_id = _request_id()
    if model.protocol == "json":
        namespace = _JSON_NAMESPACES.get(prefix, f"com.amazonaws.{prefix}")
        headers = {
            "Content-Type": f"application/x-amz-json-{model.metadata.get('jsonVersion', '1.0')}",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": fault.code,
        }
        if model.metadata.get("awsQueryCompatible") is not None:  # SQS: botocore reads the query-era code
            headers["x-amzn-query-error"] = f"{fault.code};{'Sender' if fault.status < 500 else 'Receiver'}"
        body = {"__type": f"{namespace}#{fault.code}", "message": fault.message}
        return fault.status, headers, json.dumps(body).encode()
    if model.protocol == "rest-json":
        headers = {
            "Content-Type": "application/json",
            "x-amzn-RequestId": request_id,
            "x-amzn-ErrorType": fault.code,
        }
        body = {"Type": "User" if fault.status < 500 else "Service", "message": fault.message}
        return fault.status, headers, json.dumps(body).encode()
    if model.protocol == "query":
        kind = "Sender" if fault.status < 500 else "Receiver"
        xml = (
            f'<ErrorResponse xmlns="https://{prefix}.amazonaws.com/doc/"><Error><Type>{kind}</Type>'
            f"<Code>{escape(fault.code)}</Code><Message>{escape(fault.message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        return fault.status, {"Content-Type": "text/xml", "x-amzn-RequestId": request_id}, xml.encode()
    return _s3_error(fault.status, fault.code, fault.message)


def _s3_error(
    status: int,
    code: str,
    message: str,
    extra: dict[str, str] | None = None,
    expires: float | None = None,
    now: float | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request_id = uuid.uuid4().hex[:16].upper()
    fields = {"Code": code, "Message": message, **(extra or {})}
    if expires is not None and now is not None:
        fields["Expires"] = datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fields["ServerTime"] = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    fields |= {"RequestId": request_id, "HostId": uuid.uuid4().hex}
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        + "".join(f"<{k}>{escape(v)}</{k}>" for k, v in fields.items())
        + "</Error>"
    )
    headers = {
        "Content-Type": "application/xml",
        "x-amz-request-id": request_id,
        "x-amz-id-2": fields["HostId"],
    }
    return status, headers, xml.encode()


# ---------------------------------------------------------------------- the server
def schedule_rules_take_no_events() -> None:
    """moto 5.2.5 offers every PutEvents entry to every rule of the bus, and a schedule rule's empty
    pattern matches all of them, so its Lambda target (which moto cannot invoke) fails the whole
    PutEvents with a 500. In AWS a schedule rule receives no events; the provisioner gives a rule
    either a schedule or a pattern, never both. Idempotent."""
    from moto.events.models import Rule

    original = Rule.send_to_targets
    if getattr(original, "schedule_only", False):
        return

    @functools.wraps(original)
    def send_to_targets(self: Any, original_event: Any, transform_input: bool = True) -> None:
        if self.scheduled_expression:
            return
        original(self, original_event, transform_input)

    send_to_targets.schedule_only = True  # type: ignore[attr-defined]
    Rule.send_to_targets = send_to_targets  # type: ignore[method-assign]


class MotoServer(ThreadedMotoServer):
    """ThreadedMotoServer with `AwsMiddleware` around moto's app.

    `_server_entry` mirrors moto 5.2.5's (pinned): it builds the app and the server in one
    method, so the only clean hook for a middleware is to build them here.
    """

    def __init__(self, ip_address: str, port: int) -> None:
        super().__init__(ip_address=ip_address, port=port, verbose=False)
        schedule_rules_take_no_events()
        self.middleware = AwsMiddleware(DomainDispatcherApplication(create_backend_app))

    def _server_entry(self) -> None:
        self._server = make_server(
            self._ip_address, self._port, self.middleware, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
