"""Clips on disk, the FFmpeg baselines and `layercast eval --clips`, on a tiny clip set."""

from __future__ import annotations

import json

import pytest
from pycocotools.coco import COCO

from layercast.shared.codec import load_codec
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.clips import ClipSet, write_clips
from layercast.train.video_baselines import encode_clip
from layercast.train.video_eval import run_clip_eval
from tests.system import require


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return ClipSet(write_clips(tmp_path_factory.mktemp("clips"), cameras=2, frames=5, width=128, height=96))


def test_clips_are_written_in_the_coco_and_cityscapes_conventions(clips):
    assert len(clips) == 2 and clips.fps == 10.0 and (clips.width, clips.height) == (128, 96)
    clip = clips[0]
    coco = COCO(str(clip.root / "annotations.json"))  # the real loader reads it
    assert sorted(coco.getImgIds()) == [1, 2, 3, 4, 5]
    assert [coco.imgs[i]["frame_index"] for i in range(1, 6)] == [0, 1, 2, 3, 4]
    images, targets = clip.images(), clip.detection_targets()
    assert len(images) == len(targets) == 5 and images[0].shape == (96, 128, 3)
    assert sum(len(t["boxes"]) for t in targets) == len(coco.getAnnIds())
    depth = clip.depth_targets()[0]["depth"]
    assert depth.shape == (96, 128) and float(depth.max()) > 0


def test_x264_low_delay_stream_round_trips_every_frame(clips):
    require("ffmpeg", "ffmpeg", "the video baselines (x264, x265, SVT-AV1) run through FFmpeg")
    frames = clips[0].images()
    coded = encode_clip(frames, "x264", 30, gop=2, fps=10.0)
    assert len(coded.decoded) == 5 and coded.decoded[0].shape == frames[0].shape
    assert coded.stream[:4] == b"\x00\x00\x00\x01"  # Annex B: the bytes counted are the stream itself
    assert abs(coded.decoded[0].astype(int) - frames[0].astype(int)).mean() < 12


def test_clip_eval_reports_real_bytes_for_intra_and_temporal_points(clips, tmp_path):
    require("ffmpeg", "ffmpeg", "the video baselines (x264, x265, SVT-AV1) run through FFmpeg")
    summary = run_clip_eval(
        ["det-tiny"],
        clips.root,
        tmp_path,
        {},
        intra_seconds=0.3,
        baselines=False,
        deadzones=(0.75,),
        skip_thresholds=(0.4,),
    )
    assert summary["gop"] == 3
    points = {p["method"]: p for p in summary["tasks"]["detection"]["points"]}
    assert set(points) == {"det-tiny intra", "det-tiny temporal skip=0.4 dz=0.75"}
    temporal = points["det-tiny temporal skip=0.4 dz=0.75"]
    assert temporal["extra"]["frames_by_kind"] == {"I": 4, "P": 6}  # 2 cameras × (I P P I P)
    # the rate is the bytes of the bitstreams themselves
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    codec.temporal.deadzone, codec.temporal.skip_threshold = 0.75, 0.4
    total = 0
    for clip in clips:
        enc = VideoEncoder(codec, intra_period=3)
        total += sum(len(enc.encode(im, layers="base").base) for im in clip.images())
    assert temporal["extra"]["bytes_per_frame"] == pytest.approx(total / 10)
    assert temporal["extra"]["bytes_per_frame"] < points["det-tiny intra"]["extra"]["bytes_per_frame"]
    assert json.loads((tmp_path / "clips_detection_128x96.json").read_text())
    assert (tmp_path / "clips_detection_128x96.png").stat().st_size > 10_000
