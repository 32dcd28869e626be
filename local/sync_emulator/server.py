"""HTTP layer: routes requests to the Engine, checks auth, logs requests, serves files.

A stdlib ThreadingHTTPServer: one thread per connection, so a long-poll does not
block anyone else.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .errors import ApiError, bad_request, coded
from .masking import mask_headers, mask_json, mask_query_params
from .pricing import estimate
from .state import ALL_STATUSES, EmulatorConfig, Engine, now_iso

Answer = tuple[int, Any, dict[str, str]]  # status, JSON value or text, extra headers


def _params(query: str) -> dict[str, list[str]]:
    return parse_qs(query, keep_blank_values=True)


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _multi(params: dict[str, list[str]], name: str) -> list[str] | None:
    """`?status=A,B`, `?status=A&status=B` (what the official SDK sends) or a mixture -> [A, B]."""
    values = params.get(name)
    if values is None:
        return None
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


def _bool(params: dict[str, list[str]], name: str) -> bool:
    raw = _one(params, name)
    if raw is None:
        return False
    if raw.lower() not in ("true", "false", "1", "0"):
        raise bad_request([f"{name} must be a boolean value"])
    return raw.lower() in ("true", "1")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API in front of a load balancer
    server: _Server

    # One entry per route: method, path regex, handler. The regex groups are passed on.
    def _routes(self) -> list[tuple[str, str, Callable[..., Answer]]]:
        return [
            ("POST", r"/v2/generate", self._create),
            ("GET", r"/v2/generate/([^/]+)", self._get),
            ("GET", r"/v2/generations", self._list),
            ("GET", r"/v2/generations/([^/]+)/download", self._download),
            ("POST", r"/v2/generations/estimate", self._estimate),
            ("POST", r"/v2/generate/estimate-cost", self._estimate),
            ("GET", r"/v2/account", self._account),
            ("POST", r"/v2/assets", self._create_asset),
            ("GET", r"/v2/assets/([^/]+)", self._get_asset),
        ]

    @property
    def engine(self) -> Engine:
        return self.server.engine

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            super().log_message(format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path, params = split.path, _params(split.query)
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""
        if path.startswith("/_emulator/"):
            self._admin(method, path, params)  # no auth, not logged
            return
        outage = self.engine.outage() if path.startswith("/v2") else None
        if outage == "drop":  # the connection breaks before any answer; nothing reached the API
            self._log(method, path, params, 0)
            self.close_connection = True
            return
        # Closed once the answer is out (or the send failed): releases what a request holds
        # until then, e.g. its Idempotency-Key.
        with contextlib.ExitStack() as self._after_send:
            delay = 0.0
            try:
                if outage == "unavailable":
                    raise ApiError(
                        503,
                        {
                            "statusCode": 503,
                            "errorCode": "service_unavailable",
                            "message": "Service Unavailable",
                        },
                    )
                status, payload, headers = self._api(method, path, params)
            except ApiError as error:
                status, payload, headers = error.status, error.body, error.headers
                delay = error.delay_seconds
            except Exception as exc:  # an emulator bug must still answer, like a real 500
                self.log_error("unhandled error: %r", exc)
                status, headers = 500, {}
                payload = {
                    "statusCode": 500,
                    "errorCode": "internal_error",
                    "message": f"Emulator error: {exc}",
                }
            self._log(method, path, params, status)
            if method == "POST" and path == "/v2/generate":
                self.engine.note_create_answer(status, payload)
            latency = self.engine.latency() + delay
            if latency:
                time.sleep(latency)
            self._send(status, payload, headers)

    def _api(self, method: str, path: str, params: dict[str, list[str]]) -> Answer:
        if path.startswith("/v2/") or path == "/v2":
            self._check_auth()
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if match and route_method == method:
                return handler(params, *match.groups())
        raise ApiError(404, {"message": f"Cannot {method} {path}", "error": "Not Found", "statusCode": 404})

    def _check_auth(self) -> None:
        key = self.headers.get("x-api-key")
        if key is None and self.headers.get("Cookie") is None:
            raise ApiError(
                401,
                {
                    "message": "Either Cookie or x-api-key header must be provided",
                    "error": "Unauthorized",
                    "statusCode": 401,
                },
            )
        if key is None or not self.engine.check_api_key(key):
            raise ApiError(401, {"message": "Unauthorized", "statusCode": 401})

    def _json_body(self) -> Any:
        try:
            return json.loads(self._raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request([f"Unexpected token in JSON: {exc}"]) from exc

    def _log(self, method: str, path: str, params: dict[str, list[str]], status: int) -> None:
        try:
            body = mask_json(json.loads(self._raw)) if self._raw else None
        except (ValueError, UnicodeDecodeError):
            body = None
        query = {k: (v[0] if len(v) == 1 else v) for k, v in params.items()}
        self.engine.log_request(
            {
                "method": method,
                "path": path,
                "query": mask_query_params(query),
                "headers": mask_headers({name.lower(): value for name, value in self.headers.items()}),
                "body": body,
                "status": status,
                "time": now_iso(),
            }
        )

    def _send(
        self, status: int, payload: Any, headers: dict[str, str], content_type: str | None = None
    ) -> None:
        if isinstance(payload, bytes):
            data, default_type = payload, "application/octet-stream"
        elif isinstance(payload, str):
            data, default_type = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, default_type = json.dumps(payload).encode(), "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", content_type or default_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # ---------------------------------------------------------------- /v2 routes
    def _create(self, params: dict[str, list[str]]) -> Answer:
        keys = self.headers.get_all("Idempotency-Key") or []
        return 201, self.engine.create(self._raw, keys, self._after_send), {}

    def _get(self, params: dict[str, list[str]], generation_id: str) -> Answer:
        wait = _bool(params, "wait")
        progress = "progress" in (_multi(params, "include") or [])
        raw_timeout = _one(params, "timeout")
        timeout = 5.0
        if raw_timeout is not None:
            try:
                timeout = float(raw_timeout)
            except ValueError:
                timeout = -1.0
            if not 1 <= timeout <= 10:
                raise coded(400, "invalid_wait_timeout", "timeout must be between 1 and 10 seconds.")
        if wait and progress:
            raise coded(400, "invalid_query", "include=progress cannot be combined with wait=true.")
        generation = self.engine.get(generation_id, wait, timeout, progress)
        headers = {}
        if wait:
            headers = {
                "Retry-After": "2",
                "X-Sync-Wait-Mode": "long_poll",
                "X-Sync-Wait-Timeout-Seconds": f"{timeout:g}",
            }
        return 200, generation, headers

    def _list(self, params: dict[str, list[str]]) -> Answer:
        statuses = _multi(params, "status")
        if statuses is not None and any(s not in ALL_STATUSES for s in statuses):
            raise bad_request([f"status must be one of the following values: {', '.join(ALL_STATUSES)}"])
        raw_limit, cursor = _one(params, "limit"), _one(params, "cursor")
        limit = None
        if raw_limit is not None:
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
                raise bad_request(["limit must be an integer between 1 and 100"])
            limit = int(raw_limit)
        if cursor is not None and limit is None:
            raise bad_request(["cursor requires limit"])
        ids = _multi(params, "ids")
        return 200, self.engine.list(statuses, ids, _one(params, "projectId"), limit, cursor), {}

    def _download(self, params: dict[str, list[str]], generation_id: str) -> Answer:
        return 200, self.engine.download_url(generation_id), {}

    def _account(self, params: dict[str, list[str]]) -> Answer:
        return 200, self.engine.account(), {}

    def _estimate(self, params: dict[str, list[str]]) -> Answer:
        return 200, estimate(self._json_body()), {}

    def _create_asset(self, params: dict[str, list[str]]) -> Answer:
        return 201, self.engine.create_asset(self._json_body()), {}

    def _get_asset(self, params: dict[str, list[str]], asset_id: str) -> Answer:
        return 200, self.engine.get_asset(asset_id), {}

    def _break_off(self, data: bytes, content_type: str) -> None:
        """Announce the whole file, send half of it, and drop the connection (a failure mid-copy)."""
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True

    # ------------------------------------------------------------ /_emulator routes
    def _admin(self, method: str, path: str, params: dict[str, list[str]]) -> None:
        try:
            if method == "GET" and re.fullmatch(r"/_emulator/(outputs|tts)/[^/]+", path):
                file = self.engine.signed_file(
                    path, _one(params, "expires") or "", _one(params, "signature") or ""
                )
                kind = "video/mp4" if path.endswith(".mp4") else "audio/wav"
                if path.startswith("/_emulator/outputs/") and self.engine.take_output_failure():
                    self._break_off(file.read_bytes(), kind)
                else:
                    self._send(200, file.read_bytes(), {}, kind)
                return
            answer: Any
            if method == "GET" and path == "/_emulator/requests":
                answer = self.engine.requests()
            elif method == "GET" and path == "/_emulator/webhooks":
                answer = self.engine.webhooks()
            elif method == "GET" and path == "/_emulator/scenario":
                answer = self.engine.scenario()
            elif method == "POST" and path == "/_emulator/scenario":
                answer = self.engine.set_scenario(self._json_body())
            elif method == "GET" and path == "/_emulator/stats":
                answer = self.engine.stats()
            elif method == "POST" and path == "/_emulator/api-key":
                self.engine.rotate_api_key(self._json_body())
                answer = {"rotated": True}  # the key itself is not echoed
            elif method == "POST" and path == "/_emulator/reset":
                self.engine.reset()
                answer = {"reset": True}
            elif method == "GET" and path == "/_emulator/health":
                answer = {"status": "ok"}
            else:
                raise ApiError(
                    404, {"message": f"Cannot {method} {path}", "error": "Not Found", "statusCode": 404}
                )
            self._send(200, answer, {})
        except ApiError as error:
            if "Code" in error.body:  # S3-style answer for signed file URLs
                xml = "".join(f"<{k}>{v}</{k}>" for k, v in error.body.items())
                body = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{xml}</Error>'
                self._send(error.status, body, {}, "application/xml")
            else:
                self._send(error.status, error.body, error.headers)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # idle keep-alive connections must not block shutdown

    def __init__(self, address: tuple[str, int], engine: Engine, log_requests: bool) -> None:
        super().__init__(address, _Handler)
        self.engine = engine
        self.log_requests = log_requests


class SyncEmulator:
    """The emulator as an object: `start()` serves in a background thread, `stop()` ends it all."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        log_requests: bool = False,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host, self.port = host, port
        self.engine = Engine(self.config)
        self._log_requests = log_requests
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("SyncEmulator.start() has not been called")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SyncEmulator:
        self._server = _Server((self.host, self.port), self.engine, self._log_requests)
        self.engine.base_url = (self.config.public_url or self.url).rstrip("/")
        self.engine.start()
        self._thread = threading.Thread(target=self._server.serve_forever, name="sync-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.engine.stop()

    def __enter__(self) -> SyncEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Admin API, the same as the /_emulator endpoints.
    def reset(self) -> None:
        self.engine.reset()

    def set_scenario(self, update: dict[str, Any]) -> dict[str, Any]:
        return self.engine.set_scenario(update)

    def scenario(self) -> dict[str, Any]:
        return self.engine.scenario()

    def requests(self) -> list[dict[str, Any]]:
        return self.engine.requests()

    def webhooks(self) -> list[dict[str, Any]]:
        return self.engine.webhooks()

    def stats(self) -> dict[str, Any]:
        return self.engine.stats()

    def rotate_api_key(self, new_key: str) -> None:
        """Only `new_key` is accepted from now on (until reset, which restores `config.api_key`)."""
        self.engine.rotate_api_key({"apiKey": new_key})
