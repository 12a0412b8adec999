"""The testbed run: services in three namespaces, replays per link profile and mode, and one
continuous ``auto`` run while the profile changes.

The orchestrator stays in the host's namespace. It starts the cloud, the edge and every load
generator inside their namespaces (``ip netns exec``), reaches the edge through a watcher agent in
the load generator's namespace (status polls, ``Edge.Configure``), and measures the link's round
trip with TCP handshakes from the edge's namespace.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from ddnn.export.bundle import MODES, Mode
from ddnn.launch import Addressed, Service, start
from ddnn.paths import REPO_ROOT, SHIPPED_CHECKPOINT, SHIPPED_POLICY
from ddnn.testbed import report as R
from ddnn.testbed.checks import checks, reachable
from ddnn.testbed.profiles import LinkProfile, load_profiles, parse_schedule
from ddnn.testbed.shaper import Shaper, make_shaper
from ddnn.testbed.topology import Testbed, TestbedError, Topology, existing_namespaces, preflight, sh
from ddnn.testbed.watcher import Watcher

log = logging.getLogger(__name__)

TESTBED_POLICY = SHIPPED_POLICY  # one AO criterion per depth: block4 (ws) and block7 (normal)
TEST_SPLIT_IMAGES = 10000
RECOVER_S = 60.0  # the most the timeline waits for auto to leave local on a reachable first profile


@dataclass
class RunConfig:
    """What to run; the defaults are the full run, :data:`QUICK` the CI one."""

    out: Path
    profiles: list[str] = field(default_factory=lambda: ["good", "constrained", "lossy", "outage"])
    modes: list[str] = field(default_factory=lambda: [Mode.WS.value, Mode.NORMAL.value, Mode.AUTO.value])
    schedule: str = "good:30,constrained:30,outage:40,good:30"
    limit: int = 1000
    concurrency: int = 2
    batch_size: int = 32
    rate: float = 1.5
    profiles_file: str = ""
    shaper: str = "auto"
    backend: str = "torch"
    checkpoint: str = str(SHIPPED_CHECKPOINT)
    policy: str = str(TESTBED_POLICY)
    torch_threads: int = 1
    poll_s: float = 0.25
    settle_s: float = 2.0
    rtt_probes: int = 7
    table: bool = True
    timeline: bool = True
    subnet: str = "10.203.0.0/29"
    compose: str = ""  # a running compose project: shape its edge<->cloud link instead (ddnn.testbed.compose)
    edge_args: list[str] = field(default_factory=list)
    cloud_args: list[str] = field(default_factory=list)
    command: str = ""


QUICK = {"limit": 96, "schedule": "good:10,constrained:10,outage:20,good:15", "settle_s": 1.0, "rtt_probes": 5,
         "rate": 2.0}


def _validate(cfg: RunConfig, profiles: dict[str, LinkProfile]) -> list[tuple[str, float]]:
    unknown = [p for p in cfg.profiles if p not in profiles]
    if unknown:
        raise ValueError(f"unknown profiles {unknown} (known: {', '.join(profiles)})")
    bad = [m for m in cfg.modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown modes {bad} (known: {', '.join(MODES)})")
    for name in ("limit", "concurrency", "batch_size", "rtt_probes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1")
    if cfg.rate <= 0 or cfg.poll_s <= 0:
        raise ValueError("rate and poll_s must be > 0")
    if not (cfg.table or cfg.timeline):
        raise ValueError("nothing to run: both the per-profile table and the timeline are off")
    for path, what in ((cfg.checkpoint, "checkpoint"), (cfg.policy, "policy")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{what} {path}: no such file")
    return parse_schedule(cfg.schedule, profiles)


class LoadgenProcess(subprocess.Popen[bytes]):
    """A load generator process, with its log file and its results folder."""

    def __init__(self, cmd: list[str], logf: BinaryIO, out: Path):
        super().__init__(cmd, cwd=REPO_ROOT, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.logf = logf
        self.out = out


class Run:
    """One testbed run; :meth:`execute` returns the report (also written to ``cfg.out``)."""

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.profiles = load_profiles(cfg.profiles_file or None)
        self.schedule = _validate(cfg, self.profiles)
        self.out = Path(cfg.out)
        self.logs = self.out / "logs"
        self.topo = Topology.plan(subnet=cfg.subnet)
        self.shaper: Shaper | None = None
        self.watcher: Watcher | None = None
        self.services: dict[str, Addressed] = {}

    @property
    def watch(self) -> Watcher:
        """The status watcher (started once the services are up)."""
        if self.watcher is None:
            raise TestbedError("the run has no watcher yet")
        return self.watcher

    @property
    def link(self) -> Shaper:
        """The shaper of the edge<->cloud link (made once the run's site is up)."""
        if self.shaper is None:
            raise TestbedError("the run has no shaper yet")
        return self.shaper

    # -- services -------------------------------------------------------------------------------

    def _start_services(self) -> None:
        t, c = self.topo, self.cfg
        cloud_addr, edge_addr = t.backhaul.b.addr, t.access.b.addr
        self.services["cloud"] = start(
            "services.cloud", ["--checkpoint", c.checkpoint, "--backend", c.backend, "--listen", f"{cloud_addr}:0",
                               "--metrics-addr", cloud_addr, "--metrics-port", "0",
                               "--torch-threads", str(c.torch_threads), *c.cloud_args],
            self.logs, timeout=300, prefix=t.exec_prefix("cloud"), host=cloud_addr)
        cloud = self.services["cloud"]
        self.services["edge"] = start(
            "services.edge", ["--checkpoint", c.checkpoint, "--policy", c.policy, "--cloud", cloud.grpc,
                              "--listen", f"{edge_addr}:0", "--metrics-addr", edge_addr, "--metrics-port", "0",
                              "--mode", Mode.NORMAL.value, "--torch-threads", str(c.torch_threads), *c.edge_args],
            self.logs, timeout=120, prefix=t.exec_prefix("edge"), host=edge_addr)
        log.info("cloud %s, edge %s", cloud.grpc, self.services["edge"].grpc)

    def _apply(self, name: str, wait_connected_s: float = 60.0) -> dict:
        """Impose a profile; when the cloud should be reachable, wait until the edge has its stream back."""
        p = self.profiles[name]
        self.link.apply(p)
        t = time.time()
        if (reachable(p) and wait_connected_s > 0
                and not self.watch.wait(lambda r: r.get("cloud_connected"), wait_connected_s)):
            log.warning("edge not connected to the cloud %.0fs after switching to %s", wait_connected_s, name)
        return {"profile": name, "applied_at": t}

    def _probe_rtt(self) -> dict:
        target = f"{self.topo.backhaul.b.addr}:{self.services['cloud'].info['metrics_port']}"
        n = self.cfg.rtt_probes
        proc = sh([*self.topo.exec_prefix("edge"), sys.executable, "-m", "ddnn.testbed.agent", "tcp-rtt",
                   "--target", target, "--count", str(n)], timeout=30 + 3 * n)
        return json.loads(proc.stdout)

    def _loadgen(self, name: str, args: list[str], timeout_s: float) -> dict:
        """Run a load generator in its namespace to the end; its report (results in replays/NAME)."""
        return self._finish_loadgen(self._start_loadgen(name, args), timeout_s)

    def _start_loadgen(self, name: str, args: list[str]) -> LoadgenProcess:
        out = self.out / "replays" / name
        out.mkdir(parents=True, exist_ok=True)
        c = self.cfg
        cmd = [*self.topo.exec_prefix("loadgen"), sys.executable, "-m", "services.loadgen",
               "--edge", self.services["edge"].grpc, "--batch-size", str(c.batch_size),
               "--concurrency", str(c.concurrency), "--out", str(out), "--metrics-port", "-1", "--progress", "false",
               *args]
        logf = open(self.logs / f"loadgen-{name}.log", "ab")  # noqa: SIM115  (closed by _finish_loadgen)
        return LoadgenProcess(cmd, logf, out)

    def _finish_loadgen(self, proc: LoadgenProcess, timeout_s: float) -> dict:
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise TestbedError(f"load generator ran past {timeout_s:.0f}s; killed (log {proc.logf.name})") from None
        finally:
            proc.logf.close()
        path = proc.out / "report.json"
        if not path.is_file():
            raise TestbedError(f"load generator exited {proc.returncode} without a report (log {proc.logf.name})")
        return json.loads(path.read_text())

    # -- the two parts ----------------------------------------------------------------------------

    def table(self) -> list[dict]:
        """Per profile: fixed-mode and auto replays (the Table III comparison)."""
        c = self.cfg
        rows = []
        for name in c.profiles:
            self._apply(name)
            time.sleep(c.settle_s)
            rtt = self._probe_rtt()
            log.info("profile %s: TCP RTT median %s ms (lost %d/%d)", name, rtt["median_ms"], rtt["lost"],
                     len(rtt["samples_ms"]))
            for mode in c.modes:
                self.watch.configure(mode=mode)
                t0 = time.time()
                try:
                    rep = self._loadgen(f"{name}-{mode}", ["--limit", str(c.limit)], 120 + 0.5 * c.limit)
                except TestbedError as exc:
                    log.error("%s/%s: %s", name, mode, exc)
                    rows.append({"profile": name, "mode": mode, "error": str(exc)})
                    continue
                self.watch.refresh()
                polls = R.window(self.watch.polls, *_active(self.watch.polls, t0, time.time()))
                row = R.replay_row(name, mode, rep, polls, rtt)
                rows.append(row)
                log.info("%-11s %-6s effective %-22s edge %5.1f%% cloud %5.1f%% degraded %5.1f%% acc %.2f%% "
                         "p50 %.0f ms p95 %.0f ms once %s", name, mode, R._shares(row["effective_modes"]),
                         100 * row["edge_rate"], 100 * row["cloud_rate"], 100 * row["degraded_rate"],
                         100 * (row["accuracy"]["overall"] or 0), row["latency_ms"]["p50"] or 0,
                         row["latency_ms"]["p95"] or 0, row["integrity"]["ok"])
        return rows

    def timeline(self) -> dict:
        """One open-loop ``auto`` run; the profile follows the schedule, counted from the first answer."""
        c, bs = self.cfg, self.cfg.batch_size
        first = self.profiles[self.schedule[0][0]]
        self._apply(first.name)
        self.watch.configure(mode=Mode.AUTO.value)
        time.sleep(c.settle_s)
        # The table's last rows may have left the controller in local (an outage): on a reachable link, let it
        # leave local before the first phase starts (its error estimate decays with probes; the stream may first
        # need gRPC's reconnect backoff), so phase 1 shows auto on that link, not recovery from the table.
        if reachable(first) and not self.watch.wait(
                # connected too: right after configure, the status may still show the table's fixed mode
                lambda r: r.get("cloud_connected") and r.get("effective_mode") not in (None, Mode.LOCAL.value),
                RECOVER_S):
            log.warning("auto still local %.0fs after switching to %s; the timeline starts anyway", RECOVER_S,
                        first.name)
        total_s = sum(s for _, s in self.schedule)
        n_batches = math.ceil(c.rate * total_s)
        images = n_batches * bs
        limit = min(images, (TEST_SPLIT_IMAGES // bs) * bs)
        repeat = math.ceil(images / limit)
        n_batches = repeat * limit // bs
        self.watch.refresh()
        base = _answered(self.watch.polls[-1]) if self.watch.polls else 0
        proc = self._start_loadgen("timeline-auto", ["--loop", "open", "--rate", f"{c.rate:g}", "--limit", str(limit),
                                                     "--repeat", str(repeat), "--batch-timeout-s", "60"])
        try:
            if not self.watch.wait(lambda r: _answered(r) > base, 180, alive=proc):
                raise TestbedError(f"the timeline's load generator answered nothing (log {proc.logf.name})")
            t_first = self.watch.polls[-1]["t"]
            schedule = [{"profile": self.schedule[0][0], "seconds": self.schedule[0][1], "applied_at": t_first}]
            offset = 0.0
            for (_, secs), (name, nsecs) in itertools.pairwise(self.schedule):
                offset += secs
                _sleep_until(t_first + offset, proc)
                applied = self._apply(name, wait_connected_s=0)
                schedule.append({"profile": name, "seconds": nsecs, "applied_at": applied["applied_at"],
                                 "planned_at": t_first + offset})
                log.info("timeline: %s at +%.1fs", name, applied["applied_at"] - t_first)
            rep = self._finish_loadgen(proc, total_s - offset + 300)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            raise
        t_done = time.time()
        self.watch.refresh()
        samples = R.read_samples(proc.out / "samples.csv")
        lat0 = float(samples["latency_s"][0]) if len(samples["latency_s"]) else 0.0
        # the first batch left one latency (and on average half a poll) before the poll that saw its answer
        send0 = t_first - c.poll_s / 2 - (lat0 if math.isfinite(lat0) else 0.0)
        schedule[0]["applied_at"] = send0
        end = min(t_done, send0 + n_batches / c.rate)
        polls = self.watch.polls
        tl = {"schedule": schedule, "rate": c.rate, "samples": rep["samples"], "batches": n_batches,
              "integrity": rep["integrity"], "report": _brief(rep),
              "phases": R.timeline_phases(samples, schedule, send0, c.rate, bs, polls, end),
              "segments": R.segments(polls, schedule, send0, end),
              # bins of a whole number of batches (about 2 s), so open-loop batches do not alias
              "series": R.series(polls, send0, end, bin_s=max(1, round(2 * c.rate)) / c.rate)}
        R.plot_timeline(tl, self.out / "timeline.png")
        tl["plot"] = "timeline.png"
        return tl

    # -- where the run happens (ddnn.testbed.compose.ComposeRun runs on a compose project instead) ----------

    def _site(self) -> contextlib.AbstractContextManager:
        """Build the namespaces on enter, delete them (and stop what runs there) on every exit."""
        return Testbed(self.topo)

    def _describe(self) -> dict:
        return self.topo.describe()

    def _restore(self) -> None:
        """Leave the edge as the run found it (services the run started are stopped anyway)."""

    def _stop_services(self) -> dict[str, int]:
        """Stop what the run started; their exit codes."""
        # the edge first, so it drains its offloads while the cloud still answers
        return {name: svc.stop() for name in ("edge", "cloud") if isinstance(svc := self.services.get(name), Service)}

    # -- the whole run ---------------------------------------------------------------------------------

    def execute(self) -> dict:
        preflight()
        t_start = time.time()
        c = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        rep: dict = {"format": R.FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "command": c.command, "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                        for k, v in asdict(c).items()},
                     "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                              "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
                     "profiles": {n: p.to_dict() for n, p in self.profiles.items()}}
        exit_codes: dict[str, int] = {}
        with self._site():
            rep["topology"] = self._describe()
            try:
                self.shaper = make_shaper(c.shaper, self.topo.backhaul, self.logs)
                rep["shaper"] = self.link.kind
                if self.link.kind == "nfqueue":
                    rep["shaper_note"] = ("this kernel has no sch_netem: tbf for the rate, nfqueue delayer for "
                                          "delay and loss")
                self.link.apply(self.profiles[c.profiles[0] if c.table else self.schedule[0][0]])
                self._start_services()
                self.watcher = Watcher(self.topo, self.services["edge"].grpc, self.out / "status.jsonl",
                                       c.poll_s, self.logs)
                if not self.watch.wait(lambda r: r.get("cloud_connected"), 60):
                    raise TestbedError("the edge did not connect to the cloud within 60s; see logs/")
                if c.table:
                    rep["table"] = self.table()
                if c.timeline:
                    rep["timeline"] = self.timeline()
                rep["qdiscs_at_end"] = self.link.qdiscs()
                rep["edge_metrics"] = self.watch.scrape(self.services["edge"].metrics)
            finally:
                if self.watcher:
                    self._restore()
                    self.watcher.close()
                exit_codes = self._stop_services()
                if self.shaper:
                    self.shaper.close()
                    rep["shaper_counters"] = getattr(self.shaper, "counters", None)
        left = [ns for ns in self.topo.namespaces.values() if ns in existing_namespaces()]
        rep["cleanup"] = {"namespaces_left": left, "exit_codes": exit_codes}
        rep["host"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        rep["host"]["duration_s"] = round(time.time() - t_start, 1)
        rep["checks"] = checks(rep, self.profiles)
        write(rep, self.out)
        return rep


def _answered(poll: dict) -> int:
    return sum(int(v) for v in (poll.get("samples_by_outcome") or {}).values())


def _active(polls: list[dict], t0: float, t1: float) -> tuple[float, float]:
    """The part of [t0, t1) in which the edge was answering (from the poll before the first answer)."""
    inside = [p for p in polls if p.get("ok") and t0 <= p["t"] < t1]
    if not inside:
        return t0, t1
    base = _answered(inside[0])
    for prev, p in itertools.pairwise(inside):
        if _answered(p) > base:
            return prev["t"], t1
    return t0, t1


def _sleep_until(t: float, proc: LoadgenProcess) -> None:
    while (left := t - time.time()) > 0:
        if proc.poll() is not None:
            raise TestbedError(f"load generator exited ({proc.returncode}) before the schedule ended "
                               f"(log {proc.logf.name})")
        time.sleep(min(0.1, left))


def _brief(rep: dict) -> dict:
    return {k: rep[k] for k in ("exit_rates", "accuracy", "latency_s", "bytes", "wall_s", "throughput_samples_per_s")}


def write(rep: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(rep, indent=1, default=str) + "\n")
    (out / "report.md").write_text(R.markdown(rep) + "\n")
