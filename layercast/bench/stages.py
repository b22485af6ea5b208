"""The codec's transforms stage by stage: milliseconds, achieved GFLOPS and the same run's matrix
product (the roofline), for several ways of running each stage on the same input.

Variants (``VARIANTS``): ``eager`` (the modules as shipped), ``channels_last`` (NHWC tensors and
weights), ``subpixel`` (every 5×5 stride-2 ConvTranspose2d as the equivalent 3×3 convolution
into 4× channels + PixelShuffle(2)), ``compile`` (``torch.compile``; slow to build),
``onnxruntime`` (exported to ONNX, run by ONNX Runtime's CPU provider with the same thread count)
and ``codec`` (what the codec runs for the stage on this device with its default runtime:
``runtime.place``, its input conversion and first-call export included, timed after a warm-up).
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

from layercast.shared.codec import runtime
from layercast.shared.codec.layers import to_subpixel

VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime", "codec", "compile")
DEFAULT_VARIANTS = ("eager", "channels_last", "subpixel", "onnxruntime", "codec")


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
        return as_tensors(self.module(x))


def as_tensors(out: object) -> tuple[Tensor, ...]:
    """A module's output (a tensor, a tuple or a dataclass of tensors) as a tuple of tensors."""
    if isinstance(out, Tensor):
        return (out,)
    if dataclasses.is_dataclass(out):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    return tuple(v for v in out if isinstance(v, Tensor))  # type: ignore[union-attr]


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


def variant_fn(
    name: str, module: nn.Module, x: Tensor, threads: int, stage: str = ""
) -> Callable[[], tuple[Tensor, ...]]:
    """How variant ``name`` runs ``module`` (the codec's ``stage``) on ``x``."""
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
    if name == "codec":
        if stage in ("detector", "task model") and not runtime.exportable(module):
            return lambda: m(x)  # a task model the codec runs in torch as it is
        placed = runtime.place(module, stage, runtime.DEFAULT_RUNTIME, x.device)
        return lambda: as_tensors(placed(x))
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
    """One row per stage and variant: ms, fps, GFLOP, GFLOPS, max_err against eager and
    ``roof_gflops``, the float32 1024³ matrix product timed in the same rounds as the stage. The
    variants of a stage and that matrix product are timed in turn, round after round (medians),
    so load on a shared machine falls on all of them alike and their ratios hold better than their
    absolute times."""
    rows = []
    device = codec.device
    n = 1024
    mat = torch.randn(n, n, device=device), torch.randn(n, n, device=device)

    def matmul() -> Tensor:
        return mat[0] @ mat[1]

    with torch.no_grad():
        for stage, (module, x) in stage_inputs(codec, h, w, image).items():
            gflop = flops(module, x) / 1e9
            ref = TensorsOut(module).eval()(x)
            fns, errs = {}, {}
            for v in variants:
                try:
                    fns[v] = variant_fn(v, module, x, threads, stage)
                    out = fns[v]()
                    errs[v] = max(
                        float((a.float() - b.float()).abs().max()) for a, b in zip(out, ref, strict=True)
                    )
                except Exception as exc:  # a variant that cannot run this stage is reported, not fatal
                    fns.pop(v, None)
                    rows.append({"stage": stage, "variant": v, "error": f"{type(exc).__name__}: {exc}"[:120]})
            samples: dict[str, list[float]] = {v: [] for v in fns}
            roof: list[float] = []
            matmul()  # warm-up
            synchronize(device)
            for _ in range(repeat):
                roof.append(timed_ms(matmul, device))
                for v, fn in fns.items():
                    samples[v].append(timed_ms(fn, device))
            roof_gflops = 2 * n**3 / statistics.median(roof) / 1e6
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
                        "roof_gflops": roof_gflops,
                    }
                )
    return rows
