"""What an operator sees of a frame: its preview, and on request its full reconstruction.

Used by the Operator gRPC servicer and (later) the operator web page. Image
work runs on a small executor of its own so it never waits behind a batch.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

from layercast.cloud.ingest.engine import InferenceEngine
from layercast.cloud.results.cache import LruCache
from layercast.cloud.results.png import PngImage
from layercast.cloud.results.previews import preview_png, reconstruct_png
from layercast.cloud.results.records import FrameRecord
from layercast.cloud.results.store import Store
from layercast.cloud.sessions import EnhancementSource
from layercast.shared.errors import FrameNotStored
from layercast.shared.rpc import common_pb2


@dataclass(frozen=True)
class Enhanced:
    """A reconstruction and what it cost."""

    image: PngImage
    base_bytes: int
    enhancement_bytes: int
    fetch_seconds: float
    cached: bool
    result: common_pb2.Result | None

    @property
    def total_bpp(self) -> float:
        return 8.0 * (self.base_bytes + self.enhancement_bytes) / max(1, self.image.width * self.image.height)


@dataclass(frozen=True)
class _CachedReconstruction:
    image: PngImage
    enhancement_bytes: int
    fetch_seconds: float


class FrameViewer:
    """Previews (cached) and enhancement on demand (fetched from the camera, cached)."""

    def __init__(
        self,
        *,
        store: Store,
        engine: InferenceEngine,
        router: EnhancementSource,
        executor: Executor,
        cache_bytes: int,
    ) -> None:
        self._store = store
        self._engine = engine
        self._router = router
        self._executor = executor
        self.reconstructions: LruCache[tuple[str, int], _CachedReconstruction] = LruCache(
            cache_bytes * 3 // 4, lambda r: len(r.image.png)
        )
        self.previews: LruCache[tuple[str, int], PngImage] = LruCache(cache_bytes // 4, lambda p: len(p.png))

    async def frame(self, camera_id: str, sequence: int) -> FrameRecord:
        rec = await self._store.get_frame(camera_id, sequence)
        if rec is None or rec.status == "rejected":
            raise FrameNotStored(f"frame {sequence} of camera {camera_id!r} is not stored in the cloud")
        return rec

    async def preview(self, camera_id: str, sequence: int) -> PngImage:
        key = (camera_id, sequence)
        hit = self.previews.get(key)
        if hit is not None:
            return hit
        rec = await self.frame(camera_id, sequence)
        loop = asyncio.get_running_loop()
        img = await loop.run_in_executor(
            self._executor,
            partial(preview_png, camera_id=camera_id, sequence=sequence),
            self._engine,
            rec.base,
        )
        self.previews.put(key, img)
        return img

    def is_enhanced(self, camera_id: str, sequence: int) -> bool:
        return (camera_id, sequence) in self.reconstructions

    async def enhance(self, camera_id: str, sequence: int, *, timeout_s: float | None = None) -> Enhanced:
        """Reconstruction of a stored frame; fetches the enhancement layer from the camera unless cached."""
        rec = await self.frame(camera_id, sequence)
        stored = await self._store.get_result(camera_id, sequence)
        result = common_pb2.Result.FromString(stored) if stored is not None else None
        key = (camera_id, sequence)
        hit = self.reconstructions.get(key)
        if hit is not None:
            return Enhanced(hit.image, rec.base_size, hit.enhancement_bytes, hit.fetch_seconds, True, result)
        t0 = time.perf_counter()
        enhancement = await self._router.fetch(camera_id, sequence, timeout_s=timeout_s)
        fetch_s = time.perf_counter() - t0
        loop = asyncio.get_running_loop()
        img = await loop.run_in_executor(
            self._executor,
            partial(reconstruct_png, camera_id=camera_id, sequence=sequence),
            self._engine,
            rec.base,
            enhancement,
        )
        self.reconstructions.put(key, _CachedReconstruction(img, len(enhancement), fetch_s))
        return Enhanced(img, rec.base_size, len(enhancement), fetch_s, False, result)
