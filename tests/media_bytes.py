"""Real media bytes made in memory (no ffmpeg), for tests that read durations."""

from __future__ import annotations

import io
import wave


def wav_bytes(seconds: float, rate: int = 8000) -> bytes:
    """A silent 16-bit mono WAV of `seconds`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x00\x00" * int(seconds * rate))
    return buffer.getvalue()
