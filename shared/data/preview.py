"""Preview montage of synthetic scenes: image with boxes, depth and segmentation side by side."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from layercast.shared.data.labels import CLASS_BY_COCO_ID, LABEL_COLORS
from layercast.shared.data.synth import Scene


def save_preview(path: str | Path, scenes: Sequence[Scene], title: str | None = None) -> Path:
    """Write a PNG with one row per scene: image + boxes, depth (log scale) and labelIds colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = len(scenes)
    h, w = scenes[0].image.shape[:2]
    fig, axes = plt.subplots(
        n, 3, figsize=(3 * 3.2, n * 3.2 * h / w + (0.4 if title else 0.1)), squeeze=False
    )
    for row, scene in zip(axes, scenes, strict=True):
        row[0].imshow(scene.image)
        for (x0, y0, x1, y1), lab in zip(scene.boxes, scene.labels, strict=True):
            row[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8, ec="yellow"))
            row[0].text(
                x0, y0 - 1, CLASS_BY_COCO_ID[int(lab)].name, fontsize=4.5, color="yellow", va="bottom"
            )
        depth = np.where(scene.depth > 0, np.log10(np.maximum(scene.depth, 1e-3)), np.nan)
        im = row[1].imshow(depth, cmap="magma_r", vmin=0.3, vmax=2.5)
        row[2].imshow(LABEL_COLORS[scene.label_ids])
        for ax in row:
            ax.set_axis_off()
    axes[0][0].set_title("image + boxes", fontsize=8)
    axes[0][1].set_title("depth (log10 m; sky = invalid)", fontsize=8)
    axes[0][2].set_title("Cityscapes labelIds", fontsize=8)
    cbar = fig.colorbar(im, ax=axes[:, 1].tolist(), fraction=0.04, pad=0.01)
    cbar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
