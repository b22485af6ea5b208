"""Fixtures of the fuzz tests: the shipped tiny codec, valid samples to mutate, a fuzz server per module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from layercast.shared.codec import ScalableCodec, load_codec
from tests.cloud.conftest import make_task_codec
from tests.fuzz.harness import LIMITS, FuzzServer
from tests.fuzz.strategies import Samples, build_samples


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The server's inference runs in this process: one torch thread on the shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def codec() -> ScalableCodec:
    """The shipped ``default`` model (tiny detector)."""
    return load_codec("default", device="cpu")


@pytest.fixture(scope="session")
def samples(codec: ScalableCodec) -> Samples:
    foreign = make_task_codec("detection", seed=5)  # another base model id
    return build_samples(codec, foreign, LIMITS["limits.max_image_pixels"])


@pytest.fixture(scope="module")
def fuzz_server(codec: ScalableCodec, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzServer]:
    """A fresh server per test module, so each module knows the state it builds."""
    server = FuzzServer(codec, tmp_path_factory.mktemp("fuzz-cloud"))
    try:
        yield server
    finally:
        server.stop()
