"""The one interface every task model implements.

::

    images (B,3,H,W) in [0,1] --forward--> raw --postprocess(raw, sizes)--> list[TaskResult]
                                            |
                                            +--loss(raw, targets)--> scalar

``raw`` is whatever the model needs for its loss and decoding (a tensor, a
dict, a small dataclass); only the model itself interprets it. The images may
be the output of the codec's task synthesis transform, so ``forward`` must be
differentiable with respect to them (task models train jointly with the base
codec).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from layercast.shared.tasks.types import TaskName, TaskResult

#: ImageNet statistics expected by torchvision's pretrained backbones.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageNormalize(nn.Module):
    """``(x - mean) / std`` per channel, with the statistics stored as buffers."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.register_buffer(
            "mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class TaskModel(nn.Module, ABC):
    """A machine-task model with a uniform forward / loss / postprocess API."""

    #: The task this model solves.
    task: ClassVar[TaskName]

    @abstractmethod
    def forward(self, images: torch.Tensor) -> Any:
        """Run the network on a float batch (B, 3, H, W) with values in [0, 1]."""

    @abstractmethod
    def loss(self, raw: Any, targets: Any) -> torch.Tensor:
        """Scalar training loss of ``raw`` (from ``forward``) against ``targets``."""

    @abstractmethod
    def postprocess(self, raw: Any, image_sizes: Sequence[tuple[int, int]]) -> list[TaskResult]:
        """Decode ``raw`` into one ``TaskResult`` per image, at the given (H, W) sizes."""

    @torch.no_grad()
    def predict(
        self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[TaskResult]:
        """Inference convenience: eval-mode forward and postprocess (restores the mode)."""
        was_training = self.training
        self.eval()
        try:
            raw = self(images)
            sizes = image_sizes or [tuple(images.shape[-2:])] * images.shape[0]
            return self.postprocess(raw, sizes)
        finally:
            self.train(was_training)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or only those with ``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def check_images(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a float (B, 3, H, W) tensor."""
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"images must be float (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")
