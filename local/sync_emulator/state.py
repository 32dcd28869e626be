"""The emulator's engine: generations, their lifecycle, limits, idempotency and webhooks.

Everything here is guarded by one condition variable (`self._cond`); the HTTP layer in
server.py only parses requests and calls the public methods below. Jobs are moved
along by a background scheduler thread, not lazily on read, so webhooks go out on
time even when nobody polls.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import heapq
import hmac
import json
import math
import re
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from . import media, scenario
from .errors import ApiError, bad_request, coded, input_error, not_found, reason
from .masking import mask_url
from .validation import CreateRequest, check_schema, check_semantics

NON_TERMINAL = ("PENDING", "PROCESSING")
ALL_STATUSES = ("PENDING", "PROCESSING", "COMPLETED", "FAILED", "REJECTED")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._~-]{1,128}")
# Fields the webhook body leaves out compared to GET (sync-api.md §5).
WEBHOOK_OMITS = ("outputFileName", "projectId", "synthesizedAudioUrl")
# What an injected failure says when the scenario gives no errorCode.
DEFAULT_ERROR_CODES = {
    400: "validation_failed",
    402: "account_payment_required",
    404: "generation_not_found",
    409: "generation_conflict",
    422: "generation_input_validation_failed",
    429: "rate_limit_exceeded",
}
RATE_LIMIT_MESSAGE = "Rate limit exceeded. Please try again later."
IN_PROGRESS_MESSAGE = (
    "A request with this Idempotency-Key is still being processed. Retry later with the same Idempotency-Key."
)
OUTCOME_UNKNOWN_MESSAGE = "The outcome of this request is unknown. Retry with the same Idempotency-Key."
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class EmulatorConfig:
    api_key: str = "sk-emulator"
    webhook_secret: str = "whsec_emulator"  # noqa: S105 - a well-known local default
    processing_seconds: float = 3.0
    concurrency: int = 3  # plan limit: PENDING + PROCESSING generations
    rate_limit: int = 60  # create requests per rolling minute
    # True: every authenticated create request counts (gateway-style); False: accepted creates only.
    rate_limit_counts_all: bool = True
    # The concurrency 429's hint: fixed, because the real API cannot know when a slot frees.
    concurrency_retry_after_seconds: float = 10.0
    output_url_ttl_seconds: float = 3600
    fetch_timeout_seconds: float = 5.0  # for input URLs, at create and again when processing starts
    webhook_timeout_seconds: float = 5.0
    public_url: str | None = None  # base of output URLs if clients reach us by another name


@dataclass
class JobPlan:
    """The job's fate, fixed from the scenario at create time (later changes do not touch it)."""

    processing_seconds: float
    outcome: str  # COMPLETED | FAILED | REJECTED | NEVER
    error_code: str | None
    error: str | None
    output_url_ttl: float
    webhook_mode: str
    webhook_delay: float
    webhook_statuses: list[str]


@dataclass
class Job:
    generation: dict[str, Any]  # the public Generation object, camelCase, as GET shows it
    seq: int
    created: float
    plan: JobPlan
    workdir: Path
    sources: list[tuple[str, str]]  # (input type, URL) of every media input, fetched again later
    idempotency_key: str | None = None
    build: Future[float | None] | None = None  # output rendering; result = duration in s
    refetch: Future[None] | None = None  # the input fetch when processing starts
    processing_at: float | None = None
    ended_at: float | None = None
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.generation["id"])

    @property
    def status(self) -> str:
        return str(self.generation["status"])

    @property
    def terminal_at(self) -> float | None:
        return None if self.plan.outcome == "NEVER" else self.created + self.plan.processing_seconds


@dataclass
class Fetched:
    item: dict[str, Any]
    url: str  # for assetId inputs, the asset's url
    path: Path
    kind: str  # what the bytes sniffed as


