"""A camera streaming a low-delay video through real processes: the shipped det-tiny with its
temporal model, an intra frame every 10 frames and P-frames between them. Every frame gets one
result, in order, across a kill -9 and restart of the cloud (queued P-frames decode through the
chain rebuilt from the store, new ones start again from an intra frame the cloud asked for)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest

from layercast.shared.codec import ScalableCodec, bitstream
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.synth import SyntheticCamera
from tests.e2e.conftest import camera_images, write_folder
from tests.e2e.probes import results, sample
from tests.e2e.services import CloudProcess, EdgeProcess, Model, free_port, wait_until

CAM = "video-1"
FIXED = "video-fixed"
TOKENS = {CAM: "video-" + "v" * 24, FIXED: "fixed-" + "f" * 24}
FRAMES = 40
FPS = 8.0
INTRA_PERIOD = 10


@pytest.fixture(scope="module")
def cloud(
    tmp_path_factory: pytest.TempPathFactory, model: Model, codec: ScalableCodec
) -> Iterator[CloudProcess]:
    if getattr(codec, "temporal", None) is None:
        pytest.skip("the model has no temporal model: every frame is intra")
    proc = CloudProcess(tmp_path_factory.mktemp("video-cloud"), model, TOKENS, {"metrics_port": free_port()})
    try:
        proc.launch()
        yield proc
    finally:
        proc.cleanup()


def _decoded(cloud: CloudProcess, kind: str) -> float:
    value = sample(cloud.config["metrics_port"], "layercast_cloud_frames_decoded_total", {"kind": kind})
    return value or 0.0


def test_a_video_camera_gets_every_result_once_in_order_across_a_cloud_crash(
    tmp_path_factory: pytest.TempPathFactory, model: Model, cloud: CloudProcess
) -> None:
    work = tmp_path_factory.mktemp("video")
    folder = write_folder(work / "frames", camera_images(31, FRAMES))
    edge = EdgeProcess(
        work / CAM,
        model,
        CAM,
        TOKENS[CAM],
        cloud.target,
        f"folder:{folder}",
        {"source": {"limit": FRAMES, "fps": FPS}, "encoder": {"intra_seconds": INTRA_PERIOD / FPS}},
    )
    try:
        edge.start(backoff_max_s=1.0)
        cloud.wait_serving()
        # P-frames decoded before the crash (the first intra period is through)
        wait_until(lambda: _decoded(cloud, "predicted") >= INTRA_PERIOD, 240, "predicted frames decoded")
        before = _decoded(cloud, "predicted"), _decoded(cloud, "intra")
        cloud.kill9()
        cloud.start()  # same port and data directory
        run = edge.finish(timeout=300)
        got = results(cloud.target, CAM, FRAMES, timeout=120)
        after = _decoded(cloud, "predicted"), _decoded(cloud, "intra")
        asked = sample(
            cloud.config["metrics_port"], "layercast_cloud_intra_requests_total", {"reason": "no_reference"}
        )
    except BaseException:
        print(cloud.describe())
        print(edge.describe())
        raise
    finally:
        edge.cleanup()

    s = run.stats
    assert run.returncode == 0, s
    # every frame once, in order
    assert [r.sequence for r in got] == list(range(1, FRAMES + 1))
    assert s["frames_encoded"] == FRAMES and s["frames_rejected"] == 0 and s["frames_dropped_outbox"] == 0, s
    # a video: P-frames at the edge and decoded by the cloud, before and after the restart
    assert s["frames_predicted"] > 0 and s["frames_intra"] >= FRAMES // INTRA_PERIOD, s
    assert before[0] >= INTRA_PERIOD
    # the restarted cloud decoded P-frames too: those the edge queued while it was down (their
    # reference rebuilt from the frames it had stored, or live from the recovered ones) and later
    # ones (after an IntraRequest when it held no reference when the camera came back)
    assert after[0] > 0
    print(
        f"\nFIGURE video kill -9: {FRAMES} frames, intra every {INTRA_PERIOD}; edge intra {s['frames_intra']} "
        f"predicted {s['frames_predicted']}; cloud decoded before the crash {before}, after {after} "
        f"(predicted, intra); intra requests no_reference {asked}, edge received {s['intra_requests']}"
    )
    # the bytes the cloud got per frame are the bitstreams the edge encoded
    db = sqlite3.connect(cloud.db_path)
    stored = dict(
        db.execute("SELECT sequence, length(base) FROM frames WHERE camera_id=?", (CAM,)).fetchall()
    )
    db.close()
    assert {r.sequence: r.base_bytes for r in got} == stored
    assert sum(r.base_bytes for r in got) == s["base_bytes_encoded"]


def test_the_cloud_receives_the_bytes_the_eval_counts_for_a_fixed_camera(
    tmp_path_factory: pytest.TempPathFactory, model: Model, cloud: CloudProcess, codec: ScalableCodec
) -> None:
    """A fixed camera's clip through edge → cloud: every stored base bitstream is, byte for byte,
    the one `layercast eval --clips` codes for that frame (same intra period, the encoder's defaults)."""
    frames = 24
    cam = SyntheticCamera(2, 128, 96, FPS)
    images = [cam.frame(i).image for i in range(frames)]
    work = tmp_path_factory.mktemp("video-fixed")
    edge = EdgeProcess(
        work / FIXED,
        model,
        FIXED,
        TOKENS[FIXED],
        cloud.target,
        f"folder:{write_folder(work / 'frames', images)}",
        {"source": {"limit": frames, "fps": FPS}, "encoder": {"intra_seconds": INTRA_PERIOD / FPS}},
    )
    try:
        edge.start(backoff_max_s=1.0)
        run = edge.finish(timeout=300)
        got = results(cloud.target, FIXED, frames, timeout=120)
    except BaseException:
        print(cloud.describe())
        print(edge.describe())
        raise
    finally:
        edge.cleanup()
    assert run.returncode == 0 and [r.sequence for r in got] == list(range(1, frames + 1)), run.stats
    db = sqlite3.connect(cloud.db_path)
    rows = db.execute("SELECT sequence, base, width, height FROM frames WHERE camera_id=?", (FIXED,))
    stored = {seq: (bytes(base), w, h) for seq, base, w, h in rows.fetchall()}
    db.close()
    enc = VideoEncoder(codec, intra_period=INTRA_PERIOD)
    expected = [enc.encode(image, layers="base").base for image in images]
    assert [stored[i + 1][0] for i in range(frames)] == expected
    # a P-frame's header names its reference, not its size: the cloud stores and reports the size
    # of the chain it belongs to, and the bytes it received
    assert {(w, h) for _, w, h in stored.values()} == {(128, 96)}
    assert all((r.width, r.height, r.base_bytes) == (128, 96, len(expected[r.sequence - 1])) for r in got)
    header_bytes = {len(b) - len(bitstream.payload(b)) for b in expected}
    assert header_bytes == {bitstream.BASE_HEADER_SIZE, bitstream.PREDICTED_HEADER_SIZE} == {28, 14}
    per_frame = sum(map(len, expected)) / frames
    print(
        f"\nFIGURE video service bytes: {frames} frames of a fixed camera, {per_frame:.1f} B/frame received = eval's"
    )
