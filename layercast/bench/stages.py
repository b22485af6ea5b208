"""The codec's transforms stage by stage: milliseconds, achieved GFLOPS and the same run's matrix
product (the roofline), for several ways of running each stage on the same input.

Variants (``VARIANTS``): ``eager`` (the modules as shipped), ``channels_last`` (NHWC tensors and
weights), ``subpixel`` (every 5×5 stride-2 ConvTranspose2d as the equivalent 3×3 convolution
into 4× channels + PixelShuffle(2)), ``compile`` (``torch.compile``; slow to build) and
``onnxruntime`` (exported to ONNX, run by ONNX Runtime's CPU provider with the same thread count).
GFLOPS count the eager model's FLOPs (``torch.utils.flop_counter``) for every variant, so they
compare time for the same work; ``max_err`` is each variant's largest deviation from eager; fps is
1000 / ms (one frame per call). On CUDA every timed call ends with ``torch.cuda.synchronize``."""

from __future__ import annotations

import copy
import dataclasses
import io
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime", "compile")
DEFAULT_VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime")


def synchronize(device: str | torch.device = "cpu") -> None:
    """Wait for ``device``'s queued work (CUDA runs asynchronously; the CPU has nothing queued)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_ms(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """Milliseconds of one call of ``fn``, its work on ``device`` finished."""
    t = time.perf_counter()
    fn()
    synchronize(device)
    return 1000 * (time.perf_counter() - t)


def median_ms(fn: Callable[[], object], repeat: int, device: str | torch.device = "cpu") -> float:
    fn()  # warm-up
    synchronize(device)
    return statistics.median(timed_ms(fn, device) for _ in range(repeat))


def matmul_gflops(repeat: int = 5, n: int = 1024, device: str | torch.device = "cpu") -> float:
    """float32 matrix product ``n×n @ n×n`` at the current thread count on ``device``: the roofline."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    return 2 * n**3 / median_ms(lambda: a @ b, repeat, device) / 1e6


class TensorsOut(nn.Module):
    """A module whose output (a tensor, a tuple or a dataclass of tensors) is returned as a tuple."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        out = self.module(x)
        if isinstance(out, Tensor):
            return (out,)
        if dataclasses.is_dataclass(out):
            out = [getattr(out, f.name) for f in dataclasses.fields(out)]
        return tuple(v for v in out if isinstance(v, Tensor))


class SubPixelConv(nn.Module):
    """``ConvTranspose2d(k=5, stride=2, padding=2, output_padding=1)`` as a 3×3 convolution into
    4·out channels and ``PixelShuffle(2)``: the same linear map (output pixel (2i+a, 2j+b) takes
    input taps i-1..i+1 with kernel entries 4-2p+a, zero where that leaves 0..4)."""

    def __init__(self, deconv: nn.ConvTranspose2d) -> None:
        super().__init__()
        w = deconv.weight.detach()  # (in, out, 5, 5)
        cin, cout = w.shape[:2]
        k = torch.zeros(cout, 2, 2, cin, 3, 3, dtype=w.dtype, device=w.device)
        for a in range(2):
            for b in range(2):
                for p in range(3):
                    for q in range(3):
                        kh, kw = 4 - 2 * p + a, 4 - 2 * q + b
                        if kh <= 4 and kw <= 4:
                            k[:, a, b, :, p, q] = w[:, :, kh, kw].t()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, padding=1, device=w.device, dtype=w.dtype)
        self.conv.weight.data = k.reshape(4 * cout, cin, 3, 3)
        bias = deconv.bias.detach() if deconv.bias is not None else torch.zeros_like(k[:, 0, 0, 0, 0, 0])
        self.conv.bias.data = bias.repeat_interleave(4)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))

    @staticmethod
    def applies(m: nn.Module) -> bool:
        return (
            isinstance(m, nn.ConvTranspose2d)
            and m.kernel_size == (5, 5)
            and m.stride == (2, 2)
            and m.padding == (2, 2)
            and m.output_padding == (1, 1)
            and m.groups == 1
            and m.dilation == (1, 1)
        )


def to_subpixel(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every matching ConvTranspose2d replaced by ``SubPixelConv``."""
    module = copy.deepcopy(module)
    for child in list(module.modules()):
        for cname, c in list(child.named_children()):
            if SubPixelConv.applies(c):
                setattr(child, cname, SubPixelConv(c))
    return module


