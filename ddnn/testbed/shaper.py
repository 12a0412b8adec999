"""Impose a :class:`LinkProfile` on both ends of a link, and change it while traffic flows.

Two implementations with one interface:

* ``netem``: ``tc qdisc replace dev X root netem delay D [J] loss L% rate R`` on each end.
* ``nfqueue``, for kernels built without ``sch_netem`` (some VM and CI kernels): ``tbf`` on each
  sending end for the rate, and a small user-space process on each receiving end
  (:mod:`ddnn.testbed.delayer`) for delay, jitter and loss, fed by an nf_tables NFQUEUE rule.

``auto`` picks netem when the kernel has it. Either way ``down`` sets both interfaces down.
"""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
from pathlib import Path

from ddnn.paths import REPO_ROOT
from ddnn.testbed.profiles import LinkProfile, netem_args, tbf_args
from ddnn.testbed.topology import Endpoint, Link, TestbedError, pipes, sh

log = logging.getLogger(__name__)
SHAPERS = ("auto", "netem", "nfqueue")


def netem_available(ns: str) -> bool:
    """Whether this kernel has sch_netem (tried on the loopback of a testbed namespace)."""
    proc = sh(["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"], check=False)
    if proc.returncode == 0:
        sh(["tc", "-n", ns, "qdisc", "del", "dev", "lo", "root"], check=False)
        return True
    log.info("no netem in this kernel (%s)", proc.stderr.strip())
    return False


class Shaper:
    """Applies profiles to both ends of ``link``; ``current`` is the profile in effect."""

    kind = ""

    def __init__(self, link: Link):
        self.ends: tuple[Endpoint, Endpoint] = (link.a, link.b)
        self.current: LinkProfile | None = None
        self._down = False

    def apply(self, p: LinkProfile) -> None:
        if p.down:
            for e in self.ends:
                sh(["ip", "-n", e.ns, "link", "set", e.dev, "down"])
            self._down = True
        else:
            if self._down:
                for e in self.ends:
                    sh(["ip", "-n", e.ns, "link", "set", e.dev, "up"])
                self._down = False
            self._impose(p)
        self.current = p
        log.info("link profile %s (%s, %s shaper)", p.name, p.summary(), self.kind)

    def _impose(self, p: LinkProfile) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Remove the shaping (the namespaces' deletion would too)."""
        for e in self.ends:
            sh(["tc", "-n", e.ns, "qdisc", "del", "dev", e.dev, "root"], check=False)

    def qdiscs(self) -> dict[str, str]:
        """``tc qdisc show`` of each end, for the report."""
        return {f"{e.ns}/{e.dev}": sh(["tc", "-n", e.ns, "qdisc", "show", "dev", e.dev], check=False).stdout.strip()
                for e in self.ends}


class NetemShaper(Shaper):
    kind = "netem"

    def _impose(self, p: LinkProfile) -> None:
        for e in self.ends:
            sh(["tc", "-n", e.ns, "qdisc", "replace", "dev", e.dev, "root", "netem", *netem_args(p)])


class NfqueueShaper(Shaper):
    """tbf for the rate (egress), one delayer process per end for delay, jitter and loss (ingress)."""

    kind = "nfqueue"

    def __init__(self, link: Link, log_dir: Path, python: str = sys.executable, timeout_s: float = 30.0):
        super().__init__(link)
        self.timeout_s = timeout_s
        self.procs: list[subprocess.Popen] = []
        self.counters: list[dict] = [{}, {}]
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for i, e in enumerate(self.ends):
                with open(log_dir / f"delayer-{e.ns}-{e.dev}.log", "ab") as err:
                    proc = subprocess.Popen(["ip", "netns", "exec", e.ns, python, "-m", "ddnn.testbed.delayer",
                                             "--dev", e.dev, "--queue", str(i)], cwd=REPO_ROOT,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                                            start_new_session=True)
                self.procs.append(proc)
                reply = self._read(proc, e)
                if not reply.get("ready"):
                    raise TestbedError(f"delayer on {e.ns}/{e.dev} did not start: {reply}")
        except BaseException:
            self.close()
            raise

    def _read(self, proc: subprocess.Popen, e: Endpoint) -> dict:
        stdout = pipes(proc)[1]
        ready, _, _ = select.select([stdout], [], [], self.timeout_s)
        line = stdout.readline() if ready else ""
        if not line:
            raise TestbedError(f"delayer on {e.ns}/{e.dev} is not answering (exit code {proc.poll()}); "
                               f"see its log in the testbed's logs folder")
        return json.loads(line)

    def _impose(self, p: LinkProfile) -> None:
        tbf = tbf_args(p)
        for i, (e, proc) in enumerate(zip(self.ends, self.procs, strict=True)):
            if tbf:
                sh(["tc", "-n", e.ns, "qdisc", "replace", "dev", e.dev, "root", "tbf", *tbf])
            else:
                sh(["tc", "-n", e.ns, "qdisc", "del", "dev", e.dev, "root"], check=False)
            stdin = pipes(proc)[0]
            stdin.write(json.dumps({"delay_ms": p.delay_ms, "jitter_ms": p.jitter_ms, "loss_pct": p.loss_pct}) + "\n")
            stdin.flush()
            reply = self._read(proc, e)
            if not reply.get("ok"):
                raise TestbedError(f"delayer on {e.ns}/{e.dev} refused profile {p.name}: {reply}")
            self.counters[i] = reply

    def close(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc.poll() is None:
                try:
                    pipes(proc)[0].close()  # EOF: the delayer releases what it holds and removes its rule
                    proc.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    proc.kill()
                    proc.wait(5)
            if proc.stdout:
                tail = proc.stdout.read().strip().splitlines()
                if tail:
                    self.counters[i] = json.loads(tail[-1])
                proc.stdout.close()
        self.procs = []
        super().close()


def make_shaper(kind: str, link: Link, log_dir: Path) -> Shaper:
    """``auto``: netem if the kernel has it, else nfqueue."""
    if kind not in SHAPERS:
        raise ValueError(f"shaper must be one of {', '.join(SHAPERS)}, got {kind!r}")
    if kind == "auto":
        kind = "netem" if netem_available(link.a.ns) else "nfqueue"
    elif kind == "netem" and not netem_available(link.a.ns):
        raise TestbedError("this kernel has no sch_netem ('tc qdisc add ... netem' fails); use --shaper nfqueue")
    return NetemShaper(link) if kind == "netem" else NfqueueShaper(link, log_dir)
