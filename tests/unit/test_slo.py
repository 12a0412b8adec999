import numpy as np
import pytest

from ddnn.control.slo import SloController, SloTarget, knob_for_offload, offload_fraction
from ddnn.control.telemetry import Reservoir, Telemetry
from ddnn.policies import ExitCriterion, softmax

rng = np.random.default_rng(0)
PROBS = softmax(rng.normal(0, 3, (2048, 10)))
BYTES = {"fp32": 32768.0, "fp16": 16384.0, "int8": 8200.0, "raw": 3072.0}


def crit(kind, knob):
    return ExitCriterion.from_dict({"kind": kind, "threshold": knob})


@pytest.mark.parametrize("kind, base", [("max_softmax", 0.9), ("normalized_entropy", 0.2)])
def test_knob_for_offload_hits_the_fraction(kind, base):
    c = crit(kind, base)
    for f in (0.05, 0.3, 0.6):
        k = knob_for_offload(c, PROBS, f)
        assert offload_fraction(c.with_knob(k), PROBS) == pytest.approx(f, abs=0.01)


def plant(c, arrival):
    """What the edge would measure over a window with criterion c at this arrival rate."""
    f = offload_fraction(c, PROBS)
    return {"count": 500, "answer_rate": arrival, "offload_rate": arrival * f, "bytes_rate": 0.0,
            "p95_latency_s": 0.0, "p95_edge_path_s": 0.02, "edge_share": 0.2, "offload_fraction": f}


def test_cloud_rate_budget_is_held_when_load_changes():
    base = crit("max_softmax", 0.99)  # offloads a lot
    ctl = SloController(SloTarget("cloud_rate", 40.0))
    c = base
    for arrival in (200.0, 400.0, 100.0):
        for _ in range(15):
            d = ctl.step(plant(c, arrival), c, base, PROBS, "fp32", BYTES, "normal")
            c = c.with_knob(d.knob)
        rate = plant(c, arrival)["offload_rate"]
        f_base = offload_fraction(base, PROBS)
        assert rate == pytest.approx(min(40.0, arrival * f_base), rel=0.08)


def test_never_offloads_more_than_the_base_policy():
    base = crit("max_softmax", 0.5)
    ctl = SloController(SloTarget("cloud_rate", 1e6))  # budget far above need
    c = base
    for _ in range(10):
        c = c.with_knob(ctl.step(plant(c, 100.0), c, base, PROBS, "fp32", BYTES, "normal").knob)
    assert offload_fraction(c, PROBS) <= offload_fraction(base, PROBS) + 1e-9


def test_bandwidth_budget_switches_to_the_smallest_payload_and_back():
    base = crit("max_softmax", 0.99)
    ctl = SloController(SloTarget("bandwidth", 200_000.0))
    c, payload = base, "fp32"
    for _ in range(20):
        m = plant(c, 100.0)
        m["bytes_rate"] = m["offload_rate"] * BYTES[payload]
        d = ctl.step(m, c, base, PROBS, payload, BYTES, "normal")
        payload = d.payload or payload
        c = c.with_knob(d.knob)
    assert payload == "raw"
    assert plant(c, 100.0)["offload_rate"] * BYTES["raw"] == pytest.approx(200_000.0, rel=0.1)
    ctl.target = SloTarget("bandwidth", 1e9)  # plenty of room again
    d = ctl.step(plant(c, 100.0), c, base, PROBS, payload, BYTES, "normal")
    assert d.payload == "fp32"


def test_latency_target_cuts_offload_then_gives_it_back():
    base = crit("max_softmax", 0.99)
    ctl = SloController(SloTarget("p95_latency", 0.1))
    c = base
    slow_link = lambda f: 0.02 + 0.5 * f  # noqa: E731 - latency grows with the offload fraction
    for _ in range(30):
        m = plant(c, 100.0)
        m["p95_latency_s"] = slow_link(m["offload_fraction"])
        c = c.with_knob(ctl.step(m, c, base, PROBS, "fp32", BYTES, "normal").knob)
    assert slow_link(offload_fraction(c, PROBS)) <= 0.1 * 1.05
    fast_link = lambda f: 0.01  # noqa: E731
    for _ in range(60):
        m = plant(c, 100.0)
        m["p95_latency_s"] = fast_link(m["offload_fraction"])
        c = c.with_knob(ctl.step(m, c, base, PROBS, "fp32", BYTES, "normal").knob)
    assert offload_fraction(c, PROBS) == pytest.approx(offload_fraction(base, PROBS), abs=0.02)


def test_latency_dominated_by_the_edge_picks_the_shallow_exit_and_keeps_offloading():
    base = crit("max_softmax", 0.9)
    ctl = SloController(SloTarget("p95_latency", 0.1))
    f_base = offload_fraction(base, PROBS)
    m = plant(base, 100.0) | {"p95_latency_s": 0.3, "p95_edge_path_s": 0.3}
    d = ctl.step(m, base, base, PROBS, "fp32", BYTES, "normal")
    assert d.depth == "ws" and d.offload_target == pytest.approx(f_base)  # no accuracy paid for nothing
    m = plant(base, 100.0) | {"p95_latency_s": 0.3, "p95_edge_path_s": 0.02}
    d = ctl.step(m, base, base, PROBS, "fp32", BYTES, "ws")
    assert d.depth == "normal" and d.offload_target < f_base


def test_a_pause_in_traffic_changes_nothing():
    base = crit("max_softmax", 0.99)
    ctl = SloController(SloTarget("bandwidth", 200_000.0))
    busy = plant(base, 100.0) | {"bytes_rate": 100.0 * offload_fraction(base, PROBS) * BYTES["fp32"]}
    d = ctl.step(busy, base, base, PROBS, "fp32", BYTES, "normal")
    assert d.payload == "raw"
    idle = {"count": 0, "answer_rate": 0.0, "offload_rate": 0.0, "bytes_rate": 0.0, "p95_latency_s": 0.0,
            "p95_edge_path_s": 0.0, "edge_share": 0.0, "offload_fraction": 0.0}
    held = ctl.step(idle, base.with_knob(d.knob), base, PROBS, "raw", BYTES, "normal")
    assert held.payload is None and held.knob is None and held.depth is None


def test_slo_target_parsing():
    assert SloTarget.parse("cloud_rate=50") == SloTarget("cloud_rate", 50.0)
    for bad in ("latency=1", "cloud_rate", "bandwidth=-1"):
        with pytest.raises(ValueError, match=r"SLO|--slo"):
            SloTarget.parse(bad)


def test_telemetry_window_and_reservoir():
    t = [0.0]
    tel = Telemetry(window_s=2.0, clock=lambda: t[0])
    tel.record(np.full(10, 0.05), offloaded=False, nbytes=0, edge_s=0.04)
    t[0] = 1.0
    tel.record(np.full(10, 0.2), offloaded=True, nbytes=10 * 1000, edge_s=0.04)
    s = tel.snapshot()
    assert s["count"] == 20 and s["offload_fraction"] == 0.5 and s["p95_latency_s"] == pytest.approx(0.2)
    assert s["bytes_rate"] == pytest.approx(10_000 / 1.0)
    t[0] = 2.5  # the first group left the window
    assert tel.snapshot()["count"] == 10
    r = Reservoir(size=5)
    r.add("block7", PROBS[:3])
    r.add("block7", PROBS[3:9])
    assert r.get("block7").shape == (5, 10) and np.allclose(r.get("block7"), PROBS[4:9])
    assert r.get("block4") is None
