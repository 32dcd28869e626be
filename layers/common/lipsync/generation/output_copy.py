"""Copy a finished generation's output from sync.so's URL into the media bucket as a stream.

The HTTP body is read in chunks into one part buffer at a time; each full buffer becomes an S3
`UploadPart` (on one background thread, so downloading the next part overlaps uploading this one)
and the SHA-256 of the whole object is computed on the way. Memory stays at about two part buffers
whatever the output's size, and nothing touches the disk (Lambda's /tmp is 512 MB by default).
An output that fits in one part is a single PutObject. Any failure aborts the multipart upload.

A refused URL (4xx: expired, or never recorded) is replaced once by a fresh one from sync.so; a
5xx, a broken connection or too many redirects raise, and the state machine tries again later.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from lipsync.storage import MultipartUpload, ObjectInfo, Storage

MiB = 1024 * 1024
PART_SIZE = 16 * MiB  # 10,000 parts of 16 MiB: outputs up to 156 GiB, whatever their announced length
MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * 1024 * MiB  # S3's maximum
MAX_PARTS = 10_000  # S3's maximum
CHUNK_SIZE = MiB  # what one read of the HTTP body returns at most
MAX_REDIRECTS = 5
DOWNLOAD_TIMEOUT = httpx.Timeout(60.0, connect=5.0)  # per connect and per read, not for the whole body


class OutputUnavailableError(RuntimeError):
    """The output could not be fetched (retried by the state machine until the deadline)."""


def download_client() -> httpx.Client:
    """The HTTP client Finalize downloads with: redirects followed, a few hops at most."""
    return httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, max_redirects=MAX_REDIRECTS)


@dataclass(frozen=True)
class CopiedOutput:
    info: ObjectInfo
    sha256: str  # hex digest of the whole object
    parts: int  # 0 for a single PutObject


def part_size_for(length: int | None, preferred: int = PART_SIZE) -> int:
    """The part size for an output of `length` bytes (None: not announced): `preferred`, or larger
    when that many bytes would need more than S3's 10,000 parts (rounded up to whole MiB)."""
    size = max(preferred, MIN_PART_SIZE)
    if length is not None and math.ceil(length / size) > MAX_PARTS:
        size = math.ceil(length / MAX_PARTS / MiB) * MiB
    if size > MAX_PART_SIZE:
        raise OutputUnavailableError(f"an output of {length} bytes exceeds S3's largest object")
    return size


def copy_output(
    http: httpx.Client,
    url: str | None,
    fresh_url: Callable[[], str | None],
    storage: Storage,
    key: str,
    *,
    content_type: str,
    metadata: dict[str, str],
    part_size: int | None = None,
) -> CopiedOutput:
    """Stream the output at `url` into `key`, with the whole object's SHA-256 in its tag `sha256`.
    When `url` is missing or refused (4xx), `fresh_url()` (sync.so's download endpoint) is asked
    once; if that one is refused too, `OutputUnavailableError`."""
    copied = _copy_from(http, url, storage, key, content_type, metadata, part_size)
    if copied is None:
        copied = _copy_from(http, fresh_url(), storage, key, content_type, metadata, part_size)
    if copied is None:
        raise OutputUnavailableError("the output's download URLs were refused")
    return copied


def _copy_from(
    http: httpx.Client,
    url: str | None,
    storage: Storage,
    key: str,
    content_type: str,
    metadata: dict[str, str],
    part_size: int | None,
) -> CopiedOutput | None:
    """None when the URL is missing or refused (4xx), after any redirects."""
    if not url:
        return None
    with http.stream("GET", url, follow_redirects=True) as response:
        if 400 <= response.status_code < 500:
            return None
        if response.status_code >= 300:
            raise OutputUnavailableError(f"output download answered {response.status_code}")
        size = part_size or part_size_for(_announced_length(response))
        writer = PartWriter(storage, key, content_type=content_type, metadata=metadata, part_size=size)
        return writer.write_all(response.iter_bytes(CHUNK_SIZE))


def _announced_length(response: httpx.Response) -> int | None:
    length = response.headers.get("content-length")
    if not length or response.headers.get("content-encoding", "identity") != "identity":
        return None  # a compressed body's length is not the object's
    try:
        return int(length)
    except ValueError:
        return None


class PartWriter:
    """Cuts a stream of chunks into parts of `part_size` bytes and uploads them in order; one part is
    in flight while the next fills. Hashes everything it is given."""

    def __init__(
        self, storage: Storage, key: str, *, content_type: str, metadata: dict[str, str], part_size: int
    ) -> None:
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part size {part_size} is outside S3's limits")
        self._storage, self._key, self._part_size = storage, key, part_size
        self._content_type, self._metadata = content_type, metadata
        self._checksum = hashlib.sha256()
        self._buffer = bytearray()
        self._upload: MultipartUpload | None = None
        self._parts = 0
        self._in_flight: Future[None] | None = None

    def write_all(self, chunks: Iterable[bytes]) -> CopiedOutput:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-part") as uploader:
            try:
                for chunk in chunks:
                    self._checksum.update(chunk)
                    self._buffer += chunk
                    while len(self._buffer) > self._part_size:  # a full part, and more to come
                        self._send_part(uploader, self._part_size)
                return self._finish(uploader)
            except BaseException:
                self._abort()
                raise

    def _send_part(self, uploader: ThreadPoolExecutor, length: int) -> None:
        self._wait_for_part_in_flight()  # at most one part in flight: memory stays bounded
        if self._parts == MAX_PARTS:
            raise OutputUnavailableError(f"the output needs more than {MAX_PARTS} parts of {self._part_size}")
        if self._upload is None:
            self._upload = self._storage.start_multipart(
                self._key, content_type=self._content_type, metadata=self._metadata
            )
        with memoryview(self._buffer) as view:
            data = bytes(view[:length])  # one copy: the part that goes, while the buffer fills again
        del self._buffer[:length]
        self._parts += 1
        self._in_flight = uploader.submit(self._upload.upload_part, self._parts, data)

    def _wait_for_part_in_flight(self) -> None:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            in_flight.result()  # raises the part's failure here

    def _finish(self, uploader: ThreadPoolExecutor) -> CopiedOutput:
        digest = self._checksum.hexdigest()
        tags = {"sha256": digest}  # known only now: a tag, not metadata (fixed when an upload starts)
        if self._upload is None:  # it all fits in one part: one PutObject
            body = io.BytesIO(bytes(self._buffer))
            self._buffer.clear()
            info = self._storage.upload(
                self._key, body, content_type=self._content_type, metadata=self._metadata, tags=tags
            )
            return CopiedOutput(info=info, sha256=digest, parts=0)
        if self._buffer:
            self._send_part(uploader, len(self._buffer))
        self._wait_for_part_in_flight()
        info = self._upload.complete(tags)
        return CopiedOutput(info=info, sha256=digest, parts=self._parts)

    def _abort(self) -> None:
        """Stop after a failure: the failure raised is the first one; a failed abort leaves the parts
        to the bucket's lifecycle rule for incomplete multipart uploads."""
        if self._in_flight is not None:
            self._in_flight.cancel()
            with contextlib.suppress(Exception):
                self._in_flight.result()
            self._in_flight = None
        if self._upload is not None:
            with contextlib.suppress(Exception):
                self._upload.abort()
