"""`layercast bench service` measures real traffic: a short run of each payload through a real
server on loopback, the JPEG stand-in agrees with the clean-image task model, and the JPEG
quality at equal accuracy is read and interpolated correctly."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image

from layercast.bench.service import (
    JpegPath,
    Setting,
    format_table,
    jpeg_bytes,
    load_clean_task_model,
    quality_at_accuracy,
    quality_from_eval,
    run_setting,
)
from layercast.cloud.config import load_cloud_config
from layercast.cloud.security.credentials import hash_token
from layercast.cloud.server import CloudServer
from layercast.shared.codec import ScalableCodec
from layercast.shared.rpc import analytics_pb2, analytics_pb2_grpc
from tests.cloud.conftest import OPERATOR, OPERATOR_TOKEN, operator_channel
from tests.e2e.conftest import camera_images

TASK_MODEL = Path(__file__).resolve().parents[2] / "shared" / "zoo" / "tasks" / "detection.pt"
needs_task_model = pytest.mark.skipif(not TASK_MODEL.exists(), reason="no shipped clean-image task model")


def test_quality_at_equal_accuracy() -> None:
    curve = [(5, 0.05), (10, 0.10), (20, 0.14), (50, 0.16), (90, 0.18)]
    assert quality_at_accuracy(0.075, curve) == 8  # halfway between q5 and q10
    assert quality_at_accuracy(0.14, curve) == 20
    assert quality_at_accuracy(0.01, curve) == 5  # JPEG's lowest quality already does better
    assert quality_at_accuracy(0.5, curve) == 95  # never reached in the sweep
    # the lowest quality that reaches the target, even when the curve is not monotone
    assert quality_at_accuracy(0.13, [(5, 0.05), (10, 0.15), (20, 0.12), (30, 0.2)]) == 9


def test_quality_from_eval_output(tmp_path: Path) -> None:
    points = [
        {"method": "default", "accuracy": 0.12, "extra": {"base_model_id": "ab" * 8}},
        {"method": "jpeg", "accuracy": 0.10, "extra": {"quality": 10}},
        {"method": "jpeg", "accuracy": 0.14, "extra": {"quality": 20}},
        {"method": "uncompressed", "accuracy": 0.2, "extra": {}},
    ]
    (tmp_path / "rd_detection.json").write_text(json.dumps(points))
    got = quality_from_eval(tmp_path, "ab" * 8, "other-name")
    assert got is not None and got.quality == 15 and got.model_map == 0.12
    assert str(tmp_path) in got.how
    assert quality_from_eval(tmp_path, "cd" * 8, "nope") is None  # a model it did not evaluate
    assert quality_from_eval(tmp_path / "missing", "ab" * 8, "default") is None


@needs_task_model
async def test_jpeg_path_is_the_clean_task_model_on_decoded_jpeg(
    tmp_path: Path, codec: ScalableCodec
) -> None:
    clean = load_clean_task_model(TASK_MODEL)
    path = JpegPath(clean, codec.class_names, quality=30)
    image = camera_images(5, 1)[0]
    data = jpeg_bytes(image, 30)
    cfg = load_cloud_config(
        overrides={
            "port": 0,
            "insecure": True,
            "data_dir": str(tmp_path),
            "auth.allow_any_camera": True,
            "auth.operator_tokens": [f"{OPERATOR}={hash_token(OPERATOR_TOKEN)}"],
        },
        environ={},
    )
    server = CloudServer(cfg, codec=path)
    await server.start()
    try:
        async with operator_channel(server.target) as ch:
            infer = analytics_pb2_grpc.AnalyticsStub(ch).Infer
            got = (await infer(analytics_pb2.InferRequest(base=data), timeout=60)).result
            with pytest.raises(grpc.aio.AioRpcError) as info:
                png = io.BytesIO()
                Image.fromarray(image).save(png, format="PNG")
                await infer(analytics_pb2.InferRequest(base=png.getvalue()), timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(5)
    decoded = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    x = torch.from_numpy(decoded).permute(2, 0, 1)[None].float().div(255).contiguous()
    [want] = clean.predict(x)
    assert (got.width, got.height) == (image.shape[1], image.shape[0]) and got.base_bytes == len(data)
    np.testing.assert_allclose(
        np.array([[b.x1, b.y1, b.x2, b.y2] for b in got.boxes]).reshape(-1, 4), want.boxes, atol=1e-3
    )
    np.testing.assert_allclose([b.score for b in got.boxes], want.scores, atol=1e-5)


@needs_task_model
@pytest.mark.parametrize("payload", ["layercast", "jpeg"])
def test_a_short_run_measures_the_traffic_it_sent(tmp_path: Path, codec: ScalableCodec, payload: str) -> None:
    images = camera_images(6, 4)
    if payload == "jpeg":
        path = JpegPath(load_clean_task_model(TASK_MODEL), codec.class_names, quality=20)
        pool = [jpeg_bytes(im, 20) for im in images]
    else:
        path, pool = codec, [f.base for f in codec.encode_batch(images, layers="base")]
    row = asyncio.run(
        run_setting(
            Setting(payload, True, 2),
            path,
            pool,
            duration=1.5,
            warmup=0.5,
            window=2,
            max_batch=4,
            queue_delay_ms=2.0,
            workdir=tmp_path / "cloud",
        )
    )
    assert row.results > 0 and row.rejected == 0
    assert row.fps == pytest.approx(row.results / 1.5, rel=0.05)
    assert min(map(len, pool)) <= row.bytes_per_frame <= max(map(len, pool))
    assert 0 < row.p50_ms <= row.p99_ms
    assert 1 <= row.mean_batch <= 4 and row.compute_ms > 0 and row.queue_ms >= 0
    table = format_table([row])
    assert payload in table and f"{row.fps:.1f}" in table


def test_rows_of_each_workers_and_runtime_are_compared_with_their_own_jpeg_row() -> None:
    from layercast.bench.service import Row

    def row(payload: str, workers: int, runtime: str, fps: float) -> Row:
        return Row(Setting(payload, True, 4, workers, runtime), fps, 100.0, 10.0, 20.0, 2.0, 1.0, 5.0, 10, 0)

    rows = [
        row("layercast", 1, "torch", 2.0),
        row("jpeg", 1, "torch", 4.0),
        row("layercast", 2, "onnxruntime", 3.0),
        row("jpeg", 2, "onnxruntime", 2.0),
    ]
    lines = format_table(rows).splitlines()[2:]
    ours = {(ln.split()[1], ln.split()[2]): ln for ln in lines if "layercast" in ln}
    assert "0.50x" in ours[("1", "torch")] and "1.50x" in ours[("2", "onnxruntime")]


@needs_task_model
def test_jpeg_path_runs_its_detector_like_the_codec() -> None:
    from layercast.shared.codec.runtime import OnnxModule

    clean = load_clean_task_model(TASK_MODEL)
    assert isinstance(JpegPath(clean, [], quality=20)._run, OnnxModule)
    assert JpegPath(clean, [], quality=20, runtime="torch")._run is clean
