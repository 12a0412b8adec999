"""The netem testbed for real: three namespaces, shaped veth, services, a quick replay (root only)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from ddnn.paths import REPO_ROOT
from ddnn.testbed.topology import NS_PREFIX, Testbed, Topology, existing_namespaces
from tests.testbed_report import assert_every_sample_answered_once

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, tc)"
    missing = [t for t in ("ip", "tc") if shutil.which(t) is None]
    if missing:
        return f"needs {' and '.join(missing)} (apt-get install -y iproute2)"
    return None


@pytest.fixture(autouse=True)
def _root_and_iproute2():
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)


def ours() -> set[str]:
    return {ns for ns in existing_namespaces() if ns.startswith(NS_PREFIX)}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("testbed")
    before = ours()
    proc = subprocess.run([sys.executable, "-m", "ddnn.testbed", "--quick", "--out", str(out)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=840)
    path = out / "report.json"
    assert path.is_file(), f"no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return {"proc": proc, "report": json.loads(path.read_text()), "out": out, "before": before}


def test_every_sample_answered_exactly_once_in_every_phase(quick):
    assert_every_sample_answered_once(quick["report"])


def test_constrained_rtt_reflects_the_40ms_netem_delay(quick):
    rep = quick["report"]
    rtt = {r["profile"]: r["tcp_rtt_ms"] for r in rep["table"]}
    assert rep["profiles"]["constrained"]["delay_ms"] == 40
    # 40 ms each way: a TCP handshake from the edge's namespace takes 80 ms, not the bare veth's 0.1 ms
    assert 76 <= rtt["constrained"]["median_ms"] <= 110, rtt["constrained"]
    assert rtt["good"]["median_ms"] < 20, rtt["good"]
    assert rtt["outage"]["lost"] == len(rtt["outage"]["samples_ms"])
    # the edge's own estimate of the link agrees: of the order of the emulated 80 ms round trip. It is an
    # EWMA (alpha 0.3) of probe round trips that starts the constrained phase from the good link's ~0.1 ms,
    # so it approaches 80 ms from below; a loaded run that reports it after few probes shows less (74.7 and
    # 67.0 ms seen), so 25% under the emulated value is allowed. The bare veth would give about 0.1 ms.
    edge_rtt = [r["link"]["rtt_ms"] for r in rep["table"] if r["profile"] == "constrained" and r["link"]["rtt_ms"]]
    assert edge_rtt and min(edge_rtt) >= 60


def test_auto_mode_follows_the_link_good_vs_outage(quick):
    rep = quick["report"]
    phases = rep["timeline"]["phases"]
    good = [ph["settled_mode"] for ph in phases if ph["profile"] == "good"]
    outage = [ph["settled_mode"] for ph in phases if ph["profile"] == "outage"]
    assert outage == ["local"], phases
    assert all(m in ("ws", "normal") for m in good), phases
    # ... and in the per-profile replays
    auto = {r["profile"]: r["effective_modes"] for r in rep["table"] if r["mode"] == "auto"}
    assert max(auto["outage"], key=auto["outage"].get) == "local", auto
    assert max(auto["good"], key=auto["good"].get) in ("ws", "normal"), auto
    switches = {k: v for k, v in rep["edge_metrics"].items() if k.startswith("ddnn_edge_mode_switches_total")}
    assert switches.get('ddnn_edge_mode_switches_total{mode="local"}', 0) >= 1, switches
    assert rep["checks"]["auto_follows_link"]["ok"]


def test_report_files_and_a_clean_exit(quick):
    out, proc = quick["out"], quick["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    md = (out / "report.md").read_text()
    assert "Effective mode over time" in md and "| outage |" in md and "**local**" in md
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Effective mode over time" in proc.stdout  # printed, too
    assert all(c["ok"] for c in quick["report"]["checks"].values()), quick["report"]["checks"]


def test_namespaces_links_and_processes_are_gone_afterwards(quick):
    rep = quick["report"]
    names = set(rep["topology"]["namespaces"].values())
    assert not names & set(existing_namespaces())
    assert ours() == quick["before"]
    assert rep["cleanup"]["namespaces_left"] == [] and set(rep["cleanup"]["exit_codes"].values()) == {0}
    host_links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert not any(dev in host_links for dev in ("to-edge", "to-lg", "to-cloud"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [line for line in ps.splitlines() if "ddnn.testbed" in line and str(quick["out"]) in line]


def test_context_manager_removes_everything_on_an_exception():
    topo = Topology.plan()
    with pytest.raises(RuntimeError, match="boom"), Testbed(topo):
        assert set(topo.namespaces.values()) <= set(existing_namespaces())
        out = subprocess.run([*topo.exec_prefix("edge"), "ip", "-o", "addr", "show", "dev", "to-cloud"],
                             capture_output=True, text=True).stdout
        assert f"{topo.backhaul.a.addr}/30" in out
        raise RuntimeError("boom")
    assert not set(topo.namespaces.values()) & set(existing_namespaces())


SINK = """
import socket, time
s = socket.socket(); s.bind(("{addr}", 5201)); s.listen(1); s.settimeout(60)
c, _ = s.accept(); n = 0; t0 = None
while True:
    b = c.recv(1 << 20)
    t0 = t0 or time.perf_counter()
    if not b:
        break
    n += len(b)
print(n, time.perf_counter() - t0)
"""
SOURCE = """
import socket
s = socket.create_connection(("{addr}", 5201), timeout=60); s.sendall(b"x" * {n}); s.shutdown(1); s.recv(1)
"""


def bulk_mbit(topo: Topology, nbytes: int) -> float:
    """Send ``nbytes`` over TCP from the edge's namespace to the cloud's; the goodput in Mbit/s."""
    addr = topo.backhaul.b.addr
    sink = subprocess.Popen([*topo.exec_prefix("cloud"), sys.executable, "-c", SINK.format(addr=addr)],
                            stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        subprocess.run([*topo.exec_prefix("edge"), sys.executable, "-c", SOURCE.format(addr=addr, n=nbytes)],
                       check=True, timeout=90)
        n, secs = sink.communicate(timeout=90)[0].split()
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()
    assert int(n) == nbytes
    return 8 * nbytes / float(secs) / 1e6


def test_shaped_link_carries_its_rate_with_its_delay(tmp_path):
    from ddnn.testbed.profiles import load_profiles
    from ddnn.testbed.shaper import make_shaper

    profiles = load_profiles()
    topo = Topology.plan()
    with Testbed(topo):
        shaper = make_shaper("auto", topo.backhaul, tmp_path)
        try:
            shaper.apply(profiles["constrained"])
            # 2 MB at 10 Mbit/s with an 80 ms round trip: close to the rate (slow start costs a little),
            # never above it, and not throttled by the emulation itself
            assert 6.0 <= bulk_mbit(topo, 2 << 20) <= 10.5
            shaper.apply(profiles["good"])
            assert bulk_mbit(topo, 8 << 20) > 50
        finally:
            shaper.close()
    assert not set(topo.namespaces.values()) & set(existing_namespaces())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_run_still_cleans_up(tmp_path, sig):
    before = ours()
    proc = subprocess.Popen([sys.executable, "-m", "ddnn.testbed", "--quick", "--no-table", "--out", str(tmp_path)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (ours() - before) and proc.poll() is None:
            time.sleep(0.2)
        assert ours() - before, "the testbed never came up"
        time.sleep(3)  # services starting inside the namespaces
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert ours() == before, out[-3000:]
