"""make bench's compose section without Docker: the override runs what the demo runs, the ratio, the skips."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from benchmarks import compose as bench
from benchmarks import compose_report as report
from benchmarks import cpu
from ddnn.cli.demo import edge_choice
from ddnn.paths import REPO_ROOT
from ddnn.serving.settings import load_settings
from deploy.docker.triton_serve import TritonServeSettings
from services.cloud.settings import CloudSettings
from services.edge.settings import EdgeSettings
from services.loadgen.settings import LoadgenSettings

COMPOSE = yaml.safe_load(bench.COMPOSE_FILE.read_text())


def merged_env(service: str, w: bench.Workload) -> dict[str, str]:
    """The service's environment as Compose merges docker-compose.yml and the override (mappings: key by key)."""
    over = yaml.safe_load(json.dumps(bench.override(w)))  # written as JSON, read as YAML
    return {k: str(v) for k, v in {**COMPOSE["services"][service]["environment"],
                                   **over["services"].get(service, {}).get("environment", {})}.items()}


def settings_from(cls, prefix: str, env: dict[str, str], argv: list[str], monkeypatch):
    for k in [k for k in os.environ if k.startswith("DDNN_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return load_settings(cls, prefix, argv=argv)


@pytest.fixture(scope="module")
def w() -> bench.Workload:
    return bench.workload(2000)


def test_the_workload_is_the_demos_defaults(w):
    engine, _, policy = edge_choice()
    assert (w.engine, w.policy) == (engine, policy)
    assert (w.images, w.batch_size, w.concurrency, w.mode, w.payload, w.backend) == (2000, 32, 2, "normal", "fp32",
                                                                                       "triton")


def test_the_compose_loadgen_replays_what_the_demos_does(w, monkeypatch):
    # the flags ddnn demo gives its load generator (ddnn/cli/demo.py)
    demo = settings_from(LoadgenSettings, "DDNN_LOADGEN", bench.LOCAL_ENV, [
        "--concurrency", str(w.concurrency), "--batch-size", str(w.batch_size), "--limit", str(w.images)], monkeypatch)
    composed = settings_from(LoadgenSettings, "DDNN_LOADGEN", merged_env("loadgen", w), [], monkeypatch)
    for field in ("limit", "repeat", "shuffle", "seed", "batch_size", "loop", "concurrency", "rate",
                  "batch_timeout_s", "deadline_s", "progress"):
        assert getattr(composed, field) == getattr(demo, field), field
    assert composed.loop == "closed" and composed.linger_s == 0  # exits once the report is written


def test_the_compose_edge_and_triton_run_what_the_demos_do(w, monkeypatch):
    demo = settings_from(EdgeSettings, "DDNN_EDGE", {}, [
        "--policy", w.policy, "--mode", w.mode, "--payload", w.payload, "--engine", w.engine], monkeypatch)
    composed = settings_from(EdgeSettings, "DDNN_EDGE", merged_env("edge", w), [], monkeypatch)
    for field in ("engine", "threads", "mode", "modes", "payload", "slo", "max_batch", "cloud_timeout_s"):
        assert getattr(composed, field) == getattr(demo, field), field
    assert composed.slo == ""  # docker-compose.yml's SLO controller is off, as in the demo
    assert Path(composed.policy).name == Path(w.policy).name
    assert f"models/{Path(w.policy).name}" in (REPO_ROOT / "deploy/docker/edge.Dockerfile").read_text()
    cloud = settings_from(CloudSettings, "DDNN_CLOUD", {}, [], monkeypatch)  # the demo's cloud starts Triton
    triton = settings_from(TritonServeSettings, "DDNN_TRITON_SERVE", merged_env("triton", w), [], monkeypatch)
    assert (triton.threads, triton.max_batch, triton.instances) == (cloud.triton_threads, cloud.max_batch, 1)


def test_the_override_sets_environment_only(w):
    # another engineer changes docker-compose.yml's networks: the override must not name any
    services = bench.override(w)["services"]
    assert set(services) <= set(COMPOSE["services"])
    assert all(set(s) == {"environment"} for s in services.values())


def test_the_override_refuses_what_the_compose_testbed_cannot_run(w):
    with pytest.raises(ValueError, match="Triton"):
        bench.override(dataclasses.replace(w, backend="onnxruntime"))
    with pytest.raises(ValueError, match="models"):
        bench.override(dataclasses.replace(w, policy="/tmp/my.policy.json"))


SAME = {"replay": {"loop": "closed"}, "samples": 1000, "exit_rates": {"cloud": 0.1}, "accuracy": 0.88}


def rounds(local: list[float], compose: list[float]) -> list[dict]:
    return [{"local": {**SAME, "throughput": a}, "compose": {**SAME, "throughput": b}}
            for a, b in zip(local, compose, strict=True)]


def test_ratio_is_of_the_medians_with_each_rounds_ratio():
    s = report.summarize(rounds([100, 300, 200], [90, 150, 190]))
    assert (s["local_median"], s["compose_median"]) == (200, 150)
    assert s["ratio"] == pytest.approx(0.75) and not s["goal_met"]
    assert s["round_ratios"] == pytest.approx([0.9, 0.5, 0.95])
    assert report.summarize(rounds([100, 100], [90, 95]))["goal_met"]  # 92.5 / 100
    assert not report.summarize(rounds([100, 100], [85, 90]))["goal_met"]


def test_same_workload_notices_a_different_exit_rate():
    side = {"replay": {"loop": "closed"}, "samples": 10, "exit_rates": {"cloud": 0.1}, "accuracy": 0.9}
    ok = [{"local": side, "compose": dict(side)}] * 2
    assert report.same_workload(ok)
    assert not report.same_workload([*ok, {"local": side, "compose": {**side, "exit_rates": {"cloud": 0.2}}}])


def test_skip_reasons_name_what_is_missing():
    assert bench.skip_reason(None, ["docker-compose"], []) is None
    assert bench.skip_reason("DockerException: x", None, ["a"]) == "no Docker engine answers (DockerException: x)"
    assert "docker compose" in bench.skip_reason(None, None, [])
    why = bench.skip_reason(None, ["docker-compose"], ["ddnn-edge:0.1.0"])
    assert "ddnn-edge:0.1.0" in why and "run make images first" in why


def test_without_an_engine_the_section_records_why_instead_of_failing(monkeypatch):
    monkeypatch.setattr(bench, "engine_client", lambda: (None, "FileNotFoundError: no socket"))
    result = bench.run(images=10, rounds=2)
    assert result == {"skipped": "no Docker engine answers (FileNotFoundError: no socket)"}
    assert report.render(result) == ["Not measured: no Docker engine answers (FileNotFoundError: no socket)."]


def measured(throughput: float, cores: float, parts: dict[str, float], n: int = 1000) -> dict:
    """One side of a round as compose.py records it (``parts``: CPU seconds over the replay)."""
    cpu_s = sum(parts.values())
    return {**SAME, "throughput": throughput, "samples": n, "up_s": 60.0,
            "cpu": {"cores_ours": cores, "cores_others": 2.0 - cores, "cpu_ms_per_sample": 1000 * cpu_s / n,
                    "cpu_s_by_part": parts}}


def test_each_rounds_ratio_splits_into_cores_obtained_and_cpu_per_sample():
    # local: 2 cores, 10 ms/sample -> 200/s; compose: 1.8 cores, 12 ms/sample -> 150/s
    local = measured(200, 2.0, {"edge": 8.0, "cloud": 2.0})
    comp = {**measured(150, 1.8, {"edge": 8.0, "cloud": 3.0, "prometheus": 1.0}),
            "at_rest": {"wall_s": 20.0, "cpu_s_by_part": {"prometheus": 1.0, "edge": 2.0}}}
    s = report.summarize([{"local": local, "compose": comp}] * 3)
    f = s["factors"]
    assert f["cores_median"] == pytest.approx(0.9) and f["cpu_per_sample_median"] == pytest.approx(10 / 12)
    assert f["cores_median"] * f["cpu_per_sample_median"] == pytest.approx(s["ratio"])  # 0.75
    assert s["cpu_ms_per_sample_by_part"] == {"local": {"edge": 8.0, "cloud": 2.0},
                                              "compose": {"edge": 8.0, "cloud": 3.0, "prometheus": 1.0}}
    assert s["compose_at_rest_cores_by_part"] == {"edge": 0.1, "prometheus": 0.05}
    # 0.15 cores at rest over a replay at 150/s is 1 ms per sample: serving 11 ms against the demo's 10
    assert s["compose_at_rest_cores"] == pytest.approx(0.15)
    assert s["serving_cpu_ms_per_sample"] == pytest.approx({"local": 10.0, "compose": 11.0})
    text = report.weight(s)[0]
    assert "11.00 ms of CPU per sample on serving, 10% more than the demo's 10.00" in text
    assert "1 - 0.15/c: 0.93 with all 2 of this machine's cores, 0.85 with one" in text


def test_cpu_window_interpolates_between_samples_and_counts_the_rest_of_the_machine():
    samples = [(10.0, {"edge": 0.0}, 100.0), (12.0, {"edge": 2.0, "cloud": 1.0}, 104.0),
               (14.0, {"edge": 4.0, "cloud": 1.0}, 108.0)]
    w = cpu.window(samples, 11.0, 13.0, n=100)  # edge 1.0 -> 3.0, cloud 0.5 -> 1.0, machine 102 -> 106
    assert w["cpu_s_by_part"] == {"cloud": 0.5, "edge": 2.0}
    assert (w["cores_ours"], w["cores_machine"], w["cores_others"]) == (1.25, 2.0, 0.75)
    assert w["cpu_ms_per_sample"] == 25.0 and w["covered"]
    assert not cpu.window(samples, 9.0, 13.0)["covered"] and cpu.window(samples, 9.0, 13.0)["cpu_ms_per_sample"] is None


def test_cpu_totals_keep_what_a_finished_process_spent():
    acc = cpu.Cumulative()
    acc.update(1, "edge", 2.0)
    acc.update(2, "edge", 1.0)
    acc.update(1, "edge", 3.0)  # pid 2 is gone: no more updates, its second stays counted
    assert acc.totals() == {"edge": 4.0}
    assert [cpu.local_part(c) for c in ("python -m services.edge --x", "/opt/tritonserver --model-repository",
                                        "python -m services.loadgen", "bash")] == ["edge", "triton", "loadgen", "other"]


def test_render_says_whether_each_goal_is_met(w):
    side = measured(100.0, 1.0, {"edge": 10.0})
    result = {"workload": {**dataclasses.asdict(w), "policy": "p.json"}, "compose": "docker-compose",
              "rounds": [{"local": side, "compose": measured(80.0, 1.0, {"edge": 12.5})}] * 2,
              **report.summarize([{"local": side, "compose": measured(80.0, 1.0, {"edge": 12.5})}] * 2),
              "images": {"edge": {"tag": "ddnn-edge:0.1.0", "size_mb": 382.0,
                                  "torch": {"installed": None, "importable": False}},
                         "prometheus": {"tag": "ddnn-prometheus:0.1.0", "size_mb": 300.0}}}
    text = "\n".join(report.render(result))
    assert "ratio **0.80**: goal >= 0.9 **missed**" in text
    assert "| 1 | 100 | 80 | 0.80 | 1.00 / 1.00 | 10.00 / 12.50 | 60 |" in text
    assert "median factors **1.00** (cores) and **0.80** (CPU per sample)" in text
    assert "| edge | 10.00 | 12.50 |" in text
    assert "Edge 382 MB, no torch in any service image: goal met" in text
    result["images"]["edge"]["torch"]["installed"] = "2.5.1"
    assert "goal **missed**" in "\n".join(report.render(result)).rsplit("Edge", 1)[1]
