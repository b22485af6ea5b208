"""End to end with real processes on loopback: one ``layercast cloud``, two ``layercast edge``
processes streaming 40 frames each from folders of PNG files, a live Analytics.Subscribe
client, ``layercast subscribe`` and ``layercast enhance`` on the command line.

The run happens once per module (fixture ``run``); each test checks one promise of the
product against what the run produced and against offline decoding of the same bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from layercast.cloud.results.sqlite import SqliteStore
from layercast.edge.enhancement_store import EnhancementStore, LookupStatus
from layercast.edge.sealing import AesGcmSealer, read_key_file
from layercast.shared.codec import ScalableCodec
from layercast.shared.codec.video import VideoEncoder, intra_period_for
from layercast.shared.rpc import (
    analytics_pb2,
    analytics_pb2_grpc,
    common_pb2,
    operator_pb2,
    operator_pb2_grpc,
)
from tests.cloud.conftest import OPERATOR_METADATA, OPERATOR_TOKEN
from tests.e2e.conftest import (
    boxes_of,
    camera_images,
    png_array,
    unmatched_detections,
    write_folder,
)
from tests.e2e.services import ROOT, CloudProcess, EdgeProcess, EdgeRun, Model

FRAMES = 40
#: 4 fps: a run of at least 10 s, so both cameras are still online when the enhancement requests
#: reach them, with five intra frames and their P-frames per camera.
FPS = 4.0
#: The edges' base layers: an intra frame every 2 s of video (encoder.intra_seconds's default).
INTRA_PERIOD = intra_period_for(FPS, 2.0)
CAMERAS = ("cam-1", "cam-2")
TOKENS = {cam: f"e2e-token-{cam}-" + "k" * 24 for cam in CAMERAS}


class Collector(threading.Thread):
    """A live Analytics.Subscribe client (from the oldest result) collecting ``expected`` results."""

    def __init__(self, target: str, expected: int) -> None:
        super().__init__(daemon=True, name="subscriber")
        self.target = target
        self.expected = expected
        self.results: list[common_pb2.Result] = []
        self.events: list[str] = []
        self.error: BaseException | None = None
        self.changed = threading.Condition()
        self._call = None

    def run(self) -> None:
        try:
            with grpc.insecure_channel(self.target) as ch:
                self._call = analytics_pb2_grpc.AnalyticsStub(ch).Subscribe(
                    analytics_pb2.SubscribeRequest(), metadata=OPERATOR_METADATA
                )
                for event in self._call:
                    kind = event.WhichOneof("kind")
                    self.events.append(kind)
                    if kind != "result":
                        break
                    with self.changed:
                        self.results.append(event.result)
                        self.changed.notify_all()
                    if len(self.results) >= self.expected:
                        self._call.cancel()
                        break
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = exc
        except BaseException as exc:
            self.error = exc
        finally:
            with self.changed:
                self.changed.notify_all()

    def first_of(self, camera: str, timeout: float) -> common_pb2.Result:
        """The first result of ``camera`` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for r in self.results:
                    if r.camera_id == camera:
                        return r
                left = deadline - time.monotonic()
                if left <= 0 or not self.is_alive():
                    raise AssertionError(f"no result of {camera} after {timeout}s (error: {self.error})")
                self.changed.wait(left)


@dataclass
class Run:
    """Everything the run produced, for the tests to check."""

    images: dict[str, list[np.ndarray]]
    live: list[common_pb2.Result]
    live_events: list[str]
    cli_results: list[dict]
    edges: dict[str, EdgeRun]
    bases: dict[tuple[str, int], bytes]
    enhanced_live: dict[str, tuple[int, bytes]]  # camera -> (sequence, PNG) fetched while the camera ran
    enhance_errors: list[str]
    enhance_cli: dict
    enhanced_again: operator_pb2.EnhanceResponse | None
    offline_code: grpc.StatusCode
    offline_details: str
    cameras: list[operator_pb2.Camera]
    cloud_exit: int
    edge_dirs: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def _enhance(target: str, camera: str, seq: int, timeout: float = 60.0) -> operator_pb2.EnhanceResponse:
    with grpc.insecure_channel(target) as ch:
        return operator_pb2_grpc.OperatorStub(ch).Enhance(
            operator_pb2.EnhanceRequest(frame=operator_pb2.FrameRef(camera_id=camera, sequence=seq)),
            metadata=OPERATOR_METADATA,
            timeout=timeout,
        )


