"""`layercast eval`: rate–accuracy of layercast models and of JPEG/WebP/AVIF, from real bytes.

For each base model: every test image is encoded to real bitstreams, decoded
from those bytes, and the task model scores the result (mAP or disparity RMSE);
the preview (simple synthesis of the base alone) and, when present, the
enhancement reconstruction are scored by PSNR. Baselines run the *same*
task model family, pre-trained on clean images (``task.pt``), on decoded
JPEG/WebP/AVIF images over a quality sweep. bpp = 8·bytes/pixels throughout.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from layercast.shared.errors import ConfigError
from layercast.train import data as tdata
from layercast.train.baselines import Codec, Coded, available_codecs, default_qualities, encode, from_file
from layercast.train.scores import PSNR, DepthRMSE, DetectionMAP, MeanIoU

#: The image codecs every layercast model is compared with.
IMAGE_CODECS = ("jpeg", "webp", "avif")


@dataclass
class RDPoint:
    method: str
    task: str
    bpp: float  # base layer (or the baseline file), real bytes
    accuracy: float  # mAP@[.5:.95] or disparity RMSE
    accuracy_name: str
    preview_psnr: float | None = None
    total_bpp: float | None = None  # base + enhancement
    enhanced_psnr: float | None = None
    enhanced_miou: float | None = None  # segmentation enhancement layers
    extra: dict[str, Any] = field(default_factory=dict)


def _uint8(image: torch.Tensor) -> np.ndarray:
    return image.mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


class _Scorer:
    def __init__(self, task: str, focal_baseline: float | None) -> None:
        self.task = task
        self.metric = DetectionMAP() if task == "detection" else DepthRMSE(focal_baseline=focal_baseline)

    def update(self, result, target) -> None:
        if self.task == "detection":
            self.metric.update([result], [target])
        else:
            self.metric.update([torch.from_numpy(result.depth)], [target["depth"]])

    def compute(self) -> tuple[str, float]:
        out = self.metric.compute()
        return (
            ("mAP", float(out["map"]))
            if self.task == "detection"
            else ("disparity_rmse", float(out["disparity_rmse"]))
        )


def _dataset(task: str, root: Path, limit: int | None):
    ds = tdata.make_dataset(task, root, "val")
    n = len(ds) if limit is None else min(limit, len(ds))
    return ds, n


def _focal_baseline(task: str, ds) -> float | None:
    if task != "depth":
        return None
    from layercast.train.loop import task_kwargs

    return task_kwargs("depth", ds)["focal_baseline"]


def evaluate_codec(codec, name: str, root: Path, limit: int | None = None) -> RDPoint:
    task = codec.task
    ds, n = _dataset(task, root, limit)
    scorer = _Scorer(task, _focal_baseline(task, ds))
    prev, rec, seg = PSNR(), PSNR(), MeanIoU()
    enh_target = codec.enhancement.target if codec.enhancement is not None else None
    base_bytes = enh_bytes = pixels = 0
    for i in tqdm(range(n), desc=f"eval {name}", leave=False):
        image, target = ds[i]
        img = _uint8(image)
        frame = codec.encode(img)
        dec = codec.decode_base(frame.base)  # from the bytes alone
        [result] = codec.infer([dec])
        scorer.update(result, target)
        prev.update(codec.preview(dec)[None], img[None])
        base_bytes += len(frame.base)
        pixels += img.shape[0] * img.shape[1]
        if frame.enhancement is not None:
            if enh_target == "segmentation":
                seg.update([codec.decode_enhancement(dec, frame.enhancement).argmax(0)], [target["semantic"]])
            else:
                rec.update(codec.reconstruct(dec, frame.enhancement)[None], img[None])
            enh_bytes += len(frame.enhancement)
    acc_name, acc = scorer.compute()
    has_enh = enh_bytes > 0
    return RDPoint(
        method=name,
        task=task,
        bpp=8 * base_bytes / pixels,
        accuracy=acc,
        accuracy_name=acc_name,
        preview_psnr=prev.compute()["psnr"],
        total_bpp=8 * (base_bytes + enh_bytes) / pixels if has_enh else None,
        enhanced_psnr=rec.compute()["psnr"] if has_enh and enh_target == "reconstruction" else None,
        enhanced_miou=seg.compute()["miou"] if has_enh and enh_target == "segmentation" else None,
        extra={
            "images": n,
            "base_model_id": codec.base_model_id,
            "enhancement_model_id": codec.enhancement_model_id,
        },
    )


def load_task_reference(path: Path):
    from layercast.shared.tasks import get_task_model

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = get_task_model(ckpt["name"], **ckpt["kwargs"])
    model.load_state_dict(
        {k: v.float() if v.dtype == torch.float16 else v for k, v in ckpt["state_dict"].items()}
    )
    return model.eval()


#: Baseline files already made in this run: (image digest, codec, quality) → file bytes. The
#: detection and depth splits hold the same scenes, so each file is encoded once per run.
BaselineFiles = dict[tuple[str, str, int], bytes]


def _baseline_file(files: BaselineFiles, key: str, image: np.ndarray, codec: Codec, q: int) -> Coded:
    data = files.get((key, codec, q))
    if data is None:
        data = files[(key, codec, q)] = encode(image, codec, q)
    return from_file(data, codec, q, image.shape)


def _baseline_result(
    files: BaselineFiles, task_model, key: str, image: np.ndarray, *, codec: Codec, q: int
) -> tuple[Coded, Any]:
    """One test image through a baseline file and the task model (runs on a worker thread)."""
    coded = _baseline_file(files, key, image, codec, q)
    x = torch.from_numpy(coded.decoded).permute(2, 0, 1).float().div(255)[None]
    [result] = task_model.predict(x)  # no_grad inside: grad mode is per thread
    return coded, result


@torch.no_grad()
def evaluate_baselines(
    task_model,
    task: str,
    root: Path,
    limit: int | None = None,
    codecs=None,
    *,
    files: BaselineFiles | None = None,
    workers: int = 2,
) -> list[RDPoint]:
    """The task model on JPEG/WebP/AVIF files of the test split over each codec's quality sweep.

    Each image's file is made (encoded, then decoded from its bytes) and scored by the task model
    on one of ``workers`` threads (Pillow's encoders and torch's kernels release the GIL, so two
    threads keep two cores busy); the metrics are updated here in image order. ``files`` carries
    the files from one task to the next."""
    ds, n = _dataset(task, root, limit)
    fb = _focal_baseline(task, ds)
    items = [(_uint8(image), target) for image, target in (ds[i] for i in range(n))]
    keys = [hashlib.sha1(img.tobytes()).hexdigest() + f"{img.shape}" for img, _ in items]
    files = {} if files is None else files
    points = []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for codec in codecs or available_codecs():
            for q in default_qualities(codec):
                scorer, psnr, nbytes, pixels = _Scorer(task, fb), PSNR(), 0, 0
                scored = pool.map(
                    functools.partial(_baseline_result, files, task_model, codec=codec, q=q),
                    keys,
                    (img for img, _ in items),
                )
                for (img, target), (coded, result) in tqdm(
                    zip(items, scored, strict=True), total=n, desc=f"{task} {codec} q={q}", leave=False
                ):
                    scorer.update(result, target)
                    psnr.update(coded.decoded[None], img[None])
                    nbytes += coded.num_bytes
                    pixels += img.shape[0] * img.shape[1]
                acc_name, acc = scorer.compute()
                points.append(
                    RDPoint(
                        codec,
                        task,
                        8 * nbytes / pixels,
                        acc,
                        acc_name,
                        extra={"quality": q, "psnr": psnr.compute()["psnr"]},
                    )
                )
    return points


@torch.no_grad()
def evaluate_reference(task_model, task: str, root: Path, limit: int | None = None) -> RDPoint:
    """The task model on uncompressed images (upper bound of accuracy)."""
    ds, n = _dataset(task, root, limit)
    scorer = _Scorer(task, _focal_baseline(task, ds))
    for i in range(n):
        image, target = ds[i]
        [result] = task_model.predict(image[None])
        scorer.update(result, target)
    acc_name, acc = scorer.compute()
    return RDPoint("uncompressed", task, 24.0, acc, acc_name)


def bytes_at_equal_accuracy(point: RDPoint, curve: list[RDPoint]) -> float | None:
    """Baseline bpp needed to reach ``point.accuracy``: where its curve, walked from its smallest
    file up, first reaches that accuracy (log-linear interpolation between the two files around
    it). None when the curve never reaches it, or when its smallest file already does (the codec
    would need fewer bytes than its sweep holds). Curves need not be monotonic: a segment along
    which accuracy falls through the target is not a crossing, since its cheaper end is better."""
    sign = 1.0 if point.accuracy_name == "mAP" else -1.0  # compare as "higher is better"
    target = sign * point.accuracy
    pts = sorted(curve, key=lambda p: p.bpp)
    if not pts or sign * pts[0].accuracy >= target:
        return pts[0].bpp if pts and sign * pts[0].accuracy == target else None
    for a, b in zip(pts, pts[1:], strict=False):
        lo, hi = sign * a.accuracy, sign * b.accuracy
        if lo < target <= hi:
            t = (target - lo) / (hi - lo)
            return math.exp(math.log(a.bpp) + t * (math.log(b.bpp) - math.log(a.bpp)))
    return None


def bytes_ratios(point: RDPoint, baselines: list[RDPoint]) -> dict[str, float | None]:
    """Per image codec: the bytes it needs for ``point``'s accuracy as a multiple of ``point``'s
    (None where its sweep in ``baselines`` never reaches that accuracy or is missing)."""
    ratios: dict[str, float | None] = {}
    for codec in IMAGE_CODECS:
        curve = [q for q in baselines if q.method == codec]
        need = bytes_at_equal_accuracy(point, curve) if curve else None
        ratios[codec] = None if need is None else need / point.bpp
    return ratios


def load_baselines(path: Path, images: int) -> list[dict[str, Any]]:
    """JPEG/WebP/AVIF points (and the clean-image reference) from a ``layercast eval`` file
    (``rd_<task>.json``), checked to come from as many test images as the bases here."""
    points = json.loads(path.read_text())
    counted = {p["extra"].get("images") for p in points if p["method"] not in (*IMAGE_CODECS, "uncompressed")}
    if counted != {images}:
        raise ConfigError(
            f"{path} was evaluated on {sorted(c for c in counted if c)} test images, the models here on "
            f"{images}: use the same --limit as the `layercast eval` that wrote it (all images: no --limit)"
        )
    return [p for p in points if p["method"] in (*IMAGE_CODECS, "uncompressed")]


def log_rate_axis(ax) -> None:
    """A log bpp axis labelled with plain numbers (0.15, 0.3, 1) instead of crowded 3×10⁻¹ labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_xlim()
    ticks = [t for t in (0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2, 5, 10, 24) if lo <= t <= hi]
    if len(ticks) >= 2:
        ax.set_xticks(ticks)


