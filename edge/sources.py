"""Frame sources: where the edge's images come from, and the pacing of capture.

A source is a plain iterable of ``np.uint8`` arrays of shape ``(H, W, 3)`` (RGB), or of
:class:`CapturedFrame` when it knows when each image was taken (the FFmpeg sources stamp
frames from the stream), and may block while reading; a live source yields :data:`NO_FRAME`
when it has no fresh image, so that reading never waits on a camera for long.
:func:`paced_frames` turns one into an async stream of :class:`CapturedFrame` at a fixed
rate, reading in a worker thread so the event loop stays free.

Sources (``SourceConfig.spec``):

* ``synthetic`` / ``synthetic:SEED``: the synthetic camera of the data generator
  (``layercast.shared.data.synth.SyntheticCamera``), infinite.
* ``folder:PATH`` or a directory path: PNG / JPEG files in name order (``loop`` to repeat).
* ``video:PATH``: a video file through FFmpeg (PyAV; ``loop`` to repeat).
* ``v4l2:/dev/videoN`` or ``device:N``: a camera device through FFmpeg's V4L2 input.
* ``rtsp://[user:pass@]host[:port]/path`` or ``rtsps://...``: an IP camera, reopened with
  back-off when it drops (:mod:`layercast.edge.av_source`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from layercast.edge.config import SourceConfig
from layercast.shared.clock import now_us
from layercast.shared.errors import ConfigError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class CapturedFrame:
    """One captured image and when it was taken."""

    capture_time_us: int  # wall clock, microseconds since the Unix epoch
    image: np.ndarray  # uint8 (H, W, 3) RGB


class Pacer:
    """Ticks at a fixed rate on an absolute schedule, so errors do not accumulate.

    Tick k is due at ``t0 + k / fps``. Waiting is computed against that grid
    rather than "period after the previous frame", so the rate does not drift
    with read or scheduling latency. When more than one period late (a slow
    read, a suspended process), the missed ticks are skipped and counted in
    ``skipped`` instead of being replayed as a burst.
    """

    def __init__(self, fps: float, clock: Callable[[], float] = time.monotonic) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.skipped = 0
        self._clock = clock
        self._next: float | None = None

    def delay(self) -> float:
        """Seconds to wait until the next tick is due; advances the schedule by one tick."""
        now = self._clock()
        if self._next is None:
            self._next = now
        wait = self._next - now
        if wait <= -self.period:
            missed = int(-wait // self.period)
            self.skipped += missed
            self._next += missed * self.period
            wait = self._next - now
        self._next += self.period
        return max(0.0, wait)


#: Yielded by a live source that has no fresh image yet: the tick passes without a frame.
NO_FRAME: Any = object()


async def paced_frames(
    source: Iterable[np.ndarray],
    fps: float,
    limit: int = 0,
    *,
    pacer: Pacer | None = None,
    clock_us: Callable[[], int] = now_us,
) -> AsyncIterator[CapturedFrame]:
    """Yield frames of ``source`` at ``fps`` (at most ``limit`` if non-zero) until it ends."""
    pacer = pacer or Pacer(fps)
    iterator = iter(source)
    count = 0
    while not limit or count < limit:
        await asyncio.sleep(pacer.delay())
        item = await asyncio.to_thread(next, iterator, None)
        if item is None:
            return
        if item is NO_FRAME:
            continue
        count += 1
        yield (
            item if isinstance(item, CapturedFrame) else CapturedFrame(capture_time_us=clock_us(), image=item)
        )


def _as_rgb(image: np.ndarray, origin: str) -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"{origin}: expected a uint8 HxWx3 image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


class FolderSource:
    """PNG / JPEG files of a folder in name order; unreadable files are skipped and counted."""

    def __init__(self, folder: Path, loop: bool = False) -> None:
        if not folder.is_dir():
            raise ConfigError(f"source folder {str(folder)!r} is not a directory")
        self.paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.paths:
            raise ConfigError(f"source folder {str(folder)!r} holds no .png / .jpg / .jpeg file")
        self.loop = loop
        self.unreadable = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        from PIL import Image, UnidentifiedImageError

        while True:
            yielded = False
            for path in self.paths:
                try:
                    with Image.open(path) as im:
                        image = np.asarray(im.convert("RGB"))
                except (OSError, UnidentifiedImageError) as exc:
                    self.unreadable += 1
                    log.warning("skipping unreadable image %s: %s", path, exc)
                    continue
                yielded = True
                yield _as_rgb(image, str(path))
            if not self.loop or not yielded:
                return


class SyntheticSource:
    """The data generator's synthetic camera (imported lazily; infinite)."""

    def __init__(self, seed: int, width: int, height: int, fps: float) -> None:
        try:
            from layercast.shared.data.synth import SyntheticCamera
        except ImportError as exc:
            raise ConfigError(f"the synthetic camera is not available: {exc}") from None
        self.camera = SyntheticCamera(seed=seed, width=width, height=height, fps=fps)

    def __iter__(self) -> Iterator[np.ndarray]:
        for scene in self.camera:
            yield _as_rgb(np.asarray(scene.image), "synthetic camera")


def open_source(config: SourceConfig) -> Iterable[np.ndarray]:
    """Build the source named by ``config.spec`` (see the module docstring)."""
    spec = config.spec.strip()
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        try:
            seed = int(arg) if arg else config.seed
        except ValueError:
            raise ConfigError(
                f"source.spec = {spec!r}: expected synthetic:SEED with an integer seed"
            ) from None
        return SyntheticSource(seed, config.width, config.height, config.fps)
    if kind == "folder":
        return FolderSource(Path(arg).expanduser(), loop=config.loop)
    if kind in ("video", "v4l2", "device", "rtsp", "rtsps"):
        from layercast.edge.av_source import open_av_source

        return open_av_source(kind, arg, config)
    path = Path(spec).expanduser()
    if path.is_dir():
        return FolderSource(path, loop=config.loop)
    raise ConfigError(
        f"source.spec = {spec!r}: expected synthetic[:SEED], folder:PATH, video:PATH, v4l2:/dev/videoN, "
        "device:N, rtsp://HOST/PATH, rtsps://HOST/PATH or an existing directory"
    )
