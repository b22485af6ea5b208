"""Frame sources and the capture pacer."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from PIL import Image

from layercast.edge.config import SourceConfig
from layercast.edge.frame_queue import DropOldestQueue
from layercast.edge.sources import FolderSource, Pacer, open_source, paced_frames
from layercast.shared.errors import ConfigError


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_pacer_keeps_an_absolute_schedule_without_drift():
    clock = FakeClock()
    pacer = Pacer(10.0, clock)
    rng = np.random.default_rng(0)
    ticks = []
    for _ in range(1000):
        clock.t += pacer.delay()  # sleep exactly as told ...
        ticks.append(clock.t)
        clock.t += rng.uniform(0, 0.09)  # ... then spend up to 90 ms reading the frame
    assert ticks[0] == 100.0
    assert ticks[-1] == pytest.approx(100.0 + 999 * 0.1, abs=1e-6)  # no accumulated error
    assert pacer.skipped == 0


def test_pacer_skips_missed_ticks_instead_of_bursting():
    clock = FakeClock()
    pacer = Pacer(10.0, clock)
    assert pacer.delay() == 0.0
    clock.t += 0.35  # a stall of 3.5 periods
    assert pacer.delay() == 0.0
    assert pacer.skipped == 2
    d = pacer.delay()
    assert d == pytest.approx(0.05)  # back on the grid (100.4), not two frames at once


async def test_paced_frames_real_rate_and_limit():
    frames = (np.zeros((4, 4, 3), np.uint8) for _ in range(1000))
    t0 = time.monotonic()
    got = [f async for f in paced_frames(frames, fps=50.0, limit=10)]
    elapsed = time.monotonic() - t0
    assert len(got) == 10
    assert 0.17 <= elapsed < 1.0  # 9 periods of 20 ms
    stamps = [f.capture_time_us for f in got]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] >= 170_000


def test_folder_source_order_rgb_skips_unreadable_and_loops(tmp_path):
    Image.fromarray(np.full((5, 6, 3), 10, np.uint8)).save(tmp_path / "b.png")
    Image.fromarray(np.full((5, 6), 200, np.uint8)).save(tmp_path / "a.jpg")  # grayscale JPEG
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    src = FolderSource(tmp_path)
    images = list(src)
    assert len(images) == 2 and src.unreadable == 1
    assert images[0].shape == (5, 6, 3) and images[0].dtype == np.uint8
    assert abs(int(images[0][0, 0, 0]) - 200) < 3 and int(images[1][0, 0, 1]) == 10
    looping = iter(FolderSource(tmp_path, loop=True))
    assert len([next(looping) for _ in range(5)]) == 5


def test_open_source_specs_and_errors(tmp_path):
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "x.png")
    assert isinstance(open_source(SourceConfig(spec=f"folder:{tmp_path}")), FolderSource)
    assert isinstance(open_source(SourceConfig(spec=str(tmp_path))), FolderSource)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .png"):
        open_source(SourceConfig(spec=f"folder:{tmp_path / 'empty'}"))
    with pytest.raises(ConfigError, match="not a directory"):
        open_source(SourceConfig(spec=f"folder:{tmp_path / 'missing'}"))
    with pytest.raises(ConfigError, match="expected synthetic"):
        open_source(SourceConfig(spec="ftp://camera"))
    with pytest.raises(ConfigError, match="integer"):
        open_source(SourceConfig(spec="device:front"))


def test_synthetic_source_yields_images():
    pytest.importorskip("layercast.shared.data.synth")
    src = open_source(SourceConfig(spec="synthetic:3", width=64, height=48))
    it = iter(src)
    a, b = next(it), next(it)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b) or a.std() > 0


async def test_drop_oldest_queue():
    q: DropOldestQueue[int] = DropOldestQueue(3)
    assert [q.put(i) for i in range(5)] == [None, None, None, 0, 1]
    assert q.dropped == 2
    assert await q.get() == 2
    assert q.get_many(10) == [3, 4]
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.01)
    q.put(9)
    assert await waiter == 9
    q.close()
    assert await q.get() is None
