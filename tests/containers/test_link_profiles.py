"""The testbed's link profiles on the compose testbed: WS vs normal vs auto between containers.

`ddnn testbed --quick --compose PROJECT` runs on the session's compose project: good / constrained /
lossy / outage on the backhaul network between the edge and cloud containers (tc netem in their
namespaces, or the nfqueue delayer where the kernel has no netem), fixed-mode and auto replays per
profile, then one auto run while the profile follows a schedule. It runs as a separate process, as a
user would run it, and needs root (the containers themselves stay unprivileged).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from ddnn.paths import REPO_ROOT
from ddnn.testbed.topology import NS_PREFIX, existing_namespaces
from tests.containers.testbed import Timeline
from tests.testbed_report import assert_every_sample_answered_once


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "shaping the containers' link needs root (ip netns attach, tc)"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "needs ip and tc (apt-get install -y iproute2)"
    return None


@pytest.fixture(scope="module")
def linked(testbed, tmp_path_factory):
    if reason := _skip_reason():
        pytest.skip(reason)
    t = Timeline("link profiles")
    out = tmp_path_factory.mktemp("compose-link")
    before = {ns for ns in existing_namespaces() if ns.startswith(NS_PREFIX)}
    t.mark(f"ddnn testbed --quick --compose {testbed.project}")
    proc = subprocess.run([sys.executable, "-m", "ddnn.testbed", "--quick", "--compose", testbed.project,
                           "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    t.mark(f"exit {proc.returncode}")
    path = out / "report.json"
    assert path.is_file(), f"no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    print(proc.stdout[-6000:], flush=True)
    return {"proc": proc, "report": json.loads(path.read_text()), "before": before, "bed": testbed}


def test_every_profile_and_mode_answered_exactly_once_between_containers(linked):
    rep = linked["report"]
    assert rep["topology"]["compose"]["project"] == linked["bed"].project
    assert_every_sample_answered_once(rep)
    rows = rep["table"]
    good = {r["mode"]: r for r in rows if r["profile"] == "good"}
    assert good["normal"]["cloud_rate"] > 0 and good["normal"]["degraded_rate"] == 0, good["normal"]


def test_the_profiles_shape_the_link_between_the_containers(linked):
    rep = linked["report"]
    rtt = {r["profile"]: r["tcp_rtt_ms"] for r in rep["table"]}
    # 40 ms each way, measured by TCP handshakes from the edge container's namespace to the cloud's
    assert 76 <= rtt["constrained"]["median_ms"] <= 110, rtt["constrained"]
    assert rtt["good"]["median_ms"] < 20, rtt["good"]
    assert rtt["outage"]["lost"] == len(rtt["outage"]["samples_ms"])
    assert rep["shaper"] in ("netem", "nfqueue")
    backhaul = rep["topology"]["links"]["backhaul"]
    assert {backhaul["a"]["addr"], backhaul["b"]["addr"]} == {
        linked["bed"].container(s).attrs["NetworkSettings"]["Networks"][linked["bed"].backhaul]["IPAddress"]
        for s in ("edge", "cloud")}


def test_auto_follows_the_link_on_the_container_testbed(linked):
    rep = linked["report"]
    phases = rep["timeline"]["phases"]
    assert [ph["settled_mode"] for ph in phases if ph["profile"] == "outage"] == ["local"], phases
    assert all(ph["settled_mode"] in ("ws", "normal") for ph in phases if ph["profile"] == "good"), phases
    assert all(c["ok"] for c in rep["checks"].values()), rep["checks"]


def test_the_run_leaves_the_testbed_as_it_found_it(linked):
    bed, proc = linked["bed"], linked["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no namespace names left, no qdisc left on either end, no container touched, the edge back in its mode
    assert {ns for ns in existing_namespaces() if ns.startswith(NS_PREFIX)} == linked["before"]
    for service in ("edge", "cloud"):
        c = bed.container(service)
        c.reload()
        assert c.attrs["State"]["Status"] == "running" and c.attrs["RestartCount"] == 0, service
        qdisc = subprocess.run(["nsenter", "-t", str(c.attrs["State"]["Pid"]), "-n", "tc", "qdisc", "show"],
                               capture_output=True, text=True).stdout
        assert "netem" not in qdisc and "tbf" not in qdisc, (service, qdisc)
    assert bed.edge_metric('ddnn_edge_mode{mode="normal"}') == 1.0  # the compose file's mode, set back
