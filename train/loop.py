"""`layercast train`: one loop for task pre-training, base and enhancement training.

Resumable (``<out>/state.pt`` every ``ckpt_every`` steps), a tqdm progress bar,
``<out>/metrics.csv`` for plotting, and at the end a registry checkpoint
``<out>/model.pt`` (or ``task.pt`` for task pre-training). Launch under
``torchrun --nproc_per_node N`` for DistributedDataParallel (gloo on CPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from layercast.shared.codec.checkpoint import load_checkpoint
from layercast.shared.codec.factory import (
    base_checkpoint,
    build_base,
    build_enhancement,
    enhancement_checkpoint,
)
from layercast.shared.errors import ConfigError
from layercast.train import data as tdata
from layercast.train.distributed import barrier, device_for, init_distributed, shutdown
from layercast.train.state import MetricsLog, load_state, save_state, write_json
from layercast.train.systems import BaseSystem, EnhancementSystem, TaskSystem

DEFAULT_TASK_MODELS = {
    "detection": "small_detector",
    "depth": "small_depth",
    "segmentation": "small_segmenter",
}


@dataclass
class TrainConfig:
    kind: Literal["task", "base", "enhancement"]
    data: Path
    out: Path
    task: Literal["detection", "depth", "segmentation"] = "detection"
    target: Literal["reconstruction", "segmentation"] = "reconstruction"
    codec: str = "tiny"
    task_model: str | None = None
    task_init: Path | None = None  # task.pt from task pre-training
    base: Path | None = None  # base model.pt for enhancement training
    init: Path | None = None  # base model.pt to continue from (codec and task weights; fresh optimizer)
    standalone: bool = False
    freeze_codec: bool = False  # base only: train the --init checkpoint's task model, codec frozen
    lmbda: float = 1.0
    beta: float = 0.0
    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    lr_aux: float = 1e-3
    lr_decay_at: float = 0.8  # fraction of steps after which the lr drops 10x
    grad_clip: float = 1.0
    workers: int = 2
    seed: int = 0
    log_every: int = 10
    ckpt_every: int = 200
    device: str = "auto"
    crop: tuple[int, int] | None = None  # (height, width) random training crops; None = whole images
    hflip: bool = True  # random left-right flips of the training images (crops or whole images)
    threads: int | None = None  # torch intra-op threads (None = torch's default)
    extra: dict = field(default_factory=dict)


def task_kwargs(task: str, dataset) -> dict:
    """Builder arguments a task model needs from its data set (classes, camera)."""
    if task == "detection":
        return {"num_classes": dataset.num_classes - 1}  # class_names[0] is the background
    if task == "depth":
        from layercast.shared.data.cityscapes import read_camera

        paths = dataset.paths(0)
        width = int(__import__("PIL.Image", fromlist=["Image"]).open(paths["image"]).size[0])
        baseline, focal = read_camera(paths["camera"], width)
        return {"focal_baseline": float(baseline * focal)}
    return {}


def _task_model(cfg: TrainConfig, task: str, init: dict | None = None):
    """The task model: fresh, from ``--task-init`` (task.pt), or ``init`` (a base checkpoint's task)."""
    from layercast.shared.tasks import get_task_model

    name = cfg.task_model or DEFAULT_TASK_MODELS[task]
    saved = init
    if saved is None and cfg.task_init:
        saved = torch.load(cfg.task_init, map_location="cpu", weights_only=True)
        if saved["name"] != name:
            raise ConfigError(f"--task-init {cfg.task_init} holds {saved['name']}, not {name}")
    if saved is not None:
        kwargs = saved["kwargs"]
    else:
        kwargs = task_kwargs(task, tdata.make_dataset(task, cfg.data, "train"))
    model = get_task_model(name, **kwargs)
    if saved is not None:
        model.load_state_dict(
            {k: v.float() if v.dtype == torch.float16 else v for k, v in saved["state_dict"].items()}
        )
    return name, kwargs, model


def _build(cfg: TrainConfig):
    """The system to train and a function exporting the finished weights."""
    if cfg.kind == "task":
        name, kwargs, model = _task_model(cfg, cfg.task)
        system = TaskSystem(model)

        def export(metrics: dict) -> Path:
            path = cfg.out / "task.pt"
            torch.save(
                {"name": name, "kwargs": kwargs, "state_dict": model.state_dict(), "metrics": metrics}, path
            )
            return path

        return system, export, cfg.task

    if cfg.kind == "base":
        if cfg.freeze_codec and not cfg.init:
            raise ConfigError("--freeze-codec trains the task model of a finished base: it needs --init")
        init = _init_checkpoint(cfg) if cfg.init else None  # continue a finished base (--init)
        name, kwargs, model = _task_model(cfg, cfg.task, init.task if init else None)
        base = build_base(cfg.codec, seed=cfg.seed)
        if init:
            from layercast.shared.codec.entropy import load_weights

            load_weights(base, init.state_dict)
        system = BaseSystem(base, model, lmbda=cfg.lmbda, beta=cfg.beta, freeze_codec=cfg.freeze_codec)

        def export(metrics: dict) -> Path:
            task = {"name": name, "kind": cfg.task, "kwargs": kwargs}
            if cfg.task == "detection":  # index = label; [0] is the background
                task["class_names"] = list(tdata.make_dataset("detection", cfg.data, "train").class_names)
            ckpt = base_checkpoint(base.cpu(), model.cpu(), task, training=_recipe(cfg), metrics=metrics)
            path = cfg.out / "model.pt"
            ckpt.save(path)
            return path

        return system, export, cfg.task

    if cfg.base is None:
        raise ConfigError("enhancement training needs --base (a base model checkpoint)")
    base_ckpt = load_checkpoint(cfg.base)
    from layercast.shared.codec.base_layer import BaseLayer
    from layercast.shared.codec.entropy import load_weights

    base = BaseLayer(base_ckpt.config)
    load_weights(base, base_ckpt.state_dict)
    enh = build_enhancement(cfg.codec, base.config.latent_channels, cfg.target, cfg.standalone, seed=cfg.seed)
    system = EnhancementSystem(base, enh, lmbda=cfg.lmbda)

    def export(metrics: dict) -> Path:
        ckpt = enhancement_checkpoint(enh.cpu(), base_ckpt.model_id, training=_recipe(cfg), metrics=metrics)
        path = cfg.out / "model.pt"
        ckpt.save(path)
        return path

    data_task = "segmentation" if cfg.target == "segmentation" else "reconstruction"
    return system, export, data_task


def _init_checkpoint(cfg: TrainConfig):
    """The base checkpoint named by ``--init``: its codec and task weights start the run, with a
    fresh optimizer and lr schedule. Refused unless it is a base of this task, task model and codec."""
    task_name = cfg.task_model or DEFAULT_TASK_MODELS[cfg.task]
    ckpt = load_checkpoint(cfg.init)
    task = ckpt.task or {}
    if ckpt.kind != "base" or task.get("kind") != cfg.task or task.get("name") != task_name:
        what = f"{task.get('kind')}/{task.get('name')}" if ckpt.kind == "base" else "another base"
        raise ConfigError(
            f"--init {cfg.init} is a {ckpt.kind} model for {what}, not a {cfg.task} base with {task_name}"
        )
    if ckpt.config.name != cfg.codec:
        raise ConfigError(f"--init {cfg.init} has codec {ckpt.config.name!r}, not {cfg.codec!r}")
    return ckpt


def _recipe(cfg: TrainConfig) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}


