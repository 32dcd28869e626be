"""Tiny sample media and a loopback file server, for tests and the local demo.

Everything is produced with the static ffmpeg binary that ships with the
``imageio-ffmpeg`` wheel, so no system ffmpeg (and no ffprobe) is needed.
The files are deliberately small (a few KB) so tests stay fast.
"""

from __future__ import annotations

import functools
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import imageio_ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    return str(imageio_ffmpeg.get_ffmpeg_exe())


def run_ffmpeg(args: list[str], timeout: float = 60.0) -> None:
    """Run ffmpeg quietly; raise RuntimeError with the tail of stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    result = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        tail = result.stderr.decode("utf-8", "replace")[-800:]
        raise RuntimeError(f"ffmpeg failed ({result.returncode}): {tail}")


def make_sample_video(path: str | Path, seconds: float = 1.0, *, with_audio: bool = False) -> Path:
    """Write a tiny H.264 MP4 (64x64, 10 fps test pattern); optionally with an AAC tone track."""
    out = Path(path)
    args = ["-f", "lavfi", "-i", f"testsrc=size=64x64:rate=10:duration={seconds}"]
    if with_audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=8000:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if with_audio:
        args += ["-c:a", "aac", "-b:a", "16k", "-shortest"]
    # faststart puts the index first, like most real-world uploads.
    args += ["-movflags", "+faststart", str(out)]
    run_ffmpeg(args)
    return out


def make_sample_audio(path: str | Path, seconds: float = 1.0, frequency: int = 440) -> Path:
    """Write a tiny WAV: a sine tone, 8 kHz mono 16-bit PCM."""
    out = Path(path)
    run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={frequency}:sample_rate=8000:duration={seconds}",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            str(out),
        ]
    )
    return out


def make_sample_image(path: str | Path) -> Path:
    """Write a tiny 64x64 PNG test pattern (the format follows the file extension)."""
    out = Path(path)
    run_ffmpeg(["-f", "lavfi", "-i", "testsrc=size=64x64:rate=1", "-frames:v", "1", str(out)])
    return out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests do not want one stderr line per request


class MediaServer:
    """Serve the files of one directory over HTTP on a free loopback port.

    >>> with MediaServer(tmp_path) as media:
    ...     url = f"{media.url}/clip.mp4"
    """

    def __init__(self, directory: str | Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.directory = Path(directory)
        handler = functools.partial(_QuietHandler, directory=str(self.directory))
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url_for(self, name: str) -> str:
        return f"{self.url}/{name}"

    def start(self) -> MediaServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="media-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
