"""`layercast bench codec`: the sub-pixel rewrite is the same map, the entropy comparison checks
every coder on a real frame's steps, and a short run prints every table."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layercast.bench import entropy, stages
from layercast.bench.speed import parse_size
from layercast.cli import main
from layercast.commands import bench as bench_cmd
from layercast.shared.codec.transforms import SynthesisTransform
from tests.conftest import smooth_image


def test_subpixel_conv_is_the_transposed_convolution():
    torch.manual_seed(0)
    g = SynthesisTransform([8, 12, 16], 24, 1, out_channels=3).eval()
    sub = stages.to_subpixel(g)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in sub.modules())
    assert sum(isinstance(m, stages.SubPixelConv) for m in sub.modules()) == 4
    y = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        want, got = g(y), sub(y)
    assert got.shape == want.shape == (2, 3, 80, 112)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_entropy_comparison_on_a_frames_own_steps(untrained_codec):
    img = smooth_image(np.random.default_rng(0), 128, 192)
    x = untrained_codec._pad(untrained_codec._to_tensor(img)[None])
    steps = entropy.record_steps(untrained_codec, x)
    groups = untrained_codec.base.latent_codec.y_codec.groups
    assert len(steps) == 1 + 2 * len(groups)  # ẑ, then anchors and non-anchors per group
    rows = entropy.compare(steps, repeat=1)
    assert [r["coder"] for r in rows] == list(entropy.coders())
    assert [r["coder"] for r in rows] == [
        "compiled ANS (ours, numba)",
        "constriction ANS (Python bindings)",
        "CompressAI rANS",
    ]
    ours, same_layout, ref = rows
    assert ours["symbols"] == ref["symbols"] == sum(s.size for s, _, _ in steps)
    assert ours["bytes"] == same_layout["bytes"]  # the same stream
    assert ours["bytes"] <= 1.01 * ref["bytes"] + 8  # no larger (escapes cost fewer bits here)
    # the recorded steps are what the codec wrote: coding them again gives the frame's payload
    frame = untrained_codec.encode(img, layers="base")
    ours_encode = entropy.coders()["compiled ANS (ours, numba)"][0]
    assert ours_encode(steps) == frame.base[28:]


def test_parse_size():
    assert parse_size("1280x720") == (720, 1280)
    for bad in ("1280", "x720", "0x5", "axb"):
        with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
            parse_size(bad)


def test_cli_variants_match_the_bench_module():
    assert bench_cmd.VARIANTS == stages.VARIANTS and bench_cmd.DEFAULT_VARIANTS == stages.DEFAULT_VARIANTS


def test_short_run_prints_every_table(capsys):
    before = torch.get_num_threads()
    try:
        rc = main(
            [
                "bench",
                "codec",
                "--size",
                "160x96",
                "--threads",
                "1",
                "--repeat",
                "1",
                "--variants",
                "eager",
                "subpixel",
            ]
        )
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert rc == 0
    assert "## 160x96, 1 thread: matmul roofline" in out
    for stage in ("g_a", "g_s_task", "g_simple", "detector", "g_a_e", "g_s_e"):
        assert f"| {stage} |" in out
    assert "| compiled ANS (ours, numba) |" in out and "| CompressAI rANS |" in out
    assert "| constriction ANS (Python bindings) |" in out
    # the facade with both runtimes of the CPU transforms, and with the coding steps on constriction
    assert (
        "| through the codec facade | torch ms | onnxruntime ms | torch, coding on constriction ms "
        "| torch / onnxruntime |" in out
    )
    for row in ("encode base only", "decode base (entropy path)", "enhancement decode"):
        line = next(ln for ln in out.splitlines() if ln.startswith(f"| {row} |"))
        assert line.endswith("× |") and len(line.split("|")) == 7, line


def test_bad_size_is_a_clear_error(capsys):
    with pytest.raises(SystemExit, match="not WIDTHxHEIGHT"):
        main(["bench", "codec", "--size", "1280by720"])
