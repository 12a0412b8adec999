"""Start ddnn services as subprocesses on ephemeral ports, wait until ready, stop them cleanly.

Used by ``ddnn demo``, the benchmarks, the netem testbed and the integration tests. Each service
writes a ready file with its bound ports (it is started with ``--listen ...:0``), so nothing
depends on fixed ports.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ddnn.paths import REPO_ROOT

# Start-up imports torch and loads a checkpoint (seconds); callers that also start Triton (the
# cloud) pass their own, longer timeout.
START_TIMEOUT_S = 120.0
# A service drains in-flight calls on SIGTERM for its --grace-s (10 s by default): twice that
# before SIGKILL, so a drain that is on time is never cut short.
STOP_TIMEOUT_S = 20.0
# After SIGKILL the kernel reaps at once; these only bound a wait() on a loaded machine.
KILL_WAIT_S = 5.0
GROUP_KILL_WAIT_S = 10.0
# The ready file appears once; polling it 10x a second costs nothing and adds at most 0.1 s.
READY_POLL_S = 0.1
SCRAPE_TIMEOUT_S = 10.0  # one /metrics page from a local process


class Addressed:
    """``grpc`` and ``metrics`` addresses of a service from its ``host`` and ready-file ``info``."""

    host: str
    info: dict

    @property
    def grpc(self) -> str:
        return f"{self.host}:{self.info['grpc_port']}"

    @property
    def metrics(self) -> str:
        return f"http://{self.host}:{self.info['metrics_port']}/metrics"


@dataclass
class Service(Addressed):
    """A running service process and what its ready file said."""

    name: str
    proc: subprocess.Popen
    log: Path
    info: dict
    host: str = "127.0.0.1"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM (graceful drain), then SIGKILL after ``timeout``; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(KILL_WAIT_S)
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, as opposed to a shutdown)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(GROUP_KILL_WAIT_S)


def start(module: str, args: list[str], workdir: Path, name: str | None = None, timeout: float = START_TIMEOUT_S,
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
        time.sleep(READY_POLL_S)
    svc.stop()
    raise RuntimeError(f"{name} was not ready within {timeout:.0f}s; log {log}:\n{svc.log_tail()}")


def scrape(url: str) -> dict[str, float]:
    """Read a Prometheus text page into ``{'name{labels}': value}``."""
    text = urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def compose_command() -> list[str] | None:
    """The Compose CLI here: ``docker-compose`` (v1, what Debian ships) or the ``docker compose`` plugin; None if
    neither (the container tests and make bench's compose section skip then)."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None