def _optimizer(cfg: TrainConfig, system: torch.nn.Module) -> torch.optim.Optimizer:
    params = [(n, p) for n, p in system.named_parameters() if p.requires_grad]
    main = [p for n, p in params if not n.endswith("quantiles")]
    aux = [p for n, p in params if n.endswith("quantiles")]
    groups = [{"params": main, "lr": cfg.lr}]
    if aux:
        groups.append({"params": aux, "lr": cfg.lr_aux})
    return torch.optim.Adam(groups)


def train(cfg: TrainConfig) -> Path | None:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from layercast.shared.device import select_device

    info = init_distributed(select_device(cfg.device))
    device = device_for(info, cfg.device)
    cfg.out.mkdir(parents=True, exist_ok=True)
    system, export, data_task = _build(cfg)
    system.to(device)
    opt = _optimizer(cfg, system)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=[int(cfg.steps * cfg.lr_decay_at)], gamma=0.1
    )
    state_path = cfg.out / "state.pt"
    step = 0
    if state_path.exists():
        step, _ = load_state(state_path, {"system": system}, {"opt": opt, "sched": sched})
    model = DistributedDataParallel(system) if info.enabled else system
    dataset = tdata.make_dataset(data_task, cfg.data, "train", crop=cfg.crop, hflip=cfg.hflip)
    loader = tdata.make_loader(
        dataset, cfg.batch_size, shuffle=True, workers=cfg.workers, dist_info=info, seed=cfg.seed
    )
    log = MetricsLog(cfg.out / "metrics.csv") if info.is_main else None
    model.train()
    bar = tqdm(
        total=cfg.steps, initial=step, desc=f"train {cfg.kind}", disable=not info.is_main, dynamic_ncols=True
    )
    running: dict[str, float] = {}
    t0 = time.time()
    batches = tdata.forever(loader)
    while step < cfg.steps:
        images, targets = next(batches)
        images = images.to(device)
        targets = _to_device(
            tdata.stack_targets(cfg.task if cfg.kind != "enhancement" else data_task, targets), device
        )
        losses = model(images, targets)
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(
                [p for g in opt.param_groups[:1] for p in g["params"]], cfg.grad_clip
            )
        opt.step()
        sched.step()
        step += 1
        vals = {k: float(v.detach()) for k, v in losses.items()}
        if not all(math.isfinite(v) for v in vals.values()):
            raise RuntimeError(f"non-finite loss at step {step}: {vals}")
        for k, v in vals.items():
            running[k] = 0.9 * running.get(k, v) + 0.1 * v
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps:
            bar.set_postfix(
                {
                    k: f"{v:.4g}"
                    for k, v in running.items()
                    if k in ("loss", "bpp", "task", "psnr", "distortion")
                }
            )
            if log:
                log.write(
                    {"step": step, "time_s": round(time.time() - t0, 2), "lr": sched.get_last_lr()[0], **vals}
                )
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            if info.is_main:
                save_state(
                    state_path,
                    step,
                    {"system": system},
                    {"opt": opt, "sched": sched},
                    {"config": _recipe(cfg)},
                )
            barrier(info)
    bar.close()
    path = None
    if info.is_main:
        summary = {"steps": step, "final": running, "wall_time_s_this_run": round(time.time() - t0, 1)}
        path = export(summary)
        write_json(cfg.out / "summary.json", {"config": _recipe(cfg), **summary, "exported": str(path)})
    barrier(info)
    shutdown(info)
    return path


def _to_device(t, device):
    if isinstance(t, torch.Tensor):
        return t.to(device)
    if isinstance(t, list):
        return [_to_device(v, device) for v in t]
    if isinstance(t, dict):
        return {k: _to_device(v, device) for k, v in t.items()}
    return t
