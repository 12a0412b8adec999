"""deploy/prometheus and deploy/grafana, checked by promtool and against the services' metrics modules.

The expressions themselves run against a live Prometheus in
tests/integration/test_deploy_live_prometheus.py; here: promtool's config and rule checks, the alert
unit tests, the metric names every expression uses, and the dashboards' structure and freshness.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess

import prometheus_client
import pytest
import yaml

from ddnn.paths import REPO_ROOT
from deploy.grafana import build_dashboards

PROM = REPO_ROOT / "deploy" / "prometheus"
GRAFANA = REPO_ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
SEVERITIES = {"critical", "warning"}
# Triton's own metrics (tritonserver, not ours) the dashboards and alerts may use.
TRITON_METRICS = {"nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                  "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                  "nv_inference_compute_infer_duration_us", "nv_inference_compute_input_duration_us",
                  "nv_inference_compute_output_duration_us", "nv_inference_pending_request_count"}
PROMQL_WORDS = {"sum", "by", "rate", "increase", "max", "min", "avg", "histogram_quantile", "ignoring", "group_left",
                "absent", "on", "without", "and", "or", "unless", "count", "le", "offset", "bool", "vector"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: apt-get install prometheus (.ci/run does)")
    return subprocess.run([binary, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_promtool_check_config():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_promtool_check_rules():
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_alert_unit_tests():
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def test_every_alert_has_a_duration_severity_and_summary():
    rules = alert_rules()
    assert len({r["alert"] for r in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{rule['alert']}: no for: duration"
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_shown_firing_by_a_unit_test():
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case.get("exp_alerts")}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case.get("exp_alerts")}
    names = {r["alert"] for r in alert_rules()}
    assert names - fired == set(), f"alerts no test makes fire: {sorted(names - fired)}"
    assert names - quiet == set(), f"alerts no test shows quiet: {sorted(names - quiet)}"


def test_the_operator_alerts_of_the_issue_exist():
    names = {r["alert"] for r in alert_rules()}
    for needed in ("DdnnEdgeExitRateCollapse", "DdnnCloudUnreachable", "DdnnEdgeDegraded",
                   "DdnnEdgeLatencyP99OverSLO", "DdnnAccuracyDrop", "DdnnTritonDown"):
        assert needed in names


def exported_metric_names() -> set[str]:
    """Every sample name the services can export, from their metrics modules' collectors."""
    names = set()
    for module in ("services.edge.metrics", "services.cloud.metrics", "services.loadgen.metrics"):
        mod = importlib.import_module(module)
        for obj in vars(mod).values():
            if isinstance(obj, prometheus_client.metrics.MetricWrapperBase):
                base = obj._name
                kind = obj._type
                if kind == "counter":
                    names |= {f"{base}_total", f"{base}_created"}
                elif kind == "histogram":
                    names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
                else:
                    names.add(base)
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label names and values, functions and durations removed)."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # grouping labels
    return {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS and not w.isdigit()
            and not re.fullmatch(r"\d+e\d+|e\d+", w)}


def all_expressions() -> list[tuple[str, str]]:
    out = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["expr"]) for t in panel.get("targets", [])]
    return out


def test_every_expression_uses_metrics_that_exist():
    known = exported_metric_names() | TRITON_METRICS | {"up"}
    unknown = {where: sorted(metric_names(expr) - known) for where, expr in all_expressions()
               if metric_names(expr) - known}
    assert not unknown, unknown


def test_metric_name_extraction_sees_every_metric():
    names = metric_names('sum by (le, path) (rate(ddnn_edge_stage_seconds_bucket{stage="total"}[5m])) '
                         '/ ignoring(outcome) group_left max(nv_inference_count) / 1e6')
    assert names == {"ddnn_edge_stage_seconds_bucket", "nv_inference_count"}


def test_committed_dashboards_are_what_the_generator_writes():
    rendered = build_dashboards.render()
    assert sorted(rendered) == [p.name for p in DASHBOARDS]
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run .venv/bin/python deploy/grafana/build_dashboards.py")


def panels(path):
    return [p for p in json.loads(path.read_text())["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    board = json.loads(path.read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) and board["uid"] == path.stem
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"]
    uids = {d["uid"] for d in ds}
    for p in panels(path):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["targets"] and p["datasource"]["uid"] in uids, p["title"]
        assert all(t["datasource"]["uid"] in uids and t["expr"].strip() for t in p["targets"]), p["title"]
    # No two panels overlap.
    cells = set()
    for p in panels(path):
        g = p["gridPos"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & mine, f"{p['title']} overlaps another panel"
        cells |= mine


def test_dashboards_cover_what_an_operator_asked_for():
    text = " ".join(expr for _, expr in all_expressions() if not _.startswith("alert"))
    for what, metric in [("exit rates", "ddnn_edge_samples_total"), ("accuracy", "ddnn_loadgen_accuracy"),
                         ("latency per path", "ddnn_edge_stage_seconds_bucket"),
                         ("offload bandwidth", "ddnn_edge_offload_bytes_total"),
                         ("bytes per sample", "ddnn_edge_offload_samples_total"),
                         ("cloud batch size", "ddnn_cloud_batch_size"), ("cloud queue", "ddnn_cloud_queue_seconds"),
                         ("mode", "ddnn_edge_mode"), ("thresholds", "ddnn_edge_threshold"),
                         ("Triton requests", "nv_inference_request_success")]:
        assert metric in text, f"no panel shows {what} ({metric})"
    assert "histogram_quantile(0.5," in text and "histogram_quantile(0.99," in text


def test_grafana_provisioning_points_at_the_dashboards():
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "ddnn.yml").read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"]
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert source["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]
