"""CompressAI entropy models adapted to the paper's training and to exact coding.

* Quantisation in training is straight-through rounding (the paper), not
  additive noise: ``SteGaussianConditional`` / ``SteEntropyBottleneck``
  override only the "noise" mode of CompressAI's ``quantize``.
* ``CdfTables`` holds the integer CDF tables (numpy arrays, built once per
  model) and their 24-bit models for the entropy coder
  (:mod:`layercast.shared.codec.coder`). The tables are buffers saved in the
  checkpoint, so encoder and decoder use the same integers on every machine.
* ``SymbolChecksum`` is a running CRC32 over every coded symbol; the encoder
  writes it into the container and the decoder compares, so a numerical
  divergence of the entropy parameters across machines surfaces as
  ``DecodeMismatch`` rather than a silently wrong image.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

from layercast.shared.codec.layers import ste_round

if TYPE_CHECKING:
    from layercast.shared.codec.ans import Quantised

#: Scale table of CompressAI's scale-hyperprior models (64 log-spaced levels).
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 256.0, 64

#: Means used for coding are on this dyadic grid (the integer entropy models of
#: :mod:`~layercast.shared.codec.intparams` output them as integers in its units), so
#: ŷ = symbol + mean is exact in float32 and every context input is an exact integer.
MEAN_GRID = 2.0**-8


def scale_table() -> list[float]:
    return torch.exp(torch.linspace(np.log(SCALES_MIN), np.log(SCALES_MAX), SCALES_LEVELS)).tolist()


class SteGaussianConditional(GaussianConditional):
    """Gaussian conditional whose training-mode quantisation is STE rounding."""

    def __init__(self) -> None:
        super().__init__(scale_table())

    def quantize(self, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        if mode == "noise":
            if means is None:
                return ste_round(inputs)
            return ste_round(inputs - means) + means
        return super().quantize(inputs, mode, means)

    def build_indexes(self, scales: Tensor) -> Tensor:
        """CompressAI's index of each scale in the scale table, by one binary search.

        Same result as ``GaussianConditional.build_indexes`` (which compares against every one of
        the 64 levels in a Python loop): the index is the number of levels ``l`` in
        ``scale_table[:-1]`` with ``l < scale``, i.e. ``searchsorted(..., side="left")``."""
        scales = self.lower_bound_scale(scales)
        levels = self.scale_table[:-1].to(device=scales.device, dtype=scales.dtype).contiguous()
        return torch.searchsorted(levels, scales.contiguous(), side="left").int()


class SteEntropyBottleneck(EntropyBottleneck):
    """Factorised prior for the hyper-latent with STE rounding in training."""

    def quantize(self, inputs: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        if mode == "noise":
            if means is None:
                return ste_round(inputs)
            return ste_round(inputs - means) + means
        return super().quantize(inputs, mode, means)


def update_entropy_models(module: nn.Module, force: bool = True) -> None:
    """(Re)build the integer CDF tables of every entropy model in ``module``."""
    for m in module.modules():
        if isinstance(m, GaussianConditional):
            m.update_scale_table(scale_table(), force=force)
        elif isinstance(m, EntropyBottleneck):
            m.update(force=force)


def resize_entropy_buffers(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Give the CDF buffers of ``module`` the sizes found in ``state_dict`` before loading it."""
    for name, m in module.named_modules():
        if isinstance(m, GaussianConditional):
            names = ["_quantized_cdf", "_offset", "_cdf_length", "scale_table"]
        elif isinstance(m, EntropyBottleneck):
            names = ["_quantized_cdf", "_offset", "_cdf_length"]
        else:
            continue
        if all(f"{name}.{n}" in state_dict for n in names):
            for n in names:  # an empty registered buffer cannot load a tensor: size it first
                if getattr(m, n).numel() == 0:
                    getattr(m, n).resize_(state_dict[f"{name}.{n}"].size())


