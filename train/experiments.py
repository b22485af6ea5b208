"""The paper's experiments at the scale this machine allows.

``layercast train experiment detection --data DIR --out runs/exp-detection --task-init task.pt``
trains, for β ∈ {0 (baseline), 0.01 (proposal)} and four λ_b values, a base
model; then, on each β's λ_b = 1 base, an enhancement layer for ``--target``
conditional on the base at each λ_e of ``ENH_LAMBDAS`` (six for reconstruction,
four for segmentation), and a standalone one (the same model with the base
conditioning zeroed, the paper's lower bound) at the same λ_e. A standalone
layer never sees the base, so it is trained once and its total rate is counted
on top of either base.

Runs are claimed through lock files, so the same command started in two shells
(or ``--jobs 2``) shares the work; each run resumes from its own state and
finished runs are skipped, so an interrupted sweep continues where it stopped.
``layercast report`` turns the runs into the paper's table.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from layercast.train.loop import TrainConfig, train

BETAS = (0.0, 0.01)
LAMBDAS = (0.25, 0.5, 1.0, 2.0)
#: λ_e per enhancement target: 255²·MSE for reconstruction, cross-entropy for segmentation.
#: Reconstruction spans 0.002–0.15: at equal λ_e the β = 0.01 layers sit well above the β = 0 ones in
#: PSNR, and a BD-rate needs the two curves to overlap in quality; four values each left no overlap.
ENH_LAMBDAS = {
    "reconstruction": (0.002, 0.004, 0.01, 0.025, 0.06, 0.15),
    "segmentation": (0.1, 0.3, 1.0, 3.0),
}
#: The base every enhancement layer is trained on (λ_b = 1, one per β).
ENH_BASE_LAMBDA = 1.0


def base_dir(out: Path, beta: float, lmbda: float) -> Path:
    return out / f"base-b{beta:g}-l{lmbda:g}"


def enh_dir(out: Path, target: str, lmbda_e: float, beta: float | None) -> Path:
    """``beta`` None = the standalone layer."""
    mode = "standalone" if beta is None else f"b{beta:g}-conditional"
    return out / f"enh-{target}-{mode}-e{lmbda_e:g}"


def experiment_runs(
    task: str,
    data: Path,
    out: Path,
    task_init: Path,
    steps: int = 600,
    target: str = "reconstruction",
    enh_steps: int | None = None,
) -> list[TrainConfig]:
    common = {"data": data, "crop": (128, 128), "batch_size": 8, "ckpt_every": 50, "workers": 0, "threads": 1}
    runs = [
        TrainConfig(
            kind="base",
            task=task,
            beta=beta,
            lmbda=lmbda,
            steps=steps,
            task_init=task_init,
            out=base_dir(out, beta, lmbda),
            **common,
        )
        for lmbda in (ENH_BASE_LAMBDA, *(x for x in LAMBDAS if x != ENH_BASE_LAMBDA))
        for beta in BETAS
    ]
    for lmbda_e in ENH_LAMBDAS[target]:
        for beta in (*BETAS, None):
            base = base_dir(out, BETAS[-1] if beta is None else beta, ENH_BASE_LAMBDA)
            runs.append(
                TrainConfig(
                    kind="enhancement",
                    base=base / "model.pt",
                    target=target,
                    standalone=beta is None,
                    lmbda=lmbda_e,
                    steps=enh_steps or steps,
                    out=enh_dir(out, target, lmbda_e, beta),
                    **common,
                )
            )
    return runs


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(run: Path) -> bool:
    """Take ``run`` for this process (an O_EXCL lock file beside it); a claim whose
    process has died on this host is taken over."""
    lock = run.parent / f".{run.name}.claim"
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                host, pid = lock.read_text().split()
            except (OSError, ValueError):
                return False  # being written right now
            if host != socket.gethostname() or _alive(int(pid)):
                return False
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return True
    return False


def release(run: Path) -> None:
    (run.parent / f".{run.name}.claim").unlink(missing_ok=True)


def _ready(cfg: TrainConfig) -> bool:
    return cfg.base is None or cfg.base.exists()


def _next_runs(runs: list[TrainConfig], poll: float) -> Iterator[TrainConfig]:
    """Claimed runs whose inputs exist, in order, until every run is done."""
    while True:
        pending = [c for c in runs if not (c.out / "model.pt").exists()]
        if not pending:
            return
        for cfg in pending:
            if _ready(cfg) and claim(cfg.out):
                break
        else:
            time.sleep(poll)  # the rest are claimed by others or wait for a base they train
            continue
        try:
            if not (cfg.out / "model.pt").exists():
                yield cfg
        finally:
            release(cfg.out)


def run_experiment(
    task: str,
    data: Path,
    out: Path,
    task_init: Path,
    steps: int,
    target: str,
    enh_steps: int | None = None,
    poll: float = 5.0,
) -> list[Path]:
    runs = experiment_runs(task, data, out, task_init, steps, target, enh_steps)
    for cfg in _next_runs(runs, poll):
        train(cfg)
    return [c.out / "model.pt" for c in runs]
