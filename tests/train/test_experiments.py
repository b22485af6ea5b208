"""The paper's experiment sweep: runs shared between processes through claims, every run
trained once, and the report's table built from real bitstreams of every run."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from layercast.shared.codec.registry import ZOO_DIR
from layercast.shared.data.writers import generate
from layercast.train.experiments import BETAS, ENH_LAMBDAS, LAMBDAS, claim, experiment_runs, release
from layercast.train.report import run_report


def test_a_run_is_claimed_once_and_a_dead_claim_is_taken_over(tmp_path):
    run = tmp_path / "base-b0-l1"
    assert claim(run)
    assert not claim(run)  # this (live) process holds it
    release(run)
    assert claim(run)
    release(run)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (tmp_path / ".base-b0-l1.claim").write_text(f"{socket.gethostname()} {int(dead.stdout)}")
    assert claim(run)  # its process is gone
    release(run)
    (tmp_path / ".base-b0-l1.claim").write_text(f"some-other-host {os.getpid()}")
    assert not claim(run)  # another machine's claim is never second-guessed


def test_sweep_has_four_lambdas_per_beta_and_enhancement_waits_for_its_base(tmp_path):
    runs = experiment_runs("depth", tmp_path, tmp_path / "exp", tmp_path / "task.pt", 10, "segmentation", 5)
    bases = [r for r in runs if r.kind == "base"]
    enh = [r for r in runs if r.kind == "enhancement"]
    assert sorted((r.beta, r.lmbda) for r in bases) == sorted((b, lm) for b in BETAS for lm in LAMBDAS)
    assert len(enh) == 3 * len(ENH_LAMBDAS["segmentation"]) and all(r.steps == 5 for r in enh)
    # the bases every enhancement layer needs come first in the order
    first_enh = runs.index(enh[0])
    assert {r.base.parent for r in enh} <= {r.out for r in runs[:first_enh]}
    standalone = [r for r in enh if r.standalone]
    assert len(standalone) == len(ENH_LAMBDAS["segmentation"])


@pytest.mark.timeout(600)
def test_two_jobs_train_every_run_once_and_the_report_reads_real_bytes(tmp_path):
    data = tmp_path / "synth"
    generate(data, n_train=8, n_val=2, width=128, height=128, seed=7, progress=False)
    exp = tmp_path / "exp"
    cmd = [sys.executable, "-m", "layercast.cli", "train", "experiment", "depth", "--data", str(data)]
    cmd += ["--out", str(exp), "--task-init", str(ZOO_DIR / "tasks" / "depth.pt"), "--steps", "1"]
    cmd += ["--target", "segmentation", "--jobs", "2"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = experiment_runs("depth", data, exp, ZOO_DIR, 1, "segmentation")
    for r in runs:
        assert (r.out / "model.pt").exists(), r.out
        rows = (r.out / "metrics.csv").read_text().splitlines()
        assert len(rows) == 2, f"{r.out} trained {len(rows) - 1} times"  # header + one step: never twice
    assert not list(exp.glob(".*.claim"))

    s = run_report(exp, data, tmp_path / "report", "depth", limit=2, target="segmentation")
    table = json.loads((tmp_path / "report" / "table_depth_segmentation.json").read_text())
    for beta in ("0", "0.01"):
        assert len(table["results"]["bases"][beta]) == len(LAMBDAS)
    for curve in ("b0-conditional", "b0.01-conditional", "b0-standalone", "b0.01-standalone"):
        assert len(s["curves"][curve]) == len(ENH_LAMBDAS["segmentation"])
        assert all(0 <= miou <= 1 and bpp > 0 for bpp, miou in s["curves"][curve])
    # rates are real bytes: the base's bpp is the container's size
    p = table["results"]["bases"]["0"][0]
    assert p["bpp"] > 0 and p["extra"]["images"] == 2
    # with the weights its loss really used (the folder name may give β per unit of λ_b)
    q = table["results"]["bases"]["0.01"][0]["extra"]
    assert (p["extra"]["trained_beta"], q["trained_beta"], q["trained_lmbda"]) == (0, 0.01, q["lmbda"])
    md = (tmp_path / "report" / "table_depth_segmentation.md").read_text()
    assert "segmentation enhancement BD-rate, β = 0.01 vs β = 0" in md and "−26 %" in md
    assert (tmp_path / "report" / "rd_depth_segmentation_experiment.png").stat().st_size > 10_000

    # against image codecs: a `layercast eval` file of the same two images (evaluations are cached)
    rmse = [p["accuracy"] for p in table["results"]["bases"]["0"]]
    rd = [{**p, "method": "depth-tiny"} for p in table["results"]["bases"]["0"][:1]]
    rd += [
        {"method": "jpeg", "task": "depth", "bpp": bpp, "accuracy": acc, "accuracy_name": "disparity_rmse"}
        for bpp, acc in ((0.5, max(rmse) + 1), (5.0, min(rmse) - 1))
    ]
    (tmp_path / "rd_depth.json").write_text(json.dumps(rd))
    s = run_report(
        exp, data, tmp_path / "report", "depth", 2, "segmentation", baselines=tmp_path / "rd_depth.json"
    )
    assert len(s["baseline_ratios"]) == 2 * len(LAMBDAS)
    assert all(r["jpeg"] is not None and r["jpeg"] > 0 and r["avif"] is None for r in s["baseline_ratios"])
    assert "| JPEG | WebP | AVIF |" in (tmp_path / "report" / "table_depth_segmentation.md").read_text()


def test_the_shipped_models_are_the_experiments_proposal_runs(tmp_path):
    """`layercast train ship` trains the sweep's β = 0.01, λ_b = 1 base and its λ_e = 0.01 conditional
    reconstruction layer (the detection base and both layers for more steps), then trains the task
    reference and the base on from their finished weights, then on whole images: the detection
    base goes on at a lower λ_b, on crops and then on whole images; the depth base's model is tuned
    on the frozen codec, then the whole depth base trains on at a lower λ_b and β. The shipped set
    is the proposal's operating point of the experiment, trained longer."""
    from dataclasses import replace

    from layercast.train.recipes import CONTINUE_LR, LEAN, LEANER, LOW_LAMBDA, STEPS, ship_stages

    data, large, x = tmp_path / "synth", tmp_path / "synth10k", tmp_path / "x"
    stages = ship_stages(data, tmp_path / "ship", data_large=large)
    by_name = {name: cfg for name, cfg, _ in stages}
    zoo = {name: z for name, _, z in stages}
    # the detection base and reference ship from the last stage of their chains
    shipped_base = {
        "detection": _chain(by_name, "detection-base-leaner-large")[-1].out.name,
        "depth": _chain(by_name, "depth-leaner-large")[-1].out.name,
    }
    shipped_ref = {
        "detection": _chain(by_name, "detection-task-tune-large")[-1].out.name,
        "depth": _chain(by_name, "depth-task-tune-large")[-1].out.name,
    }
    for task, model in (("detection", "det-tiny"), ("depth", "depth-tiny")):
        steps = STEPS[task]
        runs = experiment_runs(
            task, data, tmp_path / "exp", tmp_path / "t.pt", steps["base"], "reconstruction", steps["rec"]
        )
        [base] = [r for r in runs if r.kind == "base" and r.beta == 0.01 and r.lmbda == 1.0]
        [rec] = [
            r
            for r in runs
            if r.kind == "enhancement"
            and r.lmbda == 0.01
            and not r.standalone
            and r.base == base.out / "model.pt"
        ]
        task_cfg, task_more = by_name[f"{task}-task"], by_name[f"{task}-task-more"]
        base_cfg, base_more = by_name[f"{task}-base"], by_name[f"{task}-base-more"]
        assert replace(base_cfg, out=x, task_init=x) == replace(base, out=x, task_init=x)
        assert base_cfg.task_init == task_cfg.out / "task.pt"
        # the continuations: same configuration, their own steps and lr, from the finished weights
        assert replace(base_more, out=x, init=None, steps=1, lr=1) == replace(base_cfg, out=x, steps=1, lr=1)
        assert (base_more.init, base_more.lr, base_more.steps) == (
            base_cfg.out / "model.pt",
            CONTINUE_LR,
            steps["base_more"],
        )
        assert (task_more.task_init, task_more.lr) == (task_cfg.out / "task.pt", CONTINUE_LR)
        shipped = by_name[shipped_base[task]]
        # the shipped enhancement layer is trained on the shipped (last) base
        assert by_name[f"{task}-rec"].base == shipped.out / "model.pt"
        assert replace(by_name[f"{task}-rec"], out=x, base=x) == replace(rec, out=x, base=x)
        assert task_cfg.steps == steps["task"] == 1200
        assert (zoo[shipped_ref[task]], zoo[shipped_base[task]], zoo[f"{task}-rec"]) == (
            f"tasks/{task}",
            model,
            f"{model}-rec",
        )
        names = [name for name, _, _ in stages if name.startswith(task)]
        assert [zoo[n] for n in names].count(model) == 1  # exactly one base ships per task
        assert [zoo[n] for n in names].count(f"tasks/{task}") == 1  # and one task reference
        assert zoo[f"{task}-task"] is None and zoo[f"{task}-base"] is None
    for task in ("detection", "depth"):
        _check_whole_image_stages(by_name, zoo, task, x, large)
    # only the *-large stages train on the larger set
    is_large = re.compile(r"-large\d*$").search
    assert {n for n, c in by_name.items() if c.data == large} == {n for n in by_name if is_large(n)}
    assert {c.data for n, c in by_name.items() if not is_large(n)} == {data}
    # detection: warm restarts of the continued base at a lower λ_b (each the same configuration
    # as the first, from the one before), then more of them on whole images
    lows, more = _chain(by_name, "detection-base-low"), by_name["detection-base-more"]
    assert [c.steps for c in lows] == list(STEPS["detection"]["base_low"]) and lows
    _check_restarts(more, lows, x, lmbda=LOW_LAMBDA["detection"])
    fulls = _chain(by_name, "detection-base-full-large")
    _check_restarts(lows[-1], fulls, x, crop=None, data=large)
    # ... and last with both distortion terms scaled down (λ_b and β by the same factor)
    leans = _chain(by_name, "detection-base-lean-large")
    assert [c.steps for c in leans] == list(STEPS["detection"]["base_lean_large"]) and leans
    _check_restarts(fulls[-1], leans, x, **LEAN["detection"])
    leaners = _chain(by_name, "detection-base-leaner-large")
    assert [c.steps for c in leaners] == list(STEPS["detection"]["base_leaner_large"]) and leaners
    _check_restarts(leans[-1], leaners, x, **LEANER["detection"])
    for lean in (LEAN, LEANER):
        assert lean["detection"]["beta"] / lean["detection"]["lmbda"] == pytest.approx(
            0.01 / LOW_LAMBDA["detection"]
        )
    assert LEANER["detection"]["lmbda"] < LEAN["detection"]["lmbda"]
    assert not any(zoo[n] for n, c in by_name.items() if c in [more, *lows, *fulls, *leans])
    assert not _chain(by_name, "detection-tune")
    # depth: tuned straight from the continued base, then trained on jointly (leaner)
    assert not _chain(by_name, "depth-base-low") and not _chain(by_name, "depth-base-full-large")
    assert len(_chain(by_name, "depth-tune")) == 1 and _chain(by_name, "depth-tune-large")
    assert [c.steps for c in _chain(by_name, "depth-lean-large")] == list(STEPS["depth"]["lean_large"])
    assert [c.steps for c in _chain(by_name, "depth-leaner-large")] == list(STEPS["depth"]["leaner_large"])
    assert not _chain(by_name, "detection-lean-large")
    assert STEPS["depth"]["base"] == 800 and STEPS["detection"]["base"] == 4000
    assert STEPS["depth"]["rec"] == STEPS["detection"]["rec"] == 1500