def with_constant_bounds(module: nn.Module, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state_dict`` with the entropy models' bound constants taken from ``module`` itself.

    CompressAI keeps the likelihood floor (1e-9), the scale floor (0.11) and the bounds of its
    ``LowerBound`` modules as buffers, so they travel in every state dict although they are fixed
    by the architecture. A file cannot improve them, only spoil them: float16 storage rounds the
    1e-9 likelihood floor to 0, and a zero floor lets a rate estimate reach log(0) = -inf."""
    from compressai.ops import LowerBound

    fixed = {}
    for name, m in module.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(m, LowerBound):
            fixed[f"{prefix}bound"] = m.bound
        elif isinstance(m, GaussianConditional):
            fixed[f"{prefix}scale_bound"] = m.scale_bound
    return {**state_dict, **{k: v.detach().clone() for k, v in fixed.items() if k in state_dict}}


def load_weights(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load a checkpoint's ``state_dict`` into a codec module: CDF buffers resized to the file's,
    the architecture's bound constants kept (see :func:`with_constant_bounds`); the integer
    entropy model's tensors (``integer.``, :mod:`~layercast.shared.codec.intparams`) are not the
    module's and are left out."""
    state_dict = {k: v for k, v in state_dict.items() if not k.startswith("integer.")}
    resize_entropy_buffers(module, state_dict)
    module.load_state_dict(with_constant_bounds(module, state_dict))


@dataclass
class CdfTables:
    """Integer CDF tables of one entropy model (CompressAI's layout) as numpy arrays.

    Table ``r`` is ``cdfs[r]`` (``lengths[r]`` entries from 0 to 2**16; its last symbol is the
    escape), coding symbol values from ``offsets[r]``. ``quantised`` are the same tables as the
    coder's 24-bit models (:mod:`layercast.shared.codec.coder`)."""

    cdfs: list[np.ndarray]
    lengths: np.ndarray  # int32
    offsets: np.ndarray  # int32
    _quantised: Quantised | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, model: GaussianConditional | EntropyBottleneck) -> CdfTables:
        if model._offset.numel() == 0:
            raise RuntimeError("entropy model has no CDF tables; call update_entropy_models() first")
        return cls.from_arrays(
            model._quantized_cdf.cpu().numpy(), model._cdf_length.cpu().numpy(), model._offset.cpu().numpy()
        )

    @classmethod
    def from_arrays(cls, quantized_cdf: np.ndarray, lengths: np.ndarray, offsets: np.ndarray) -> CdfTables:
        lengths = np.asarray(lengths).reshape(-1).astype(np.int32)
        offsets = np.asarray(offsets).reshape(-1).astype(np.int32)
        if not 0 < lengths.size <= 256 or lengths.size != offsets.size or (lengths < 3).any():
            raise ValueError("CDF tables: 1 to 256 tables of 3 or more entries, one offset each")
        cdf = np.asarray(quantized_cdf).astype(np.int64)
        return cls([cdf[r, :n].copy() for r, n in enumerate(lengths.tolist())], lengths, offsets)

    @property
    def quantised(self) -> Quantised:
        """The tables as the coder's 24-bit models (numpy arrays), built on first use: constriction's
        ``Categorical(diff(cdf), perfect=False)`` quantisation, a deterministic integer procedure,
        so encoder and decoder hold the same models on every machine."""
        if self._quantised is None:
            from layercast.shared.codec.ans import quantise  # numba loads on the first coding

            self._quantised = quantise(self.cdfs, self.lengths, self.offsets)
        return self._quantised

    def select(self, indexes: Tensor | np.ndarray) -> tuple[list[int], list[list[int]], list[int], list[int]]:
        """``(indexes, cdfs, lengths, offsets)`` for CompressAI's rANS coder (the reference the
        benchmark compares against), holding only the tables ``indexes`` uses, renumbered."""
        used, local = np.unique(np.asarray(indexes).reshape(-1), return_inverse=True)
        rows = used.tolist()
        return (
            local.tolist(),
            [self.cdfs[r].tolist() for r in rows],
            [int(self.lengths[r]) for r in rows],
            [int(self.offsets[r]) for r in rows],
        )


class SymbolChecksum:
    """Running CRC32 over int32 symbols in coding order."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, symbols: np.ndarray | list[int]) -> None:
        arr = np.ascontiguousarray(np.asarray(symbols, dtype="<i4"))
        self.value = zlib.crc32(arr.tobytes(), self.value)
