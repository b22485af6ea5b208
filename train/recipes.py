"""Recipes: the exact sequence of runs that regenerates the shipped models.

``layercast train ship --data DIR --data-large DIR10K --out runs/ship`` runs each stage unless its
exported file already exists (``--data-footage DIR`` adds the detection stages on camera footage) (so an interrupted run resumes where it stopped,
each stage also resuming from its own state.pt), then copies the results into
the package's model zoo and writes ``shared/zoo/aliases.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

from layercast.shared.codec.registry import ZOO_DIR
from layercast.train.loop import TrainConfig, train

CROP = (128, 128)
#: Steps per stage and task; a tuple is a chain of warm restarts (stage, stage2, stage3, ...), each a
#: fresh Adam from the weights the stage before exported. What each stage's output scores on the
#: test split, the wall time of each stage and the variants measured and not used:
#: docs/results/training_recipe.json.
#:
#: - ``task``: the clean-image task model on crops; ``base``: the λ_b = 1, β = 0.01 base from it and
#:   ``rec``: its λ_e = 0.01 conditional reconstruction layer, the configurations of the
#:   ``layercast train experiment`` proposal runs.
#: - ``*_more``: the finished task model and base trained on from their weights at ``CONTINUE_LR``.
#: - ``task_tune``, ``task_tune_large``: the clean-image reference (which scores JPEG/WebP/AVIF) on
#:   whole images, then on the larger set, never fewer whole-image steps than the base's task model.
#: - detection ``base_low``: the base at ``LOW_LAMBDA`` on crops; ``base_full_large``: the same on
#:   whole images of the larger set; ``base_lean_large``, ``base_leaner_large``: then with ``LEAN``
#:   and ``LEANER`` weights.
#: - detection ``task_footage``, ``base_footage`` (only with ``data_footage``, the frames of many
#:   fixed training cameras written by ``layercast data footage``): the finished reference and the
#:   finished base, each fine-tuned on that footage with its own settings (whole images; the base
#:   with ``LEANER`` weights), the same steps each; these two ship instead of the still-image ones.
#: - depth ``tune``, ``tune_large``: the task model alone on the frozen codec's decoded output, on
#:   whole images, then on the larger set; ``lean_large``, ``leaner_large``: then the codec and the
#:   task model jointly with ``LEAN`` and ``LEANER`` weights.
STEPS = {
    "detection": {
        "task": 1200,
        "task_more": 4800,
        "task_tune": 4000,
        "task_tune_large": (4000,) * 4 + (8000, 4000, 4000),
        "base": 4000,
        "base_more": 6000,
        "base_low": (3500,) * 7,
        "base_full_large": (4000,) * 4,
        "base_lean_large": (4000,),
        "base_leaner_large": (4000,) * 3,
        "task_footage": (700,),
        "base_footage": (700,),
        "rec": 1500,
    },
    "depth": {
        "task": 1200,
        "task_more": 2400,
        "task_tune": 1500,
        "task_tune_large": (4000,) * 5,
        "base": 800,
        "base_more": 2400,
        "tune": 1500,
        "tune_large": (4000,),
        "lean_large": (4000,),
        "leaner_large": (3000, 4000, 1500),
        "rec": 1500,
    },
}
#: Learning rate of every continuation (its own 10x drop at 80 % of its steps).
CONTINUE_LR = 3e-4
#: λ_b of the detection base's crop restarts (``base_low``): the rate term pulls the rate down
#: while the detector keeps learning.
LOW_LAMBDA = {"detection": 0.25}
#: Lower-rate joint stages: λ_b and β scaled down by the same factor, so the task and preview terms
#: keep their balance and the rate term weighs more.
LEAN = {"detection": {"lmbda": 0.1, "beta": 0.004}, "depth": {"lmbda": 0.2, "beta": 0.002}}
LEANER = {"detection": {"lmbda": 0.05, "beta": 0.002}, "depth": {"lmbda": 0.1, "beta": 0.001}}
#: Whole images (the test images' size) instead of crops in the ``*tune*`` and ``*full*`` stages.
TUNE_CROP = None


def _exported(cfg: TrainConfig) -> Path:
    return cfg.out / ("task.pt" if cfg.kind == "task" else "model.pt")


def _restarts(
    prev: TrainConfig, prefix: str, steps: list[int], **changes: object
) -> list[tuple[str, TrainConfig]]:
    """Warm restarts: each stage ``prev``'s configuration with ``changes``, its own steps, a fresh
    Adam, from the weights the stage before exported. Named prefix, prefix2, prefix3, ..."""
    init = "task_init" if prev.kind == "task" else "init"
    chain: list[tuple[str, TrainConfig]] = []
    for i, n in enumerate(steps):
        name = prefix + (str(i + 1) if i else "")
        cfg = replace(prev, out=prev.out.parent / name, steps=n, **{init: _exported(prev)}, **changes)
        chain.append((name, cfg))
        prev = cfg
    return chain


def _seq(value: int | tuple[int, ...] | None) -> tuple[int, ...]:
    return () if value is None else (value,) if isinstance(value, int) else tuple(value)


def ship_stages(
    data: Path,
    out: Path,
    scale: float = 1.0,
    threads: int | None = 1,
    data_large: Path | None = None,
    data_footage: Path | None = None,
) -> list[tuple[str, TrainConfig, str | None]]:
    """(stage name, config, zoo name or None) in order; ``scale`` multiplies every step count.
    The ``*-large`` stages train on ``data_large`` (default: ``data``); the ``*-footage`` stages
    exist only with ``data_footage`` and train on it."""
    large = data if data_large is None else data_large

    def steps(key: str) -> list[int]:
        if key.endswith("_footage") and data_footage is None:
            return []
        return [max(1, int(k * scale)) for k in _seq(n.get(key))]

    common = {"data": data, "crop": CROP, "batch_size": 8, "ckpt_every": 50, "workers": 0, "threads": threads}
    stages: list[tuple[str, TrainConfig, str | None]] = []
    for task, zoo in (("detection", "det-tiny"), ("depth", "depth-tiny")):
        n = STEPS[task]
        [t_steps] = steps("task")
        t = TrainConfig(kind="task", out=out / f"{task}-task", task=task, steps=t_steps, **common)
        refs = _restarts(t, f"{task}-task-more", steps("task_more"), lr=CONTINUE_LR)
        refs += _restarts(refs[-1][1], f"{task}-task-tune", steps("task_tune"), crop=TUNE_CROP)
        refs += _restarts(refs[-1][1], f"{task}-task-tune-large", steps("task_tune_large"), data=large)
        refs += _restarts(refs[-1][1], f"{task}-task-footage", steps("task_footage"), data=data_footage)
        reference = refs[-1][1]
        [b_steps] = steps("base")
        b = TrainConfig(
            kind="base",
            out=out / f"{task}-base",
            task=task,
            lmbda=1.0,
            beta=0.01,
            steps=b_steps,
            task_init=t.out / "task.pt",
            **common,
        )
        bases = _restarts(b, f"{task}-base-more", steps("base_more"), lr=CONTINUE_LR)
        if task in LOW_LAMBDA:
            bases += _restarts(bases[-1][1], f"{task}-base-low", steps("base_low"), lmbda=LOW_LAMBDA[task])
            bases += _restarts(
                bases[-1][1], f"{task}-base-full-large", steps("base_full_large"), crop=TUNE_CROP, data=large
            )
            bases += _restarts(
                bases[-1][1], f"{task}-base-lean-large", steps("base_lean_large"), **LEAN[task]
            )
            bases += _restarts(
                bases[-1][1], f"{task}-base-leaner-large", steps("base_leaner_large"), **LEANER[task]
            )
            bases += _restarts(bases[-1][1], f"{task}-base-footage", steps("base_footage"), data=data_footage)
        bases += _restarts(bases[-1][1], f"{task}-tune", steps("tune"), freeze_codec=True, crop=TUNE_CROP)
        bases += _restarts(bases[-1][1], f"{task}-tune-large", steps("tune_large"), data=large)
        bases += _restarts(
            bases[-1][1], f"{task}-lean-large", steps("lean_large"), freeze_codec=False, **LEAN[task]
        )
        bases += _restarts(bases[-1][1], f"{task}-leaner-large", steps("leaner_large"), **LEANER[task])
        shipped = bases[-1][1]
        [e_steps] = steps("rec")
        e = TrainConfig(
            kind="enhancement",
            out=out / f"{task}-rec",
            target="reconstruction",
            lmbda=0.01,
            steps=e_steps,
            base=_exported(shipped),
            **common,
        )
        stages += [
            (f"{task}-task", t, None),
            *[(name, cfg, f"tasks/{task}" if cfg is reference else None) for name, cfg in refs],
            (f"{task}-base", b, None),
            *[(name, cfg, zoo if cfg is shipped else None) for name, cfg in bases],
            (f"{task}-rec", e, f"{zoo}-rec"),
        ]
    return stages


def compact_zoo(zoo: Path = ZOO_DIR) -> dict[str, str]:
    """Re-save the zoo's checkpoints with float16 weights in gzip files (about 2.5x smaller);
    enhancement checkpoints are re-pointed at their base's new model id. Returns old → new ids."""
    import torch

    from layercast.shared.codec.base_layer import BaseLayer
    from layercast.shared.codec.checkpoint import load_checkpoint
    from layercast.shared.codec.entropy import with_constant_bounds

    renamed: dict[str, str] = {}
    paths = sorted(zoo.glob("*.pt"))
    ckpts = [load_checkpoint(p) for p in paths]
    for path, ckpt in zip(paths, ckpts, strict=True):
        if ckpt.kind == "base":
            old = ckpt.model_id
            # bases continued from a file written before float16 kept the 1e-9 likelihood floor
            # carry a 0 there: store the architecture's constants
            ckpt.state_dict = with_constant_bounds(BaseLayer(ckpt.config), ckpt.state_dict)
            ckpt.to_half()
            renamed[old] = ckpt.save(path, compact=True)
    for path, ckpt in zip(paths, ckpts, strict=True):
        if ckpt.kind == "enhancement":
            base_id = ckpt.enhancement["base_model_id"]
            ckpt.enhancement = {**ckpt.enhancement, "base_model_id": renamed.get(base_id, base_id)}
            ckpt.to_half()
            ckpt.save(path, compact=True)
        elif ckpt.kind == "temporal":
            base_id = ckpt.temporal["base_model_id"]
            ckpt.temporal = {**ckpt.temporal, "base_model_id": renamed.get(base_id, base_id)}
            ckpt.to_half()
            ckpt.save(path, compact=True)
    for path in sorted((zoo / "tasks").glob("*.pt")):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if any(v.dtype == torch.float32 for v in data["state_dict"].values()):
            data["state_dict"] = {
                k: v.half() if v.dtype == torch.float32 else v for k, v in data["state_dict"].items()
            }
            torch.save(data, path)
    return renamed