def _chain(by_name, prefix):
    """The stages prefix, prefix2, prefix3, ... that exist, in order."""
    chain, i = [], 1
    while (name := prefix + (str(i) if i > 1 else "")) in by_name:
        chain.append(by_name[name])
        i += 1
    return chain


def _check_restarts(prev, chain, x, **changes):
    """Each stage of ``chain`` is ``prev``'s configuration with ``changes`` and its own steps, from
    the weights of the stage before."""
    from dataclasses import replace

    init = "task_init" if prev.kind == "task" else "init"
    for cur in chain:
        assert getattr(cur, init) == prev.out / ("task.pt" if prev.kind == "task" else "model.pt")
        assert replace(cur, out=x, steps=1, **{init: None}) == replace(
            prev, out=x, steps=1, **{init: None}, **changes
        )
        prev = cur


def _check_whole_image_stages(by_name, zoo, task, x, large):
    """The last base stages train on whole images (jointly, or the task model alone on the frozen
    codec); the clean-image reference gets whole-image steps too, at least as many as the base's
    task model, with the same augmentation."""
    from layercast.train.recipes import LEAN, LEANER

    refs, more = _chain(by_name, f"{task}-task-tune"), by_name[f"{task}-task-more"]
    assert refs and zoo[f"{task}-task-more"] is None
    _check_restarts(more, refs, x, crop=None)
    refs_large = _chain(by_name, f"{task}-task-tune-large")
    _check_restarts(refs[-1], refs_large, x, data=large)
    refs += refs_large
    bases = [c for n, c in by_name.items() if n.startswith(f"{task}-base")]
    tunes = _chain(by_name, f"{task}-tune")  # optional: the task model alone on the frozen codec
    _check_restarts(bases[-1], tunes, x, crop=None, freeze_codec=True)
    tunes_large = _chain(by_name, f"{task}-tune-large")  # ... then on the larger set
    if tunes_large:
        _check_restarts(tunes[-1], tunes_large, x, data=large)
    tunes += tunes_large
    # optional, last: the codec trains again, jointly with the task model, on whole images of the
    # larger set, with both distortion terms scaled down by the same factor (lean), then optionally
    # once more (leaner)
    joint, prev = [], tunes[-1] if tunes else None
    for prefix, weights in (("lean-large", LEAN), ("leaner-large", LEANER)):
        chain = _chain(by_name, f"{task}-{prefix}")
        if chain:
            _check_restarts(prev, chain, x, freeze_codec=False, **weights[task])
            assert weights[task]["beta"] / weights[task]["lmbda"] == pytest.approx(prev.beta / prev.lmbda)
            assert weights[task]["lmbda"] < prev.lmbda
            joint, prev = joint + chain, chain[-1]
    base_whole_image = [c for c in [*bases, *tunes, *joint] if c.crop is None]
    assert base_whole_image  # the shipped base's task model has seen whole images
    # the baselines' task model trains no less on whole images than the base's, on each data set
    for data in {c.data for c in base_whole_image}:
        ref_steps = sum(c.steps for c in refs if c.data == data)
        assert ref_steps >= sum(c.steps for c in base_whole_image if c.data == data)
    assert {c.hflip for c in [*refs, *base_whole_image]} == {True}
