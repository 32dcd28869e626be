"""In-memory fakes of the shared package's Protocols (Storage, Workflow, Kicker) and a scripted
sync.so API for the real `SyncClient` (through `httpx.MockTransport`). The job store and the
admission table are the real ones over moto (see tests/tables.py): their conditions matter.

The fakes keep the real semantics the code relies on: versioned objects, and a webhook wait
that can be woken once.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

import httpx

from lipsync.s3_events import ObjectCreated
from lipsync.storage import MAX_MANIFEST_BYTES, ObjectInfo, TooLargeError
from lipsync.syncso.client import KeyProvider, SyncClient
from tests.fake_multipart import FakeMultipartUpload

# ---------------------------------------------------------------------------- kicks


class FakeKicker:
    """`Kicker` that records (delay, reason) for each kick."""

    def __init__(self) -> None:
        self.kicks: list[tuple[float, str]] = []

    def kick(self, delay_seconds: float = 0, reason: str = "") -> None:
        self.kicks.append((delay_seconds, reason))


# ---------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class FakeObject:
    body: bytes
    version_id: str
    etag: str
    content_type: str = "application/octet-stream"
    metadata: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def info(self, key: str) -> ObjectInfo:
        return ObjectInfo(key=key, version_id=self.version_id, etag=self.etag, size=len(self.body))


class FakeStorage:
    """`Storage` over a versioned dict: `objects` holds each key's current version."""

    def __init__(self, bucket: str = "media-bucket") -> None:
        self.bucket = bucket
        self.objects: dict[str, FakeObject] = {}
        self.versions: dict[tuple[str, str], FakeObject] = {}
        self.documents: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []  # every key written by put_json or upload, in order
        self.signature = "fake"  # change it to tell presigned URLs made at different times apart
        self._counter = 0
        self.range_reads = 0

    def put(
        self, key: str, body: bytes = b"media", *, content_type: str = "application/octet-stream"
    ) -> FakeObject:
        """Create a new version of `key` (as a user's upload would)."""
        self._counter += 1
        stored = FakeObject(
            body=body,
            version_id=f"v{self._counter}",
            etag=hashlib.md5(body).hexdigest(),  # noqa: S324 - S3's ETag
            content_type=content_type,
        )
        self.objects[key] = stored
        self.versions[(key, stored.version_id)] = stored
        return stored

    def event(self, key: str) -> ObjectCreated:
        """The ObjectCreated notification for the current version of `key`."""
        stored = self.objects[key]
        return ObjectCreated(bucket=self.bucket, key=key, version_id=stored.version_id, etag=stored.etag)

    def _find(self, key: str, version_id: str | None) -> FakeObject | None:
        if version_id:
            return self.versions.get((key, version_id))
        return self.objects.get(key)

    def head(self, key: str, version_id: str | None = None) -> ObjectInfo | None:
        stored = self._find(key, version_id)
        return stored.info(key) if stored else None

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        # Like list_objects_v2: sorted keys, no version ids.
        return [
            ObjectInfo(key=key, etag=stored.etag, size=len(stored.body))
            for key, stored in sorted(self.objects.items())
            if key.startswith(prefix)
        ]

    def read(self, key: str, version_id: str | None = None, *, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        stored = self._find(key, version_id)
        if stored is None:
            raise KeyError(f"NoSuchKey: {key}")
        if len(stored.body) > max_bytes:
            raise TooLargeError(f"{key} is {len(stored.body)} bytes; the limit is {max_bytes}")
        return stored.body

    def read_range(self, key: str, version_id: str | None, start: int, end: int) -> bytes:
        stored = self._find(key, version_id)
        if stored is None:
            raise KeyError(f"NoSuchKey: {key}")
        self.range_reads += 1
        return stored.body[start : end + 1]

    def presign_get(self, key: str, version_id: str | None, expires_seconds: int) -> str:
        query = {"versionId": version_id} if version_id else {}
        query |= {"X-Amz-Expires": str(expires_seconds), "X-Amz-Signature": self.signature}
        return f"https://presigned.example/{quote(key)}?{urlencode(query)}"

    def put_json(self, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document, indent=2, ensure_ascii=False).encode()
        self.put(key, body, content_type="application/json")
        self.documents[key] = json.loads(body)
        self.writes.append(key)

    def put_bytes(self, key: str, data: bytes, *, content_type: str) -> None:
        self.put(key, data, content_type=content_type)
        self.writes.append(key)

    def upload(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ObjectInfo:
        stored = self.put(key, body.read(), content_type=content_type)
        stored = FakeObject(
            stored.body, stored.version_id, stored.etag, content_type, dict(metadata), dict(tags or {})
        )
        self.objects[key] = self.versions[(key, stored.version_id)] = stored
        self.writes.append(key)
        return stored.info(key)

    def start_multipart(
        self, key: str, *, content_type: str, metadata: dict[str, str]
    ) -> FakeMultipartUpload:
        return FakeMultipartUpload(self, key, content_type, metadata)


# ---------------------------------------------------------------------------- workflow


class FakeWorkflow:
    """`Workflow` that records calls. `wait(token)` opens a webhook wait; `wake` closes it once."""

    def __init__(self) -> None:
        self.starts: list[tuple[str, dict[str, Any]]] = []
        self.executions: dict[str, dict[str, Any]] = {}  # by name: a repeated start is a no-op
        self.waiting: set[str] = set()
        self.wakes: list[tuple[str, dict[str, Any]]] = []

    def start(self, name: str, execution_input: dict[str, Any]) -> None:
        self.starts.append((name, execution_input))
        self.executions.setdefault(name, execution_input)

    def wait(self, task_token: str) -> str:
        self.waiting.add(task_token)
        return task_token

    def wake(self, task_token: str, output: dict[str, Any]) -> bool:
        self.wakes.append((task_token, output))
        if task_token not in self.waiting:
            return False
        self.waiting.discard(task_token)
        return True


# ---------------------------------------------------------------------------- sync.so API


def current_key(keys: list[str]) -> KeyProvider:
    """A key provider that always reads the last key of `keys` (append to rotate)."""

    def provide(fresh: bool = False) -> str:
        return keys[-1]

    return provide


Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]


class FakeSyncApi:
    """A scripted sync.so: answers from `replies` in order (the last one repeats), records requests."""

    def __init__(self, *replies: Reply) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        reply = self.replies.popleft() if len(self.replies) > 1 else self.replies[0]
        if callable(reply):
            return reply(request)
        return httpx.Response(reply.status_code, headers=reply.headers, content=reply.content)

    def client(self, api_key: str | KeyProvider = "sk-test-key") -> SyncClient:
        return SyncClient("https://api.sync.example", api_key, transport=httpx.MockTransport(self))

    def posts(self) -> list[httpx.Request]:
        return [request for request in self.requests if request.method == "POST"]
