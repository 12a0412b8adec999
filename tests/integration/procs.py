"""Start ddnn services as real subprocesses on ephemeral ports, and stop them cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ddnn.paths import REPO_ROOT


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    info: dict

    @property
    def grpc(self) -> str:
        return f"127.0.0.1:{self.info['grpc_port']}"

    @property
    def metrics(self) -> str:
        return f"http://127.0.0.1:{self.info['metrics_port']}/metrics"

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start(module: str, args: list[str], tmp: Path, name: str | None = None, timeout: float = 90.0,
          env: dict | None = None, wait_ready: bool = True) -> Service:
    """Run ``python -m module args --ready-file ...`` and wait for its ready file."""
    name = name or module.rsplit(".", 1)[-1]
    ready = tmp / f"{name}.ready"
    ready.unlink(missing_ok=True)
    log = tmp / f"{name}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module, *args, "--ready-file", str(ready)], cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    svc = Service(name, proc, log, {})
    if not wait_ready:
        return svc
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            svc.info = json.loads(ready.read_text())
            return svc
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready:\n{svc.log_tail()}")
        time.sleep(0.1)
    svc.stop()
    raise RuntimeError(f"{name} not ready within {timeout:.0f}s:\n{svc.log_tail()}")


def scrape(url: str) -> dict[str, float]:
    """Parse a Prometheus text page into {'name{labels}': value}."""
    import urllib.request

    text = urllib.request.urlopen(url, timeout=10).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
