"""The paper's experiment sweep: runs shared between processes through claims, every run
trained once, and the report's table built from real bitstreams of every run."""

from __future__ import annotations

import json
import os
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
