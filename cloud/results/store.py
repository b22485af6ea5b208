"""The store the servicers and the pipeline use: the asynchronous :class:`Store` protocol, so
that it never blocks the event loop and a shared backend could replace it, and
:class:`AsyncStore`, which runs the embedded :class:`~layercast.cloud.results.sqlite.SqliteStore`
on one dedicated thread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from layercast.cloud.results.records import (
    CameraRecord,
    FrameMeta,
    FrameRecord,
    InsertOutcome,
    ReplayQuery,
    ResultRecord,
    RetentionReport,
    StoredResult,
)
from layercast.cloud.results.sqlite import SqliteStore

if TYPE_CHECKING:
    from layercast.cloud.ingest.frame import Frame


class Store(Protocol):
    """What the servicers need from storage (asynchronous, so it never blocks the event loop)."""

    async def register_camera(
        self, camera_id: str, *, base_model_id: str, enhancement_model_id: str, task: str, now_us: int
    ) -> CameraRecord: ...
    async def touch_camera(self, camera_id: str, now_us: int) -> None: ...
    async def get_camera(self, camera_id: str) -> CameraRecord | None: ...
    async def list_cameras(self) -> list[CameraRecord]: ...
    async def put_frame(self, frame: Frame) -> InsertOutcome: ...
    async def get_frame(self, camera_id: str, sequence: int) -> FrameRecord | None: ...
    async def list_frames(
        self, camera_id: str, *, before_sequence: int = 0, limit: int = 100
    ) -> list[FrameMeta]: ...
    async def pending_frames(
        self, *, limit: int = 1000, after: tuple[str, int] | None = None
    ) -> list[FrameRecord]: ...
    async def mark_rejected(self, camera_id: str, sequence: int, code: int, message: str) -> None: ...
    async def put_results(self, results: Iterable[ResultRecord]) -> list[int]: ...
    async def get_result(self, camera_id: str, sequence: int) -> bytes | None: ...
    async def results_after(self, query: ReplayQuery) -> list[StoredResult]: ...
    async def apply_retention(
        self, *, now_us: int, max_age_s: float, max_frames_per_camera: int
    ) -> RetentionReport: ...
    async def close(self) -> None: ...


#: The methods of :class:`Store`, each run on the store's thread by :class:`AsyncStore`.
STORE_METHODS = frozenset(name for name in vars(Store) if not name.startswith("_") and name != "close")


class AsyncStore:
    """:class:`Store` over a :class:`SqliteStore`: every method of the protocol runs the backend's
    method of the same name on one dedicated thread, so calls stay in order."""

    def __init__(self, backend: SqliteStore) -> None:
        self.backend = backend
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layercast-store")

    def __getattr__(self, name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if name not in STORE_METHODS:
            raise AttributeError(name)
        method = getattr(self.backend, name)

        async def on_store_thread(*args: Any, **kwargs: Any) -> Any:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, partial(method, *args, **kwargs))

        return on_store_thread

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.backend.close)
        self._executor.shutdown(wait=True)


def open_store(path: str | Path) -> AsyncStore:
    """The default embedded store at ``path``."""
    return AsyncStore(SqliteStore(path))
