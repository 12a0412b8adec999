"""A real Prometheus scrapes the running system; every dashboard and alert expression must work.

Triton (deploy/docker/triton_serve.py), the cloud, the edge and a load generator run as processes
on ephemeral ports with the environment docker-compose.yml gives their containers (paths under
/app mapped to this checkout, addresses and run length overridden by flags); Prometheus (Debian's
package) runs with
deploy/prometheus/prometheus.yml, its targets rewritten to those ports and its intervals shortened,
and with deploy/prometheus/alerts.yml. After the load generator has replayed a few hundred images,
every PromQL expression of every Grafana panel must evaluate through the HTTP API and return at
least one finite value (a panel that shows nothing fails), and Prometheus must report every alert
rule healthy. The images' HEALTHCHECK script is exercised against the same servers.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from ddnn.launch import Service, start
from ddnn.paths import REPO_ROOT

pytestmark = pytest.mark.integration

DEPLOY = REPO_ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROBE = DEPLOY / "docker" / "grpc_health_probe.py"
SCRAPE_S = 1
# What Grafana substitutes for $__rate_interval; wide enough to cover the whole replay.
RATE_INTERVAL = "1m"
IMAGES = 480
BATCH = 16
BATCHES_PER_S = 4.0  # open loop: the replay spans several scrapes, so every rate() sees an increase
TRITON_SPLITS = "block7,input"  # the split the edge offloads at, and raw-input offload
COMPOSE = REPO_ROOT / "docker-compose.yml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def wait_for(what: str, check, timeout: float, interval: float = 0.5):
    """Call ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except OSError as exc:  # connection refused while a server starts
            last = exc
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every panel."""
    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                out.append((path.name, panel["title"], target["expr"]))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(rule.get("alert") or rule.get("record"), rule["expr"]) for g in groups for rule in g["rules"]]


def grafana_to_promql(expr: str) -> str:
    """Substitute the Grafana macros the dashboards use, as Grafana does before it queries Prometheus."""
    out = expr.replace("$__rate_interval", RATE_INTERVAL)
    assert "$" not in out, f"unsupported Grafana variable in {expr!r}"
    return out


def prometheus_config(jobs: dict[str, str], work: Path) -> Path:
    """deploy/prometheus/prometheus.yml with each job's targets replaced by the running process's address."""
    cfg = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    cfg["global"].update(scrape_interval=f"{SCRAPE_S}s", scrape_timeout=f"{SCRAPE_S}s",
                         evaluation_interval=f"{SCRAPE_S}s")
    cfg["rule_files"] = [str((DEPLOY / "prometheus" / f).resolve()) for f in cfg["rule_files"]]
    configured = {sc["job_name"] for sc in cfg["scrape_configs"]}
    assert configured == set(jobs), f"prometheus.yml scrapes {sorted(configured)}, the system runs {sorted(jobs)}"
    for sc in cfg["scrape_configs"]:
        for static in sc["static_configs"]:
            static["targets"] = [jobs[sc["job_name"]]]
    path = work / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


class Prometheus:
    """A ``prometheus`` process on a free loopback port with its own TSDB under ``work``."""

    def __init__(self, config: Path, work: Path, port: int):
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: apt-get install prometheus (.ci/run does)")
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = work / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
                 ], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
            return r.status == 200

    def query(self, promql: str, at: float) -> dict:
        """The /api/v1/query answer (status, data or error), never raising on a PromQL error."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        try:
            return http_json(url)
        except urllib.error.HTTPError as exc:  # 400/422 carry a JSON error body
            return json.loads(exc.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def compose_env(service: str) -> dict[str, str]:
    """The service's environment in docker-compose.yml, with the image's /app paths mapped to this checkout."""
    env = yaml.safe_load(COMPOSE.read_text())["services"][service]["environment"]
    return {k: str(REPO_ROOT / v.removeprefix("/app/")) if str(v).startswith("/app/") else str(v)
            for k, v in env.items()}


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    """Triton, cloud, edge, load generator and Prometheus; yields what the tests need, stops everything."""
    work = tmp_path_factory.mktemp("deploy")
    repository = work / "triton-repo"
    running: list[Service] = []
    prom = None
    try:
        triton = start("deploy.docker.triton_serve",
                       ["--repository", str(repository), "--splits", TRITON_SPLITS, "--host", "127.0.0.1",
                        "--grpc-port", "0", "--http-port", "-1", "--metrics-port", "0", "--log-file", ""],
                       work, name="triton", timeout=300, env=compose_env("triton"))
        running.append(triton)
        # As in the compose file: the cloud's deep segments run on that Triton, found through its manifest.
        cloud_args = ["--backend", "triton", "--triton-url", triton.grpc, "--triton-repository", str(repository),
                      "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1", "--metrics-port", "0",
                      "--splits", TRITON_SPLITS]
        cloud = start("services.cloud", cloud_args, work, timeout=300, env=compose_env("cloud"))
        running.append(cloud)
        edge = start("services.edge", ["--cloud", cloud.grpc, "--listen", "127.0.0.1:0", "--metrics-addr", "127.0.0.1",
                                       "--metrics-port", "0"], work, env=compose_env("edge"))
        running.append(edge)
        loadgen = start("services.loadgen",
                        ["--edge", edge.grpc, "--limit", str(IMAGES), "--repeat", "1", "--batch-size", str(BATCH),
                         "--loop", "open", "--rate", str(BATCHES_PER_S), "--metrics-addr", "127.0.0.1",
                         "--metrics-port", "0", "--linger-s", "120", "--out", str(work / "loadgen")],
                        work, env=compose_env("loadgen"))
        running.append(loadgen)
        jobs = {"edge": f"127.0.0.1:{edge.info['metrics_port']}", "cloud": f"127.0.0.1:{cloud.info['metrics_port']}",
                "loadgen": f"127.0.0.1:{loadgen.info['metrics_port']}",
                "triton": f"127.0.0.1:{triton.info['metrics_port']}"}
        port = free_port()
        jobs["prometheus"] = f"127.0.0.1:{port}"
        prom = Prometheus(prometheus_config(jobs, work), work, port)
        wait_for("Prometheus ready", prom.ready, 60)
        wait_for("every target up", lambda: all_targets_up(prom, set(jobs)), 60)
        report_path = work / "loadgen" / "report.json"
        wait_for("the load generator's report", report_path.exists, 300)
        time.sleep(3 * SCRAPE_S + 1)  # the last counts are scraped
        yield {"prometheus": prom, "at": time.time(), "report": json.loads(report_path.read_text()),
               "edge": edge, "cloud": cloud, "triton": triton}
    finally:
        if prom is not None:
            prom.stop()
        for svc in reversed(running):
            svc.stop()


def all_targets_up(prom: Prometheus, jobs: set[str]) -> bool:
    active = http_json(f"{prom.url}/api/v1/targets")["data"]["activeTargets"]
    up = {t["labels"]["job"] for t in active if t["health"] == "up"}
    return up == jobs


def finite_values(answer: dict) -> list[float]:
    data = answer["data"]
    if data["resultType"] == "scalar":
        return [float(data["result"][1])]
    return [float(s["value"][1]) for s in data["result"] if math.isfinite(float(s["value"][1]))]


@pytest.mark.parametrize("dashboard, panel, expr", dashboard_targets(),
                         ids=[f"{d}:{p}:{i}" for i, (d, p, _) in enumerate(dashboard_targets())])
def test_dashboard_expression_returns_data(system, dashboard, panel, expr):
    answer = system["prometheus"].query(grafana_to_promql(expr), system["at"])
    assert answer["status"] == "success", f"{dashboard} / {panel}: {answer.get('error')}\n{expr}"
    assert finite_values(answer), f"{dashboard} / {panel} shows no data:\n{expr}\n{answer['data']}"


@pytest.mark.parametrize("name, expr", alert_exprs(), ids=[a for a, _ in alert_exprs()])
def test_alert_expression_evaluates(system, name, expr):
    answer = system["prometheus"].query(expr, system["at"])
    assert answer["status"] == "success", f"{name}: {answer.get('error')}\n{expr}"


def test_prometheus_loaded_and_evaluated_every_rule(system):
    prom = system["prometheus"]
    groups = http_json(f"{prom.url}/api/v1/rules")["data"]["groups"]
    loaded = {r["name"]: r for g in groups for r in g["rules"]}
    assert set(loaded) == {name for name, _ in alert_exprs()}
    unhealthy = {n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    assert not unhealthy, unhealthy
    firing = [a["labels"]["alertname"] for a in http_json(f"{prom.url}/api/v1/alerts")["data"]["alerts"]
              if a["state"] == "firing"]
    assert not firing, f"alerts firing on a healthy system: {firing}"


def instant(system, promql: str) -> float:
    values = finite_values(system["prometheus"].query(grafana_to_promql(promql), system["at"]))
    assert len(values) == 1, (promql, values)
    return values[0]


def panel_expr(title: str) -> str:
    (expr,) = [e for _, t, e in dashboard_targets() if t == title]
    return expr


def test_dashboards_agree_with_the_load_generator_report(system):
    """The scraped counters are exactly what the client saw; the panels show the same within rate() error."""
    report = system["report"]
    assert report["samples"] == IMAGES and report["integrity"]["ok"]
    edge_share = 1 - sum(v for k, v in report["exit_rates"].items() if k in ("cloud", "dropped", "degraded"))
    at_edge = 'sum(ddnn_edge_samples_total{outcome!~"cloud|dropped|degraded"})'
    assert instant(system, f"{at_edge} / sum(ddnn_edge_samples_total)") == pytest.approx(edge_share, abs=1e-9)
    # rate() over a replay of a few seconds misses the first scrape of each series: a loose bound.
    assert instant(system, panel_expr("Edge exit rate")) == pytest.approx(edge_share, abs=0.1)
    overall = instant(system, panel_expr("Overall accuracy"))
    assert overall == pytest.approx(report["accuracy"]["overall"], abs=1e-6)
    assert report["exit_rates"]["cloud"] > 0, "the policy offloaded nothing; the cloud and Triton panels are idle"
    offloaded = round(report["exit_rates"]["cloud"] * IMAGES)
    assert instant(system, "sum(ddnn_edge_offload_samples_total)") == offloaded
    # Every offloaded sample was answered by the cloud, computed by Triton.
    assert instant(system, "sum(ddnn_cloud_samples_total)") == offloaded
    assert instant(system, "sum(nv_inference_count)") >= offloaded


def run_probe(address: str, service: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROBE), address, "--service", service, "--timeout", "3"],
                          capture_output=True, text=True, timeout=30)


def test_healthcheck_script_reports_serving_and_failure(system):
    for svc, name in ((system["edge"], "ddnn.v1.Edge"), (system["cloud"], "ddnn.v1.Cloud"),
                      (system["triton"], "")):
        done = run_probe(svc.grpc, name)
        assert done.returncode == 0 and "SERVING" in done.stdout, done.stdout + done.stderr
    unknown = run_probe(system["edge"].grpc, "ddnn.v1.NoSuchService")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
        down = run_probe(dead)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stdout, down.stdout
