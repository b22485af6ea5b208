"""The CPU path of the transforms: ONNX Runtime for g_a, g_a_e, g_simple and the detector, torch on
channels_last tensors for g_s_task and g_s_e, each within float32 rounding of eager torch, with
torch's thread count (shared/codec/runtime.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from layercast.shared.codec import load_codec
from layercast.shared.codec.layers import SubPixelConv
from layercast.shared.codec.runtime import ChannelsLastModule, NhwcSubPixelConv, OnnxModule, configure_threads
from layercast.shared.data.synth import render_scene

SIZES = [(192, 256), (232, 400)]  # (h, w); 232 and 400 are not multiples of the detector's stride 32


@pytest.fixture(scope="module")
def codecs():
    return {r: load_codec("default", device="cpu", runtime=r) for r in ("onnxruntime", "torch")}


def _frame(h: int, w: int, seed: int = 90_003) -> np.ndarray:
    return render_scene(seed, w, h).image


def _stage_inputs(codec, image: np.ndarray) -> dict[str, tuple[object, torch.Tensor]]:
    """Each module the CPU places (ONNX Runtime or channels_last), its eager module and its input
    for ``image``."""
    h, w = image.shape[:2]
    x = codec._pad(codec._to_tensor(image)[None])
    e = codec.enhancement
    with torch.no_grad():
        y = torch.round(codec.base.g_a(x))
        task_image = codec.base.task_image(y)[:, :, :h, :w].contiguous()
        y_e = torch.cat([torch.round(e.g_a(x)), e.condition(y)], dim=1)
    return {
        "g_a": (codec.base.g_a, x),
        "g_a_e": (e.g_a, x),
        "g_simple": (codec.base.g_simple, y),
        "detector": (codec.task_model, task_image),
        "g_s_task": (codec.base.g_s_task, y),
        "g_s_e": (e.g_s, y_e),
    }


def _placed(codec) -> dict[str, object]:
    return {
        "g_a": codec._g_a,
        "g_a_e": codec._g_a_e,
        "g_simple": codec._g_simple,
        "detector": codec._task_model,
        "g_s_task": codec._g_s_task,
        "g_s_e": codec._g_s_e,
    }


def _tensors(out) -> tuple[torch.Tensor, ...]:
    return (out,) if isinstance(out, torch.Tensor) else (out.heatmap, out.boxes)


def test_cpu_default_runs_the_measured_modules_in_onnxruntime(codecs) -> None:
    ort, eager = codecs["onnxruntime"], codecs["torch"]
    assert ort.runtime == "onnxruntime" and eager.runtime == "torch"
    for name, placed in _placed(ort).items():
        kind = ChannelsLastModule if name in ("g_s_task", "g_s_e") else OnnxModule
        assert isinstance(placed, kind), name
    for name, placed in _placed(eager).items():
        assert isinstance(placed, torch.nn.Module), name


def test_synthesis_runs_nhwc_with_its_output_layer_as_subpixel(codecs) -> None:
    """g_s_task and g_s_e: channels_last tensors; the 3-channel output layer (and only it) as its
    sub-pixel convolution, the 16- to 64-channel transposed convolutions as they are."""
    for placed in (codecs["onnxruntime"]._g_s_task, codecs["onnxruntime"]._g_s_e):
        net = placed.nhwc_module.net
        assert isinstance(net[-1], SubPixelConv)
        assert sum(isinstance(m, SubPixelConv) for m in net.modules()) == 1
        assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 3
        assert not any(p.requires_grad for p in placed.nhwc_module.parameters())
        y = torch.rand(1, net[0].in_channels, 3, 4)
        with torch.no_grad():
            out = placed(y)
        assert out.shape == (1, 3, 48, 64) and out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("h", "w"), SIZES)
def test_onnxruntime_outputs_within_float32_rounding_of_eager(codecs, h: int, w: int) -> None:
    codec = codecs["onnxruntime"]
    torch.set_num_threads(1)
    placed = _placed(codec)
    for name, (module, x) in _stage_inputs(codec, _frame(h, w)).items():
        with torch.no_grad():
            ref = _tensors(module(x))
            got = _tensors(placed[name](x))
        for r, g in zip(ref, got, strict=True):
            assert g.shape == r.shape and g.dtype == torch.float32, name
            scale = float(r.abs().max())
            err = float((g - r).abs().max())
            # float32 rounding through a deep network: a few ulps of the output's magnitude
            assert err <= 1e-5 + 1e-5 * scale, (
                f"{name} at {w}x{h}: max abs error {err:.3g} (scale {scale:.3g})"
            )


def test_raw_detector_output_keeps_the_input_size(codecs) -> None:
    codec = codecs["onnxruntime"]
    _, x = _stage_inputs(codec, _frame(*SIZES[1]))["detector"]
    with torch.no_grad():
        raw = codec._task_model(x)
    assert raw.input_size == (SIZES[1][0], SIZES[1][1])


def test_edge_bitstreams_decode_to_the_same_detections(codecs) -> None:
    """A camera on either runtime sends a base layer the cloud, on either runtime, turns into the
    same detections."""
    ort, eager = codecs["onnxruntime"], codecs["torch"]
    image = _frame(240, 320, seed=90_001)
    streams = {r: c.encode(image).base for r, c in codecs.items()}
    results = {}
    for enc, data in streams.items():
        for dec_runtime, dec in (("onnxruntime", ort), ("torch", eager)):
            [r] = dec.infer([dec.decode_base(data)])
            results[(enc, dec_runtime)] = r
    ref = results[("torch", "torch")]
    assert len(ref.labels) > 0
    for key, r in results.items():
        np.testing.assert_array_equal(r.labels, ref.labels, err_msg=str(key))
        np.testing.assert_allclose(r.boxes, ref.boxes, atol=0.05, err_msg=str(key))
        np.testing.assert_allclose(r.scores, ref.scores, atol=1e-4, err_msg=str(key))


def test_previews_and_reconstructions_match(codecs) -> None:
    ort, eager = codecs["onnxruntime"], codecs["torch"]
    frame = eager.encode(_frame(192, 256))
    dec = ort.decode_base(frame.base)
    assert np.abs(ort.preview(dec).astype(int) - eager.preview(dec).astype(int)).max() <= 1
    # one stream's reconstruction on either runtime (g_s_e channels_last or NCHW): within a level
    rec = {r: c.reconstruct(c.decode_base(frame.base), frame.enhancement) for r, c in codecs.items()}
    assert np.abs(rec["onnxruntime"].astype(int) - rec["torch"].astype(int)).max() <= 1
    assert np.mean(rec["onnxruntime"] != rec["torch"]) < 1e-3
    tasks = {r: c.task_images([c.decode_base(frame.base)])[0] for r, c in codecs.items()}
    torch.testing.assert_close(tasks["onnxruntime"], tasks["torch"], rtol=1e-5, atol=1e-4)
    # an enhancement layer coded through ONNX Runtime's g_a_e decodes like the eager one's
    frame_ort = ort.encode(_frame(192, 256))
    rec_ort = eager.reconstruct(eager.decode_base(frame_ort.base), frame_ort.enhancement)
    rec_eager = eager.reconstruct(eager.decode_base(frame.base), frame.enhancement)
    assert np.abs(rec_ort.astype(int) - rec_eager.astype(int)).mean() < 0.05


def test_sessions_follow_torchs_thread_count(codecs) -> None:
    g_a = codecs["onnxruntime"]._g_a
    x = torch.rand(1, 3, 64, 64)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            g_a(x)
            opts = g_a.session().get_session_options()
            assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (threads, 1)
    finally:
        torch.set_num_threads(before)


def test_a_gradient_runs_the_torch_module(codecs) -> None:
    g_a = codecs["onnxruntime"]._g_a
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    y = g_a(x)
    assert y.requires_grad and y.grad_fn is not None


def test_unknown_runtime_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load_codec("default", device="cpu", runtime="tensorrt")


def test_configure_threads_sets_intra_and_one_interop_thread() -> None:
    code = (
        "import torch; from layercast.shared.codec.runtime import configure_threads;"
        " configure_threads(2); configure_threads(1); configure_threads(2);"
        " print(torch.get_num_threads(), torch.get_num_interop_threads())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["2", "1"]
    with pytest.raises(ValueError):
        configure_threads(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_cpu_codec_reuses_freed_feature_maps() -> None:
    """Once a codec is built on the CPU, a freed 16 MiB block (a 1280×720 synthesis feature map)
    is reused: allocating it again touches no new page. glibc's default maps such a block afresh
    on every allocation, a page fault per 4 KiB (runtime.keep_freed_memory)."""
    code = (
        "import resource, torch; from layercast.shared.codec import load_codec;"
        " load_codec('default', device='cpu'); faults = []\n"
        "for _ in range(3):\n"
        "    before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt\n"
        "    block = torch.empty(4 << 20).fill_(1.0); del block\n"
        "    faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)\n"
        "print(*faults)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    faults = [int(n) for n in out.stdout.split()]
    assert faults[-1] < 64, faults


def test_the_nhwc_output_layer_is_the_subpixel_convolution_bit_for_bit(codecs) -> None:
    """The placed synthesis transforms' output layer (its convolution's channels reordered so the
    pixel shuffle is one copy) gives SubPixelConv's tensor exactly, channels_last."""
    for name, eager in (
        ("g_s_task", codecs["torch"].base.g_s_task),
        ("g_s_e", codecs["torch"].enhancement.g_s),
    ):
        placed = getattr(codecs["onnxruntime"], f"_{name}").nhwc_module.net[-1]
        assert isinstance(placed, NhwcSubPixelConv), name
        reference = SubPixelConv(eager.net[-1]).eval()
        x = torch.randn(2, placed.conv.in_channels, 12, 20).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            got, expect = placed(x), reference(x)
        assert torch.equal(got, expect), name
        assert got.is_contiguous(memory_format=torch.channels_last), name
