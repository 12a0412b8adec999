"""Write the Grafana dashboard JSON in deploy/grafana/dashboards/ from the panel lists below.

The JSON files are what Grafana loads (docker compose mounts them, kustomize turns them into
ConfigMaps); this script keeps their layout, ids and datasource consistent. Run it after editing a
panel and commit both: ``.venv/bin/python deploy/grafana/build_dashboards.py``. The unit tests fail
when the committed JSON differs from what this script writes, and the integration test evaluates
every ``expr`` against a live Prometheus and fails on any panel that shows no data.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}  # provisioning/datasources/prometheus.yml
RATE = "$__rate_interval"
SCHEMA_VERSION = 39  # Grafana 10.x / 11.x


@dataclass
class Panel:
    """One panel: a title, its PromQL targets as (expr, legend) pairs, a unit and a kind."""

    title: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries | stat
    width: int = 8
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict = field(default_factory=dict)


def _edge_exit(window: str = RATE) -> str:
    return (f'sum(rate(ddnn_edge_samples_total{{outcome!~"cloud|dropped|degraded"}}[{window}]))'
            f" / sum(rate(ddnn_edge_samples_total[{window}]))")


def _quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    return f"histogram_quantile({q}, sum by (le{', ' + by if by else ''}) (rate({metric}_bucket{selector}[{RATE}])))"


def _ratio(num: str, den: str, by: str) -> str:
    return f"sum by ({by}) (rate({num}[{RATE}])) / sum by ({by}) (rate({den}[{RATE}]))"


OVERVIEW: list[tuple[str, list[Panel]]] = [
    ("Early exits (edge)", [
        Panel("Exit rate per exit", [
            (f"sum by (outcome) (rate(ddnn_edge_samples_total[{RATE}]))"
             f" / ignoring(outcome) group_left sum(rate(ddnn_edge_samples_total[{RATE}]))", "{{outcome}}")],
            unit="percentunit", stack=True, width=12,
            description="Share of samples answered by each edge exit, by the cloud, dropped, or degraded "
                        "(offload failed, answered by the deepest edge exit)."),
        Panel("Samples per second by outcome", [
            (f"sum by (outcome) (rate(ddnn_edge_samples_total[{RATE}]))", "{{outcome}}")], unit="reqps", width=6),
        Panel("Edge exit rate", [(_edge_exit(), "edge exits")], unit="percentunit", kind="stat", width=6,
              description="Fraction of samples that never leave the edge (about 0.9 with the shipped policy)."),
    ]),
    ("Accuracy (load generator, labelled canary)", [
        Panel("Running accuracy by scope", [("max by (scope) (ddnn_loadgen_accuracy)", "{{scope}}")],
              unit="percentunit", width=12,
              description="Accuracy of the answers so far, as the load generator sees them: samples answered at "
                          "the edge, by the cloud, and overall."),
        Panel("Accuracy by path (windowed)", [
            (_ratio("ddnn_loadgen_correct_total", "ddnn_loadgen_samples_total", "outcome"), "{{outcome}}")],
            unit="percentunit", width=6),
        Panel("Overall accuracy", [('max(ddnn_loadgen_accuracy{scope="overall"})', "overall")],
              unit="percentunit", kind="stat", width=6),
    ]),
    ("Latency", [
        Panel("Edge per-sample latency p50 / p99 by path", [
            (_quantile(0.5, "ddnn_edge_stage_seconds", "path", '{stage="total"}'), "p50 {{path}}"),
            (_quantile(0.99, "ddnn_edge_stage_seconds", "path", '{stage="total"}'), "p99 {{path}}")],
            unit="s", description="Arrival at the edge to answer, per path (edge exit, cloud, degraded)."),
        Panel("Client latency p50 / p99 by path", [
            (_quantile(0.5, "ddnn_loadgen_latency_seconds", "path"), "p50 {{path}}"),
            (_quantile(0.99, "ddnn_loadgen_latency_seconds", "path"), "p99 {{path}}")],
            unit="s", description="Batch sent to sample answered, measured by the load generator."),
        Panel("Cloud path: mean time per stage", [
            (_ratio('ddnn_edge_stage_seconds_sum{path="cloud"}', 'ddnn_edge_stage_seconds_count{path="cloud"}',
                    "stage"), "{{stage}}")],
            unit="s", description="edge_compute, link (network + (de)serialization), cloud_compute, total."),
    ]),
    ("Offload (edge to cloud)", [
        Panel("Offload bandwidth", [(f"sum by (payload) (rate(ddnn_edge_offload_bytes_total[{RATE}]))",
                                     "{{payload}}")], unit="Bps"),
        Panel("Bytes per offloaded sample", [
            (_ratio("ddnn_edge_offload_bytes_total", "ddnn_edge_offload_samples_total", "payload"), "{{payload}}")],
            unit="bytes"),
        Panel("Cloud link", [
            ("max(ddnn_edge_cloud_connected)", "connected"),
            (_quantile(0.99, "ddnn_edge_cloud_rtt_seconds", ""), "batch RTT p99 (s)"),
            ("max(ddnn_edge_link_rtt_seconds)", "RTT EWMA (s)"),
            ("max(ddnn_edge_link_error_rate)", "error rate EWMA")],
            description="1 while the edge's stream to the cloud is up; round trip of one feature batch."),
    ]),
    ("Cloud", [
        Panel("Cloud batch size", [
            (_ratio("ddnn_cloud_batch_size_sum", "ddnn_cloud_batch_size_count", "split"), "mean {{split}}"),
            (_quantile(0.9, "ddnn_cloud_batch_size", "split"), "p90 {{split}}")],
            description="Samples per feature batch arriving at the cloud, by split point."),
        Panel("Cloud queue and compute time", [
            (_quantile(0.5, "ddnn_cloud_queue_seconds", ""), "queue p50"),
            (_quantile(0.99, "ddnn_cloud_queue_seconds", ""), "queue p99"),
            (_quantile(0.99, "ddnn_cloud_compute_seconds", "split"), "compute p99 {{split}}")], unit="s"),
        Panel("Cloud batches by status", [
            (f"sum by (split, status) (rate(ddnn_cloud_batches_total[{RATE}]))", "{{split}} {{status}}")],
            unit="reqps"),
    ]),
    ("Control: mode and thresholds", [
        Panel("Configured mode", [("max by (mode) (ddnn_edge_mode) == 1", "{{mode}}")], kind="stat", width=6,
              options={"textMode": "name"}),
        Panel("Effective mode", [("max by (mode) (ddnn_edge_effective_mode) == 1", "{{mode}}")], kind="stat",
              width=6, options={"textMode": "name"},
              description="The mode in effect: with --mode auto, chosen from the link estimate (normal, ws, local)."),
        Panel("Mode switches (last hour)", [("sum(increase(ddnn_edge_mode_switches_total[1h])) or vector(0)",
                                             "switches")], kind="stat", width=6),
        Panel("Samples in flight", [("sum(ddnn_edge_inflight_samples)", "edge samples"),
                                    ("sum(ddnn_cloud_inflight_batches)", "cloud batches")], width=6),
        Panel("Exit thresholds (knobs)", [("max by (exit, kind) (ddnn_edge_threshold)", "{{exit}} ({{kind}})")],
              width=12, description="Current knob of each exit's criterion; changes when the policy is reloaded."),
        Panel("Link estimate (EWMA)", [("max(ddnn_edge_link_throughput_bytes_per_second)", "offload throughput")],
              unit="Bps", width=12, description="The edge's smoothed estimate of the uplink, input of --mode auto."),
        Panel("SLO: measured and target", [("max by (kind) (ddnn_edge_slo_measured)", "measured {{kind}}"),
                                           ("max by (kind) (ddnn_edge_slo_target)", "target {{kind}}")],
              width=12, description="The edge's SLO controller (DDNN_EDGE_SLO): the measured value over its window "
                                    "against the target (seconds, samples/s or bytes/s, by kind)."),
        Panel("SLO: offload fraction aimed for", [("max(ddnn_edge_slo_offload_fraction)", "offload fraction")],
              unit="percentunit", width=12,
              description="The share of samples the controller lets offload; at most what the policy would."),
    ]),
    ("Triton (cloud deep segments)", [
        Panel("Triton request rate per model", [
            (f"sum by (model) (rate(nv_inference_request_success[{RATE}]))", "{{model}} ok"),
            (f"sum by (model) (rate(nv_inference_request_failure[{RATE}]))", "{{model}} failed")], unit="reqps"),
        Panel("Triton time per request", [
            (f"sum(rate(nv_inference_queue_duration_us[{RATE}])) / sum(rate(nv_inference_request_success[{RATE}]))"
             " / 1e6", "queue"),
            (f"sum(rate(nv_inference_compute_infer_duration_us[{RATE}]))"
             f" / sum(rate(nv_inference_request_success[{RATE}])) / 1e6", "compute")], unit="s"),
        Panel("Triton samples per execution", [
            (_ratio("nv_inference_count", "nv_inference_exec_count", "model"), "{{model}}")],
            description="Samples Triton runs per model execution: how much the dynamic batcher merges."),
        Panel("Targets up", [("up", "{{job}}")], kind="stat", width=24, height=4,
              options={"textMode": "value_and_name"}),
    ]),
]

DASHBOARDS = {"ddnn-overview": ("ddnn: early-exit inference across edge and cloud", OVERVIEW)}


def panel_json(p: Panel, pid: int, x: int, y: int) -> dict:
    defaults: dict = {"unit": p.unit}
    if p.kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 20 if p.stack else 0,
                              "showPoints": "never", "stacking": {"mode": "normal" if p.stack else "none",
                                                                  "group": "A"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "none"}}
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "area", "justifyMode": "auto", "textMode": "auto"}
    options.update(p.options)
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description, "datasource": DATASOURCE,
        "gridPos": {"h": p.height, "w": p.width, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": options,
        "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "range": True, "instant": False} for i, (expr, legend) in enumerate(p.targets)],
    }


def dashboard_json(uid: str, title: str, rows: list[tuple[str, list[Panel]]]) -> dict:
    panels, pid, y = [], 1, 0
    for row_title, row in rows:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        pid, y, x, row_h = pid + 1, y + 1, 0, 0
        for p in row:
            if x + p.width > 24:
                x, y, row_h = 0, y + row_h, 0
            panels.append(panel_json(p, pid, x, y))
            pid, x, row_h = pid + 1, x + p.width, max(row_h, p.height)
        y += row_h
    return {
        "uid": uid, "title": title, "tags": ["ddnn"], "timezone": "browser", "editable": True,
        "schemaVersion": SCHEMA_VERSION, "version": 1, "refresh": "10s",
        "time": {"from": "now-15m", "to": "now"}, "graphTooltip": 1,
        "annotations": {"list": []}, "templating": {"list": []}, "links": [],
        "panels": panels,
    }


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {f"{uid}.json": json.dumps(dashboard_json(uid, title, rows), indent=2) + "\n"
            for uid, (title, rows) in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
