"""A real ``layercast cloud`` process for the soak benchmark.

The soak measures the cloud's resident memory and open file descriptors from ``/proc``, so the
cloud must be a process of its own (not a server inside the load generator, whose memory and
sockets would mix with the cloud's). It is started exactly as an operator would start it: the
``layercast cloud`` command with flags, a credentials file of token hashes, one torch thread
(``OMP_NUM_THREADS=1``), on a free loopback port reported through ``--port-file``.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from layercast.shared.errors import LayercastError


class CloudFailed(LayercastError):
    """The cloud process did not start, or died."""


class CloudProcess:
    """``python -m layercast cloud`` on 127.0.0.1 with the given camera tokens.

    ``extra`` are ``KEY=VALUE`` settings passed with ``--set`` (any cloud configuration key).
    Output goes to ``workdir/cloud.out`` and ``workdir/cloud.err``.
    """

    def __init__(
        self,
        workdir: Path,
        model: str,
        tokens: Mapping[str, str],
        extra: Sequence[str] = (),
        threads: int = 1,
    ) -> None:
        self.workdir = workdir
        self.model = model
        self.tokens = dict(tokens)
        self.extra = list(extra)
        self.threads = threads
        #: The bench's operator (a viewer): its subscriber sends this token (only its hash is on the command line).
        self.operator_token = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise CloudFailed("the cloud process has not been started")
        return self.proc.pid

    @property
    def stdout_path(self) -> Path:
        return self.workdir / "cloud.out"

    @property
    def stderr_path(self) -> Path:
        return self.workdir / "cloud.err"

    def command(self) -> list[str]:
        """The command line (for the report; tokens are in a file of hashes, never on it)."""
        from layercast.cloud.config import CloudConfig

        args = [
            sys.executable,
            "-m",
            "layercast",
            "cloud",
            "--listen",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(self.workdir / "port"),
            "--data-dir",
            str(self.workdir / "data"),
            "--model",
            self.model,
            "--device",
            "cpu",
            "--credentials-file",
            str(self.workdir / "cameras.toml"),
        ]
        # Loopback only: plain text, said explicitly (TLS is the default where the cloud requires it).
        if any(f.name == "insecure" for f in dataclasses.fields(CloudConfig)):
            args += ["--set", "insecure=true"]
        from layercast.cloud.security.credentials import hash_token

        args += ["--set", f"auth.operator_tokens=bench={hash_token(self.operator_token)}"]
        for item in self.extra:
            args += ["--set", item]
        return args

    def start(self, timeout: float = 240.0) -> None:
        """Spawn and wait until the cloud serves (its port file appears)."""
        self.launch()
        self.wait_serving(timeout)

    def launch(self) -> None:
        """Spawn without waiting (the caller can prepare its load while the cloud loads its model)."""
        from layercast.cloud.security.credentials import hash_token

        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "cameras.toml").write_text(
            "[cameras]\n" + "".join(f'"{c}" = "{hash_token(t)}"\n' for c, t in self.tokens.items())
        )
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": str(self.threads),
            "MKL_NUM_THREADS": str(self.threads),
        }
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command(), stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )

    def wait_serving(self, timeout: float = 240.0) -> None:
        """Wait until the cloud serves (its port file appears); CloudFailed if it exits or times out."""
        if self.proc is None:
            raise CloudFailed("the cloud process has not been started")
        port_file = self.workdir / "port"
        deadline = time.monotonic() + timeout
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise CloudFailed(f"the cloud exited with status {self.proc.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise CloudFailed(f"the cloud did not serve within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.1)
        self.port = int(port_file.read_text())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, chars: int = 3000) -> str:
        """The end of the cloud's stderr (for error messages)."""
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode
