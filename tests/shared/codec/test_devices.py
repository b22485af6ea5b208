"""A stream made on one device decodes to the same latent on another (CUDA ↔ CPU).

The entropy parameters are integer networks (exact on every device), so the symbols and ŷ agree;
the transforms may differ in rounding, which changes nothing decoded. The tests marked ``gpu`` need
a CUDA device and skip without one; the CPU ↔ CPU case runs the same check everywhere."""

from __future__ import annotations

import pytest
import torch

from layercast.shared.codec import load_codec
from layercast.shared.codec.video import VideoEncoder
from layercast.shared.data.synth import SyntheticCamera


def _streams_agree_across(enc_device: str, dec_device: str) -> None:
    enc = load_codec("det-tiny", device=enc_device, runtime="torch")
    dec = load_codec("det-tiny", device=dec_device, runtime="torch")
    cam = SyntheticCamera(4, 128, 128, 10.0)  # both P-frames code moving positions (3 and 5 of 64)
    video = VideoEncoder(enc, intra_period=3)
    ref = None
    for i in range(4):  # intra, two P-frames, intra
        frame = video.encode(cam.frame(i).image)
        mine, theirs = enc.decode_base(frame.base, reference=ref), dec.decode_base(frame.base, reference=ref)
        assert torch.equal(mine.y_hat.cpu(), theirs.y_hat.cpu()), i
        ref = theirs
        if frame.enhancement is not None:
            a = enc.decode_enhancement(mine, frame.enhancement)
            b = dec.decode_enhancement(theirs, frame.enhancement)
            assert torch.allclose(a.cpu().float(), b.cpu().float(), atol=1e-3), i


def test_streams_agree_across_two_cpu_codecs():
    _streams_agree_across("cpu", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize(("enc_device", "dec_device"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_streams_agree_between_cuda_and_cpu(enc_device, dec_device):
    _streams_agree_across(enc_device, dec_device)
