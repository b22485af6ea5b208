"""An IP camera end to end: an RTSP camera on loopback (GStreamer's RTSP server serving an H.264
clip) read by a real ``layercast edge`` through FFmpeg and streamed to a real ``layercast cloud``.
The camera's server is killed in the middle and started again: the edge notices, reconnects with
back-off, and every frame it captured, before and after the restart, is answered by the cloud."""

from __future__ import annotations

import time

import grpc

from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc, common_pb2
from tests.cloud.conftest import OPERATOR_METADATA
from tests.e2e.services import CloudProcess, EdgeProcess, Model, free_port, wait_until
from tests.rtsp_camera import RtspCamera, make_clip

CAM = "door-rtsp"
TOKENS = {CAM: "rtsp-token-" + "r" * 24}


def results(target: str, wait_s: float) -> list[common_pb2.Result]:
    """Every stored result, then whatever arrives within ``wait_s``."""
    got: list[common_pb2.Result] = []
    with grpc.insecure_channel(target) as ch:
        call = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
            analytics_pb2.SubscribeRequest(), timeout=wait_s, metadata=OPERATOR_METADATA
        )
        try:
            for event in call:
                if event.WhichOneof("kind") == "result":
                    got.append(event.result)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
    return got


def answered_after(target: str, wall_s: float) -> list[common_pb2.Result]:
    return [r for r in results(target, 1.0) if r.capture_time_us > wall_s * 1e6]


def at_least(n: int, items: list) -> list | None:
    return items if len(items) >= n else None


def test_rtsp_camera_restart_every_frame_after_it_is_answered(tmp_path, model: Model) -> None:
    camera = RtspCamera(make_clip(tmp_path / "clip.mkv"), free_port(), tmp_path)
    cloud = CloudProcess(tmp_path / "cloud", model, TOKENS)
    cloud.port = free_port()
    edge = EdgeProcess(
        tmp_path / "edge",
        model,
        CAM,
        TOKENS[CAM],
        cloud.target,
        camera.url,
        {"source": {"spec": camera.url, "fps": 4.0, "read_timeout_s": 2.0, "queue_frames": 64}},
    )
    # Reopen the camera quickly in a test: it is back within seconds.
    edge.extra_env.update({"LAYERCAST_EDGE_SOURCE__RECONNECT__INITIAL_S": "0.2",
                           "LAYERCAST_EDGE_SOURCE__RECONNECT__MAX_S": "1.0"})  # fmt: skip
    try:
        camera.start()
        cloud.launch()
        edge.start()
        cloud.wait_serving()
        wait_until(
            lambda: len(results(cloud.target, 1.0)) >= 5, 240, "the first answered frames", interval=0.5
        )

        camera.stop()
        wait_until(lambda: "is down" in edge.stderr(), 30, "the edge to notice the camera's drop")
        noticed = time.time()
        camera.start()
        back = time.time()
        after = wait_until(
            lambda: at_least(10, answered_after(cloud.target, back)),
            120,
            "10 answered frames captured after the camera's return",
            interval=0.5,
        )
        run = edge.stop(timeout=120)
        assert run.returncode == 0, edge.describe()
        answered = results(cloud.target, 2.0)
    except BaseException:
        print(cloud.describe())
        print(edge.describe())
        raise
    finally:
        edge.cleanup()
        cloud.cleanup()
        camera.stop()

    seqs = sorted(r.sequence for r in answered if r.camera_id == CAM)
    queued = run.stats["frames_queued"]
    # every frame the edge captured and queued, before and after the restart, has its result, once
    assert seqs == list(range(1, queued + 1)), (queued, seqs)
    during = [r.sequence for r in answered if noticed * 1e6 < r.capture_time_us < back * 1e6]
    assert not during, f"frames stamped while the camera was away: {during}"
    first_back = min(after, key=lambda r: r.capture_time_us)
    assert "is up" in edge.stderr()
    print(
        f"RTSP camera restart through layercast edge: {queued} frames answered; first frame after the "
        f"camera's return answered {(first_back.processed_time_us / 1e6 - back):.1f} s after it"
    )
