"""`docker compose up` for real: the replay, the hardening and Prometheus, as a user would check them.

The session's testbed (conftest.py) is docker-compose.yml as it is, plus tests' replay length and an
edge without its SLO controller (so the exits depend on the policy alone). The expected side is
``ddnn eval`` run in this process on the same checkpoint, policy and images.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import urllib.parse
import urllib.request

import pytest

from ddnn.cli import main as ddnn_main
from tests.containers.testbed import REPLAY, SLO_ONLY, wait_until
from tests.integration.test_deploy_live_prometheus import alert_exprs, dashboard_targets, grafana_to_promql

SCRAPE_S = 5  # deploy/prometheus/prometheus.yml
NON_EDGE = ("cloud", "dropped", "degraded", "rejected")


@pytest.fixture(scope="module")
def replay(testbed):
    """The compose load generator's report and samples, and a time at which Prometheus has scraped it all."""
    loadgen = testbed.container("loadgen")
    report = wait_until("the load generator's report.json",
                        lambda: json.loads(testbed.read_file(loadgen, "/results/report.json")), 900, interval=3)
    rows = list(csv.DictReader(io.StringIO(testbed.read_file(loadgen, "/results/samples.csv").decode())))
    time.sleep(3 * SCRAPE_S + 1)  # while it lingers: the last counts are scraped
    at = time.time()
    status = loadgen.wait(timeout=300)
    print(f"\n--- docker compose logs loadgen (the report it printed) ---\n{testbed.logs('loadgen', tail=45)}")
    return {"report": report, "rows": rows, "at": at, "exit_code": status["StatusCode"]}


def test_the_services_start_in_health_order(testbed):
    """Compose started each service only after its dependency was healthy: start times follow the chain."""
    started = {}
    for service in ("triton", "cloud", "edge", "loadgen"):
        c = testbed.container(service)
        started[service] = c.attrs["State"]["StartedAt"]
    assert started["triton"] < started["cloud"] < started["edge"] < started["loadgen"], started
    for service in ("triton", "cloud", "edge", "prometheus"):
        assert testbed.docker_health(service) == "healthy", (service, testbed.logs(service))


def test_replay_completes_with_integrity_and_equals_ddnn_eval(replay, tmp_path):
    report, rows = replay["report"], replay["rows"]
    assert replay["exit_code"] == 0
    assert report["samples"] == int(REPLAY["DDNN_LOADGEN_LIMIT"]) and report["integrity"]["ok"], report["integrity"]
    assert report["exit_rates"]["degraded"] == 0 and report["exit_rates"]["cloud"] > 0, report["exit_rates"]
    # ddnn eval on the same checkpoint and policy (the shipped ones the compose file names), in this process.
    per_sample = tmp_path / "eval.csv"
    assert ddnn_main(["eval", "--per-sample", str(per_sample), "--no-progress"]) == 0
    with open(per_sample) as f:
        evaluated = {int(r["sample_id"]): r for r in csv.DictReader(f)}
    expected = [evaluated[int(r["sample_id"]) % len(evaluated)] for r in rows]
    for got, want in zip(rows, expected, strict=True):
        assert (got["exit"], int(got["prediction"])) == (want["exit"], int(want["prediction"])), (got, want)
    n = len(rows)
    edge_exits = {e: v for e, v in report["exit_rates"].items() if e not in NON_EDGE}
    for name, rate in edge_exits.items():
        assert rate == pytest.approx(sum(w["exit"] == name for w in expected) / n, abs=1e-12), name
    assert report["exit_rates"]["cloud"] == pytest.approx(1 - sum(edge_exits.values()), abs=1e-12)
    correct = [int(w["prediction"]) == int(w["label"]) for w in expected]
    assert report["accuracy"]["overall"] == pytest.approx(sum(correct) / n, abs=1e-12)
    at_edge = [c for c, w in zip(correct, expected, strict=True) if w["exit"] in edge_exits]
    assert report["accuracy"]["edge"] == pytest.approx(sum(at_edge) / len(at_edge), abs=1e-12)


@pytest.mark.parametrize("service", ["triton", "cloud", "edge", "loadgen", "prometheus"])
def test_hardening_holds_in_the_real_run(testbed, service):
    """Non-root, read-only root file system, no capabilities, no-new-privileges: as docker inspect sees them."""
    c = testbed.container(service)
    c.reload()
    user = c.attrs["Config"]["User"]
    assert user and user.split(":")[0] not in ("0", "root"), user
    host = c.attrs["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges:true" in host["SecurityOpt"]
    if c.status == "running":  # the load generator may have finished
        assert c.exec_run(["id", "-u"]).output.decode().strip() == user.split(":")[0]
        assert c.exec_run(["touch", "/probe"]).exit_code != 0, "the root file system is writable"


def prometheus_query(testbed, promql: str, at: float) -> dict:
    url = f"http://{testbed.ip('prometheus')}:9090/api/v1/query?" + urllib.parse.urlencode(
        {"query": promql, "time": f"{at:.3f}"})
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return json.loads(r.read().decode())
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read().decode())


def finite(answer: dict) -> list[float]:
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data["result"] if math.isfinite(float(s["value"][1]))]


def test_prometheus_scrapes_every_target(testbed, replay):
    url = f"http://{testbed.ip('prometheus')}:9090/api/v1/query?" + urllib.parse.urlencode(
        {"query": "up", "time": f"{replay['at']:.3f}"})
    with urllib.request.urlopen(url, timeout=20) as r:
        up = {s["metric"]["job"]: s["value"][1] for s in json.loads(r.read().decode())["data"]["result"]}
    assert up == {job: "1" for job in ("prometheus", "edge", "cloud", "loadgen", "triton")}, up


@pytest.mark.parametrize("dashboard, panel, expr", dashboard_targets(),
                         ids=[f"{d}:{p}:{i}" for i, (d, p, _) in enumerate(dashboard_targets())])
def test_dashboard_query_returns_data(testbed, replay, dashboard, panel, expr):
    if SLO_ONLY in expr:
        pytest.skip("the session's edge runs without an SLO controller (see testbed.EDGE)")
    answer = prometheus_query(testbed, grafana_to_promql(expr), replay["at"])
    assert answer["status"] == "success", f"{dashboard} / {panel}: {answer.get('error')}\n{expr}"
    assert finite(answer), f"{dashboard} / {panel} shows no data:\n{expr}\n{answer['data']}"


def test_every_alert_rule_evaluates(testbed, replay):
    for name, expr in alert_exprs():
        answer = prometheus_query(testbed, expr, replay["at"])
        assert answer["status"] == "success", f"{name}: {answer.get('error')}\n{expr}"
    with urllib.request.urlopen(f"http://{testbed.ip('prometheus')}:9090/api/v1/rules", timeout=20) as r:
        groups = json.loads(r.read().decode())["data"]["groups"]
    loaded = {rule["name"]: rule for g in groups for rule in g["rules"]}
    assert set(loaded) == {name for name, _ in alert_exprs()}
    unhealthy = {n: rule.get("lastError") for n, rule in loaded.items() if rule["health"] != "ok"}
    assert not unhealthy, unhealthy
