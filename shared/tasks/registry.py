"""One table of named task-model builders.

Builders are registered with ``@register_task_model("name")`` (a duplicate
name is refused) and built with ``get_task_model(name, **kwargs)``; builders
take keyword-only arguments. The built-in models register themselves when
``layercast.shared.tasks.builtin`` is imported, which the lookup functions do
on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from layercast.shared.errors import UnknownModel
from layercast.shared.tasks.interface import TaskModel
from layercast.shared.tasks.types import TaskName

Builder = Callable[..., TaskModel]
B = TypeVar("B", bound=Builder)


@dataclass(frozen=True)
class TaskModelSpec:
    """A registered builder and the task it solves."""

    name: str
    task: TaskName
    builder: Builder
    description: str


_REGISTRY: dict[str, TaskModelSpec] = {}
_BUILTINS_LOADED = False


def register_task_model(name: str, *, task: TaskName, description: str = "") -> Callable[[B], B]:
    """Decorator registering ``builder`` under ``name``; refuses a duplicate name."""

    def decorate(builder: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"task model {name!r} is already registered")
        doc_lines = (builder.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = TaskModelSpec(
            name, task, builder, description or (doc_lines[0] if doc_lines else "")
        )
        return builder

    return decorate


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("layercast.shared.tasks.builtin")


def list_task_models(task: TaskName | None = None) -> list[str]:
    """Sorted names of the registered task models (optionally of one task)."""
    _load_builtins()
    return sorted(n for n, s in _REGISTRY.items() if task is None or s.task == task)


def task_model_spec(name: str) -> TaskModelSpec:
    """The registration record of ``name``; raises ``UnknownModel``."""
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModel(f"unknown task model {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def get_task_model(name: str, **kwargs: Any) -> TaskModel:
    """Build the task model registered as ``name`` with keyword arguments ``kwargs``."""
    return task_model_spec(name).builder(**kwargs)
