"""The paper's losses, as functions the trainer calls.

Base (de Andrade & Bajić, eq. for L_b; the authors' code scales the
reconstruction term as 255·RMSE)::

    L_b = λ_b · d_b(task) + R(Ŷ_b) + β · 255 · RMSE(x, g_simple(Ŷ_b))

Enhancement::

    L_e = λ_e · d_e + R(Ŷ_e | Ŷ_b)

Rates are in bits per pixel of the (unpadded) input. d_e is 255²·MSE for
reconstruction (CompressAI's convention) and cross-entropy (ignore 255) for
segmentation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def bpp(likelihoods: dict[str, Tensor], num_pixels: int) -> Tensor:
    """Estimated bits per pixel, averaged over the batch."""
    batch = next(iter(likelihoods.values())).shape[0]
    bits = sum(torch.log(lik).sum() for lik in likelihoods.values()) / -math.log(2)
    return bits / (num_pixels * batch)


def rmse_255(x_hat: Tensor, x: Tensor) -> Tensor:
    """Per-image RMSE on the 0–255 scale, averaged over the batch."""
    mse = F.mse_loss(x_hat, x, reduction="none").flatten(1).mean(1)
    return 255.0 * torch.sqrt(mse + 1e-12).mean()


def psnr(x_hat: Tensor, x: Tensor) -> Tensor:
    mse = F.mse_loss(x_hat.clamp(0, 1), x, reduction="none").flatten(1).mean(1)
    return (-10 * torch.log10(mse.clamp_min(1e-10))).mean()


def base_loss(
    likelihoods: dict[str, Tensor],
    task_loss: Tensor,
    x_preview: Tensor,
    x: Tensor,
    *,
    lmbda: float,
    beta: float,
    num_pixels: int,
) -> dict[str, Tensor]:
    rate = bpp(likelihoods, num_pixels)
    rec = rmse_255(x_preview, x)
    loss = lmbda * task_loss + rate + beta * rec
    return {
        "loss": loss,
        "bpp": rate,
        "task": task_loss.detach(),
        "rmse": rec.detach(),
        "psnr": psnr(x_preview, x).detach(),
    }


def enhancement_loss(
    likelihoods: dict[str, Tensor], x_hat: Tensor, target: Tensor, *, kind: str, lmbda: float, num_pixels: int
) -> dict[str, Tensor]:
    rate = bpp(likelihoods, num_pixels)
    if kind == "reconstruction":
        distortion = 255.0**2 * F.mse_loss(x_hat, target)
        extra = {"psnr": psnr(x_hat, target).detach()}
    elif kind == "segmentation":
        distortion = F.cross_entropy(x_hat, target, ignore_index=255)
        extra = {}
    else:
        raise ValueError(f"unknown enhancement target {kind!r}")
    return {"loss": lmbda * distortion + rate, "bpp": rate, "distortion": distortion.detach(), **extra}
