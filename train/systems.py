"""What one training step computes, as modules (so DDP can wrap them).

``TaskSystem``         task model alone on clean images (pre-training, as the
                       paper starts from trained torchvision models)
``BaseSystem``         base layer + task model, trained jointly: L_b; or, with
                       ``freeze_codec``, the task model alone on the frozen
                       codec's x̃ (rounded latents, as the cloud decodes them)
``EnhancementSystem``  enhancement layer on a frozen base: L_e
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from layercast.shared.codec.base_layer import BaseLayer
from layercast.shared.codec.enhancement import EnhancementLayer
from layercast.shared.codec.losses import base_loss, enhancement_loss


def pad_to(x: Tensor, multiple: int) -> Tensor:
    h, w = x.shape[-2:]
    pb, pr = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pr, 0, pb), mode="replicate") if pb or pr else x


def aux_loss(module: nn.Module) -> Tensor:
    """CompressAI's auxiliary loss: fits the hyper-latent's quantiles (used for its CDF tables)."""
    from compressai.entropy_models import EntropyBottleneck

    return sum(m.loss() for m in module.modules() if isinstance(m, EntropyBottleneck))


class TaskSystem(nn.Module):
    def __init__(self, task_model: nn.Module) -> None:
        super().__init__()
        self.task_model = task_model

    def forward(self, x: Tensor, targets: Any) -> dict[str, Tensor]:
        loss = self.task_model.loss(self.task_model(x), targets)
        return {"loss": loss, "task": loss.detach()}


class BaseSystem(nn.Module):
    def __init__(
        self, base: BaseLayer, task_model: nn.Module, *, lmbda: float, beta: float, freeze_codec: bool = False
    ) -> None:
        super().__init__()
        self.base = base.eval().requires_grad_(False) if freeze_codec else base
        self.task_model = task_model
        self.lmbda = lmbda
        self.beta = beta
        self.freeze_codec = freeze_codec

    def train(self, mode: bool = True) -> BaseSystem:
        super().train(mode)
        if self.freeze_codec:
            self.base.eval()  # rounding, not noise: the task model sees what the cloud decodes
        return self

    def forward(self, x: Tensor, targets: Any) -> dict[str, Tensor]:
        h, w = x.shape[-2:]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_codec):
            out = self.base(pad_to(x, self.base.config.pad_multiple))
        x_task = out["x_task"][..., :h, :w]
        task = self.task_model.loss(self.task_model(x_task), targets)
        losses = base_loss(
            out["likelihoods"],
            task,
            out["x_preview"][..., :h, :w],
            x,
            lmbda=self.lmbda,
            beta=self.beta,
            num_pixels=h * w,
        )
        if self.freeze_codec:
            return losses  # the rate and preview terms are constants here
        losses["aux"] = aux_loss(self.base)
        losses["loss"] = losses["loss"] + losses["aux"]
        return losses


class EnhancementSystem(nn.Module):
    def __init__(self, base: BaseLayer, enhancement: EnhancementLayer, *, lmbda: float) -> None:
        super().__init__()
        self.base = base.eval().requires_grad_(False)  # frozen, as in the paper
        self.enhancement = enhancement
        self.lmbda = lmbda

    def train(self, mode: bool = True) -> EnhancementSystem:
        super().train(mode)
        self.base.eval()
        return self

    def forward(self, x: Tensor, targets: Any) -> dict[str, Tensor]:
        h, w = x.shape[-2:]
        xp = pad_to(x, self.base.config.pad_multiple)
        with torch.no_grad():
            y_hat_base = self.base.latent_codec(self.base.g_a(xp))["y_hat"]
        out = self.enhancement(xp, y_hat_base)
        kind = self.enhancement.target
        target = x if kind == "reconstruction" else targets
        losses = enhancement_loss(
            out["likelihoods"],
            out["x_hat"][..., :h, :w],
            target,
            kind=kind,
            lmbda=self.lmbda,
            num_pixels=h * w,
        )
        losses["aux"] = aux_loss(self.enhancement)
        losses["loss"] = losses["loss"] + losses["aux"]
        return losses
