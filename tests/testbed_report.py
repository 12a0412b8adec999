"""What every quick testbed run must show, on namespaces (tests/integration) or containers (tests/containers)."""

from __future__ import annotations

QUICK_PROFILES = ("good", "constrained", "lossy", "outage")
QUICK_MODES = ("ws", "normal", "auto")
QUICK_LIMIT = 96


def assert_every_sample_answered_once(rep: dict) -> None:
    """Every replay of the table and every phase of the timeline: each sample answered exactly once."""
    rows = rep["table"]
    assert {(r["profile"], r["mode"]) for r in rows} == {(p, m) for p in QUICK_PROFILES for m in QUICK_MODES}
    for r in rows:
        assert "error" not in r, r
        integ = r["integrity"]
        assert integ["answered_exactly_once"] == r["samples"] == QUICK_LIMIT, (r["profile"], r["mode"], integ)
        assert integ["missing"] == integ["duplicated"] == integ["rejected"] == 0
    tl = rep["timeline"]
    assert tl["integrity"]["ok"] and tl["integrity"]["duplicated"] == 0
    assert [ph["profile"] for ph in tl["phases"]] == ["good", "constrained", "outage", "good"]
    for ph in tl["phases"]:
        assert ph["sent"] > 0 and ph["answered"] == ph["sent"] and ph["missing"] == ph["rejected"] == 0, ph
    assert sum(ph["sent"] for ph in tl["phases"]) == tl["samples"]
    # the outage really cut the cloud off: fixed modes answered their offloads locally, marked degraded
    outage = {r["mode"]: r for r in rows if r["profile"] == "outage"}
    assert all(r["cloud_rate"] == 0 and r["degraded_rate"] > 0 for r in outage.values()), outage
