"""What the emulator does with media: sniff the fetched bytes and build an output MP4.

The output is NOT lip-synced: it is the input video (or a looped image) with the
input audio muxed in, cut to the shorter of the two. Enough for a pipeline to
download, store and play a real file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from local.media import ffmpeg_exe, run_ffmpeg

VIDEO, AUDIO, IMAGE, UNKNOWN = "video", "audio", "image", "unknown"


def sniff(data: bytes) -> str:
    """Classify bytes by magic number: 'video', 'audio', 'image' or 'unknown'."""
    head = data[:64]
    if len(head) >= 12 and head[4:8] == b"ftyp":
        # ISO-BMFF: the major brand tells M4A audio apart from MP4/MOV video.
        return AUDIO if head[8:12] in (b"M4A ", b"M4B ", b"M4P ") else VIDEO
    if head.startswith(b"\x1a\x45\xdf\xa3"):  # EBML: WebM / Matroska
        return VIDEO
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return AUDIO
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return IMAGE
    if head.startswith((b"ID3", b"OggS", b"fLaC")):
        return AUDIO
    if len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        # MPEG audio frame sync (MP3 without an ID3 tag), ADTS AAC looks the same.
        return AUDIO
    if head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE
    return UNKNOWN


def fits(input_type: str, kind: str) -> bool:
    """Can bytes of this kind serve as this input type? (A video container may carry the voice.)"""
    if input_type == "audio":
        return kind in (AUDIO, VIDEO)
    return kind == input_type


def synthesize_tone(path: Path, script: str) -> Path:
    """Stand-in for ElevenLabs TTS: a tone whose length grows with the script (0.5-5 s)."""
    seconds = min(5.0, max(0.5, len(script) * 0.05))
    run_ffmpeg(
        [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=330:sample_rate=16000:duration={seconds:.2f}",
            "-ac",
            "1",
            "-c:a",
            "pcm_s16le",
            str(path),
        ]
    )
    return path


def build_output(out: Path, visual: Path, visual_type: str, audio: Path | None) -> None:
    """Mux visual + audio into an MP4 (`-shortest`); audio=None keeps the video's own sound (dubbing)."""
    aac = ["-c:a", "aac", "-b:a", "64k"]
    x264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    tail = ["-movflags", "+faststart", str(out)]
    if visual_type == "image":
        # Loop the still for as long as the audio lasts; yuv420p needs even dimensions.
        even = ["-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-r", "10"]
        args = ["-loop", "1", "-i", str(visual), "-i", str(audio)]
        run_ffmpeg([*args, "-map", "0:v:0", "-map", "1:a:0", *x264, *even, *aac, "-shortest", *tail])
        return
    if audio is None:
        args = ["-i", str(visual), "-map", "0:v:0", "-map", "0:a:0?"]
    else:
        args = ["-i", str(visual), "-i", str(audio), "-map", "0:v:0", "-map", "1:a:0", "-shortest"]
    try:  # copying the video stream is fast; not every codec fits an MP4 though
        run_ffmpeg([*args, "-c:v", "copy", *aac, *tail])
    except RuntimeError:
        run_ffmpeg([*args, *x264, *aac, *tail])


_DURATION = re.compile(rb"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def media_duration(path: Path) -> float | None:
    """Duration in seconds as reported by `ffmpeg -i` (there is no ffprobe in imageio-ffmpeg)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    match = _DURATION.search(result.stderr)
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return round(int(hours) * 3600 + int(minutes) * 60 + float(seconds), 3)