def _cli(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layercast", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "LAYERCAST_TOKEN": OPERATOR_TOKEN},  # the cloud's operator (an enhancer)
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, model: Model) -> Run:
    t0 = time.monotonic()
    work = tmp_path_factory.mktemp("e2e")
    images = {cam: camera_images(i, FRAMES) for i, cam in enumerate(CAMERAS)}
    folders = {cam: write_folder(work / "frames" / cam, images[cam]) for cam in CAMERAS}

    cloud = CloudProcess(work / "cloud", model, TOKENS)
    edges: dict[str, EdgeProcess] = {}
    try:
        cloud.launch()
        # The edges start with the cloud (their start-up overlaps); they retry until it serves.
        for cam in CAMERAS:
            edges[cam] = EdgeProcess(
                work / cam,
                model,
                cam,
                TOKENS[cam],
                cloud.target,
                f"folder:{folders[cam]}",
                {"source": {"limit": FRAMES, "fps": FPS}},
            )
            edges[cam].start()
        cloud.wait_serving()
        collector = Collector(cloud.target, len(CAMERAS) * FRAMES)
        collector.start()

        # While the cameras stream: one enhancement through the gRPC API, one through the CLI.
        first = {cam: collector.first_of(cam, timeout=180) for cam in CAMERAS}
        out_png = work / "enhanced-cam-2.png"
        enhance_cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "layercast",
                "enhance",
                "--cloud",
                cloud.target,
                "--insecure",
                "--camera",
                "cam-2",
                "--seq",
                str(first["cam-2"].sequence),
                "-o",
                str(out_png),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "LAYERCAST_TOKEN": OPERATOR_TOKEN},
        )
        enhance_errors: list[str] = []
        enhanced_live: dict[str, tuple[int, bytes]] = {}
        try:
            live_resp = _enhance(cloud.target, "cam-1", first["cam-1"].sequence)
            enhanced_live["cam-1"] = (first["cam-1"].sequence, live_resp.reconstruction.png)
        except grpc.RpcError as exc:
            enhance_errors.append(f"Operator.Enhance cam-1: {exc.code().name}: {exc.details()}")
        cli_out, cli_err = enhance_cli.communicate(timeout=120)
        if enhance_cli.returncode == 0:
            enhanced_live["cam-2"] = (first["cam-2"].sequence, out_png.read_bytes())
        else:
            enhance_errors.append(f"layercast enhance cam-2: {cli_err.strip()}")

        # A finite source: each edge exits once the cloud has acknowledged every frame.
        edge_runs = {cam: e.finish(timeout=300) for cam, e in edges.items()}
        collector.join(120)
        assert not collector.is_alive(), (
            f"subscriber got {len(collector.results)} results\n{cloud.describe()}"
        )

        # With the cameras gone: a cached reconstruction is still served, anything else is UNAVAILABLE.
        again = _enhance(cloud.target, "cam-1", first["cam-1"].sequence) if "cam-1" in enhanced_live else None
        with pytest.raises(grpc.RpcError) as info:
            _enhance(cloud.target, "cam-1", FRAMES // 2)
        with grpc.insecure_channel(cloud.target) as ch:
            cams = operator_pb2_grpc.OperatorStub(ch).ListCameras(
                operator_pb2.ListCamerasRequest(), metadata=OPERATOR_METADATA, timeout=30
            )
        sub = _cli(
            ["subscribe", "--cloud", cloud.target, "--insecure", "--limit", str(len(CAMERAS) * FRAMES)], 120
        )
        assert sub.returncode == 0, sub.stderr
        cloud_exit = cloud.terminate()
    except BaseException:
        print(cloud.describe())
        for e in edges.values():
            print(e.describe())
        raise
    finally:
        for p in (*edges.values(), cloud):
            p.cleanup()

    db = SqliteStore(cloud.db_path)
    try:
        bases = {}
        for cam in CAMERAS:
            for seq in range(1, FRAMES + 1):
                frame = db.get_frame(cam, seq)
                if frame is not None:
                    bases[cam, seq] = frame.base
    finally:
        db.close()
    return Run(
        images=images,
        live=list(collector.results),
        live_events=collector.events,
        cli_results=[json.loads(line) for line in sub.stdout.splitlines() if line.strip()],
        edges=edge_runs,
        bases=bases,
        enhanced_live=enhanced_live,
        enhance_errors=enhance_errors,
        enhance_cli=json.loads(cli_out) if enhance_cli.returncode == 0 else {},
        enhanced_again=again,
        offline_code=info.value.code(),
        offline_details=info.value.details(),
        cameras=list(cams.cameras),
        cloud_exit=cloud_exit,
        edge_dirs={cam: edges[cam].data_dir for cam in CAMERAS},
        seconds=time.monotonic() - t0,
    )


def test_every_frame_is_captured_sent_and_acknowledged_once(run: Run) -> None:
    for cam, r in run.edges.items():
        s = r.stats
        assert r.returncode == 0, cam
        assert s["frames_captured"] == FRAMES and s["frames_encoded"] == FRAMES, s
        assert s["frames_acked"] == FRAMES and s["frames_acked_duplicate"] == 0, s
        assert s["frames_dropped_capture"] == 0 and s["frames_dropped_outbox"] == 0, s
        assert s["frames_rejected"] == 0 and s["frames_too_large"] == 0, s
    assert run.cloud_exit == 0  # SIGTERM: a graceful drain


def test_subscriber_gets_all_results_in_order_without_duplicates(run: Run, codec: ScalableCodec) -> None:
    assert run.live_events == ["result"] * len(run.live)  # never told it lagged
    assert len(run.live) == len(CAMERAS) * FRAMES
    for cam in CAMERAS:
        mine = [r for r in run.live if r.camera_id == cam]
        assert [r.sequence for r in mine] == list(range(1, FRAMES + 1))
        captures = [r.capture_time_us for r in mine]
        assert captures == sorted(captures) and len(set(captures)) == FRAMES
        for r in mine:
            assert r.model_id == codec.base_model_id and r.task == codec.task
            assert (r.width, r.height) == run.images[cam][0].shape[1::-1]
            assert r.base_bytes == len(run.bases[cam, r.sequence])
            assert r.processed_time_us >= r.capture_time_us


def test_cli_subscribe_replays_the_same_results(run: Run) -> None:
    got = [(r["camera_id"], r["sequence"], [b["score"] for b in r["boxes"]]) for r in run.cli_results]
    want = [(r.camera_id, r.sequence, [round(b.score, 6) for b in r.boxes]) for r in run.live]
    assert sorted(got) == sorted(want)
    for cam in CAMERAS:
        assert [s for c, s, _ in got if c == cam] == list(range(1, FRAMES + 1))


@pytest.fixture(scope="module")
def offline(run: Run, codec: ScalableCodec) -> dict[str, list]:
    """Each camera's frames encoded offline as its edge codes them: a video (an intra frame every
    ``INTRA_PERIOD``, P-frames between) when the codec has a temporal model, else intra frames."""
    out = {}
    for cam in CAMERAS:
        if getattr(codec, "temporal", None) is None:
            out[cam] = codec.encode_batch(run.images[cam])
        else:
            video = VideoEncoder(codec, INTRA_PERIOD)
            out[cam] = [video.encode(image) for image in run.images[cam]]
    return out


def decode_in_order(codec: ScalableCodec, bases: list[bytes]) -> list:
    """A camera's stored base layers decoded as the cloud does: in order, each P-frame against the
    frame before."""
    decs: list = []
    for data in bases:
        decs.append(codec.decode_base(data, reference=decs[-1] if decs else None))
    return decs


def test_the_cloud_holds_exactly_the_bitstreams_of_the_images(run: Run, offline: dict[str, list]) -> None:
    """Encoding is deterministic: re-encoding the frames offline (as a video, in order) gives the
    bytes the cloud stored (which also shows that sequence n is the n-th image of the folder)."""
    assert len(run.bases) == len(CAMERAS) * FRAMES
    for cam in CAMERAS:
        for seq, enc in enumerate(offline[cam], start=1):
            assert run.bases[cam, seq] == enc.base, (cam, seq)


def test_detections_equal_offline_inference(run: Run, codec: ScalableCodec) -> None:
    bg = bool(codec.class_names) and codec.class_names[0] in ("__background__", "background", "__bg__")
    by_key = {(r.camera_id, r.sequence): r for r in run.live}
    keys = sorted(by_key)
    decoded = {}
    for cam in CAMERAS:
        decs = decode_in_order(codec, [run.bases[cam, seq] for seq in range(1, FRAMES + 1)])
        decoded.update({(cam, seq): d for seq, d in enumerate(decs, start=1)})
    total = 0
    for i in range(0, len(keys), 8):
        chunk = keys[i : i + 8]
        offline = codec.infer([decoded[k] for k in chunk])
        for key, tr in zip(chunk, offline, strict=True):
            got = by_key[key]
            want = (tr.boxes, np.asarray(tr.labels) - (0 if bg else 1), tr.scores)
            odd = list(unmatched_detections(boxes_of(got), want))
            # only detections sitting at the score threshold / top-k cut may differ (float noise)
            cut = min([*want[2].tolist(), *boxes_of(got)[2].tolist()], default=0.0)
            assert all(s <= cut + 1e-4 for s in odd), (key, odd, len(got.boxes), len(want[0]))
            names = [b.class_name for b in got.boxes]
            assert names == [codec.class_names[b.class_id] for b in got.boxes]
            total += len(got.boxes)
    assert total > 0  # the comparison compared something


def test_enhancement_equals_offline_decode_of_the_same_bitstreams(
    run: Run, codec: ScalableCodec, offline: dict[str, list]
) -> None:
    assert codec.enhancement_model_id
    assert not run.enhance_errors and set(run.enhanced_live) == set(CAMERAS)
    for cam, (seq, png) in run.enhanced_live.items():
        enc = offline[cam][seq - 1]
        assert enc.base == run.bases[cam, seq]
        # the enhancement layer the camera kept (sealed with the key it made) is the one an offline
        # encode produces ...
        sealer = AesGcmSealer(read_key_file(run.edge_dirs[cam] / "edge.key"))
        store = EnhancementStore(
            run.edge_dirs[cam] / "enhancement" / cam, cam, max_bytes=1 << 30, max_age_s=1e6, sealer=sealer
        )
        kept = store.get(seq)
        assert kept.status is LookupStatus.FOUND and kept.data == enc.enhancement
        # ... and the service's reconstruction is exactly the offline one
        dec = decode_in_order(codec, [run.bases[cam, s] for s in range(1, seq + 1)])[-1]
        assert np.array_equal(png_array(png), codec.reconstruct(dec, enc.enhancement)), cam
    meta = run.enhance_cli
    seq = run.enhanced_live["cam-2"][0]
    assert (meta["camera_id"], meta["sequence"], meta["cached"]) == ("cam-2", seq, False)
    assert meta["base_bytes"] == len(run.bases["cam-2", seq]) and meta["enhancement_bytes"] > 0
    assert meta["total_bpp"] == pytest.approx(
        8 * (meta["base_bytes"] + meta["enhancement_bytes"]) / (meta["width"] * meta["height"]), rel=1e-4
    )


def test_after_the_cameras_left(run: Run) -> None:
    # a reconstruction already fetched is served from the cloud's cache ...
    seq, png = run.enhanced_live["cam-1"]
    assert (
        run.enhanced_again is not None
        and run.enhanced_again.cached
        and run.enhanced_again.reconstruction.png == png
    )
    assert run.enhanced_again.result.sequence == seq
    # ... any other frame needs its camera, which is offline
    assert run.offline_code == grpc.StatusCode.UNAVAILABLE and "offline" in run.offline_details
    cams = {c.camera_id: c for c in run.cameras}
    assert set(cams) == set(CAMERAS)
    for c in cams.values():
        assert not c.online and c.last_sequence == FRAMES and c.frames_stored == FRAMES
