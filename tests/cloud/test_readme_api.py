"""The README's Python API snippet, extracted and run: the codec part as written, and its
Subscribe client against a real cloud on loopback that has stored a result."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from grpc import aio

from tests.cloud.conftest import OPERATOR_TOKEN, TOKENS, EdgeStream

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Using it from code") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


async def test_readme_python_api_snippet_runs(cloud, frames, task_codec) -> None:
    namespace: dict = {}
    await asyncio.to_thread(exec, compile(snippet(), "README.md", "exec"), namespace)
    assert namespace["full"].shape == (128, 192, 3)

    target = f"127.0.0.1:{cloud.port}"
    async with aio.insecure_channel(target) as channel:
        edge = EdgeStream(channel)
        cam, token = next(iter(TOKENS.items()))
        edge.hello(cam, token, task_codec.base_model_id)
        await edge.recv_kind("welcome")
        edge.frame(1, frames[0].base)
        await edge.recv_kind("ack")
        got = await asyncio.to_thread(namespace["results"], target, OPERATOR_TOKEN, 3.0)
        edge.close()
    assert got and got[0][:2] == (cam, 1)
