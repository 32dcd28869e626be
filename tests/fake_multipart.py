"""An in-memory multipart upload for the fakes (`FakeStorage.start_multipart`): it keeps the parts,
checks S3's rules on them (numbers in order from 1, every part but the last at least 5 MiB unless
`min_part_size` says otherwise), and on `complete` stores the object through the storage's `upload`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Protocol

if TYPE_CHECKING:
    from lipsync.storage import ObjectInfo

S3_MIN_PART_SIZE = 5 * 1024 * 1024


class Uploads(Protocol):
    def upload(
        self,
        key: str,
        body: BinaryIO,
        *,
        content_type: str,
        metadata: dict[str, str],
        tags: dict[str, str] | None = None,
    ) -> ObjectInfo: ...


@dataclass
class FakeMultipartUpload:
    storage: Uploads
    key: str
    content_type: str
    metadata: dict[str, str]
    min_part_size: int = S3_MIN_PART_SIZE
    parts: list[tuple[int, int]] = field(default_factory=list)  # (number, size) in arrival order
    state: str = "open"  # open, completed, aborted
    final_tags: dict[str, str] | None = None
    _data: list[bytes] = field(default_factory=list, repr=False)

    def upload_part(self, number: int, data: bytes) -> None:
        if self.state != "open":
            raise RuntimeError(f"NoSuchUpload: the upload is {self.state}")
        if number != len(self.parts) + 1:
            raise RuntimeError(f"part {number} out of order after {len(self.parts)} parts")
        self.parts.append((number, len(data)))
        self._data.append(data)

    def complete(self, tags: dict[str, str]) -> ObjectInfo:
        if self.state != "open" or not self.parts:
            raise RuntimeError(f"cannot complete an upload that is {self.state} with {len(self.parts)} parts")
        if any(size < self.min_part_size for _, size in self.parts[:-1]):
            raise RuntimeError(f"EntityTooSmall: {self.parts}")
        self.state, self.final_tags = "completed", dict(tags)
        body = io.BytesIO(b"".join(self._data))
        return self.storage.upload(
            self.key, body, content_type=self.content_type, metadata=self.metadata, tags=tags
        )

    def abort(self) -> None:
        self.state = "aborted"
        self._data.clear()
