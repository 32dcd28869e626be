"""How long a media file plays, read from its headers (the Lambda runtime has no ffprobe).

mutagen parses the container (MP4/MOV/M4A, MP3, WAV, AAC, FLAC, Ogg) through any seekable
binary stream; `RangeReader` makes an S3 object one, fetching only the byte ranges mutagen
asks for (the headers, and for a few formats the last page), never the whole file.
WebM/Matroska and unknown containers give None: the estimate then assumes the longest output.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from lipsync.jobs.model import ObjectRef
    from lipsync.storage import Storage

READ_BLOCK = 256 * 1024  # one ranged GET fills this much of the buffer


def _parser(extension: str) -> Callable[[BinaryIO], object] | None:
    # Imported per format: mutagen's modules are small, and most jobs need two of them.
    if extension in ("mp4", "mov", "m4v", "m4a"):
        from mutagen.mp4 import MP4

        return MP4
    if extension == "mp3":
        from mutagen.mp3 import MP3

        return MP3
    if extension == "wav":
        from mutagen.wave import WAVE

        return WAVE
    if extension == "aac":
        from mutagen.aac import AAC

        return AAC
    if extension == "flac":
        from mutagen.flac import FLAC

        return FLAC
    if extension == "ogg":
        from mutagen.oggvorbis import OggVorbis

        return OggVorbis
    return None


def media_seconds(stream: BinaryIO, extension: str) -> float | None:
    """The duration in seconds, or None when the format is not parsed here or the file is not
    what its extension says."""
    from mutagen import MutagenError

    parser = _parser(extension.lower())
    if parser is None:
        return None
    try:
        info = getattr(parser(stream), "info", None)
    except (MutagenError, ValueError, EOFError, OSError):
        return None
    length = getattr(info, "length", None)
    return round(float(length), 3) if length else None


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of `size` bytes that fetches what is read with `read_range`."""

    def __init__(self, read_range: Callable[[int, int], bytes], size: int) -> None:
        self._read_range = read_range
        self._size = size
        self._position = 0
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        end = min(self._size, self._position + len(buffer))
        if end <= self._position:
            return 0
        data = self._read_range(self._position, end - 1)
        self.requests += 1
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


def object_seconds(storage: Storage, ref: ObjectRef, size: int) -> float | None:
    """The duration of an object in the bucket, read with a few ranged GETs."""
    extension = ref.key.rpartition(".")[2] if "." in ref.key else ""
    if size <= 0 or _parser(extension.lower()) is None:
        return None
    raw = RangeReader(lambda start, end: storage.read_range(ref.key, ref.version_id, start, end), size)
    return media_seconds(io.BufferedReader(raw, buffer_size=READ_BLOCK), extension)
