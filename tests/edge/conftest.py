"""Fixtures of the edge tests: a real EdgeLink server on 127.0.0.1 (see edge_fake_cloud.py)."""

from __future__ import annotations

import pytest
from edge_fake_cloud import CloudServer, FakeCloud


@pytest.fixture
async def cloud():

    server = CloudServer(FakeCloud())
    await server.start()
    yield server
    await server.stop()
