"""Cross-machine determinism: a bitstream decodes to the same symbols under a different
thread count, batch composition and process (the entropy parameters are integer networks); a
divergent decoder is caught by the symbol CRC (never silent garbage)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from layercast.shared.codec.entropy import MEAN_GRID
from layercast.shared.codec.intnet import compute_dtype
from layercast.shared.codec.intparams import grid
from layercast.shared.errors import DecodeMismatch
from tests.conftest import make_untrained_codec, smooth_image

ROOT = Path(__file__).resolve().parents[3]

DECODER = r"""
import hashlib, json, sys, torch
sys.path.insert(0, ROOT)
from tests.conftest import make_untrained_codec
codec = make_untrained_codec()
datas = [open(p, "rb").read() for p in sys.argv[1:]]
runs = {}
for threads, batched in [(1, False), (1, True), (2, True)]:
    torch.set_num_threads(threads)
    decs = codec.decode_base_batch(datas) if batched else [codec.decode_base(d) for d in datas]
    runs[f"threads={threads} batched={batched}"] = [
        hashlib.sha256(d.y_hat.double().cpu().numpy().tobytes()).hexdigest() for d in decs
    ]
print(json.dumps(runs))
"""


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.double().cpu().numpy().tobytes()).hexdigest()


def test_decode_identical_across_threads_batches_and_processes(tmp_path):
    rng = np.random.default_rng(3)
    torch.set_num_threads(2)
    codec = make_untrained_codec()
    images = [smooth_image(rng, 96, 160) for _ in range(8)]
    frames = codec.encode_batch(images)  # encoded as a batch of 8 with 2 threads
    expected = [_digest(codec.decode_base(f.base).y_hat) for f in frames]
    paths = []
    for i, f in enumerate(frames):
        p = tmp_path / f"{i}.lcb"
        p.write_bytes(f.base)
        paths.append(str(p))
    code = DECODER.replace("ROOT", repr(str(ROOT)))
    out = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(runs) == 3
    for name, digests in runs.items():
        assert digests == expected, name


def test_integer_parameters_are_the_same_computed_in_float64():
    """The integer networks' products are exact: run in float64 instead of float32 they give the
    same symbols and the same ŷ, bit for bit (intra, enhancement alike)."""
    rng = np.random.default_rng(4)
    codec = make_untrained_codec()
    frames = [codec.encode(smooth_image(rng, 128, 128)) for _ in range(3)]
    for f in frames:
        dec = codec.decode_base(f.base)
        with compute_dtype(torch.float64):
            dec64 = codec.decode_base(f.base)
            enh64 = codec.decode_enhancement(dec64, f.enhancement)
        assert dec.y_hat.dtype == torch.float32
        assert torch.equal(dec.y_hat, dec64.y_hat)
        assert torch.equal(dec.y_hat, f.decoded.y_hat)
        assert torch.equal(codec.decode_enhancement(dec, f.enhancement), enh64)
        assert torch.equal(grid(dec.y_hat).float() * MEAN_GRID, dec.y_hat)  # on the 2⁻⁸ grid


def test_symbol_checksum_catches_divergent_decoder():
    """Perturb the decoder's entropy parameters slightly: the decode must fail loudly."""
    rng = np.random.default_rng(5)
    enc = make_untrained_codec()
    dec = make_untrained_codec()
    head = dec.base.latent_codec.integer.params[0].layers[-1].lin
    head.bias = (
        head.bias + head.acc_max // 50
    )  # shifts the first group's means and scales on the decoder side only
    f = enc.encode(smooth_image(rng, 128, 128))
    try:
        dec.decode_base(f.base)
    except DecodeMismatch as exc:
        assert "symbol CRC" in str(exc)
    else:
        raise AssertionError("a divergent decoder produced an image instead of DecodeMismatch")
