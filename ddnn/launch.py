"""Start ddnn services as subprocesses on ephemeral ports, wait until ready, stop them cleanly.

Used by ``ddnn demo``, the benchmarks, the netem testbed and the integration tests. Each service
writes a ready file with its bound ports (it is started with ``--listen ...:0``), so nothing
depends on fixed ports.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ddnn.paths import REPO_ROOT


@dataclass
class Service:
    """A running service process and what its ready file said."""

    name: str
    proc: subprocess.Popen
    log: Path
    info: dict
    host: str = "127.0.0.1"

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.info['grpc_port']}"

    @property
    def metrics(self) -> str:
        return f"http://{self.host}:{self.info['metrics_port']}/metrics"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as opposed to a shutdown)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def start(module: str, args: list[str], workdir: Path, name: str | None = None, timeout: float = 120.0,
          env: dict | None = None, prefix: list[str] | None = None, host: str = "127.0.0.1") -> Service:
    """Run ``[prefix...] python -m module args --ready-file F`` and wait for F.

    ``prefix`` runs the process under another command (e.g. ``ip netns exec NS``).
    """
    name = name or module.rsplit(".", 1)[-1]
    workdir.mkdir(parents=True, exist_ok=True)
    ready = workdir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    log = workdir / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    cmd = [*(prefix or []), sys.executable, "-m", module, *args, "--ready-file", str(ready)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True)
    svc = Service(name, proc, log, {}, host)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            svc.info = json.loads(ready.read_text())
            return svc
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before it was ready; log {log}:\n"
                               f"{svc.log_tail()}")
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:.0f}s; log {log}:\n{svc.log_tail()}")


def scrape(url: str) -> dict[str, float]:
    """Read a Prometheus text page into ``{'name{labels}': value}``."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
