"""The edge with the real codec (``untrained_codec`` from tests/conftest.py: a "tiny" model built on
the spot, no weights needed): real bitstreams end to end.

The cloud side here is the loopback FakeCloud; the test decodes what it received
with the same codec, and checks an enhancement fetched over the link
reconstructs exactly like an offline decode.
"""

from __future__ import annotations

import asyncio

import numpy as np
from edge_fake_cloud import CloudServer, eventually, link_config

from layercast.edge.app import EdgeApp
from layercast.edge.config import EdgeConfig, SourceConfig
from layercast.edge.encoder import Encoder
from layercast.shared.rpc import edge_pb2


async def test_real_bitstreams_and_enhancement_over_the_link(cloud: CloudServer, tmp_path, untrained_codec):
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, size=(48, 64, 3), dtype=np.uint8) for _ in range(4)]
    fc = cloud.servicer
    fc.auto_ack = False  # hold the app open until the enhancement has been fetched
    cfg = EdgeConfig(
        camera_id="real-1",
        data_dir=tmp_path / "edge",
        link=link_config(cloud.address),
        source=SourceConfig(spec="synthetic", fps=50.0, limit=4),
    )
    cfg.encoder.batch_max = 2
    app = EdgeApp(cfg, encoder=Encoder(untrained_codec, batch_max=2), source=iter(images))
    task = asyncio.create_task(app.run())
    await eventually(lambda: len(fc.frames) == 4, timeout=60, what="four real frames")
    fc.current.send(enhancement_request=edge_pb2.EnhancementRequest(request_id="e3", sequence=3))
    await eventually(lambda: fc.responses, timeout=30, what="the enhancement")
    fc.current.ack(1, 2, 3, 4)
    await asyncio.wait_for(task, 30)

    assert fc.streams[0].hello.base_model_id == untrained_codec.base_model_id
    assert fc.streams[0].hello.enhancement_model_id == untrained_codec.enhancement_model_id
    offline = untrained_codec.encode_batch(images)
    received = [f.base for f in fc.frames]
    assert received == [e.base for e in offline]  # the edge sent exactly the codec's base bitstreams
    for data, im in zip(received, images, strict=True):
        hdr = untrained_codec.parse_header(data)
        assert (hdr.width, hdr.height) == (im.shape[1], im.shape[0])
    resp = fc.responses[0]
    assert resp.sequence == 3 and resp.enhancement == offline[2].enhancement
    dec = untrained_codec.decode_base_batch([received[2]])[0]
    via_link = untrained_codec.reconstruct(dec, resp.enhancement)
    offline_rec = untrained_codec.reconstruct(dec, offline[2].enhancement)
    assert via_link.shape == (48, 64, 3) and np.array_equal(via_link, offline_rec)


def test_encoder_load_sets_the_configured_torch_threads():
    """``[encoder] threads`` (default 1) is the encoder's torch intra-op thread count."""
    import torch

    from layercast.edge.config import EncoderConfig
    from layercast.shared.config import load_config

    before = torch.get_num_threads()
    try:
        assert EdgeConfig().encoder.threads == 1
        cfg = load_config(EdgeConfig, overrides={"encoder.threads": 2, "encoder.device": "cpu"})
        torch.set_num_threads(1)
        Encoder.load(cfg.encoder)
        assert torch.get_num_threads() == 2
        Encoder.load(EncoderConfig(device="cpu"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_encoder_load_runs_the_configured_runtime():
    """``[encoder] runtime``: ONNX Runtime runs the analysis transforms on the CPU by default;
    ``torch`` runs them in torch; anything else is refused."""
    import pytest

    from layercast.shared.codec.runtime import OnnxModule
    from layercast.shared.config import load_config
    from layercast.shared.errors import ConfigError

    default = load_config(EdgeConfig, overrides={"encoder.device": "cpu"}).encoder
    assert default.runtime == "onnxruntime"
    codec = Encoder.load(default).codec
    assert codec.runtime == "onnxruntime" and isinstance(codec._g_a, OnnxModule)
    assert isinstance(codec._g_a_e, OnnxModule)
    torch_cfg = load_config(EdgeConfig, overrides={"encoder.device": "cpu", "encoder.runtime": "torch"})
    codec = Encoder.load(torch_cfg.encoder).codec
    assert codec.runtime == "torch" and not isinstance(codec._g_a, OnnxModule)
    with pytest.raises(ConfigError, match="runtime"):
        load_config(EdgeConfig, overrides={"encoder.runtime": "tensorrt"})