def _onnx(module: nn.Module, x: Tensor, threads: int) -> Callable[[], object]:
    import onnxruntime as ort

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints
        torch.onnx.export(module, (x,), buf, dynamo=False, input_names=["x"], opset_version=17)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: tuple(torch.from_numpy(o) for o in sess.run(None, feed))


def variant_fn(name: str, module: nn.Module, x: Tensor, threads: int) -> Callable[[], tuple[Tensor, ...]]:
    m = TensorsOut(module).eval()
    if name == "eager":
        return lambda: m(x)
    if name == "channels_last":
        mc = copy.deepcopy(m).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: mc(xc)
    if name == "subpixel":
        ms = to_subpixel(m)
        return lambda: ms(x)
    if name == "compile":
        mc = torch.compile(m)
        return lambda: mc(x)
    if name == "onnxruntime":
        return _onnx(m, x, threads)
    raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")


def flops(module: nn.Module, x: Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops()


def stage_inputs(codec, h: int, w: int, image) -> dict[str, tuple[nn.Module, Tensor]]:
    """Each transform of the codec and its input for one ``w``×``h`` frame (padded as coded), on the
    codec's device."""
    x = codec._pad(codec._to_tensor(image)[None].to(codec.device))
    with torch.no_grad():
        y = codec.base.g_a(x)
        stages = {
            "g_a": (codec.base.g_a, x),
            "g_s_task": (codec.base.g_s_task, y),
            "g_simple": (codec.base.g_simple, y),
        }
        if codec.task_model is not None:
            stages["detector" if codec.task == "detection" else "task model"] = (
                codec.task_model,
                codec.base.task_image(y)[:, :, :h, :w].contiguous(),
            )
        e = codec.enhancement
        if e is not None:
            cond = e.condition(y)
            y_e = e.g_a(x)
            stages["g_a_e"] = (e.g_a, x)
            stages["g_s_e"] = (e.g_s, torch.cat([y_e, cond.float()], dim=1))
    return stages


def measure(codec, h: int, w: int, image, variants, threads: int, repeat: int) -> list[dict]:
    """One row per stage and variant: ms, fps, GFLOP, GFLOPS and max_err against eager. The variants
    of a stage are timed in turn, round after round (medians), so load on a shared machine falls
    on all of them alike and their ratios hold better than their absolute times."""
    rows = []
    device = codec.device
    with torch.no_grad():
        for stage, (module, x) in stage_inputs(codec, h, w, image).items():
            gflop = flops(module, x) / 1e9
            ref = TensorsOut(module).eval()(x)
            fns, errs = {}, {}
            for v in variants:
                try:
                    fns[v] = variant_fn(v, module, x, threads)
                    out = fns[v]()
                    errs[v] = max(
                        float((a.float() - b.float()).abs().max()) for a, b in zip(out, ref, strict=True)
                    )
                except Exception as exc:  # a variant that cannot run this stage is reported, not fatal
                    fns.pop(v, None)
                    rows.append({"stage": stage, "variant": v, "error": f"{type(exc).__name__}: {exc}"[:120]})
            samples: dict[str, list[float]] = {v: [] for v in fns}
            synchronize(device)
            for _ in range(repeat):
                for v, fn in fns.items():
                    samples[v].append(timed_ms(fn, device))
            for v in fns:
                ms = statistics.median(samples[v])
                rows.append(
                    {
                        "stage": stage,
                        "variant": v,
                        "ms": ms,
                        "fps": 1000 / ms,
                        "gflop": gflop,
                        "gflops": gflop / ms * 1e3,
                        "max_err": errs[v],
                    }
                )
    return rows
