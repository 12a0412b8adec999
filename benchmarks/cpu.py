"""CPU time of what one benchmark side runs (processes or containers), sampled while it runs.

On a shared machine a side's throughput is the cores it obtains divided by the CPU seconds it spends
per sample. Sampling both, and the whole machine's busy time, tells a slower side that costs more
from one that was given less of the CPU.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PROC = Path("/proc")
CGROUP = Path("/sys/fs/cgroup")
# A local process's part by its command line (Triton's server and Python-backend stubs are the cloud's children).
LOCAL_PARTS = (("services.edge", "edge"), ("services.cloud", "cloud"), ("services.loadgen", "loadgen"),
               ("triton", "triton"))
# Docker's own processes: healthchecks are run through them (runc exec), outside the containers' cgroups.
ENGINE_COMMANDS = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "docker-proxy", "runc")


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent not idle since boot (user, nice, system, irq, softirq, steal)."""
    fields = (PROC / "stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICKS


def processes() -> dict[int, tuple[int, str, float]]:
    """pid -> (parent pid, command name, CPU seconds of all its threads)."""
    out = {}
    for d in PROC.iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:  # exited meanwhile
                continue
            comm, rest = stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()
            out[int(d.name)] = (int(rest[1]), comm, (int(rest[11]) + int(rest[12])) / TICKS)
    return out


def cmdline(pid: int) -> str:
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def local_part(command: str) -> str:
    return next((part for key, part in LOCAL_PARTS if key in command), "other")


class Cumulative:
    """Per-part CPU seconds that never go back when a process or cgroup disappears (its last value stays)."""

    def __init__(self):
        self.last: dict[object, tuple[str, float]] = {}

    def update(self, key, part: str, cpu_s: float) -> None:
        self.last[key] = (part, cpu_s)

    def totals(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for part, cpu in self.last.values():
            out[part] = out.get(part, 0.0) + cpu
        return out


class LocalReader:
    """CPU seconds of ``root``'s descendants (``ddnn demo``'s services and load generator), by part."""

    def __init__(self, root: int):
        self.root, self.acc, self.parts = root, Cumulative(), {}

    def __call__(self) -> dict[str, float]:
        table = processes()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(children.get(self.root, []))
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            if self.parts.get(pid, "other") == "other":  # again until it names a part: a child seen between
                self.parts[pid] = local_part(cmdline(pid))  # fork and exec still has its parent's command line
            self.acc.update(pid, self.parts[pid], table[pid][2])
        return self.acc.totals()


def container_cpu_s(container_id: str) -> float | None:
    """CPU seconds of a container's cgroup (v1 cpuacct or v2 cpu.stat, cgroupfs or systemd driver); None if gone."""
    for path in (CGROUP / "cpuacct" / "docker" / container_id / "cpuacct.usage",
                 CGROUP / "cpu,cpuacct" / "docker" / container_id / "cpuacct.usage"):
        if path.exists():
            return int(path.read_text()) / 1e9
    for path in (CGROUP / "docker" / container_id / "cpu.stat",
                 CGROUP / "system.slice" / f"docker-{container_id}.scope" / "cpu.stat"):
        if path.exists():
            return int(path.read_text().split("usage_usec", 1)[1].split()[0]) / 1e6
    return None


def container_reader(containers: dict[str, str]) -> Callable[[], dict[str, float]]:
    """CPU seconds of each compose service's container (``{service: container id}``) and of Docker's processes."""
    acc = Cumulative()

    def read() -> dict[str, float]:
        for service, cid in containers.items():
            cpu = container_cpu_s(cid)
            if cpu is not None:
                acc.update(cid, service, cpu)
        for pid, (_, comm, cpu) in processes().items():
            if comm in ENGINE_COMMANDS or comm.startswith("containerd-shim"):
                acc.update(pid, "docker engine", cpu)
        return acc.totals()

    return read


class Sampler:
    """Calls ``read`` every ``interval`` s in a thread, keeping (wall time, its totals, machine busy seconds)."""

    def __init__(self, read: Callable[[], dict[str, float]], interval: float = 0.5):
        self.read, self.interval, self.samples = read, interval, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _sample(self) -> None:
        self.samples.append((time.time(), self.read(), machine_busy_s()))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()
        self._sample()  # the window's end is covered

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _at(samples: list[tuple[float, dict[str, float], float]], t: float) -> tuple[dict[str, float], float]:
    """Totals and machine busy time at ``t``, linear between the samples around it (clamped at the ends)."""
    if t <= samples[0][0]:
        return samples[0][1], samples[0][2]
    for (t0, a, m0), (t1, b, m1) in itertools.pairwise(samples):
        if t0 <= t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 1.0
            return {k: a.get(k, 0.0) + f * (b.get(k, 0.0) - a.get(k, 0.0)) for k in a.keys() | b.keys()}, \
                m0 + f * (m1 - m0)
    return samples[-1][1], samples[-1][2]


def window(samples: list[tuple[float, dict[str, float], float]], start: float, end: float, n: int = 0) -> dict:
    """CPU spent between ``start`` and ``end`` (wall times), on ``n`` samples if any: by part, ours, the machine's
    (cores: CPU seconds per second of the window)."""
    (a, ma), (b, mb) = _at(samples, start), _at(samples, end)
    parts = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in sorted(a.keys() | b.keys())}
    ours, wall = sum(parts.values()), end - start
    return {"wall_s": wall, "cpu_s_by_part": parts, "cpu_ms_per_sample": 1000 * ours / n if n else None,
            "cores_ours": ours / wall, "cores_machine": (mb - ma) / wall, "cores_others": (mb - ma - ours) / wall,
            "covered": samples[0][0] <= start and end <= samples[-1][0]}
