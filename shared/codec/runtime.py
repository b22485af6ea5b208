"""Where the codec's float32 transforms run, and with how many threads.

One path per device. On CUDA every module runs in torch. On the CPU, with ``runtime =
"onnxruntime"`` (the default), each transform runs the way it measured fastest (docs/speed.md):
the analysis transforms g_a and g_a_e, the preview synthesis g_simple and the detector in an
``onnxruntime.InferenceSession``; the synthesis transforms g_s_task and g_s_e in torch on
channels_last (NHWC) tensors, their 3-channel output layer as its sub-pixel convolution
(:class:`ChannelsLastModule`: oneDNN's NHWC kernels, faster there than both ONNX Runtime and NCHW
torch); the other task models and the entropy path (integer parameter networks) in torch as they are.
``runtime = "torch"`` runs everything in torch as it is.

A module's ONNX graph is exported from the loaded weights (``torch.onnx.export``, dynamic batch,
height and width) in memory on its first call: no file, no network; the four graphs of the
shipped ``det-tiny`` take about a second together on this machine, paid by the first frame (the
cloud's warm-up pays it before it serves). Its sessions use ``torch.get_num_threads()`` intra-op
threads at the time of the call (one session per thread count) and inter-op 1, with ONNX
Runtime's spin-waiting left on (measured faster than without, docs/speed.md); one setting,
:func:`configure_threads`, sets torch's and ONNX Runtime's threads together.

A codec on the CPU also has the C library's allocator keep large freed blocks for reuse
(:func:`keep_freed_memory`): the transforms' feature maps at camera resolution are megabytes each,
and glibc's default maps and unmaps every such block again, paying a page fault per 4 KiB on
every frame (docs/speed.md).
"""

from __future__ import annotations

import ctypes
import io
import logging
import sys
import threading
import warnings
from typing import Any, Literal

import torch
from torch import Tensor, nn

from layercast.shared.codec.layers import SubPixelConv, to_subpixel

log = logging.getLogger(__name__)

Runtime = Literal["onnxruntime", "torch"]
RUNTIMES: tuple[str, ...] = ("onnxruntime", "torch")
#: ONNX Runtime on the CPU: faster than eager torch on the modules it runs (docs/speed.md).
DEFAULT_RUNTIME: Runtime = "onnxruntime"
#: Height and width (at most) of the slice of the first input the graph is traced on.
_PROBE_SIDE = 64
_OPSET = 17


def configure_threads(threads: int) -> None:
    """``threads`` intra-op threads for torch (and so for ONNX Runtime's sessions) and one inter-op
    thread: torch's inter-op pool can be sized once per process, before it starts; after that the
    call leaves it as it is."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    if torch.get_num_interop_threads() != 1:
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            log.info("torch's inter-op thread pool already started; it keeps its size")


#: glibc's ``mallopt`` parameters (malloc.h) and the values :func:`keep_freed_memory` sets: blocks
#: up to 32 MiB (glibc's largest mmap threshold) come from the heap, and up to 128 MiB of freed
#: memory stays mapped at the top of a heap (then it goes back to the system).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 128 << 20
_ALLOCATOR: list[bool] = []


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve blocks up to :data:`MMAP_THRESHOLD` from its heaps and keep up to
    :data:`TRIM_THRESHOLD` of freed memory there, once per process; False where the C library
    is not glibc or refuses the values. By default glibc maps every block above a threshold
    (128 KiB, rising to the largest block freed) with ``mmap`` and unmaps it on free, so a
    1280×720 enhancement decode, whose synthesis allocates 8–16 MB feature maps, costs about
    11 000 page faults (35 ms of system time) per frame."""
    if not _ALLOCATOR:
        ok = False
        libc = None
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(None)
            except OSError:
                libc = None
        if libc is not None and hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt"):
            ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
        _ALLOCATOR.append(ok)
        log.debug("malloc keeps freed blocks: %s", ok)
    return _ALLOCATOR[0]


def check_runtime(runtime: str) -> Runtime:
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    return runtime  # type: ignore[return-value]


class _Graph(nn.Module):
    """The tensor outputs of a module: a tensor, or what its ``raw_tensors`` picks from its output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor) -> Any:
        out = self.module(x)
        return out if isinstance(out, Tensor) else self.module.raw_tensors(out)


class OnnxModule:
    """``module`` (eval mode, float32 in, on the CPU) run by ONNX Runtime.

    Its output is the module's: a tensor, or, for a module whose output is not one (the
    detector's ``DetectorRaw``), ``module.raw_from_tensors(tensors, x)`` of the tensors that
    ``module.raw_tensors`` picks. An input that needs a gradient or is not a float32 CPU tensor
    runs the module itself."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        self._graph: bytes | None = None
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, x: Tensor) -> Any:
        if x.requires_grad or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.module(x)
        outs = self.session(x).run(None, {"x": x.detach().contiguous().numpy()})
        tensors = tuple(torch.from_numpy(o) for o in outs)
        if hasattr(self.module, "raw_from_tensors"):
            return self.module.raw_from_tensors(tensors, x)
        return tensors[0]

    def session(self, x: Tensor | None = None) -> Any:
        """The session for the current torch thread count (exported on ``x`` if not yet)."""
        threads = torch.get_num_threads()
        sess = self._sessions.get(threads)
        if sess is not None:
            return sess
        with self._lock:
            if threads not in self._sessions:
                self._sessions[threads] = self._new_session(self._export(x), threads)
            return self._sessions[threads]

    def _export(self, x: Tensor | None) -> bytes:
        if self._graph is None:
            if x is None:
                raise ValueError(f"{self.name}: the first call needs an input to trace the graph on")
            probe = x[:1, :, :_PROBE_SIDE, :_PROBE_SIDE].detach().contiguous()
            buf = io.BytesIO()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints
                torch.onnx.export(
                    _Graph(self.module).eval(),
                    (probe,),
                    buf,
                    dynamo=False,
                    input_names=["x"],
                    dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}},
                    opset_version=_OPSET,
                )
            self._graph = buf.getvalue()
            log.debug("%s exported to ONNX (%d bytes)", self.name, len(self._graph))
        return self._graph

    @staticmethod
    def _new_session(graph: bytes, threads: int) -> Any:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"])


