"""Low-delay video baselines through FFmpeg: H.264 (x264), H.265 (x265), AV1 (SVT-AV1).

What a fixed camera sends today instead of our base layer: a low-delay stream (no B-frames, no
look-ahead, each frame predicted from the previous ones) with an intra frame every ``gop``
frames. A clip's frames go to ``ffmpeg`` as raw RGB; the elementary stream it writes (Annex B for
H.264/H.265, a raw OBU stream for AV1: every parameter set and header included, no container)
is the byte count; ``ffmpeg`` decodes that stream back to RGB frames for the task model.

Settings (all single-threaded, so a stream is the same on every run):

* x264: ``-preset medium -tune zerolatency`` (bframes 0, rc-lookahead 0, no mb-tree),
  ``keyint = min-keyint = gop``, ``scenecut 0``, ``sliced-threads 0``, CRF rate control;
* x265: ``-preset medium -tune zerolatency`` (bframes 0, rc-lookahead 0, no cu-tree), the same
  GOP, CRF;
* SVT-AV1: ``pred-struct=1`` (low delay), preset 8, the same GOP, CRF.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import Literal

import numpy as np

VideoCodec = Literal["x264", "x265", "av1"]
VIDEO_CODECS: tuple[VideoCodec, ...] = ("x264", "x265", "av1")

#: CRF sweeps: from near-lossless for these tiny frames down to each encoder's coarsest setting.
DEFAULT_CRF: dict[str, tuple[int, ...]] = {
    "x264": (24, 30, 35, 39, 43, 47, 51),
    "x265": (24, 30, 35, 39, 43, 47, 51),
    "av1": (30, 40, 48, 55, 60, 63),
}


def _args(codec: VideoCodec, crf: int, gop: int) -> list[str]:
    if codec == "x264":
        params = f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:sliced-threads=0:threads=1"
        return [
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-tune",
            "zerolatency",
            "-crf",
            str(crf),
            "-x264-params",
            params,
            "-f",
            "h264",
        ]
    if codec == "x265":
        params = (
            f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:frame-threads=1:pools=1"
            ":wpp=0:log-level=error"
        )
        return [
            "-c:v",
            "libx265",
            "-preset",
            "medium",
            "-tune",
            "zerolatency",
            "-crf",
            str(crf),
            "-x265-params",
            params,
            "-f",
            "hevc",
        ]
    if codec == "av1":
        params = f"pred-struct=1:keyint={gop}:scd=0:lp=1"
        return ["-c:v", "libsvtav1", "-preset", "8", "-crf", str(crf), "-svtav1-params", params, "-f", "obu"]
    raise ValueError(f"unknown video codec {codec!r}; choose from {VIDEO_CODECS}")


def ffmpeg_available(codec: VideoCodec) -> bool:
    if shutil.which("ffmpeg") is None:
        return False
    lib = {"x264": "libx264", "x265": "libx265", "av1": "libsvtav1"}[codec]
    out = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True, text=True).stdout
    return lib in out


@dataclass
class CodedClip:
    codec: str
    crf: int
    stream: bytes  # the elementary stream, every header included
    decoded: list[np.ndarray]  # uint8 HxWx3 per frame

    @property
    def num_bytes(self) -> int:
        return len(self.stream)


def encode_clip(frames: list[np.ndarray], codec: VideoCodec, crf: int, gop: int, fps: float) -> CodedClip:
    """Encode ``frames`` (uint8 HxWx3, all one size; even sides) and decode the stream back."""
    h, w = frames[0].shape[:2]
    raw = np.ascontiguousarray(np.stack(frames)).tobytes()
    enc = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{w}x{h}",
            "-r",
            str(fps),
            "-i",
            "-",
            "-pix_fmt",
            "yuv420p",
            *_args(codec, crf, gop),
            "-",
        ],
        input=raw,
        capture_output=True,
        check=False,
    )
    if enc.returncode != 0:
        raise RuntimeError(f"ffmpeg {codec} crf {crf} failed: {enc.stderr.decode(errors='replace')[-500:]}")
    fmt = {"x264": "h264", "x265": "hevc", "av1": "obu"}[codec]
    dec = subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            fmt,
            "-i",
            "-",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        input=enc.stdout,
        capture_output=True,
        check=False,
    )
    if dec.returncode != 0:
        raise RuntimeError(f"ffmpeg decode of {codec} failed: {dec.stderr.decode(errors='replace')[-500:]}")
    pix = np.frombuffer(dec.stdout, np.uint8)
    if pix.size != len(frames) * h * w * 3:
        raise RuntimeError(f"{codec} decoded {pix.size // (h * w * 3)} frames of {len(frames)}")
    decoded = list(pix.reshape(len(frames), h, w, 3).copy())
    return CodedClip(codec, crf, enc.stdout, decoded)