def save_points(points: list[RDPoint], path: Path) -> None:
    path.write_text(json.dumps([asdict(p) for p in points], indent=2))


def plot_rd(points: list[RDPoint], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    methods = sorted({p.method for p in points if p.method != "uncompressed"})
    for m in methods:
        pts = sorted((p for p in points if p.method == m), key=lambda p: p.bpp)
        ax.plot(
            [p.bpp for p in pts],
            [p.accuracy for p in pts],
            "o-" if len(pts) > 1 else "*",
            label=m,
            ms=8 if len(pts) == 1 else 4,
        )
    for p in points:
        if p.method == "uncompressed":
            ax.axhline(p.accuracy, color="gray", ls="--", lw=1, label="uncompressed")
    log_rate_axis(ax)
    ax.set_xlabel("bits per pixel (real bytes)")
    ax.set_ylabel(points[0].accuracy_name)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_eval(
    models: list[str],
    root: Path,
    out: Path,
    task_refs: dict[str, Path],
    limit: int | None,
    baselines: bool,
    stored: Sequence[Path] = (),
) -> dict:
    """Evaluate registry models and (optionally) baselines; writes JSON, plots and a summary.

    ``stored``: ``rd_<task>.json`` files of an earlier ``layercast eval`` on the same test images;
    their JPEG/WebP/AVIF points and clean-image reference stand in for evaluating them again, so a
    candidate model is set against the published curves in seconds."""
    from layercast.shared.codec import load_codec

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[RDPoint]] = {}
    for name in models:
        codec = load_codec(name, device="cpu")
        by_task.setdefault(codec.task, []).append(evaluate_codec(codec, name, root, limit))
    curves: dict[str, Path] = {}
    for path in stored:
        tasks = {p["task"] for p in json.loads(path.read_text())}
        if len(tasks) != 1 or (task := tasks.pop()) not in by_task:
            raise ConfigError(
                f"{path}: holds no curves of the tasks evaluated here ({', '.join(sorted(by_task))})"
            )
        if task in curves or task in task_refs:
            raise ConfigError(f"{task}: give either one --baselines file or --task-ref, not both")
        curves[task] = path
    summary: dict[str, Any] = {"tasks": {}}
    files: BaselineFiles = {}
    for task, pts in by_task.items():
        ref_path = task_refs.get(task)
        if task in curves:
            pts.extend(RDPoint(**p) for p in load_baselines(curves[task], pts[0].extra["images"]))
        elif ref_path and ref_path.exists():
            ref_model = load_task_reference(ref_path)
            pts.append(evaluate_reference(ref_model, task, root, limit))
            if baselines:
                pts.extend(evaluate_baselines(ref_model, task, root, limit, files=files))
        save_points(pts, out / f"rd_{task}.json")
        plot_rd(pts, out / f"rd_{task}.png", f"{task}: rate vs accuracy (synthetic test split)")
        ratios = {
            f"{p.method} vs {codec}": ratio
            for p in pts
            if p.method not in (*IMAGE_CODECS, "uncompressed")
            for codec, ratio in bytes_ratios(p, pts).items()
        }
        summary["tasks"][task] = {"points": [asdict(p) for p in pts], "bytes_ratio_at_equal_accuracy": ratios}
    summary["wall_time_s"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
