"""The FFmpeg sources (PyAV) against real files and a real RTSP camera on loopback (GStreamer's RTSP
server): frames, stream timestamps, a camera that vanishes and returns, one that stalls, one that
never existed; the edge's reading never blocks for long on any of them."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from layercast.edge.av_source import AVSource, StreamClock
from layercast.edge.config import BackoffConfig, SourceConfig
from layercast.edge.sources import NO_FRAME, CapturedFrame, open_source, paced_frames
from layercast.shared.errors import ConfigError
from tests.rtsp_camera import RtspCamera, make_clip
from tests.system import require

FAST_RECONNECT = BackoffConfig(initial_s=0.1, max_s=0.5, jitter=0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "camera.mkv")


@pytest.fixture
def camera(clip: Path, tmp_path: Path):
    with RtspCamera(clip, free_port(), tmp_path) as cam:
        yield cam


def red_video(path: Path, frames: int = 6, fps: int = 5) -> Path:
    ffmpeg = require("ffmpeg", "ffmpeg", "the video file tests")
    subprocess.run(
        [ffmpeg, "-loglevel", "error", "-y", "-f", "lavfi", "-i", f"color=c=red:size=64x48:rate={fps}"]
        + ["-frames:v", str(frames), "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)],
        check=True,
        timeout=60,
    )
    return path


def live_frames(source: AVSource, n: int, timeout: float) -> list[CapturedFrame]:
    """The next ``n`` fresh frames of a live source (NO_FRAME ticks are passed over)."""
    got: list[CapturedFrame] = []
    deadline = time.monotonic() + timeout
    it = iter(source)
    while len(got) < n:
        assert time.monotonic() < deadline, f"{len(got)} of {n} frames in {timeout}s: {source.health}"
        item = next(it)
        if item is not NO_FRAME:
            got.append(item)
    return got


def test_video_file_frames_rgb_stream_timestamps_and_loop(tmp_path):
    video = red_video(tmp_path / "red.mp4", frames=6, fps=5)
    src = open_source(SourceConfig(spec=f"video:{video}", loop=True))
    it = iter(src)
    frames = [next(it) for _ in range(12)]  # two passes
    assert all(isinstance(f, CapturedFrame) for f in frames)
    assert frames[0].image.shape == (48, 64, 3) and frames[0].image.dtype == np.uint8
    r, g, b = frames[0].image.reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 40 and b < 40, (r, g, b)  # RGB order, not BGR
    steps = np.diff([f.capture_time_us for f in frames])
    # 5 fps: 200 ms apart from the stream's timestamps, across the loop too (not the read speed)
    assert np.all(np.abs(steps - 200_000) <= 1_000), steps
    without_loop = list(open_source(SourceConfig(spec=f"video:{video}")))
    assert len(without_loop) == 6


def test_video_source_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        open_source(SourceConfig(spec=f"video:{tmp_path / 'missing.mp4'}"))
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(ConfigError, match="FFmpeg cannot open"):
        open_source(SourceConfig(spec=f"video:{tmp_path / 'junk.mp4'}"))
    with pytest.raises(ConfigError, match="integer"):
        open_source(SourceConfig(spec="device:front"))
    with pytest.raises(ConfigError, match="rtsp://"):
        open_source(SourceConfig(spec="ftp://camera"))


def test_stream_clock_anchors_at_the_first_frame_and_resyncs_on_a_jump():
    now = [1000.0]
    clock = StreamClock(wall=lambda: now[0])
    assert clock.stamp(5.0) == 1000_000_000
    now[0] = 1000.15  # read late: the stream's time wins
    assert clock.stamp(5.1) == 1000_100_000
    now[0] = 1000.2
    assert clock.stamp(9000.0) == 1000_200_000  # a jump of hours: anchored again
    assert clock.stamp(None) == 1000_200_000
    recording = StreamClock(wall=lambda: now[0], live=False)
    assert recording.stamp(0.0) == 1000_200_000
    assert recording.stamp(3.0) == 1003_200_000  # a file read fast keeps its own timing
    assert clock.stamp(9000.5) == 1000_200_000  # a burst ahead of real time: never in the future
    now[0] = 1000.3
    assert clock.stamp(9000.6) == 1000_300_000


def test_missing_v4l2_device_is_reported_and_never_blocks():
    src = open_source(SourceConfig(spec="v4l2:/dev/video-absent", reconnect=FAST_RECONNECT, fps=5))
    it = iter(src)
    t0 = time.monotonic()
    try:
        items = [next(it) for _ in range(3)]
        assert all(i is NO_FRAME for i in items)
        assert time.monotonic() - t0 < 5.0  # three ticks of at most max_wait_s each
        assert not src.health.up and src.health.failures >= 1
        assert "cannot open" in src.health.last_error
    finally:
        src.close()


def test_rtsp_camera_frames_are_timestamped_from_the_stream(camera):
    src = open_source(SourceConfig(spec=camera.url, reconnect=FAST_RECONNECT))
    try:
        frames = live_frames(src, 60, timeout=40)
        assert frames[0].image.shape == (128, 160, 3)
        assert src.health.up and src.health.reconnects == 0
        steps = np.diff([f.capture_time_us for f in frames]) / 1e3
        assert np.all(steps > 0), steps
        # The server's start-up burst arrives faster than real time and is stamped on arrival; then
        # the clip plays at 10 fps: fresh frames are 100 ms apart by the stream (or a multiple of it,
        # the source keeping only the newest), however late each was read.
        steady = steps[-10:]
        assert abs(np.median(steady) - 100) <= 1, steps
        assert np.all(np.abs(steady - 100 * np.round(steady / 100)) <= 5), steps
        assert abs(frames[-1].capture_time_us / 1e6 - time.time()) < 5.0
    finally:
        src.close()


def test_rtsp_camera_that_vanishes_and_returns(camera, caplog):
    src = open_source(SourceConfig(spec=camera.url, read_timeout_s=2.0, reconnect=FAST_RECONNECT))
    try:
        before = live_frames(src, 5, timeout=30)
        camera.stop()
        it = iter(src)
        t0 = time.monotonic()
        while src.health.up:
            assert time.monotonic() - t0 < 10, "the camera's drop was not noticed"
            next(it)
        assert next(it) is NO_FRAME
        camera.start()
        t_back = time.monotonic()
        after = live_frames(src, 10, timeout=60)
        back_s = time.monotonic() - t_back
        assert src.health.up and src.health.reconnects >= 1 and src.health.failures >= 1
        assert after[0].capture_time_us > before[-1].capture_time_us
        assert any("is down" in r.getMessage() for r in caplog.records)
        print(f"RTSP camera restart: 10 frames within {back_s:.1f} s of the server's return")
    finally:
        src.close()


def test_stalled_rtsp_camera_times_out_and_recovers(camera):
    src = open_source(SourceConfig(spec=camera.url, read_timeout_s=1.5, reconnect=FAST_RECONNECT))
    try:
        live_frames(src, 3, timeout=30)
        camera.pause()  # the connection stays open, nothing arrives
        it = iter(src)
        t0 = time.monotonic()
        while src.health.up:
            assert time.monotonic() - t0 < 10, "a stalled camera was not noticed"
            next(it)
        camera.resume()
        live_frames(src, 5, timeout=60)
        assert src.health.up and src.health.failures >= 1
    finally:
        src.close()


async def test_paced_frames_keep_stream_times_and_pass_over_no_frame():
    stamped = [CapturedFrame(111, np.zeros((2, 2, 3), np.uint8)), NO_FRAME, NO_FRAME]
    stamped += [np.ones((2, 2, 3), np.uint8)]
    got = [f async for f in paced_frames(stamped, fps=1000, clock_us=lambda: 999)]
    assert [f.capture_time_us for f in got] == [111, 999]


def test_edge_metrics_expose_the_source_health(camera):
    from layercast.edge.app import EdgeApp
    from layercast.edge.config import EdgeConfig
    from layercast.shared.prometheus import exposed_names

    src = open_source(SourceConfig(spec=camera.url, reconnect=FAST_RECONNECT))
    try:
        app = EdgeApp(EdgeConfig(camera_id="cam-rtsp"), source=src)
        assert {"layercast_edge_source_up", "layercast_edge_source_reconnects_total"} <= exposed_names(
            app.registry
        )
        live_frames(src, 2, timeout=30)
        up = app.registry.get_sample_value("layercast_edge_source_up", {"camera": "cam-rtsp"})
        assert up == 1.0
        src.health.up = False
        assert app.registry.get_sample_value("layercast_edge_source_up", {"camera": "cam-rtsp"}) == 0.0
    finally:
        src.close()
