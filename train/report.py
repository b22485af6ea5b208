"""`layercast eval experiment`: the paper's table from our experiment runs, real bytes only.

Reads the runs made by ``layercast train experiment`` (base models for β ∈
{0, 0.01} × four λ; reconstruction enhancement conditional and standalone on
the λ = 1 bases), evaluates each from real bitstreams on the test split and
writes ``table.json``, ``rd_base.png``, ``rd_preview.png`` and a markdown table.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from layercast.train.bdrate import BDError, bd_rate
from layercast.train.evaluate import RDPoint, evaluate_codec

PAPER = {
    "detection": {"base_bd_rate": "+1.3 %", "preview_psnr": "17.23 dB", "enh_vs_baseline": "−10 %"},
    "depth": {"base_bd_rate": "+75 %", "preview_psnr": "30.45 dB", "enh_vs_baseline": "−22 %"},
}


def _codec(base: Path, enh: Path | None = None):
    from layercast.shared.codec.api import ScalableCodec
    from layercast.shared.codec.checkpoint import load_checkpoint

    return ScalableCodec(load_checkpoint(base), load_checkpoint(enh) if enh else None, device="cpu")


def evaluate_experiment(exp: Path, data: Path, limit: int | None) -> dict[str, Any]:
    bases: dict[float, list[RDPoint]] = {}
    for run in sorted(exp.glob("base-b*-l*")):
        if not (run / "model.pt").exists():
            continue
        beta = float(run.name.split("-")[1][1:])
        lmbda = float(run.name.split("-")[2][1:])
        p = evaluate_codec(_codec(run / "model.pt"), run.name, data, limit)
        p.extra["lambda"], p.extra["beta"] = lmbda, beta
        bases.setdefault(beta, []).append(p)
    enh: dict[str, RDPoint] = {}
    for run in sorted(exp.glob("enh-*")):
        if not (run / "model.pt").exists():
            continue
        from layercast.shared.codec.checkpoint import load_checkpoint

        base_id = load_checkpoint(run / "model.pt").enhancement["base_model_id"]
        base_path = next(
            b / "model.pt"
            for b in exp.glob("base-b*-l1")
            if load_checkpoint(b / "model.pt").model_id == base_id
        )
        enh[run.name] = evaluate_codec(_codec(base_path, run / "model.pt"), run.name, data, limit)
    return {
        "bases": {str(k): [asdict(p) for p in v] for k, v in bases.items()},
        "enhancement": {k: asdict(v) for k, v in enh.items()},
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    b0 = sorted(results["bases"].get("0.0", []), key=lambda p: p["bpp"])
    b1 = sorted(results["bases"].get("0.01", []), key=lambda p: p["bpp"])
    out: dict[str, Any] = {}
    try:
        out["base_bd_rate_percent"] = bd_rate(
            [p["bpp"] for p in b0],
            [p["accuracy"] for p in b0],
            [p["bpp"] for p in b1],
            [p["accuracy"] for p in b1],
        )
    except BDError as exc:
        out["base_bd_rate_percent"] = None
        out["base_bd_rate_error"] = str(exc)
    mean = lambda ps, k: sum(p[k] for p in ps) / len(ps) if ps else None  # noqa: E731
    out["preview_psnr_beta0"] = mean(b0, "preview_psnr")
    out["preview_psnr_beta001"] = mean(b1, "preview_psnr")
    e = results["enhancement"]
    for beta in ("0", "0.01"):
        for mode in ("conditional", "standalone"):
            p = e.get(f"enh-reconstruction-b{beta}-{mode}")
            if p:
                out[f"enh_b{beta}_{mode}"] = {"total_bpp": p["total_bpp"], "psnr": p["enhanced_psnr"]}
    return out


def plot(results: dict[str, Any], out: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for beta, pts in sorted(results["bases"].items()):
        pts = sorted(pts, key=lambda p: p["bpp"])
        label = f"β = {float(beta):g}" + (" (baseline)" if float(beta) == 0 else " (proposal)")
        axes[0].plot([p["bpp"] for p in pts], [p["accuracy"] for p in pts], "o-", label=label)
        axes[1].plot([p["bpp"] for p in pts], [p["preview_psnr"] for p in pts], "o-", label=label)
    axes[0].set_ylabel(pts[0]["accuracy_name"] if pts else "accuracy")
    axes[0].set_title(f"{task} base layer: task rate–accuracy")
    axes[1].set_ylabel("preview PSNR (dB), base alone")
    axes[1].set_title("reconstruction from the base directly")
    for ax in axes:
        ax.set_xlabel("base bpp (real bytes)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def markdown(task: str, s: dict[str, Any]) -> str:
    def f(v, unit=""):
        return "n/a" if v is None else f"{v:+.1f}{unit}" if unit == " %" else f"{v:.2f}{unit}"

    paper = PAPER[task]
    rows = [
        "| measure | paper | ours |",
        "|---|---|---|",
        f"| base-task BD-rate, β = 0.01 vs β = 0 | {paper['base_bd_rate']} | {f(s.get('base_bd_rate_percent'), ' %')} |",
        f"| preview PSNR from the base alone, β = 0.01 (mean over λ) | {paper['preview_psnr']} | {f(s.get('preview_psnr_beta001'), ' dB')} |",
        f"| preview PSNR from the base alone, β = 0 (mean over λ) | (no overlap) | {f(s.get('preview_psnr_beta0'), ' dB')} |",
    ]
    for key, label in (
        ("enh_b0.01_conditional", "β = 0.01, conditional"),
        ("enh_b0.01_standalone", "β = 0.01, standalone"),
        ("enh_b0_conditional", "β = 0, conditional"),
        ("enh_b0_standalone", "β = 0, standalone"),
    ):
        v = s.get(key)
        if v:
            rows.append(
                f"| reconstruction, {label} (λ_b = 1): PSNR at total bpp | — | {v['psnr']:.2f} dB at {v['total_bpp']:.3f} bpp |"
            )
    return "\n".join(rows)


def run_report(exp: Path, data: Path, out: Path, task: str, limit: int | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    results = evaluate_experiment(exp, data, limit)
    summary = summarize(results)
    (out / "table.json").write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    plot(results, out / f"rd_{task}_experiment.png", task)
    (out / f"table_{task}.md").write_text(markdown(task, summary) + "\n")
    return summary
