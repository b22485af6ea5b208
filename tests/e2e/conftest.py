"""Fixtures of the end-to-end tests: the codec the processes load, the same codec in this
process for offline comparisons, synthetic frames written as PNG folders, and helpers
to compare the service's detections with offline inference."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from layercast.shared.codec import ScalableCodec, load_codec
from layercast.shared.codec.registry import Registry, default_registry
from layercast.shared.data.synth import render_scene
from layercast.shared.errors import UnknownModel
from layercast.shared.rpc import common_pb2
from tests.e2e.services import Model

#: Frame size of the test cameras: multiples of the codec's padding (64), so no pixel is wasted.
WIDTH, HEIGHT = 192, 128


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Offline checks run with one torch thread: on a shared 2-core machine two threads contend
    (OpenMP spin-waits) and run several times slower. Restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """The shipped ``default`` model (or the registry name in LAYERCAST_E2E_MODEL); without one
    (a tree where it has not landed yet), a small untrained codec with a random detector saved
    where LAYERCAST_MODELS points the processes."""
    name = os.environ.get("LAYERCAST_E2E_MODEL", "default")
    default_registry.cache_clear()
    try:
        default_registry().resolve(name)
        return Model(name)
    except UnknownModel:
        if name != "default":
            raise
    from tests.cloud.conftest import make_task_codec

    codec = make_task_codec("detection")
    d = tmp_path_factory.mktemp("models")
    codec.base_ckpt.save(d / "e2e-det.pt")
    codec.enh_ckpt.save(d / "e2e-det-rec.pt")
    return Model("e2e-det", d)


@pytest.fixture(scope="session")
def codec(model: Model) -> ScalableCodec:
    """The processes' codec, loaded here for offline encode / decode / inference."""
    registry = Registry([model.models_dir]) if model.models_dir else default_registry()
    return load_codec(model.name, device="cpu", registry=registry)


@pytest.fixture(scope="session")
def foreign_model(tmp_path_factory: pytest.TempPathFactory) -> Model:
    """A second codec the cloud does not have (another base model id)."""
    from tests.cloud.conftest import make_task_codec

    other = make_task_codec("detection", seed=11)
    d = tmp_path_factory.mktemp("foreign-models")
    other.base_ckpt.save(d / "e2e-foreign.pt")
    return Model("e2e-foreign", d)


def scene_seed(camera: int, index: int) -> int:
    return 7919 * (camera + 1) + index


def camera_images(camera: int, n: int) -> list[np.ndarray]:
    """The ``n`` frames of test camera ``camera`` (deterministic synthetic street scenes)."""
    return [render_scene(scene_seed(camera, i), WIDTH, HEIGHT).image for i in range(n)]


def write_folder(folder: Path, images: Sequence[np.ndarray]) -> Path:
    """PNG files named in capture order (the edge's folder source reads them sorted by name)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"frame-{i:04d}.png")
    return folder


def png_array(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def boxes_of(result: common_pb2.Result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes (N,4) float32, class ids (N,), scores (N,)) of a Result."""
    b = np.array([[x.x1, x.y1, x.x2, x.y2] for x in result.boxes], np.float32).reshape(-1, 4)
    return (
        b,
        np.array([x.class_id for x in result.boxes], np.int64),
        np.array([x.score for x in result.boxes]),
    )


def unmatched_detections(
    a: tuple[np.ndarray, np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    box_tol: float = 1e-2,
    score_tol: float = 1e-4,
) -> Iterator[float]:
    """Scores of the detections of ``a`` or ``b`` that have no equal (same class, box within
    ``box_tol`` px, score within ``score_tol``) on the other side, matched one to one.

    The service batches frames of several cameras together and offline inference does not, so
    floats may differ in their last bits; a box can then only appear on one side when its score
    sits at the score threshold or at the top-k cut. Callers check the unmatched scores for that.
    """
    used = np.zeros(len(b[0]), bool)
    for box, cls, score in zip(*a, strict=True):
        close = (
            ~used
            & (b[1] == cls)
            & (np.abs(b[2] - score) <= score_tol)
            & (np.abs(b[0] - box).max(axis=1, initial=0.0) <= box_tol)
        )
        hits = np.flatnonzero(close)
        if len(hits):
            used[hits[0]] = True
        else:
            yield float(score)
    for score in b[2][~used]:
        yield float(score)
