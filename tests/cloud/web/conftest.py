"""Fixtures of the web tests: one real stack (cloud, edges, operator page) per test module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from tests.cloud.web.stack import Stack, start_stack


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory, task_codec) -> AsyncIterator[Stack]:
    s = await start_stack(tmp_path_factory.mktemp("stack"), task_codec)
    try:
        yield s
    finally:
        await s.stop()
