"""The edge's encoder: the codec facade on the chosen device, fed in batches, off the event loop.

``Encoder.load(config)`` picks the device (``auto``: CUDA when torch sees one,
else the CPU; ``cuda`` when none is present is a ConfigError) and loads the
codec from the registry. ``await encoder.encode(images)`` runs
``codec.encode_batch`` on one dedicated worker thread, so torch always runs on
the same thread and the asyncio loop keeps serving the link.

:func:`next_batch` implements "batch when behind": it waits for one frame,
then takes up to ``batch_max - 1`` more that are *already* waiting; a camera
that keeps up is encoded frame by frame with no added latency.

With a :class:`~layercast.shared.codec.video.VideoEncoder` (one per camera), ``encode`` codes the
batch in capture order as that camera's video: intra frames on its schedule, predicted frames
against the frame before.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from layercast.edge.config import EncoderConfig
from layercast.edge.frame_queue import DropOldestQueue
from layercast.edge.sources import CapturedFrame
from layercast.shared.codec.video import VideoEncoder, intra_period_for


class EncodedLike(Protocol):
    base: bytes
    enhancement: bytes | None


class CodecLike(Protocol):
    """What the edge needs of ``layercast.shared.codec.ScalableCodec``."""

    base_model_id: str
    enhancement_model_id: str | None

    temporal: Any

    def encode_batch(self, images: Sequence[np.ndarray]) -> Sequence[Any]: ...


@dataclass(frozen=True)
class EncodedBatch:
    """A batch's frames with their bitstreams and how long the encode took."""

    frames: list[CapturedFrame]
    encoded: list[EncodedLike]
    seconds: float


class Encoder:
    """Runs a codec's ``encode_batch`` on a single worker thread."""

    def __init__(self, codec: CodecLike, *, device: str = "cpu", batch_max: int = 4) -> None:
        self.codec = codec
        self.device = device
        self.batch_max = batch_max
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layercast-encode")

    @classmethod
    def load(cls, config: EncoderConfig) -> Encoder:
        """Select the device and load ``config.model`` from the codec registry."""
        from layercast.shared.codec import load_codec
        from layercast.shared.codec.runtime import configure_threads
        from layercast.shared.device import select_device

        configure_threads(config.threads)
        device = select_device(config.device)
        codec = load_codec(config.model, device=device, runtime=config.runtime)
        if codec.temporal is not None:
            codec.temporal.deadzone = config.deadzone
            if config.skip_threshold is not None:
                codec.temporal.skip_threshold = config.skip_threshold
        return cls(codec, device=device.type, batch_max=config.batch_max)

    @property
    def base_model_id(self) -> str:
        return self.codec.base_model_id

    @property
    def enhancement_model_id(self) -> str | None:
        return self.codec.enhancement_model_id

    @property
    def temporal_model_id(self) -> str | None:
        return getattr(self.codec, "temporal_model_id", None)

    def video(self, fps: float, intra_seconds: float) -> VideoEncoder | None:
        """A camera's video state for this codec, or None when every frame is intra."""
        if getattr(self.codec, "temporal", None) is None or intra_seconds <= 0:
            return None
        return VideoEncoder(self.codec, intra_period_for(fps, intra_seconds))  # type: ignore[arg-type]

    async def encode(self, frames: list[CapturedFrame], video: VideoEncoder | None = None) -> EncodedBatch:
        """Encode a batch on the worker thread (in capture order against ``video``'s state, if given)."""
        images = [f.image for f in frames]

        def work() -> tuple[list[EncodedLike], float]:
            t0 = time.perf_counter()
            if video is None:
                out = list(self.codec.encode_batch(images))
            else:
                out = [video.encode(image) for image in images]
            return out, time.perf_counter() - t0

        loop = asyncio.get_running_loop()
        encoded, seconds = await loop.run_in_executor(self._pool, work)
        if len(encoded) != len(frames):
            raise RuntimeError(f"codec returned {len(encoded)} bitstreams for {len(frames)} images")
        return EncodedBatch(frames, encoded, seconds)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


async def next_batch(queue: DropOldestQueue[CapturedFrame], batch_max: int) -> list[CapturedFrame]:
    """Wait for one frame, then add those already waiting, up to ``batch_max``; [] once closed."""
    first = await queue.get()
    if first is None:
        return []
    return [first, *queue.get_many(batch_max - 1)]
