"""The cloud's compute settings: intra-op threads (torch's and ONNX Runtime's), the runtime of
the CPU transforms and the batching workers, applied when the server loads its own model."""

from __future__ import annotations

import pytest
import torch

from layercast.cloud.config import CloudConfig, load_cloud_config
from layercast.cloud.server import CloudServer
from layercast.shared.codec.runtime import OnnxModule
from layercast.shared.errors import ConfigError
from tests.cloud.conftest import cloud_config


def test_defaults() -> None:
    cfg = CloudConfig()
    assert (cfg.threads, cfg.runtime, cfg.batching.workers) == (1, "onnxruntime", 2)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [("runtime", "tensorrt", "runtime"), ("threads", 0, "threads"), ("threads", 1000, "threads")],
)
def test_bad_settings_are_refused(key: str, value: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_cloud_config(overrides={key: value}, environ={})


def test_settings_from_the_environment() -> None:
    env = {"LAYERCAST_CLOUD_THREADS": "2", "LAYERCAST_CLOUD_RUNTIME": "torch"}
    cfg = load_cloud_config(overrides={"insecure": True, "auth.allow_any_camera": True}, environ=env)
    assert (cfg.threads, cfg.runtime) == (2, "torch")


@pytest.mark.parametrize(("runtime", "threads"), [("torch", 2), ("onnxruntime", 2), ("onnxruntime", 1)])
async def test_the_server_loads_its_model_with_its_threads_and_runtime(tmp_path, runtime, threads) -> None:
    before = torch.get_num_threads()
    server = CloudServer(
        cloud_config(tmp_path, model="default", device="cpu", runtime=runtime, threads=threads)
    )
    try:
        await server.start()
        codec = server.engine.codec
        assert codec.runtime == runtime
        assert torch.get_num_threads() == threads
        detector = codec._task_model
        if runtime == "onnxruntime":
            # the warm-up ran the detector: its session has the configured threads
            assert isinstance(detector, OnnxModule)
            opts = detector.session().get_session_options()
            assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (threads, 1)
        else:
            assert isinstance(detector, torch.nn.Module)
    finally:
        await server.stop(5.0)
        torch.set_num_threads(before)