def integerize_zoo(zoo: Path = ZOO_DIR) -> dict[str, str]:
    """Give every base of the zoo, its enhancement and its temporal model their integer entropy
    models (``shared/codec/calibrate.py``; kept when a checkpoint has one) and re-save them
    compact (:func:`compact_zoo` first, so that the integer models are derived from the weights
    that ship), the links re-pointed at the bases' new model ids. Returns old → new base ids."""
    from layercast.shared.codec.calibrate import convert
    from layercast.shared.codec.checkpoint import load_checkpoint

    halved = compact_zoo(zoo)
    paths = sorted(zoo.glob("*.pt"))
    ckpts = {p: load_checkpoint(p) for p in paths}
    renamed: dict[str, str] = {}
    for base_path, base in ckpts.items():
        if base.kind != "base":
            continue
        linked = {
            kind: [
                (p, c)
                for p, c in ckpts.items()
                if c.kind == kind and (getattr(c, kind) or {}).get("base_model_id") == base.model_id
            ]
            for kind in ("enhancement", "temporal")
        }
        pairs = [(e, t) for e in linked["enhancement"] or [None] for t in linked["temporal"][:1] or [None]]
        pairs += [(None, t) for t in linked["temporal"][1:]]
        for e, t in pairs:
            new_base, new_e, new_t = convert(base, e[1] if e else None, t[1] if t else None)
            renamed[base.model_id] = new_base.save(base_path, compact=True)
            for old, new in ((e, new_e), (t, new_t)):
                if old is not None and new is not None:
                    new.save(old[0], compact=True)
    return {old: renamed.get(mid, mid) for old, mid in {**{i: i for i in renamed}, **halved}.items()}


