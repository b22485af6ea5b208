"""`layercast bench video`: intra and P-frames of a fixed camera timed side by side, from real bytes."""

from __future__ import annotations

from layercast.bench.video import bench_sizes
from layercast.cli import main
from layercast.shared.codec import load_codec


def test_bench_video_times_intra_and_predicted_frames_of_real_streams():
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    (row,) = bench_sizes(codec, [(96, 128)], frames=2, repeat=1)
    assert row["size"] == "128x96"
    assert all(row[k] > 0 for k in ("encode_I", "encode_P", "decode_I", "decode_P"))
    assert row["bytes_P"] < row["bytes_I"]  # a fixed camera: P-frames cost less
    assert 0 <= row["coded_share"] <= 1


def test_bench_video_prints_one_row_per_size(capsys):
    assert main(["bench", "video", "--size", "128x96", "--frames", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "P/I enc" in out and "128x96" in out
