"""JSON texts a job keeps (its request template, the exact body of a create), sized for DynamoDB.

A text up to `INLINE_LIMIT` bytes stays in the job record. A longer one (a manifest may be
256 KB, and per-frame bounding boxes make it so) goes to the bucket's private prefix
`.lipsync/requests/<job id>/<sha256>.json`, which no notification watches, and the record keeps
its key and checksum. Either way a record stays far below the 400 KB item limit, however large
the request, and the text read back is checked against its checksum.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from lipsync.jobs.model import Blob

if TYPE_CHECKING:
    from lipsync.storage import Storage

INLINE_LIMIT = 8 * 1024
PREFIX = ".lipsync/requests/"
MAX_BLOB_BYTES = 8 * 1024 * 1024


class BlobCorruptError(RuntimeError):
    """The stored text does not match its checksum (it was changed in the bucket)."""


def stash(storage: Storage, job_id: str, text: str) -> Blob:
    data = text.encode()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= INLINE_LIMIT:
        return Blob(sha256=digest, size=len(data), text=text)
    key = f"{PREFIX}{job_id}/{digest}.json"
    storage.put_bytes(key, data, content_type="application/json")
    return Blob(sha256=digest, size=len(data), s3_key=key)


def unstash(storage: Storage, blob: Blob) -> str:
    if blob.text is not None:
        return blob.text
    if blob.s3_key is None:
        raise BlobCorruptError("a stored text has neither its text nor its key")
    data = storage.read(blob.s3_key, max_bytes=MAX_BLOB_BYTES)
    if hashlib.sha256(data).hexdigest() != blob.sha256:
        raise BlobCorruptError(f"{blob.s3_key} does not match its checksum")
    return data.decode()