#: The P-frame (temporal) model of each shipped base: trained on fixed-camera clips with the base
#: frozen (``layercast train temporal``), after the bases are final, with a dead zone everywhere
#: and no skip. The encoder's skip mode and its dead zone (``encoder.skip_threshold``,
#: ``encoder.deadzone``) are chosen on top of it by measurement (docs/video.md).
TEMPORAL = {
    "steps": 600,
    "cameras": 48,
    "frames": 10,
    "batch": 6,
    "unroll": 3,
    "lr": 5e-4,
    "deadzone": 0.75,
    "skip_threshold": 0.0,
    "threads": 1,
}

#: det-tiny's P model then trains on at camera resolution (512×288 and 640×360 clips) from the
#: model above, with the encoder's default skip threshold and dead zone in the loop.
TEMPORAL_CAMERA = {
    "steps": 300,
    "sizes": ((512, 288), (640, 360)),
    "cameras": 48,
    "frames": 10,
    "batch": 6,
    "unroll": 3,
    "lr": 2e-4,
    "deadzone": 0.6,
    "skip_threshold": 0.3,
    "threads": 1,
    "seed": 1,
}


def ship_temporal(out: Path, scale: float = 1.0, zoo: Path = ZOO_DIR) -> dict[str, float]:
    """Train (or resume) the temporal model of det-tiny and depth-tiny and copy each into the zoo."""
    from layercast.train.temporal import TemporalTrainConfig, train_temporal

    seconds = {}
    for name in ("det-tiny", "depth-tiny"):
        base = str(zoo / f"{name}.pt")
        cfg = TemporalTrainConfig(base=base, out=out / f"{name}-temporal", **TEMPORAL)
        cfg.steps = max(1, round(cfg.steps * scale))
        s = time.time()
        exported = train_temporal(cfg)
        if name == "det-tiny":
            camera = TemporalTrainConfig(
                base=base, out=out / f"{name}-temporal-camera", init=str(exported), **TEMPORAL_CAMERA
            )
            camera.steps = max(1, round(camera.steps * scale))
            exported = train_temporal(camera)
        shutil.copyfile(exported, zoo / f"{name}-temporal.pt")
        seconds[name] = round(time.time() - s, 1)
    return seconds


def run_ship(
    data: Path,
    out: Path,
    scale: float = 1.0,
    zoo: Path = ZOO_DIR,
    data_large: Path | None = None,
    data_footage: Path | None = None,
) -> dict:
    t0 = time.time()
    log: dict = {"stages": {}}
    for name, cfg, zoo_name in ship_stages(
        data, out, scale, data_large=data_large, data_footage=data_footage
    ):
        exported = _exported(cfg)
        s = time.time()
        if not exported.exists():
            train(replace(cfg))
        log["stages"][name] = {"seconds": round(time.time() - s, 1), "exported": str(exported)}
        if zoo_name:
            (zoo / zoo_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(exported, zoo / f"{zoo_name}.pt")
    compact_zoo(zoo)
    log["temporal"] = ship_temporal(out, scale, zoo)
    log["integer"] = integerize_zoo(zoo)
    aliases = {"default": "det-tiny", "detection": "det-tiny", "depth": "depth-tiny"}
    (zoo / "aliases.json").write_text(json.dumps(aliases, indent=2) + "\n")
    log["wall_time_s"] = round(time.time() - t0, 1)
    (out / "ship.json").write_text(json.dumps(log, indent=2))
    return log
