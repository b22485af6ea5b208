"""`layercast bench pframe-bytes`: a P-frame's bytes split by part add up to the bytes sent."""

from __future__ import annotations

from layercast.bench.pframe_bytes import split_clips, split_pframe
from layercast.cli import main
from layercast.shared.codec import load_codec
from layercast.shared.data.clips import ClipSet, write_clips
from layercast.shared.data.synth import SyntheticCamera


def test_the_parts_of_a_p_frame_add_up_to_its_bytes():
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    cam = SyntheticCamera(2, 128, 96, 10.0)
    intra = codec.encode(cam.frame(0).image, layers="base")
    p = codec.encode(cam.frame(1).image, layers="base", reference=intra.decoded)
    split = split_pframe(codec, cam.frame(1).image, intra.decoded, p.base)
    assert split["total"] == len(p.base) and split["header"] == 14
    assert split["header"] + split["z"] + split["mask"] + split["y"] + split["flush"] == len(p.base)
    assert split["z"] > 0 and split["mask"] > 0
    assert 0 <= split["flush"] <= 12  # the coder's state, rounded up to 32-bit words


def test_bench_pframe_bytes_on_a_clip_set(tmp_path, capsys):
    write_clips(tmp_path / "clips", cameras=1, frames=4, width=128, height=96, seed0=3)
    codec = load_codec("det-tiny", enhancement=None, device="cpu")
    rows = split_clips(codec, ClipSet(tmp_path / "clips"), gop=20)
    assert rows["all"]["frames"] == 3 and set(rows) == {"all", *(c.name for c in ClipSet(tmp_path / "clips"))}
    assert main(["bench", "pframe-bytes", "--clips", str(tmp_path / "clips")]) == 0
    out = capsys.readouterr().out
    assert "flush" in out and "all" in out
