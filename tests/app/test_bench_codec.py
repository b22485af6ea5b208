"""`layercast bench codec`: the sub-pixel rewrite is the same map, the entropy comparison checks
every coder on a real frame's steps, and a short run prints every table with frames/s per stage
and end to end, on the CPU and (tests marked ``gpu``) on CUDA; ``--device cuda`` without a CUDA
device is a clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from layercast.bench import entropy, stages
from layercast.bench.speed import parse_size
from layercast.cli import main
from layercast.commands import bench as bench_cmd
from layercast.shared.codec.layers import SubPixelConv, to_subpixel
from layercast.shared.codec.transforms import SynthesisTransform
from tests.conftest import smooth_image


def test_subpixel_conv_is_the_transposed_convolution():
    torch.manual_seed(0)
    g = SynthesisTransform([8, 12, 16], 24, 1, out_channels=3).eval()
    sub = to_subpixel(g)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in sub.modules())
    assert sum(isinstance(m, SubPixelConv) for m in sub.modules()) == 4
    y = torch.randn(2, 24, 5, 7)
    with torch.no_grad():
        want, got = g(y), sub(y)
    assert got.shape == want.shape == (2, 3, 80, 112)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # bounded by output channels: only the last (3-channel) layer
    last_only = to_subpixel(g, max_out_channels=7)
    assert [type(m).__name__ for m in last_only.net if "Conv" in type(m).__name__] == [
        "ConvTranspose2d",
        "ConvTranspose2d",
        "ConvTranspose2d",
        "SubPixelConv",
    ]
    with torch.no_grad():
        torch.testing.assert_close(last_only(y), want, rtol=1e-4, atol=1e-5)


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


STAGES = ("g_a", "g_s_task", "g_simple", "detector", "g_a_e", "g_s_e")
FACADE_ROWS = (
    "encode base only",
    "encode both layers",
    "decode base (entropy path)",
    "task path (g_s_task + task model)",
    "enhancement decode",
    "end to end: cloud (decode base + task path)",
    "end to end: camera to result (encode base, decode, task path)",
)


def _bench(capsys, *args: str) -> str:
    before = torch.get_num_threads()
    try:
        rc = main(["bench", "codec", "--threads", "1", "--repeat", "1", *args])
    finally:
        torch.set_num_threads(before)
    assert rc == 0
    return capsys.readouterr().out


def _cells(out: str, row: str) -> list[str]:
    line = next(ln for ln in out.splitlines() if ln.startswith(f"| {row} |"))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def _check_fps_columns(out: str, columns: list[str]) -> None:
    """Every stage row has its matrix product's GFLOPS, then cells reading "ms, fps, GFLOPS (% of
    that matrix product)"; every facade row has each column's ms and, after them (and the ratio of
    the first two), the same column's frames/s = 1000 / ms."""
    for stage in STAGES:
        roof = float(_cells(out, stage)[1])
        assert roof > 0, stage
        for cell in _cells(out, stage)[2:]:
            ms, fps, gflops = cell.split(", ", 2)
            value, share = gflops.removesuffix(" %)").split(" GFLOPS (")
            assert abs(100 * float(value) / roof - float(share)) <= 1, cell
            ms_v, fps_v = float(ms.removesuffix(" ms")), float(fps.removesuffix(" fps"))
            assert 1000 / (ms_v + 0.5) - 0.05 <= fps_v <= 1000 / max(ms_v - 0.5, 0.01) + 0.05, cell
    ratio = len(columns) >= 2
    header = " | ".join(f"{c} ms" for c in columns)
    if ratio:
        header += f" | {columns[0]} / {columns[1]}"
    header += " | " + " | ".join(f"{c} fps" for c in columns)
    assert f"| through the codec facade | {header} |" in out
    for row in FACADE_ROWS:
        cells = _cells(out, row)
        assert len(cells) == 2 * len(columns) + ratio, (row, cells)
        ms, fps = cells[: len(columns)], cells[len(columns) + ratio :]
        for m, f in zip(ms, fps, strict=True):
            m_v, f_v = float(m), float(f)
            assert 1000 / (m_v + 0.5) - 0.01 <= f_v <= 1000 / max(m_v - 0.5, 0.01) + 0.01, (row, m, f)


def test_short_run_prints_every_table(capsys):
    out = _bench(capsys, "--size", "160x96", "--variants", "eager", "subpixel", "codec")
    assert "## 160x96, 1 thread: matmul roofline" in out
    assert "| stage | GFLOP | matmul GFLOPS, same rounds | eager | subpixel | codec |" in out
    for stage in STAGES:
        assert f"| {stage} |" in out
    assert "| compiled ANS (ours, numba) |" in out and "| CompressAI rANS |" in out
    assert "| constriction ANS (Python bindings) |" in out
    # the facade with both runtimes of the CPU transforms, and with the coding steps on constriction,
    # each in ms and frames/s; the stages in ms and frames/s
    columns = ["torch", "onnxruntime", "torch, coding on constriction"]
    _check_fps_columns(out, columns)
    for row in FACADE_ROWS:
        assert _cells(out, row)[3].endswith("×"), row


def test_cuda_without_a_device_says_so_and_fails():
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    out = subprocess.run(
        [sys.executable, "-m", "layercast.cli", "bench", "codec", "--device", "cuda", "--size", "1920x1080"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0
    assert "--device cuda: no CUDA device on this machine" in out.stderr
    assert "run with --device cpu" in out.stderr
    assert "| g_a |" not in out.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_run_prints_frames_per_second(capsys):
    out = _bench(capsys, "--device", "cuda", "--size", "1920x1080", "--variants", "eager", "channels_last")
    assert "device cuda" in out
    assert "## 1920x1080, 1 thread: matmul roofline" in out
    _check_fps_columns(out, ["torch", "torch, coding on constriction"])


def test_bad_size_is_a_clear_error(capsys):
    with pytest.raises(SystemExit, match="not WIDTHxHEIGHT"):
        main(["bench", "codec", "--size", "1280by720"])
