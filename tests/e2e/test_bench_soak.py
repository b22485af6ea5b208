"""`layercast bench soak`: frames are accounted for by id, /proc figures are real, and a short run
against a real `layercast cloud` process loses nothing and reports every figure the issue asks for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from layercast.bench import procstat
from layercast.bench.ledger import SKIPPED, Ledger
from layercast.bench.soak import _ranges, ramp_counts
from tests.e2e.services import ROOT, Model


def test_ledger_counts_loss_by_id_not_by_count() -> None:
    led = Ledger()
    for seq in range(1, 6):
        led.captured("a", seq, 1_000_000 + seq)
    led.captured("b", 1, 2_000_000)
    # a duplicate of frame a/2 must not make up for the missing a/3
    for seq in (1, 2, 2, 4):
        led.result("a", seq, 1_050_000 + seq)
    led.lost("a", 5, "refused by the cloud (INVALID_ARGUMENT)")
    t = led.totals()
    assert (t.captured, t.results, t.duplicates) == (6, 3, 1)
    # a/3 is skipped (a/4 was answered and results come in order), a/5 refused, b/1 still outstanding
    assert t.lost_by_reason == {SKIPPED: 1, "refused by the cloud (INVALID_ARGUMENT)": 1}
    assert (t.lost, t.outstanding, t.oldest_outstanding_us) == (2, 1, 2_000_000)
    assert led.unanswered() == {"a": [3, 5], "b": [1]}
    assert sorted(led.take_latencies()) == [50.0, 50.0, 50.0]
    assert led.take_latencies() == []


def test_ledger_late_result_of_an_abandoned_frame_counts_as_answered() -> None:
    led = Ledger()
    led.captured("a", 1, 0)
    led.lost("a", 1, "abandoned")
    led.result("a", 1, 10)
    t = led.totals()
    assert (t.results, t.lost, t.duplicates, t.unknown) == (1, 0, 0, 0)
    led.result("a", 9, 10)  # never captured in this run
    assert led.totals().unknown == 1


def test_ranges_and_ramp_counts() -> None:
    assert _ranges([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    assert _ranges([]) == ""
    assert list(ramp_counts(40)) == [1, 2, 4, 8, 16, 24, 32, 40]


def test_procstat_sees_a_new_file_descriptor(tmp_path: Path) -> None:
    before = procstat.sample(os.getpid())
    with open(tmp_path / "f", "w"):
        during = procstat.sample(os.getpid())
    assert during.fds == before.fds + 1
    assert before.rss_bytes > 10 << 20 and before.cpu_s > 0


def test_an_untrained_smaller_model_codes_real_bytes_with_the_shipped_task_model(tmp_path: Path) -> None:
    from layercast.bench.codec import _image
    from layercast.bench.untrained import untrained_base
    from layercast.shared.codec import load_codec
    from layercast.shared.codec.registry import default_registry

    path = untrained_base("micro", "det-tiny", tmp_path)
    codec, shipped = load_codec(str(path), device="cpu"), load_codec("det-tiny", device="cpu")
    assert codec.base.config.name == "micro" and codec.base_model_id != shipped.base_model_id
    ref_task = default_registry().load("det-tiny").task
    assert all(
        torch.equal(v, ref_task["state_dict"][k]) for k, v in codec.base_ckpt.task["state_dict"].items()
    )
    frames = [codec.encode(_image(64, 64, seed=i), layers="base").base for i in range(4)]
    assert all(60 < len(f) < 1000 for f in frames), [len(f) for f in frames]  # not all-zero latents
    decoded = codec.decode_base_batch(frames)
    results = codec.infer(decoded)
    assert len(results) == 4 and all(d.header.model_id == codec.base_model_id for d in decoded)


def _run_soak(model: Model, out: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **model.env(),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    }
    cmd = [sys.executable, "-m", "layercast", "bench", "soak", "--model", model.name, "--out", str(out)]
    proc = subprocess.run(
        [*cmd, "--no-progress", "--pool", "2", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=out.parent,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"
    return proc


def test_short_soak_loses_nothing_and_reports_every_figure(model: Model, tmp_path: Path) -> None:
    out = tmp_path / "soak"
    proc = _run_soak(
        model, out, "--cameras", "2", "--fps", "10", "--minutes", "0.08", "--report-every", "2.5", timeout=150
    )
    doc = json.loads((out / "soak.json").read_text())
    s = doc["summary"]
    assert s["frames_captured"] > 50 and s["frames_answered"] == s["frames_captured"]
    assert s["frames_lost"] == 0 and s["lost_by_reason"] == {} and s["lost_sequences"] == {}
    assert s["duplicates"] == 0 and s["out_of_order"] == 0
    assert s["drained"]
    rows = doc["rows"]
    assert len(rows) == 2
    for row in rows:
        assert row["cameras"] == 2
        assert row["captured"] >= row["sent"] >= row["acked"] >= row["results"] > 0
        assert row["lost"] == 0
        assert row["p50_ms"] > 0 and row["p99_ms"] >= row["p50_ms"]
        for who in ("cloud", "load"):
            assert row[who]["rss_mib"] > 10 and row[who]["fds"] > 3 and row[who]["cpu_pct"] >= 0
            assert "rss_growth_pct" in row[who]
    assert rows[0]["cloud"]["rss_growth_pct"] == 0.0  # the first interval is the baseline
    for who in ("cloud", "load"):
        assert {"rss_growth_max_pct", "fds_after_warmup", "fds_end", "fds_max"} <= set(s[who])
    header = (out / "soak.csv").read_text().splitlines()[0].split(",")
    assert {"captured", "sent", "acked", "results", "lost", "p99_ms", "cloud_rss_mib", "cloud_fds"} <= set(
        header
    )
    # what is printed: the per-interval table, the summary and what the cameras really do
    assert "p99 ms" in proc.stdout and "frames without a result (captured - answered)" in proc.stdout
    assert "replay a pool of 2 frames" in proc.stdout and "EdgeLink" in proc.stdout
    assert (out / "soak-cloud.log").exists()


@pytest.mark.slow
def test_short_ramp_reports_the_largest_count_held(model: Model, tmp_path: Path) -> None:
    out = tmp_path / "ramp"
    proc = _run_soak(
        model,
        out,
        *("--ramp", "--fps", "2", "--max-cameras", "2", "--step-seconds", "3", "--step-warmup", "1"),
        timeout=240,
    )
    doc = json.loads((out / "ramp.json").read_text())
    steps = doc["rows"]
    assert [r["cameras"] for r in steps] == [1, 2]
    assert doc["summary"]["largest_cameras_held"] == 2  # 4 frames/s in all is far below one core
    assert all(r["held"] and r["lost"] == 0 for r in steps)
    assert "largest camera count one cloud process held" in proc.stdout
