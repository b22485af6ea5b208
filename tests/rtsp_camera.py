"""An RTSP camera on loopback for tests: an H.264 clip made with FFmpeg (x264), served by
GStreamer's RTSP server (``tests/rtsp_server.py``) in a process that can vanish, stall and return."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.system import require, require_gst_rtsp_server

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def make_clip(path: Path, *, seconds: int = 300, fps: int = 10, size: str = "160x128") -> Path:
    """A moving test pattern (FFmpeg's testsrc2), H.264 in Matroska, ``seconds`` long."""
    ffmpeg = require("ffmpeg", "ffmpeg", "making the RTSP test camera's clip")
    if not path.exists():
        subprocess.run(
            [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
            + ["-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"]
            + ["-g", str(fps), "-pix_fmt", "yuv420p", str(path)],
            check=True,
            timeout=120,
        )
    return path


class RtspCamera:
    """``rtsp://127.0.0.1:PORT/cam`` served by a child process; ``stop`` makes it vanish (SIGKILL),
    ``pause`` / ``resume`` stall it (SIGSTOP / SIGCONT), ``start`` again serves on the same port."""

    def __init__(self, clip: Path, port: int, log_dir: Path) -> None:
        self.python = require_gst_rtsp_server("the RTSP camera tests")
        self.clip = clip
        self.port = port
        self.log_dir = log_dir
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self, timeout: float = 30.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "the camera is already running"
        self.starts += 1
        with open(self.log_dir / f"rtsp-{self.starts}.err", "w") as log:
            self.proc = subprocess.Popen(
                [self.python, str(SERVER_SCRIPT), str(self.clip), str(self.port)],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        deadline = time.monotonic() + timeout
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline()  # type: ignore[union-attr]
            if line.strip() == "READY":
                return
            if not line:
                time.sleep(0.05)
        self.stop()
        raise AssertionError(
            f"the RTSP camera did not start: {(self.log_dir / f'rtsp-{self.starts}.err').read_text()}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def __enter__(self) -> RtspCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.resume()
        self.stop()
