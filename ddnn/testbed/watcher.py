"""The orchestrator's side of the watcher agent (:mod:`ddnn.testbed.agent` ``watch``)."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ddnn.paths import REPO_ROOT
from ddnn.testbed.topology import TestbedError, Topology, pipes


class Watcher:
    """Runs ``agent watch`` in the load generator's namespace; reads its polls, sends it commands."""

    def __init__(self, topo: Topology, edge: str, path: Path, interval: float, log_dir: Path,
                 timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.unlink(missing_ok=True)
        self.path.touch()
        self.timeout_s = timeout_s
        self.polls: list[dict] = []
        self._offset = 0
        with open(log_dir / "watcher.log", "ab") as err:
            self.proc = subprocess.Popen([*topo.exec_prefix("loadgen"), sys.executable, "-m", "ddnn.testbed.agent",
                                          "watch", "--edge", edge, "--interval", str(interval), "--out",
                                          str(self.path)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)

    def refresh(self) -> list[dict]:
        """Read the polls written since the last call (complete lines only)."""
        with open(self.path) as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind("\n") + 1
        self._offset += len(data[:end].encode())
        new = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
        self.polls.extend(new)
        return new

    def wait(self, pred: Callable[[dict], object], timeout_s: float, alive: subprocess.Popen | None = None) -> bool:
        """Until the latest successful poll satisfies ``pred`` (False after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise TestbedError(f"the watcher agent exited ({self.proc.returncode}); see logs/watcher.log")
            ok = [p for p in self.refresh() if p.get("ok")]
            if ok and pred(ok[-1]):
                return True
            if time.monotonic() >= deadline or (alive is not None and alive.poll() is not None):
                return False
            time.sleep(0.1)

    def command(self, cmd: dict) -> dict:
        stdin, stdout = pipes(self.proc)
        stdin.write(json.dumps(cmd) + "\n")
        stdin.flush()
        ready, _, _ = select.select([stdout], [], [], self.timeout_s)
        line = stdout.readline() if ready else ""
        if not line:
            raise TestbedError(f"the watcher agent did not answer {cmd} (exit code {self.proc.poll()})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise TestbedError(f"{cmd} failed: {reply.get('error')}")
        return reply

    def configure(self, **fields) -> dict:
        """``Edge.Configure`` (mode=..., payload=..., knobs=...); returns the new status."""
        return self.command({"configure": fields})["status"]

    def scrape(self, url: str) -> dict[str, float]:
        """The edge's mode and link series from its /metrics page."""
        return self.command({"scrape": url})["metrics"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                pipes(self.proc)[0].close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.refresh()
