"""The paper's experiments at the scale this machine allows.

``layercast train experiment detection --data DIR --task-init task.pt`` trains,
for β ∈ {0 (baseline), 0.01 (proposal)} and four λ values, a base model; then,
on the λ = 1 bases, a reconstruction enhancement layer conditional on the base
and a standalone one. Each run resumes from its own state; finished runs are
skipped. ``layercast eval`` and ``train/report.py`` turn them into the table.
"""

from __future__ import annotations

from pathlib import Path

from layercast.train.loop import TrainConfig, train

BETAS = (0.0, 0.01)
LAMBDAS = (0.25, 0.5, 1.0, 2.0)


def experiment_runs(
    task: str, data: Path, out: Path, task_init: Path, steps: int = 600, target: str = "reconstruction"
) -> list[TrainConfig]:
    common = {"data": data, "crop": (128, 128), "batch_size": 8, "ckpt_every": 50, "workers": 0, "threads": 1}
    runs = []
    for beta in BETAS:
        for lmbda in LAMBDAS:
            runs.append(
                TrainConfig(
                    kind="base",
                    task=task,
                    beta=beta,
                    lmbda=lmbda,
                    steps=steps,
                    task_init=task_init,
                    out=out / f"base-b{beta:g}-l{lmbda:g}",
                    **common,
                )
            )
    for beta in BETAS:
        base = out / f"base-b{beta:g}-l1" / "model.pt"
        for standalone in (False, True):
            runs.append(
                TrainConfig(
                    kind="enhancement",
                    base=base,
                    target=target,
                    standalone=standalone,
                    lmbda=0.01 if target == "reconstruction" else 1.0,
                    steps=steps,
                    out=out / f"enh-{target}-b{beta:g}-{'standalone' if standalone else 'conditional'}",
                    **common,
                )
            )
    return runs


def run_experiment(task: str, data: Path, out: Path, task_init: Path, steps: int, target: str) -> list[Path]:
    done = []
    for cfg in experiment_runs(task, data, out, task_init, steps, target):
        path = cfg.out / "model.pt"
        if not path.exists():
            train(cfg)
        done.append(path)
    return done
