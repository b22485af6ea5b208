"""Task models run by the cloud on decoded base latents, and their result type.

Example::

    from layercast.shared.tasks import get_task_model, list_task_models, TaskResult

    det = get_task_model("small_detector", num_classes=5)
    raw = det(images)  # images: float (B, 3, H, W) in [0, 1]
    loss = det.loss(raw, targets)  # training
    results = det.postprocess(raw, sizes)  # list[TaskResult], one per image
"""

from layercast.shared.tasks.interface import TaskModel
from layercast.shared.tasks.registry import (
    get_task_model,
    list_task_models,
    register_task_model,
    task_model_spec,
)
from layercast.shared.tasks.types import IGNORE_INDEX, DetectionTarget, TaskName, TaskResult

__all__ = [
    "IGNORE_INDEX",
    "DetectionTarget",
    "TaskModel",
    "TaskName",
    "TaskResult",
    "get_task_model",
    "list_task_models",
    "register_task_model",
    "task_model_spec",
]
