"""Skip mode of P-frames: a per-position mask of the latent grid says where something moved.

A fixed camera's P-frame changes in a few places (the objects that moved); elsewhere the frame
differs from its reference only by sensor noise. The encoder marks each position of the latent
grid (one per 16×16 pixels) *moving* or *static*; static positions copy the reference latent
(ŷ_t = ŷ_{t-1}, no symbol coded), moving ones are coded by the P model. The decision is the
encoder's alone (:func:`motion_mask`); the decoder reads the mask from the stream.

Decision: the mean over channels of ``|y_t − ŷ_{t-1}|`` at a position, at or above the threshold,
marks it moving (a threshold of 0 marks every position moving: no skip). Dilating the mask by one
position, so that an object's edges are coded too, measured worse at equal mAP (docs/video.md).

Side information: the P model reads h_s(ẑ) only at moving positions, so the encoder codes ẑ's
symbol 0 (its median, the cheapest) at every hyper position whose 4×4 block of latent positions is
all static (:func:`prune_side`). h_s still reads those zeros next to a moving block, which costs a
little of ŷ's rate there and saves more of ẑ's (docs/video.md); the decoder is the same either way.

Coding (format version 5, ``docs/bitstream.md``): after ẑ, the mask in two checkerboard passes.
First the number ``k`` of moving anchors ((i + j) even; ``n`` of them), uniform over 0..n, then,
unless ``k`` is 0 or ``n``, the anchors with one binary model of P(moving) = k/n (in 1/65536,
within 1..65535); then every other position with the fixed model picked by how many of its four
anchor neighbours are moving (0 to 4; off-grid neighbours count as static):
:data:`NEIGHBOUR_PROBABILITIES`, part of the format.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SymbolChecksum
from layercast.shared.codec.latent_codecs.context import anchor_mask

#: P(moving) of a non-anchor with 0..4 moving anchor neighbours, in 1/65536.
NEIGHBOUR_PROBABILITIES = (1200, 16000, 40000, 56000, 63000)
#: The encoder's default threshold on the mean |y_t − ŷ_{t-1}| over channels.
DEFAULT_SKIP_THRESHOLD = 0.3
#: The default per task of the base where another measured better at equal accuracy (docs/video.md).
TASK_SKIP_THRESHOLDS = {"depth": 0.4}


def default_skip_threshold(task: str | None) -> float:
    """The encoder's skip threshold for a base layer of ``task``."""
    return TASK_SKIP_THRESHOLDS.get(task or "", DEFAULT_SKIP_THRESHOLD)


def binary_tables(probabilities: tuple[int, ...]) -> CdfTables:
    """Binary models of P(1) in 1/65536: symbols 0 and 1, then the coder's escape (never coded) with
    the least mass."""
    rows = [[0, 65535 - p, 65535, 65536] for p in probabilities]
    return CdfTables.from_arrays(np.array(rows), np.full(len(rows), 4), np.zeros(len(rows)))


NEIGHBOUR_TABLES = binary_tables(NEIGHBOUR_PROBABILITIES)


def _anchor_tables(k: int, n: int) -> CdfTables:
    return _binary_table(min(max(round(65536 * k / n), 1), 65534))


@functools.lru_cache(maxsize=1024)
def _binary_table(p: int) -> CdfTables:
    """The anchors' model of P(moving) = p / 65536, kept with its coder tables (built once)."""
    return binary_tables((p,))


@functools.lru_cache(maxsize=16)
def _anchors(h: int, w: int) -> np.ndarray:
    """The (h, w) checkerboard anchors (read only: shared between calls)."""
    anchors = anchor_mask(h, w, torch.device("cpu")).numpy()
    anchors.flags.writeable = False
    return anchors


@torch.no_grad()
def motion_mask(y: Tensor, reference: Tensor, threshold: float) -> Tensor:
    """(B, 1, H, W) bool: True where position (i, j) is coded (see the module docstring)."""
    if threshold <= 0:
        return torch.ones_like(y[:, :1], dtype=torch.bool)
    return (y - reference.to(y.dtype)).abs().mean(dim=1, keepdim=True) >= threshold


@torch.no_grad()
def prune_side(z_sym: Tensor, moving: Tensor) -> Tensor:
    """ẑ's symbols with 0 (ẑ at its median, the cheapest symbol) at every hyper position whose
    4×4 block of latent positions has no moving one: a P-frame reads h_s(ẑ) at its moving
    positions only, so ẑ elsewhere would buy nothing but bytes (the encoder's choice, see above)."""
    b, _, hz, wz = z_sym.shape
    m = moving.float()
    m = F.pad(m, (0, 4 * wz - m.shape[3], 0, 4 * hz - m.shape[2]))
    need = F.max_pool2d(m, 4) > 0
    return torch.where(need, z_sym, torch.zeros_like(z_sym))


def _contexts(mask: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Model index of each non-anchor position: its number of moving anchor neighbours."""
    m = np.pad(mask & anchors, 1).astype(np.int32)
    n = m[:-2, 1:-1] + m[2:, 1:-1] + m[1:-1, :-2] + m[1:-1, 2:]
    return n[~anchors]


def encode_mask(mask: Tensor, encoder: Encoder, checksum: SymbolChecksum) -> None:
    """Code one image's (H, W) mask into its stream."""
    m = mask.reshape(mask.shape[-2:]).cpu().numpy().astype(bool)
    anchors = _anchors(*m.shape)
    sym = m[anchors].astype(np.int32)
    n, k = sym.size, int(sym.sum())
    encoder.encode_uniform(k, n + 1)
    checksum.update(np.array([k], dtype=np.int32))
    if 0 < k < n:
        encoder.encode(sym, np.zeros(n, dtype=np.int32), _anchor_tables(k, n))
    if (~anchors).any():
        sym = m[~anchors].astype(np.int32)
        encoder.encode(sym, _contexts(m, anchors), NEIGHBOUR_TABLES)
        checksum.update(sym)


def decode_mask(shape: tuple[int, int], decoder: Decoder, checksum: SymbolChecksum) -> Tensor:
    """Decode one image's mask of ``shape`` = (H, W); returns (1, 1, H, W) bool."""
    anchors = _anchors(*shape)
    m = np.zeros(shape, dtype=bool)
    n = int(anchors.sum())
    k = decoder.decode_uniform(n + 1)
    checksum.update(np.array([k], dtype=np.int32))
    if 0 < k < n:
        m[anchors] = decoder.decode(np.zeros(n, dtype=np.int32), _anchor_tables(k, n)) != 0
    else:
        m[anchors] = k == n
    if (~anchors).any():
        sym = decoder.decode(_contexts(m, anchors), NEIGHBOUR_TABLES)
        checksum.update(sym)
        m[~anchors] = sym != 0
    return torch.from_numpy(m)[None, None]