def now_iso(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def canonical(body: Any) -> str:
    """Body fingerprint for idempotency: key order and whitespace do not matter."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def webhook_body(generation: dict[str, Any]) -> dict[str, Any]:
    """The flat webhook payload: snake_case `error_code`, no Studio-only fields."""
    body = {k: v for k, v in generation.items() if k not in WEBHOOK_OMITS and k != "errorCode"}
    body["error_code"] = generation.get("errorCode")
    return body


def json_number(value: float) -> int | float:
    """10.0 -> 10, 0.5 -> 0.5: what a JSON API would print."""
    return int(value) if float(value).is_integer() else value


def sign_webhook(secret: str, raw_body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Engine:
    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.base_url = ""  # set by the server once it knows its port
        self._cond = threading.Condition(threading.RLock())
        self._signing_key = secrets.token_bytes(32)  # for output URLs; never leaves the process
        self._root = Path(tempfile.mkdtemp(prefix="sync-emulator-"))
        self._stop = threading.Event()
        self._builds = ThreadPoolExecutor(max_workers=4, thread_name_prefix="emu-build")
        # Input fetches at processing start: off the scheduler, which must never wait on the network.
        self._fetches = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emu-fetch")
        self._deliveries = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emu-webhook")
        self._scheduler = threading.Thread(target=self._run_scheduler, name="emu-scheduler", daemon=True)
        self._key_locks: dict[str, threading.Lock] = {}
        self._clear()

    def _clear(self) -> None:
        """Forget everything; `_epoch` makes late timers and deliveries of old jobs no-ops."""
        self._epoch = getattr(self, "_epoch", 0) + 1
        self._jobs: dict[str, Job] = {}
        self._seq = 0
        self._events: list[tuple[float, int, str, int, str]] = []  # (when, seq, job id, epoch, action)
        self._assets: dict[str, dict[str, Any]] = {}
        self._idempotency: dict[
            str, tuple[str, str, dict[str, Any]]
        ] = {}  # key -> (fingerprint, id, 201 body)
        self._window: deque[float] = deque()  # times of the creates the rate limit counts
        self._reserved = 0  # creates past the limit checks that are still fetching inputs
        self._scenario = scenario.initial()
        self._requests: list[dict[str, Any]] = []
        self._webhooks: list[dict[str, Any]] = []
        self.api_key = self.config.api_key  # POST /_emulator/api-key rotates it; reset restores it
        self._max_active = 0
        self._create_requests = 0
        self._created = 0
        self._rejected = {"concurrency": 0, "rate": 0, "other": 0}
        self._outage: tuple[float, str] | None = None  # (until, mode)

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._scheduler.is_alive():
            self._scheduler.join(timeout=5)
        self._builds.shutdown(wait=True, cancel_futures=True)
        self._fetches.shutdown(wait=False, cancel_futures=True)  # they write nothing to disk
        self._deliveries.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self._root, ignore_errors=True)

    def reset(self) -> None:
        with self._cond:
            self._clear()
            self._cond.notify_all()
        for child in self._root.iterdir():
            shutil.rmtree(child, ignore_errors=True)

    # ------------------------------------------------------------ admin / logs
    def scenario(self) -> dict[str, Any]:
        with self._cond:
            return copy.deepcopy(self._scenario)

    def set_scenario(self, update: Any) -> dict[str, Any]:
        scenario.validate(update)
        with self._cond:
            self._scenario = scenario.merge(self._scenario, update)
            if "outage" in update:
                outage = update["outage"]
                self._outage = (
                    (time.time() + float(outage["seconds"]), str(outage.get("mode", "unavailable")))
                    if outage
                    else None
                )
            return copy.deepcopy(self._scenario)

    def outage(self) -> str | None:
        """The outage mode while one lasts (scenario `outage`), else None."""
        with self._cond:
            if self._outage is None or time.time() >= self._outage[0]:
                return None
            return self._outage[1]

    def log_request(self, entry: dict[str, Any]) -> None:
        with self._cond:
            self._requests.append(entry)

    def requests(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._requests)

    def webhooks(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(self._webhooks)

    def latency(self) -> float:
        with self._cond:
            return float(self._scenario["latencySeconds"] or 0)

    def rotate_api_key(self, body: Any) -> None:
        """POST /_emulator/api-key: from now on only the new key is accepted."""
        new_key = body.get("apiKey") if isinstance(body, dict) else None
        if not isinstance(new_key, str) or not new_key:
            raise bad_request(["apiKey must be a non-empty string"])
        with self._cond:
            self.api_key = new_key

    def check_api_key(self, key: str) -> bool:
        with self._cond:
            return hmac.compare_digest(key.encode(), self.api_key.encode())

    def note_create_answer(self, status: int, body: Any) -> None:
        """Count one POST /v2/generate answer for the stats (called by the HTTP layer for every one)."""
        code = body.get("errorCode") if isinstance(body, dict) else None
        with self._cond:
            self._create_requests += 1
            if status == 429 and code == "concurrency_limit_reached":
                self._rejected["concurrency"] += 1
            elif status == 429 and code == "rate_limit_exceeded":
                self._rejected["rate"] += 1
            elif status >= 300:
                self._rejected["other"] += 1

    def stats(self) -> dict[str, Any]:
        """GET /_emulator/stats: what the pipeline did to the API since the last reset."""
        with self._cond:
            return {
                "maxActive": self._max_active,
                "createRequests": self._create_requests,
                "created": self._created,
                "rejected": dict(self._rejected),
                "generations": [
                    {
                        "id": job.id,
                        "createdAt": job.created,
                        "processingAt": job.processing_at,
                        "endedAt": job.ended_at,
                        "status": job.status,
                        "idempotencyKey": job.idempotency_key,
                    }
                    for job in sorted(self._jobs.values(), key=lambda j: j.seq)
                ],
            }

    # ------------------------------------------------------------ signed files
    def sign(self, path: str, ttl: float) -> str:
        """A URL for one of our files that stops working after `ttl` seconds (ttl 0: already expired)."""
        expires = int(time.time() + ttl)
        signature = hmac.new(self._signing_key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
        return f"{self.base_url}{path}?expires={expires}&signature={signature}"

    def signed_file(self, path: str, expires: str, signature: str) -> Path:
        """The file behind a signed URL; ApiError 403 (S3-like) when expired or tampered with."""
        expected = hmac.new(self._signing_key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            raise ApiError(
                403,
                {
                    "Code": "SignatureDoesNotMatch",
                    "Message": (
                        "The request signature we calculated does not match the signature you provided."
                    ),
                },
            )
        if not expires.isdigit() or time.time() >= int(expires):
            raise ApiError(
                403, {"Code": "AccessDenied", "Message": "Request has expired", "Expires": expires}
            )
        match = re.fullmatch(r"/_emulator/(outputs|tts)/([0-9a-f-]{36})\.(mp4|wav)", path)
        file = self._root / match.group(2) / f"{match.group(1)}.{match.group(3)}" if match else None
        if file is None or not file.is_file():
            raise ApiError(404, {"Code": "NoSuchKey", "Message": "The specified key does not exist."})
        return file

    # ------------------------------------------------------------------ assets
    def create_asset(self, body: Any) -> dict[str, Any]:
        errors = []
        if not isinstance(body, dict):
            raise bad_request(["request body must be a JSON object"])
        if not (isinstance(body.get("url"), str) and body["url"].startswith(("http://", "https://"))):
            errors.append("url must be a URL address")
        if body.get("type") not in ("VIDEO", "AUDIO", "IMAGE"):
            errors.append("type must be one of the following values: VIDEO, AUDIO, IMAGE")
        if "name" in body and not isinstance(body["name"], str):
            errors.append("name must be a string")
        if errors:
            raise bad_request(errors)
        asset = {
            "id": str(uuid.uuid4()),
            "url": body["url"],
            "type": body["type"],
            "name": body.get("name") or body["url"].rsplit("/", 1)[-1].split("?")[0],
            "createdAt": now_iso(),
        }
        with self._cond:
            self._assets[asset["id"]] = asset
        return dict(asset)

    def get_asset(self, asset_id: str) -> dict[str, Any]:
        with self._cond:
            asset = self._assets.get(asset_id)
        if asset is None:
            raise coded(404, "asset_not_found", "Asset not found.")
        return dict(asset)

    # ------------------------------------------------------------ fault injection
    def _peek_failure(self, kind: str) -> dict[str, Any] | None:
        with self._cond:
            return next((f for f in self._scenario[kind] if f.get("count", 1) > 0), None)

    def take_output_failure(self) -> bool:
        """True if this output download should break off midway (scenario outputDownloadFailures)."""
        with self._cond:
            if self._scenario.get("outputDownloadFailures", 0) > 0:
                self._scenario["outputDownloadFailures"] -= 1
                return True
            return False

    def _consume_failure(self, entry: dict[str, Any]) -> None:
        with self._cond:
            entry["count"] = entry.get("count", 1) - 1

    def _injected_error(self, entry: dict[str, Any], generation_id: str | None = None) -> ApiError:
        """A realistic error answer for a scenario failure entry."""
        status = int(entry["status"])
        retry_after = entry.get("retryAfterSeconds")
        if generation_id is not None:
            code = entry.get("errorCode", "IDEMPOTENCY_OUTCOME_UNKNOWN")
            message = IN_PROGRESS_MESSAGE if code == "IDEMPOTENCY_REQUEST_IN_PROGRESS" else None
            error = coded(
                status,
                code,
                entry.get("message") or message or OUTCOME_UNKNOWN_MESSAGE,
                generationId=generation_id,
            )
        elif status == 429 and entry.get("errorCode") == "concurrency_limit_reached":
            with self._cond:
                error = self._concurrency_error(
                    self.config.concurrency_retry_after_seconds if retry_after is None else retry_after
                )
            retry_after = None  # the body and Retry-After are already set
        elif status == 429:
            error = coded(429, entry.get("errorCode", "rate_limit_exceeded"), RATE_LIMIT_MESSAGE)
            retry_after = retry_after if retry_after is not None else 1
        else:
            code = entry.get("errorCode") or DEFAULT_ERROR_CODES.get(status, "internal_error")
            error = coded(
                status, code, entry.get("message") or f"{reason(status)} (injected by the emulator scenario)."
            )
        if retry_after is not None:
            error.headers["Retry-After"] = str(max(0, math.ceil(retry_after)))
        error.delay_seconds = float(entry.get("delaySeconds", 0) or 0)  # answered this late
        return error

    # --------------------------------------------------------------------- create
    def create(
        self, raw: bytes, idempotency_headers: list[str], hold: contextlib.ExitStack | None = None
    ) -> dict[str, Any]:
        """POST /v2/generate. Returns the 201 body or raises ApiError.

        `hold`: the HTTP layer closes it once the answer is sent; the Idempotency-Key stays
        "in progress" until then (a client that timed out on a slow answer and retries at once
        must meet the conflict, as it would at sync.so). Without it, until this call returns.
        """
        with contextlib.ExitStack() as own:
            return self._create(raw, idempotency_headers, own if hold is None else hold)

    def _create(
        self, raw: bytes, idempotency_headers: list[str], hold: contextlib.ExitStack
    ) -> dict[str, Any]:
        if self.config.rate_limit_counts_all:
            self._count_request()  # the gateway counts before anything else looks at the request
        if idempotency_headers and (
            len(idempotency_headers) > 1 or not IDEMPOTENCY_KEY.fullmatch(idempotency_headers[0])
        ):
            raise coded(
                400,
                "INVALID_IDEMPOTENCY_KEY",
                "Idempotency-Key must be sent once and be 1-128 characters of [A-Za-z0-9._~-].",
            )
        key = idempotency_headers[0] if idempotency_headers else None
        failure = self._peek_failure("createFailures")
        if failure is not None and not failure.get("afterCreate", False):
            self._consume_failure(failure)
            raise self._injected_error(failure)
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise bad_request([f"Unexpected token in JSON: {exc}"]) from exc
        check_schema(body)

        if key is None:
            created = self._create_new(body, None)
        else:
            with self._cond:
                key_lock = self._key_locks.setdefault(key, threading.Lock())
                wait = self._scenario["concurrentDuplicate"] == "wait"
            # One request per key at a time, so two racing retries cannot create two jobs.
            if wait:
                key_lock.acquire()
            elif not key_lock.acquire(blocking=False):
                raise coded(409, "IDEMPOTENCY_REQUEST_IN_PROGRESS", IN_PROGRESS_MESSAGE)
            hold.callback(key_lock.release)
            with self._cond:
                previous = self._idempotency.get(key)
            if previous is not None:
                fingerprint, _gen_id, answer = previous
                if fingerprint != canonical(body):
                    raise coded(
                        409,
                        "idempotency_key_reused",
                        "This Idempotency-Key was already used with a different request body.",
                    )
                # A replay: no new job; counted against the rate limit only when all requests are.
                return copy.deepcopy(answer)
            created = self._create_new(body, key)
            with self._cond:
                self._idempotency[key] = (canonical(body), created["id"], copy.deepcopy(created))

        if failure is not None and failure.get("afterCreate", False):
            self._consume_failure(failure)
            raise self._injected_error(failure, generation_id=created["id"])
        return created

    def _create_new(self, body: dict[str, Any], key: str | None) -> dict[str, Any]:
        request = check_semantics(body)
        epoch = self._reserve_slot()
        try:
            generation_id = str(uuid.uuid4())
            workdir = self._root / generation_id
            workdir.mkdir(parents=True)
            fetched = self._fetch_inputs(request, workdir)
            return self._register(generation_id, request, fetched, workdir, key)
        finally:
            with self._cond:
                if epoch == self._epoch:  # a reset in between already zeroed the counter
                    self._reserved -= 1

    def _prune_window(self, now: float) -> None:
        while self._window and self._window[0] <= now - RATE_WINDOW_SECONDS:
            self._window.popleft()

    def _rate_error(self, now: float) -> ApiError:
        """429 rate_limit_exceeded; Retry-After = when the oldest counted request leaves the window."""
        oldest = self._window[0] if self._window else now
        error = coded(429, "rate_limit_exceeded", RATE_LIMIT_MESSAGE)
        error.headers["Retry-After"] = str(max(1, math.ceil(oldest + RATE_WINDOW_SECONDS - now)))
        return error

    def _count_request(self) -> None:
        """Strict rate limit: this request counts whatever its answer, a refused one included."""
        with self._cond:
            now = time.time()
            self._prune_window(now)
            full = len(self._window) >= self.config.rate_limit
            self._window.append(now)
            if full:
                raise self._rate_error(now)

    def _reserve_slot(self) -> int:
        """Rate limit (accepted-only mode), then plan concurrency (429s).

        Holds a slot while inputs are fetched; returns the epoch the slot belongs to.
        """
        with self._cond:
            now = time.time()
            if not self.config.rate_limit_counts_all:
                self._prune_window(now)
                if len(self._window) + self._reserved >= self.config.rate_limit:
                    raise self._rate_error(now)
            if self._active_count() + self._reserved >= self.config.concurrency:
                raise self._concurrency_error(self.config.concurrency_retry_after_seconds)
            self._reserved += 1
            return self._epoch

    def _active_count(self) -> int:
        return sum(1 for job in self._jobs.values() if job.status in NON_TERMINAL)

    def _concurrency_error(self, retry_after: float) -> ApiError:
        """429 concurrency_limit_reached with a fixed hint: nobody can know when a running job ends."""
        active = self._active_count() + self._reserved  # creates still fetching inputs hold slots too
        error = coded(
            429,
            "concurrency_limit_reached",
            f"Concurrency limit reached: {active} of {self.config.concurrency} generations are in progress.",
            activeGenerations=active,
            concurrencyLimit=self.config.concurrency,
            retryAfterSeconds=json_number(retry_after),
            upgradeUrl="https://sync.so/pricing",
        )
        error.headers["Retry-After"] = str(max(0, math.ceil(retry_after)))  # HTTP wants whole seconds
        error.headers["X-Sync-Concurrency-Limit"] = str(self.config.concurrency)
        error.headers["X-Sync-Active-Generations"] = str(active)
        return error

    def account(self) -> dict[str, Any]:
        """`GET /v2/account` for an API key: no user, the organization with its plan and limits."""
        plans = {1: "Hobbyist", 3: "Creator", 6: "Growth", 15: "Scale"}
        with self._cond:
            concurrency = self.config.concurrency
        return {
            "account": None,
            "credentialType": "api_key",
            "organization": {
                "id": "org-emulator",
                "name": "sync.so emulator",
                "billingModel": "usage",
                "billingUrl": "https://sync.so/billing",
                "plan": {"name": plans.get(concurrency, "Enterprise")},
                "limits": {"concurrentGenerations": concurrency},
            },
        }

    def _download(self, url: str) -> bytes | None:
        """The body at `url`, or None when it is unreachable or answers non-2xx."""
        try:
            response = httpx.get(url, timeout=self.config.fetch_timeout_seconds, follow_redirects=True)
        except httpx.HTTPError:
            return None
        return response.content if 200 <= response.status_code < 300 else None

    def _fetch_inputs(self, request: CreateRequest, workdir: Path) -> list[Fetched]:
        """Download every media input now, as sync.so does; unreachable -> 422 `*_inaccessible`."""
        fetched = []
        for index, item in enumerate(request.inputs):
            kind = item["type"]
            if kind == "text":
                continue
            url = item.get("url")
            if url is None:
                with self._cond:
                    asset = self._assets.get(item["assetId"])
                if asset is None:
                    raise input_error(
                        "generation_input_asset_not_found",
                        f"The asset '{item['assetId']}' was not found.",
                        "Register the media with POST /v2/assets first, or send a url.",
                    )
                url = asset["url"]
            content = self._download(url)
            if content is None:
                raise input_error(
                    f"generation_input_{kind}_inaccessible",
                    f"The provided {kind} URL is inaccessible.",
                    f"Make sure the {kind} URL is publicly reachable until processing starts.",
                )
            path = workdir / f"input-{index}-{kind}"
            path.write_bytes(content)
            fetched.append(Fetched(item, url, path, media.sniff(content)))
        return fetched

    def _plan(self, fetched: list[Fetched]) -> JobPlan:
        with self._cond:
            s = copy.deepcopy(self._scenario)
        outcome, error_code, error = s["outcome"], s["outcomeErrorCode"], s["outcomeError"]
        if outcome == "FAILED":
            error_code = error_code or "generation_pipeline_failed"
            error = error or "The generation failed during processing."
        elif outcome == "REJECTED":
            error_code = error_code or "generation_rejected"
            error = error or "The generation was rejected."
        elif outcome == "COMPLETED":
            bad = next((f for f in fetched if not media.fits(f.item["type"], f.kind)), None)
            if bad is not None:  # the create succeeded; the job fails later, like the real pipeline
                kind = bad.item["type"]
                outcome, error_code = "FAILED", f"generation_input_{kind}_invalid"
                error = f"The provided {kind} is not a valid {kind} file."
        ttl = s["outputUrlTtlSeconds"]
        processing = s["processingSeconds"]
        return JobPlan(
            processing_seconds=float(self.config.processing_seconds if processing is None else processing),
            outcome=outcome,
            error_code=error_code,
            error=error,
            output_url_ttl=float(self.config.output_url_ttl_seconds if ttl is None else ttl),
            webhook_mode=s["webhook"],
            webhook_delay=float(s["webhookDelaySeconds"] or 0),
            webhook_statuses=list(s["webhookStatuses"]),
        )

    def _register(
        self,
        generation_id: str,
        request: CreateRequest,
        fetched: list[Fetched],
        workdir: Path,
        key: str | None,
    ) -> dict[str, Any]:
        body = request.body
        created = time.time()
        generation: dict[str, Any] = {
            "id": generation_id,
            "createdAt": now_iso(created),
            "status": "PENDING",
            "model": request.model,
            "input": copy.deepcopy(request.inputs),
            "options": copy.deepcopy(request.options),
            "webhookUrl": request.webhook_url,
            "outputUrl": None,
            "outputDuration": None,
            "error": None,
            "errorCode": None,
        }
        for optional in ("outputFileName", "projectId", "segments", "dubParams"):
            if optional in body:
                generation[optional] = copy.deepcopy(body[optional])
        tts = next((v for v in request.voices if v["type"] == "text"), None)
        if tts is not None:
            media.synthesize_tone(workdir / "tts.wav", tts["provider"]["script"])
            generation["synthesizedAudioUrl"] = self.sign(f"/_emulator/tts/{generation_id}.wav", 7 * 86400)
        plan = self._plan(fetched)
        with self._cond:
            self._seq += 1
            sources = [(f.item["type"], f.url) for f in fetched]
            job = Job(generation, self._seq, created, plan, workdir, sources, idempotency_key=key)
            self._jobs[generation_id] = job
            self._created += 1
            if not self.config.rate_limit_counts_all:
                self._window.append(created)
            job.snapshots["PENDING"] = copy.deepcopy(generation)
            self._note_active()
            self._schedule(created + 0.25 * plan.processing_seconds, job, "processing")
            if job.terminal_at is not None:
                self._schedule(job.terminal_at, job, "terminal")
            if plan.outcome == "COMPLETED":
                job.build = self._builds.submit(self._render, job, request, fetched)
            answer = copy.deepcopy(generation)
        self._maybe_webhook(job, "PENDING")
        return answer

    def _render(self, job: Job, request: CreateRequest, fetched: list[Fetched]) -> float | None:
        """Build the (not lip-synced) output MP4; returns its duration in seconds."""
        visual = next(f for f in fetched if f.item is request.visual)
        voice = request.voices[0] if request.voices else None
        if voice is None:
            audio = None  # dubbing: keep the video's own sound
        elif voice["type"] == "text":
            audio = job.workdir / "tts.wav"
        else:
            audio = next(f.path for f in fetched if f.item is voice)
        out = job.workdir / "outputs.mp4"
        media.build_output(out, visual.path, visual.item["type"], audio)
        return media.media_duration(out)

    # ------------------------------------------------------------------ scheduler
    def _schedule(self, when: float, job: Job, action: str) -> None:
        heapq.heappush(self._events, (when, job.seq, job.id, self._epoch, action))
        self._cond.notify_all()

    def _run_scheduler(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                due = []
                now = time.time()
                while self._events and self._events[0][0] <= now:
                    due.append(heapq.heappop(self._events))
                if not due:
                    timeout = self._events[0][0] - now if self._events else 1.0
                    self._cond.wait(timeout=min(timeout, 1.0))
                    continue
                for _when, _seq, job_id, epoch, action in due:
                    job = self._jobs.get(job_id)
                    if epoch != self._epoch or job is None:
                        continue  # reset since then
                    if action == "processing" and job.status == "PENDING":
                        self._start_processing(job)
                    elif action == "terminal":
                        self._finish(job)

    def _start_processing(self, job: Job) -> None:
        """PENDING -> PROCESSING, and fetch the inputs again (called with the lock held).

        sync.so fetches the media when it starts working, not only at create, so a URL that
        expired while the job was queued fails the job (sync-api.md §9).
        """
        self._set_status(job, "PROCESSING")
        with contextlib.suppress(RuntimeError):  # the executor refuses work while shutting down
            job.refetch = self._fetches.submit(self._refetch, self._epoch, job)

    def _refetch(self, epoch: int, job: Job) -> None:
        """In a worker thread: fetch every input; the first that fails ends the job FAILED."""
        failed = next((kind for kind, url in job.sources if self._download(url) is None), None)
        if failed is None:
            return
        with self._cond:
            if epoch != self._epoch or job.status not in NON_TERMINAL:
                return  # reset since then, or already over
            job.generation["error"] = f"The provided {failed} URL is inaccessible."
            job.generation["errorCode"] = f"generation_input_{failed}_inaccessible"
            self._set_status(job, "FAILED")

    def _finish(self, job: Job) -> None:
        """Terminal transition (called with the lock held)."""
        gen, plan = job.generation, job.plan
        if job.status not in NON_TERMINAL:
            return  # ended early: an input became inaccessible
        if job.status == "PENDING":
            self._start_processing(job)  # never skip a state, even at processing_seconds=0
        if job.refetch is not None and not job.refetch.done():
            # The inputs are still being fetched: no outcome before we know they are reachable.
            self._schedule(time.time() + 0.02, job, "terminal")
            return
        if job.status not in NON_TERMINAL:
            return
        if plan.outcome == "COMPLETED" and job.build is not None:
            if not job.build.done():  # rendering is slower than the clock: finish when it is ready
                self._schedule(time.time() + 0.02, job, "terminal")
                return
            try:
                gen["outputDuration"] = job.build.result()
                gen["outputUrl"] = self.sign(f"/_emulator/outputs/{job.id}.mp4", plan.output_url_ttl)
                self._set_status(job, "COMPLETED")
            except Exception as exc:
                gen["error"] = f"Rendering failed: {exc}"[:500]
                gen["errorCode"] = "generation_pipeline_failed"
                self._set_status(job, "FAILED")
            return
        gen["error"], gen["errorCode"] = plan.error, plan.error_code
        self._set_status(job, plan.outcome)

    def _set_status(self, job: Job, status: str) -> None:
        job.generation["status"] = status
        if status == "PROCESSING":
            job.processing_at = time.time()
        elif status not in NON_TERMINAL:
            job.ended_at = time.time()
        job.snapshots[status] = copy.deepcopy(job.generation)
        self._note_active()
        self._cond.notify_all()  # wakes long-polls
        self._maybe_webhook(job, status)

    def _note_active(self) -> None:
        """Keep the high-water mark of PENDING + PROCESSING at every change (for /_emulator/stats)."""
        self._max_active = max(self._max_active, self._active_count())

    # ------------------------------------------------------------------- webhooks
    def _maybe_webhook(self, job: Job, status: str) -> None:
        url, plan = job.generation.get("webhookUrl"), job.plan
        if not url or status not in plan.webhook_statuses:
            return
        payloads = [("deliver", webhook_body(job.snapshots[status]))]
        if plan.webhook_mode == "drop":
            self._record_webhook(self._epoch, job.id, url, status, "dropped", None, None)
            return
        if plan.webhook_mode == "duplicate":
            payloads.append(("duplicate", payloads[0][1]))
        if plan.webhook_mode == "reorder" and status not in NON_TERMINAL:
            stale = job.snapshots.get("PROCESSING") or {**job.snapshots[status], "status": "PROCESSING"}
            payloads.append(("stale", webhook_body(stale)))
        with contextlib.suppress(RuntimeError):  # the executor refuses work while shutting down
            self._deliveries.submit(self._deliver, self._epoch, job.id, url, plan.webhook_delay, payloads)

    def _deliver(
        self, epoch: int, job_id: str, url: str, delay: float, payloads: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """One POST per payload, in order, no retries (none are documented)."""
        if delay and self._stop.wait(delay):
            return
        for kind, payload in payloads:
            raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            headers = {
                "Content-Type": "application/json",
                "Sync-Signature": sign_webhook(self.config.webhook_secret, raw, int(time.time())),
            }
            answer: int | None = None
            error: str | None = None
            try:
                answer = httpx.post(
                    url, content=raw, headers=headers, timeout=self.config.webhook_timeout_seconds
                ).status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self._record_webhook(epoch, job_id, url, payload["status"], kind, answer, error)

    def _record_webhook(
        self, epoch: int, job_id: str, url: str, status: str, kind: str, answer: int | None, error: str | None
    ) -> None:
        with self._cond:
            if epoch != self._epoch:
                return
            self._webhooks.append(
                {
                    "generationId": job_id,
                    "url": mask_url(url, mask_all=True),
                    "status": status,
                    "delivery": kind,  # deliver | duplicate | stale | dropped
                    "dropped": kind == "dropped",
                    "responseStatus": answer,
                    "error": error,
                    "time": now_iso(),
                }
            )

    # ---------------------------------------------------------------------- reads
    def _job(self, generation_id: str) -> Job:
        job = self._jobs.get(generation_id)
        if job is None:
            raise not_found()
        return job

    def get(self, generation_id: str, wait: bool, timeout: float, progress: bool) -> dict[str, Any]:
        """GET /v2/generate/{id}; with wait, block until terminal or timeout."""
        failure = self._peek_failure("getFailures")
        if failure is not None:
            self._consume_failure(failure)
            raise self._injected_error(failure)
        deadline = time.time() + timeout
        with self._cond:
            job = self._job(generation_id)
            while wait and job.status in NON_TERMINAL and not self._stop.is_set():
                remaining = deadline - time.time()
                if remaining <= 0 or self._jobs.get(generation_id) is not job:
                    break
                self._cond.wait(remaining)
            answer = copy.deepcopy(job.generation)
            if progress:
                answer["progress_percent"] = self._progress(job)
            return answer

    def _progress(self, job: Job) -> int:
        if job.status == "PENDING":
            return 0
        if job.status != "PROCESSING":
            return 100
        if job.terminal_at is None:
            return 50
        start = job.created + 0.25 * job.plan.processing_seconds
        span = max(job.terminal_at - start, 1e-6)
        return max(0, min(99, int(100 * (time.time() - start) / span)))

    def list(
        self,
        statuses: list[str] | None,
        ids: list[str] | None,
        project_id: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> list[dict[str, Any]]:
        with self._cond:
            jobs = sorted(self._jobs.values(), key=lambda j: j.seq, reverse=True)  # newest first
            matches = [
                j
                for j in jobs
                if (statuses is None or j.status in statuses)
                and (ids is None or j.id in ids)
                and (project_id is None or j.generation.get("projectId") == project_id)
            ]
            if cursor is not None:
                position = next((i for i, j in enumerate(matches) if j.id == cursor), None)
                if position is None:
                    raise bad_request(["cursor must be the id of a generation in this listing"])
                matches = matches[position + 1 :]
            if limit is not None:
                matches = matches[:limit]
            return [copy.deepcopy(j.generation) for j in matches]

    def download_url(self, generation_id: str) -> str:
        with self._cond:
            job = self._job(generation_id)
            if job.status != "COMPLETED":
                raise coded(
                    409,
                    "generation_not_completed",
                    f"Generation is {job.status}; only COMPLETED generations can be downloaded.",
                )
            return self.sign(f"/_emulator/outputs/{job.id}.mp4", self.config.output_url_ttl_seconds)