class ChannelsLastModule:
    """``module`` (eval mode, on the CPU) run by torch on its input in channels_last memory format
    (NHWC), with each 5×5 stride-2 ConvTranspose2d of at most :data:`SUBPIXEL_MAX_OUT_CHANNELS`
    output channels computed as its sub-pixel convolution (``layers.SubPixelConv``: the same
    linear map). The output (a tensor of the same shape, in channels_last format) is within
    float32 rounding of the module's. That copy of the module (``nhwc_module``) is made from its
    weights here, when the codec is built (no export; about 15 ms for each of det-tiny's synthesis
    transforms, 0.7–1.2 MB of weights). An input that needs a gradient or is not a float32 CPU
    tensor runs the module as it is."""

    def __init__(self, module: nn.Module, name: str) -> None:
        self.module = module
        self.name = name
        nhwc = to_subpixel(module, SUBPIXEL_MAX_OUT_CHANNELS)
        for child in list(nhwc.modules()):
            for cname, c in list(child.named_children()):
                if isinstance(c, SubPixelConv):
                    setattr(child, cname, NhwcSubPixelConv(c))
        self.nhwc_module = nhwc.eval().requires_grad_(False)

    def __call__(self, x: Tensor) -> Tensor:
        if x.requires_grad or x.device.type != "cpu" or x.dtype != torch.float32:
            return self.module(x)
        return self.nhwc_module(x.contiguous(memory_format=torch.channels_last))


class NhwcSubPixelConv(SubPixelConv):
    """:class:`~layercast.shared.codec.layers.SubPixelConv` on channels_last tensors: its
    convolution's output channels reordered to (row phase, column phase, channel), so that the
    pixel shuffle is one copy of runs of 2·C contiguous floats into a channels_last output
    (``nn.PixelShuffle`` on a channels_last tensor is a slow strided copy: 29 against 20 ms for
    g_s_e's output layer at 1280×720). The same tensor as ``SubPixelConv``'s, channels_last."""

    def __init__(self, sub: SubPixelConv) -> None:
        nn.Module.__init__(self)
        conv = sub.conv
        c = conv.out_channels // 4
        # SubPixelConv's channel k·4 + a·2 + b (output channel k, phase (a, b)) becomes (a·2 + b)·c + k
        order = torch.arange(4 * c).reshape(c, 4).t().reshape(-1)
        self.conv = nn.Conv2d(
            conv.in_channels, 4 * c, 3, padding=1, device=conv.weight.device, dtype=conv.weight.dtype
        )
        self.conv.weight.data = conv.weight.detach()[order].clone()
        self.conv.bias.data = conv.bias.detach()[order].clone()

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(x).contiguous(memory_format=torch.channels_last)
        n, c4, h, w = y.shape
        phases = y.permute(0, 2, 3, 1).view(n, h, w, 2, 2, c4 // 4)  # (n, i, j, a, b, k)
        out = phases.permute(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c4 // 4)  # (n, 2i + a, 2j + b, k)
        return out.permute(0, 3, 1, 2)


#: A transposed convolution with at most this many output channels (fewer than the 8 float32 lanes
#: of an AVX2 register: the synthesis transforms' 3-channel output layer) runs as its sub-pixel
#: convolution in :class:`ChannelsLastModule`, where oneDNN's NHWC transposed convolution is slow.
SUBPIXEL_MAX_OUT_CHANNELS = 7

#: Modules that run in torch on channels_last tensors on the CPU with ``runtime = "onnxruntime"``
#: (the synthesis transforms: at 1280x720 and 1 thread 1.5-1.9x faster than eager NCHW torch and 1.3x
#: faster than ONNX Runtime, docs/speed.md); every other placed module runs in ONNX Runtime there.
CHANNELS_LAST: frozenset[str] = frozenset({"g_s_task", "g_s_e"})


def exportable(module: nn.Module) -> bool:
    """A task model whose output is not a tensor runs in ONNX Runtime only when it says how to
    split its output into tensors and put it back together (``raw_tensors``, ``raw_from_tensors``)."""
    return hasattr(module, "raw_tensors") and hasattr(module, "raw_from_tensors")


def place(module: nn.Module, name: str, runtime: Runtime, device: torch.device) -> Any:
    """What runs ``module`` (one whose output is a tensor, or :func:`exportable`): on the CPU with
    ``runtime = "onnxruntime"`` a :class:`ChannelsLastModule` if ``name`` is in
    :data:`CHANNELS_LAST`, else an :class:`OnnxModule`; otherwise the module itself."""
    if runtime == "onnxruntime" and device.type == "cpu":
        if name in CHANNELS_LAST:
            return ChannelsLastModule(module, name)
        return OnnxModule(module, name)
    return module
