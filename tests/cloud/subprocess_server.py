"""A real CloudServer (the test codec) in a process of its own, for tests that measure it from
outside: its memory (RSS) and its service while another process floods it.

    with cloud_process(tmp_path, **overrides) as proc:   # proc.target, proc.rss_bytes()
        ...

Run as ``python -m tests.cloud.subprocess_server DATA_DIR JSON_OVERRIDES``: it prints
``PORT <n>`` once serving and stops when its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class CloudProcess:
    proc: subprocess.Popen[str]
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rss_bytes(self) -> int:
        """Resident memory of the server process now."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")


@contextlib.contextmanager
def cloud_process(tmp_path: Path, **overrides: Any) -> Iterator[CloudProcess]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.cloud.subprocess_server", str(tmp_path), json.dumps(overrides)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(os.environ.get("LAYERCAST_TEST_SERVER_LOG", os.devnull), "w"),
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"the cloud process did not start: {line!r}")
        yield CloudProcess(proc, int(line.split()[1]))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def _main(data_dir: Path, overrides: dict[str, Any]) -> None:
    from layercast.cloud.server import CloudServer
    from tests.cloud.conftest import cloud_config, make_task_codec

    server = CloudServer(cloud_config(data_dir, **overrides), codec=make_task_codec("detection"))
    await server.start()
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the test closes stdin
    await server.stop(5.0)


if __name__ == "__main__":
    asyncio.run(_main(Path(sys.argv[1]), json.loads(sys.argv[2])))
