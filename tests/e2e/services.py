"""Real ``layercast cloud`` / ``layercast edge`` processes on 127.0.0.1 for the end-to-end tests.

Each process gets its own TOML configuration, data directory and log files in a
test's temporary directory; ports are chosen by the OS (``port = 0`` and
``--port-file``) and reused on a restart. Nothing here talks to anything but
loopback, and every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layercast.cloud.security.credentials import hash_token
from tests.cloud.conftest import OPERATOR, OPERATOR_TOKEN

ROOT = Path(__file__).resolve().parents[2]


def toml_dumps(data: Mapping[str, Any]) -> str:
    """A small TOML writer: scalars, lists of scalars and one level of tables (enough for configs)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str | Path):
            return json.dumps(str(v))
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    for k, v in data.items():
        if isinstance(v, Mapping):
            lines.append(f"\n[{k}]")
            lines.extend(f"{kk} = {value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A port that was free a moment ago (for a second server that must fail to bind, etc.)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``extra``; nested tables are merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


@dataclass
class Model:
    """Which codec the processes load: a registry name, plus LAYERCAST_MODELS when it is not shipped."""

    name: str
    models_dir: Path | None = None

    def env(self) -> dict[str, str]:
        return {"LAYERCAST_MODELS": str(self.models_dir)} if self.models_dir else {}


class Process:
    """One ``python -m layercast ...`` child with its output in files."""

    def __init__(self, name: str, workdir: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def stdout_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.starts}.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / f"{self.name}.{self.starts}.err"

    def spawn(self, args: list[str]) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        self.starts += 1
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            # Several processes share two cores: one torch thread each avoids oversubscription.
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
            **self.extra_env,
        }
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "layercast", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                env=env,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        """The last lines of its output, for assertion messages."""
        return f"--- {self.name} stdout ---\n{self.stdout()[-3000:]}\n--- {self.name} stderr ---\n{self.stderr()[-5000:]}"

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:.0f}s\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful stop) and wait; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def request_stop(self) -> None:
        """SIGTERM without waiting, so that several graceful stops overlap (``stop_together``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill9(self) -> None:
        """SIGKILL: no clean-up of any kind, as in a crash or an OOM kill."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def cleanup(self) -> None:
        """Stop whatever is still running (used by fixtures' finalisers)."""
        self.request_stop()
        self.reap()

    def reap(self) -> None:
        """Wait for a stop already requested; SIGKILL after 20 s."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def stop_together(procs: Sequence[Process]) -> None:
    """Stop every process still running (fixtures' finalisers): SIGTERM to all at once, then wait
    for each in turn, so their graceful stops overlap instead of adding up."""
    for p in procs:
        p.request_stop()
    for p in procs:
        p.reap()


class CloudProcess(Process):
    """``layercast cloud`` with camera tokens, a store in ``workdir/data`` and the given overrides;
    plain text on loopback (``insecure = true``) unless the overrides have a ``tls`` table."""

    def __init__(
        self,
        workdir: Path,
        model: Model,
        tokens: Mapping[str, str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__("cloud", workdir, model.env())
        self.model = model
        self.port = 0
        self.config: dict[str, Any] = merge(
            {
                "listen": "127.0.0.1",
                "port": 0,
                "insecure": "tls" not in (overrides or {}),
                "data_dir": str(workdir / "data"),
                "model": model.name,
                "device": "cpu",
                "shutdown_grace_s": 20.0,
                "batching": {"max_batch_size": 8, "max_queue_delay_ms": 5.0},
                "auth": {
                    "camera_tokens": [f"{cam}={hash_token(tok)}" for cam, tok in tokens.items()],
                    # The tests' operator (tests.cloud.conftest.OPERATOR_TOKEN), an enhancer.
                    "operator_tokens": [f"{OPERATOR}={hash_token(OPERATOR_TOKEN)}"],
                    "enhancers": [OPERATOR],
                },
            },
            overrides or {},
        )

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.config["data_dir"]) / "cloud.db"

    def launch(self) -> None:
        """Spawn without waiting. The port is chosen free now (and kept for restarts), so edges can
        be started at the same time: their start-up (imports, model) overlaps the cloud's."""
        if not self.port:
            self.port = free_port()
        cfg_path = self.workdir / "cloud.toml"
        cfg_path.write_text(toml_dumps(dict(self.config, port=self.port)))
        self._port_file.unlink(missing_ok=True)
        self.spawn(["-v", "cloud", "--config", str(cfg_path), "--port-file", str(self._port_file)])

    @property
    def _port_file(self) -> Path:
        return self.workdir / "port"

    def wait_serving(self, timeout: float = 240.0) -> int:
        """Wait until the process reports SERVING (it writes its port file then)."""

        def serving() -> bool:
            if not self.running():
                raise AssertionError(f"the cloud exited with {self.proc.returncode}\n{self.describe()}")  # type: ignore[union-attr]
            return self._port_file.exists()

        wait_until(serving, timeout, "the cloud to serve", interval=0.1)
        assert int(self._port_file.read_text()) == self.port
        return self.port

    def start(self, timeout: float = 240.0) -> int:
        """Start (the first time on a free port, later on the same port) and wait until serving."""
        self.launch()
        return self.wait_serving(timeout)


@dataclass
class EdgeRun:
    """What an edge process printed with ``--stats`` when it exited."""

    returncode: int
    stats: dict[str, Any] = field(default_factory=dict)


class EdgeProcess(Process):
    """``layercast edge`` for one camera; the token travels in LAYERCAST_EDGE_TOKEN, not on the command line."""

    def __init__(
        self,
        workdir: Path,
        model: Model,
        camera_id: str,
        token: str,
        cloud_target: str,
        source: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"edge-{camera_id}", workdir, {**model.env(), "LAYERCAST_EDGE_TOKEN": token})
        self.camera_id = camera_id
        self.config: dict[str, Any] = merge(
            {
                "camera_id": camera_id,
                "data_dir": str(workdir / "data"),
                "link": {"cloud": cloud_target, "insecure": True},
                "source": {"spec": source, "fps": 50.0, "queue_frames": 256},
                "encoder": {"model": model.name, "device": "cpu", "batch_max": 4},
            },
            overrides or {},
        )

    @property
    def data_dir(self) -> Path:
        return Path(self.config["data_dir"])

    def start(self, backoff_max_s: float = 1.0) -> None:
        text = toml_dumps(self.config)
        # Reconnect quickly in tests: the cloud is back within seconds.
        text += f"\n[link.backoff]\ninitial_s = 0.2\nmax_s = {backoff_max_s}\n"
        cfg_path = self.workdir / "edge.toml"
        cfg_path.write_text(text)
        self.spawn(["-v", "edge", "--config", str(cfg_path), "--stats"])

    def finish(self, timeout: float) -> EdgeRun:
        """Wait for a finite source to be delivered and the process to exit; parse its counters."""
        rc = self.wait(timeout)
        out = self.stdout()
        start = out.find("{")
        stats = json.loads(out[start:]) if start >= 0 else {}
        return EdgeRun(rc, stats)

    def stop(self, timeout: float = 60.0) -> EdgeRun:
        """SIGTERM (graceful) and parse the counters."""
        if self.running():
            self.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        return self.finish(timeout)
