"""Video files, V4L2 devices and RTSP cameras through FFmpeg (PyAV, imported only here).

Two ways of reading:

* **Files** (``video:PATH``) are read frame by frame at the edge's pace, nothing skipped; with
  ``loop`` the file starts again at its end.
* **Live cameras** (``rtsp://``, ``rtsps://``, ``v4l2:/dev/videoN``) are read by a thread of
  their own that keeps only the newest frame, so a camera faster than the edge's pace never
  builds a backlog. When the camera cannot be reached, drops the connection, ends its stream or
  sends nothing for ``read_timeout_s`` (FFmpeg's read is interrupted then: PyAV's ``timeout``),
  the thread logs it, marks the camera down and reopens it after a capped exponential back-off
  (:class:`~layercast.edge.backoff.Backoff`), for as long as the edge runs. The edge itself never
  waits on the camera: with no fresh frame, the iterator yields :data:`NO_FRAME` within
  ``max_wait_s``.

Every frame is timestamped from the stream: its presentation time (pts) mapped to the wall clock
through the wall time of the first frame decoded (after each reopening, for a live camera). A
live frame is never stamped in the future (a camera's start-up burst moves the anchor to the newest frame), and a stream whose
timestamps jump away from the wall clock by more than ``RESYNC_S`` is anchored again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layercast.edge.backoff import Backoff
from layercast.edge.config import BackoffConfig
from layercast.edge.sources import NO_FRAME, CapturedFrame
from layercast.shared.errors import ConfigError

log = logging.getLogger(__name__)

#: Re-anchor a stream's clock when its timestamps drift this far from the wall clock.
RESYNC_S = 10.0


def import_av() -> Any:
    try:
        import av
    except ImportError:
        raise ConfigError(
            "video files, V4L2 devices and RTSP cameras are read through PyAV: "
            "pip install 'layercast[edge]' (or pip install av)"
        ) from None
    return av


class StreamClock:
    """Maps a stream's presentation times (seconds) to wall-clock microseconds.

    A recording (``live=False``) keeps its own timing from the first frame on, whatever the pace
    it is read at; a live stream is never stamped ahead of the wall clock and is anchored again
    when its timestamps jump."""

    def __init__(self, wall: Any = time.time, *, live: bool = True) -> None:
        self._wall = wall
        self.live = live
        self._anchor: tuple[float, float] | None = None  # (pts seconds, wall seconds)

    def reset(self) -> None:
        self._anchor = None

    def stamp(self, pts_s: float | None) -> int:
        now = self._wall()
        if pts_s is None:
            return int(now * 1e6)
        if self._anchor is None or (
            self.live and abs(self._anchor[1] + pts_s - self._anchor[0] - now) > RESYNC_S
        ):
            self._anchor = (pts_s, now)
        pts0, wall0 = self._anchor
        stamp = wall0 + pts_s - pts0
        if self.live and stamp > now:  # frames arriving faster than real time (a server's start-up burst)
            self._anchor, stamp = (pts_s, now), now
        return int(stamp * 1e6)


@dataclass
class SourceHealth:
    """What the metrics and logs tell about a source."""

    up: bool = False
    reconnects: int = 0  # opening attempts after the first
    failures: int = 0  # drops, stalls, failed opens and ended streams
    last_frame_time: float = 0.0  # unix time of the newest frame, 0 before the first
    last_error: str = ""


def _frame_time(frame: Any) -> float | None:
    t = frame.time
    return float(t) if t is not None else None


class AVSource:
    """A video file, a V4L2 device or an RTSP camera, decoded to RGB by FFmpeg."""

    def __init__(
        self,
        url: str,
        *,
        live: bool,
        loop: bool = False,
        format: str | None = None,
        options: dict[str, str] | None = None,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        reconnect: BackoffConfig | None = None,
        max_wait_s: float = 1.0,
    ) -> None:
        self._av = import_av()
        self.url = url
        self.live = live
        self.loop = loop and not live
        self.format = format
        self.options = dict(options or {})
        self.timeout = (open_timeout_s, read_timeout_s)
        self.max_wait_s = max_wait_s
        self.health = SourceHealth(up=not live)
        self._backoff = Backoff(reconnect or BackoffConfig())
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: CapturedFrame | None = None
        self._thread: threading.Thread | None = None
        if not live:
            self._open().close()  # a bad file is a configuration error, said at start

    def __repr__(self) -> str:
        return f"AVSource({self.name!r}, live={self.live})"

    @property
    def name(self) -> str:
        """The URL without credentials (``rtsp://user:pass@host`` → ``rtsp://host``)."""
        scheme, sep, rest = self.url.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            rest = rest.split("@", 1)[1]
        return f"{scheme}{sep}{rest}"

    def _open(self) -> Any:
        av = self._av
        try:
            return av.open(self.url, format=self.format, options=self.options, timeout=self.timeout)
        except (av.FFmpegError, OSError) as exc:
            if self.live:
                raise
            raise ConfigError(f"FFmpeg cannot open {self.name!r}: {exc}") from None

    def close(self) -> None:
        """Stop the reading thread (live cameras); an iterator in progress ends."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def __iter__(self) -> Iterator[Any]:
        return self._iter_live() if self.live else self._iter_file()

    # -- files -------------------------------------------------------------------------------------

    def _iter_file(self) -> Iterator[CapturedFrame]:
        clock = StreamClock(live=False)
        offset = 0.0  # a looped file's timestamps carry on from the previous pass
        while not self._stop.is_set():
            container = self._open()
            last = None
            try:
                stream = container.streams.video[0]
                # read while the container is open (PyAV refuses a closed container's streams)
                period = 1.0 / float(stream.average_rate or 25)
                for frame in container.decode(stream):
                    t = _frame_time(frame)
                    last = t if t is not None else last
                    self.health.last_frame_time = time.time()
                    yield CapturedFrame(
                        clock.stamp(None if t is None else t + offset), frame.to_ndarray(format="rgb24")
                    )
            except self._av.FFmpegError as exc:
                log.warning("%s: decoding stopped: %s", self.name, exc)
                self.health.failures += 1
                self.health.last_error = str(exc)
            finally:
                container.close()
            if not self.loop or last is None:
                return
            offset += last + period

    # -- live cameras ------------------------------------------------------------------------------

    def _iter_live(self) -> Iterator[Any]:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._read_forever, name=f"source {self.name}", daemon=True
            )
            self._thread.start()
        taken: CapturedFrame | None = None
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda t=taken: self._latest is not t or self._stop.is_set(), self.max_wait_s
                )
                frame = self._latest
            if frame is None or frame is taken:
                yield NO_FRAME
                continue
            taken = frame
            yield frame

    def _down(self, why: str) -> None:
        h = self.health
        h.failures += 1
        h.last_error = why
        if h.up:
            log.warning("camera %s is down: %s", self.name, why)
        else:
            log.info("camera %s still unavailable: %s", self.name, why)
        h.up = False

    def _read_forever(self) -> None:
        av = self._av
        clock = StreamClock()
        attempts = 0
        while not self._stop.is_set():
            if attempts:
                self.health.reconnects += 1
            attempts += 1
            try:
                container = self._open()
            except (av.FFmpegError, OSError) as exc:
                self._down(f"cannot open: {exc}")
                self._stop.wait(self._backoff.next_delay())
                continue
            clock.reset()
            try:
                for frame in container.decode(container.streams.video[0]):
                    if self._stop.is_set():
                        return
                    captured = CapturedFrame(
                        clock.stamp(_frame_time(frame)), frame.to_ndarray(format="rgb24")
                    )
                    with self._cond:
                        self._latest = captured
                        self._cond.notify_all()
                    self.health.last_frame_time = time.time()
                    if not self.health.up:
                        log.info("camera %s is up (%dx%d)", self.name, frame.width, frame.height)
                        self.health.up = True
                        self._backoff.reset()
                self._down("the stream ended")
            except (av.FFmpegError, OSError) as exc:
                self._down(f"read failed: {exc}")
            finally:
                container.close()
            self._stop.wait(self._backoff.next_delay())


def open_av_source(kind: str, arg: str, config: Any) -> AVSource:
    """The FFmpeg source for ``video:PATH``, ``v4l2:DEVICE``, ``device:N`` or an ``rtsp[s]://`` URL."""
    live = {
        "open_timeout_s": config.open_timeout_s,
        "read_timeout_s": config.read_timeout_s,
        "reconnect": config.reconnect,
    }
    if kind == "video":
        path = Path(arg).expanduser()
        if not path.is_file():
            raise ConfigError(f"video file {str(path)!r} does not exist")
        return AVSource(str(path), live=False, loop=config.loop)
    if kind in ("v4l2", "device"):
        device = arg or "/dev/video0"
        if kind == "device":
            try:
                device = f"/dev/video{int(arg or '0')}"
            except ValueError:
                raise ConfigError(
                    f"source.spec = {kind}:{arg}: expected device:N with an integer index"
                ) from None
        return AVSource(device, live=True, format="v4l2", **live)
    if kind in ("rtsp", "rtsps"):
        url = f"{kind}:{arg}"
        return AVSource(url, live=True, options={"rtsp_transport": config.rtsp_transport}, **live)
    raise ConfigError(f"not an FFmpeg source: {kind}:{arg}")
