"""The testbed's pieces that need no root: profiles and tc arguments, topology plan, netlink
encoding, the delayer's queue discipline, report arithmetic and the CLI's configuration."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from ddnn.testbed import netlink as nl
from ddnn.testbed import report as R
from ddnn.testbed.delayer import Delayer, Impairment
from ddnn.testbed.profiles import LinkProfile, load_profiles, netem_args, parse_schedule, tbf_args
from ddnn.testbed.runner import QUICK, RunConfig, checks
from ddnn.testbed.topology import Topology

# -- profiles ---------------------------------------------------------------------------------------


def test_shipped_profiles_are_the_issue_s_four_plus_link_down():
    p = load_profiles()
    assert (p["good"].rate_mbit, p["good"].delay_ms) == (1000, 1)
    assert (p["constrained"].rate_mbit, p["constrained"].delay_ms) == (10, 40)
    assert p["lossy"].loss_pct == 5
    assert p["outage"].loss_pct == 100
    assert p["linkdown"].down
    assert p["constrained"].rtt_floor_ms == 80


def test_netem_arguments():
    p = load_profiles()
    assert netem_args(p["constrained"]) == ["delay", "40ms", "rate", "10000kbit", "limit", "10000"]
    assert netem_args(p["lossy"]) == ["delay", "1ms", "loss", "5%", "rate", "1000000kbit", "limit", "10000"]
    assert "100%" in netem_args(p["outage"])
    jittery = LinkProfile("j", rate_mbit=2.5, delay_ms=30, jitter_ms=5)
    assert netem_args(jittery)[:5] == ["delay", "30ms", "5ms", "rate", "2500kbit"]


def test_tbf_arguments_hold_the_rate_without_tail_drops():
    assert tbf_args(LinkProfile("u", delay_ms=5)) is None
    args = dict(zip(*[iter(tbf_args(LinkProfile("c", rate_mbit=10, delay_ms=40)))] * 2, strict=True))
    assert args["rate"] == "10000kbit"
    assert int(args["burst"]) == 16 * 1024  # 4 ms at 10 Mbit/s is less than the floor
    assert int(args["limit"]) >= 4 * 1024 * 1024
    fast = dict(zip(*[iter(tbf_args(LinkProfile("g", rate_mbit=1000)))] * 2, strict=True))
    assert int(fast["burst"]) == 500_000  # 4 ms at 1 Gbit/s


@pytest.mark.parametrize("fields, message", [
    ({"loss_pct": 101}, "loss_pct"),
    ({"delay_ms": -1}, "delay_ms"),
    ({"rate_mbit": 0}, "rate_mbit"),
    ({"delay_ms": 1, "jitter_ms": 2}, "jitter_ms"),
    ({"bandwidth": 10}, "unknown fields"),
])
def test_bad_profiles_are_refused_by_name(fields, message):
    with pytest.raises(ValueError, match=message) as err:
        LinkProfile.from_dict("mine", fields)
    assert "'mine'" in str(err.value)


def test_profiles_file_must_say_its_format(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"profiles": {"x": {}}}))
    with pytest.raises(ValueError, match="format"):
        load_profiles(f)
    f.write_text(json.dumps({"format": "ddnn.testbed.profiles/v1", "profiles": {"slow": {"rate_mbit": 1}}}))
    assert load_profiles(f)["slow"].rate_mbit == 1


def test_schedule():
    p = load_profiles()
    assert parse_schedule("good:30, outage:12.5", p) == [("good", 30.0), ("outage", 12.5)]
    for bad in ("good", "good:0", "good:x", "nowhere:10", ""):
        with pytest.raises(ValueError, match="schedule"):
            parse_schedule(bad, p)


# -- topology --------------------------------------------------------------------------------------------


def test_topology_plan_keeps_every_interface_inside_its_namespace():
    t = Topology.plan("abc123")
    assert set(t.namespaces.values()) == {"ddnn-tb-abc123-loadgen", "ddnn-tb-abc123-edge", "ddnn-tb-abc123-cloud"}
    cmds = t.up_commands()
    veths = [c for c in cmds if c[:3] == ["ip", "link", "add"]]
    assert len(veths) == 2
    for c in veths:  # both ends are born inside a namespace: nothing appears in the host's
        assert c.count("netns") == 2 and c[c.index("type") + 1] == "veth"
    ends = [t.access.a, t.access.b, t.backhaul.a, t.backhaul.b]
    assert all(len(e.dev) <= 15 for e in ends)
    assert [e.addr for e in ends] == ["10.203.0.1", "10.203.0.2", "10.203.0.5", "10.203.0.6"]
    assert t.access.b.ns == t.backhaul.a.ns == t.namespaces["edge"]
    assert sorted(c[-1] for c in t.down_commands()) == sorted(t.namespaces.values())
    assert t.exec_prefix("cloud") == ["ip", "netns", "exec", "ddnn-tb-abc123-cloud"]
    assert Topology.plan().run_id != Topology.plan().run_id


def test_topology_refuses_public_or_small_subnets():
    with pytest.raises(ValueError, match="private"):
        Topology.plan("x", subnet="8.8.8.0/29")
    with pytest.raises(ValueError, match="/29"):
        Topology.plan("x", subnet="10.203.0.0/30")


# -- netlink encoding --------------------------------------------------------------------------------------


class _Seq:
    def __init__(self):
        self.n = 0

    def seq(self):
        self.n += 1
        return self.n


def test_attributes_are_padded_and_parse_back():
    a = nl.attr(7, b"abcde")
    assert len(a) == 12 and struct.unpack_from("=HH", a) == (9, 7)
    parsed = nl.attrs(a + nl.attr(3, nl.be32(42)))
    assert parsed == {7: b"abcde", 3: nl.be32(42)}
    assert nl.attrs(nl.nested(4, nl.attr(1, b"x")))[4] == nl.attr(1, b"x")


def _expressions(rule_msg: bytes) -> list[tuple[str, dict]]:
    """(name, data attributes) of each expression of a NEWRULE message, in order."""
    exprs, out, off = nl.attrs(rule_msg, 4)[nl.NFTA_RULE_EXPRESSIONS], [], 0
    while off < len(exprs):
        n, _ = struct.unpack_from("=HH", exprs, off)
        elem = nl.attrs(exprs[off + 4:off + n])
        out.append((elem[nl.NFTA_EXPR_NAME].rstrip(b"\0").decode(), nl.attrs(elem[nl.NFTA_EXPR_DATA])))
        off += (n + 3) & ~3
    return out


def _meta_key(rule_msg: bytes) -> int:
    name, data = _expressions(rule_msg)[0]
    assert name == "meta"
    return struct.unpack(">I", data[nl.NFTA_META_KEY])[0]


def test_queue_rule_holds_packets_where_they_arrive_not_where_they_leave():
    # held on the sender's egress, packets would still count against the sending TCP socket
    data, _ = nl.queue_rule_batch(_Seq(), "t", ifindex=5, queue=0)
    msgs = list(nl.messages(data))
    hook = nl.attrs(nl.attrs(msgs[2][2], 4)[nl.NFTA_CHAIN_HOOK])
    assert struct.unpack(">I", hook[nl.NFTA_HOOK_HOOKNUM])[0] == nl.NF_INET_PRE_ROUTING
    assert _meta_key(msgs[3][2]) == nl.NFT_META_IIF
    data, _ = nl.queue_rule_batch(_Seq(), "t", ifindex=5, queue=0, ingress=False)
    msgs = list(nl.messages(data))
    hook = nl.attrs(nl.attrs(msgs[2][2], 4)[nl.NFTA_CHAIN_HOOK])
    assert struct.unpack(">I", hook[nl.NFTA_HOOK_HOOKNUM])[0] == nl.NF_INET_POST_ROUTING
    assert _meta_key(msgs[3][2]) == nl.NFT_META_OIF


def test_queue_rule_batch_is_table_chain_rule_between_batch_markers():
    data, acks = nl.queue_rule_batch(_Seq(), "ddnn_testbed", ifindex=5, queue=1)
    msgs = list(nl.messages(data))
    kinds = [k for k, _, _ in msgs]
    t = nl.NFNL_SUBSYS_NFTABLES << 8
    assert kinds == [nl.NFNL_MSG_BATCH_BEGIN, t | nl.NFT_MSG_NEWTABLE, t | nl.NFT_MSG_NEWCHAIN,
                     t | nl.NFT_MSG_NEWRULE, nl.NFNL_MSG_BATCH_END]
    assert acks == {seq for k, seq, _ in msgs[1:4]}
    chain = nl.attrs(msgs[2][2], 4)
    assert chain[nl.NFTA_CHAIN_TYPE] == b"filter\0"
    exprs = dict(_expressions(msgs[3][2]))
    assert list(exprs) == ["meta", "cmp", "target"]
    assert nl.attrs(exprs["cmp"][nl.NFTA_CMP_DATA])[nl.NFTA_DATA_VALUE] == struct.pack("=I", 5)
    target = exprs["target"]
    assert target[nl.NFTA_TARGET_NAME] == b"NFQUEUE\0"
    assert struct.unpack("=HHH", target[nl.NFTA_TARGET_INFO][:6]) == (1, 1, nl.NFQ_FLAG_BYPASS)
    assert len(target[nl.NFTA_TARGET_INFO]) == 8  # XT_ALIGN(sizeof(xt_NFQ_info_v3))


# -- the delayer's queue discipline -----------------------------------------------------------------------


class FakeQueue:
    def __init__(self):
        self.verdicts = []

    def verdict(self, packet_id, verdict, batch=False):
        self.verdicts.append((packet_id, verdict, batch))


def test_delayer_holds_packets_for_the_delay_in_order_and_releases_with_one_batch_verdict():
    q = FakeQueue()
    d = Delayer(q, Impairment(delay_ms=40))
    d.arrive([1, 2, 3], now=10.0)
    assert d.release_due(10.039) == pytest.approx(0.001)
    assert q.verdicts == []
    d.arrive([4], now=10.02)
    assert d.release_due(10.041) == pytest.approx(0.019)
    assert q.verdicts == [(3, nl.NF_ACCEPT, True)]  # ids 1..3 at once; 4 still held
    assert d.release_due(10.06) is None
    assert q.verdicts[-1] == (4, nl.NF_ACCEPT, True)
    assert d.counts["accepted"] == 4


def test_delayer_jitter_never_reorders_and_full_loss_drops_everything():
    q = FakeQueue()
    d = Delayer(q, Impairment(delay_ms=20, jitter_ms=15), seed=3)
    for i in range(200):
        d.arrive([i], now=i * 0.001)
    release = [t for t, _ in d.pending]
    assert release == sorted(release) and [pid for _, pid in d.pending] == list(range(200))
    q2 = FakeQueue()
    d2 = Delayer(q2, Impairment(loss_pct=100))
    d2.arrive(list(range(50)), now=0.0)
    assert [v for _, v, _ in q2.verdicts] == [nl.NF_DROP] * 50 and not d2.pending


def test_delayer_loss_rate_is_the_configured_fraction():
    q = FakeQueue()
    d = Delayer(q, Impairment(loss_pct=5), seed=1)
    d.arrive(list(range(20000)), now=0.0)
    assert d.counts["dropped"] / 20000 == pytest.approx(0.05, abs=0.006)


@pytest.mark.parametrize("bad", [{"delay_ms": -1}, {"loss_pct": 120}])
def test_impairment_validation(bad):
    with pytest.raises(ValueError):
        Impairment.from_dict(bad)


# -- report arithmetic --------------------------------------------------------------------------------------


def poll(t, mode, answered, connected=True, rtt=0.002):
    return {"t": t, "ok": True, "effective_mode": mode, "cloud_connected": connected,
            "samples_by_outcome": answered, "link": {"rtt_s": rtt, "throughput_bytes_per_s": 1e6,
                                                     "error_rate": 0.0, "inflight_batches": 0}}


def test_mode_shares_and_answered_delta():
    ps = [poll(0, "ws", {}), poll(1, "ws", {}), poll(2, "normal", {}), poll(3, "local", {}),
          {"t": 4, "ok": False, "error": "UNAVAILABLE"}]
    assert R.mode_shares(R.window(ps, 0, 10)) == {"ws": 0.5, "normal": 0.25, "local": 0.25}
    a = poll(0, "ws", {"block4": 10, "cloud": 2})
    b = poll(1, "ws", {"block4": 25, "block7": 1, "cloud": 2, "degraded": 4})
    assert R.answered_delta(a, b) == {"edge": 16, "degraded": 4}


def timeline_fixture():
    """Three phases of 10 s at 1 batch/s of 4 samples; sample ids shuffled (send order = row order)."""
    rate, bs, send0 = 1.0, 4, 1000.0
    n = 30 * bs
    rng = np.random.default_rng(0)
    outcome = np.array(["block7"] * n, object)
    outcome[40:80:3] = "degraded"
    samples = {"position": np.arange(n), "sample_id": rng.permutation(n), "outcome": outcome,
               "correct": np.ones(n, bool), "latency_s": np.full(n, 0.2)}
    schedule = [{"profile": "good", "applied_at": send0}, {"profile": "outage", "applied_at": send0 + 10},
                {"profile": "good", "applied_at": send0 + 20}]
    polls = []
    for k in range(120):  # one more sample answered at every poll
        t = send0 + k * 0.25
        mode = "normal" if t < send0 + 12 or t >= send0 + 23 else "local"
        polls.append(poll(t, mode, {"block7": k + 1}, connected=mode != "local"))
    return samples, schedule, send0, rate, bs, polls


def test_timeline_phases_use_send_order_not_sample_ids():
    samples, schedule, send0, rate, bs, polls = timeline_fixture()
    ph = R.timeline_phases(samples, schedule, send0, rate, bs, polls, send0 + 30)
    assert [p["sent"] for p in ph] == [40, 40, 40]
    assert [p["answered"] for p in ph] == [40, 40, 40] and all(p["missing"] == 0 for p in ph)
    assert ph[1]["paths"]["degraded"] == 14 and "degraded" not in ph[0]["paths"]
    assert [p["settled_mode"] for p in ph] == ["normal", "local", "normal"]
    assert ph[1]["effective_modes"]["local"] == pytest.approx(0.8)


def test_segments_are_runs_of_constant_profile_and_mode():
    _, schedule, send0, _, _, polls = timeline_fixture()
    segs = R.segments(polls, schedule, send0, send0 + 30)
    assert [(s["profile"], s["effective_mode"]) for s in segs] == [
        ("good", "normal"), ("outage", "normal"), ("outage", "local"), ("good", "local"), ("good", "normal")]
    assert [round(s["start_s"], 2) for s in segs] == [0, 10, 12, 20, 23]
    assert sum(s["answered"].get("edge", 0) for s in segs) == 119
    ser = R.series(polls, send0, send0 + 30)
    assert len(ser["answered_per_s"]["edge"]) == 30 and sum(ser["answered_per_s"]["edge"]) == 119


def test_rtt_check():
    assert R.rtt_check({"median_ms": 81.5}, 80)["ok"]
    assert not R.rtt_check({"median_ms": 2.0}, 80)["ok"]  # the delay was not applied
    assert not R.rtt_check({"median_ms": None}, 80)["ok"]


def synthetic_report(outage_mode="local"):
    samples, schedule, send0, rate, bs, polls = timeline_fixture()
    if outage_mode != "local":
        polls = [{**p, "effective_mode": outage_mode} for p in polls]
    rep_lg = {"samples": 96, "integrity": {"answered_exactly_once": 96, "missing": 0, "duplicated": 0,
                                           "rejected": 0, "ok": True},
              "exit_rates": {"block7": 0.9, "cloud": 0.1, "dropped": 0.0, "degraded": 0.0, "rejected": 0.0},
              "accuracy": {"overall": 0.9, "edge": 0.93, "cloud": 0.6, "degraded": None},
              "latency_s": {"overall": {"count": 96, "mean": 0.5, "p50": 0.4, "p95": 0.9, "p99": 1.0}},
              "bytes": {"per_sample": 3276.8, "per_offloaded_sample": 32768.0}, "throughput_samples_per_s": 50.0,
              "wall_s": 2.0}
    profiles = load_profiles()
    rows = [R.replay_row("constrained", "normal", rep_lg, polls[:8], {"median_ms": 81.0, "lost": 0}),
            R.replay_row("good", "ws", rep_lg, polls[:8], {"median_ms": 2.5, "lost": 0})]
    tl = {"schedule": [{**s, "seconds": 10} for s in schedule], "rate": rate, "samples": 120,
          "integrity": rep_lg["integrity"],
          "phases": R.timeline_phases(samples, schedule, send0, rate, bs, polls, send0 + 30),
          "segments": R.segments(polls, schedule, send0, send0 + 30)}
    rep = {"created": "now", "command": "ddnn testbed --quick", "shaper": "nfqueue",
           "settings": {"backend": "torch", "policy": "p.json", "limit": 96, "batch_size": 32, "concurrency": 2,
                        "poll_s": 0.25},
           "topology": {"namespaces": {"edge": "e"}}, "profiles": {n: p.to_dict() for n, p in profiles.items()},
           "table": rows, "timeline": tl, "cleanup": {"namespaces_left": [], "exit_codes": {"edge": 0, "cloud": 0}}}
    rep["checks"] = checks(rep, profiles)
    return rep


def test_checks_pass_on_a_good_run_and_fail_when_auto_ignores_the_outage():
    rep = synthetic_report()
    assert {k: v["ok"] for k, v in rep["checks"].items()} == {
        "answered_exactly_once": True, "rtt_constrained": True, "rtt_good": True, "auto_follows_link": True,
        "cleanup": True}
    assert not synthetic_report(outage_mode="normal")["checks"]["auto_follows_link"]["ok"]


def test_checks_fail_on_a_missing_sample():
    rep = synthetic_report()
    rep["timeline"]["phases"][1]["missing"] = 1
    assert not checks(rep, load_profiles())["answered_exactly_once"]["ok"]


def test_markdown_has_the_table_and_the_timeline(tmp_path):
    rep = synthetic_report()
    md = R.markdown(rep)
    assert "| constrained | 10 Mbit/s, 40 ms | 81.0 ms (80) | normal |" in md
    assert "| 10.0 | 12.0 | outage | **normal** |" in md
    assert "| 12.0 | 20.0 | outage | **local** |" in md
    assert "PASS auto_follows_link" in md
    _, _, send0, _, _, polls = timeline_fixture()
    rep["timeline"]["series"] = R.series(polls, send0, send0 + 30)
    R.plot_timeline(rep["timeline"], tmp_path / "t.png")
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- CLI ---------------------------------------------------------------------------------------------------------


def test_cli_quick_defaults_and_explicit_flags_win(tmp_path):
    from ddnn.cli import build_parser
    from ddnn.cli.testbed import config_from_args

    args = build_parser().parse_args(["testbed", "--quick", "--out", str(tmp_path), "--limit", "64",
                                      "--modes", "ws,normal", "--edge-arg=--cloud-timeout-s", "--edge-arg=3"])
    cfg = config_from_args(args)
    assert isinstance(cfg, RunConfig)
    assert cfg.limit == 64 and cfg.schedule == QUICK["schedule"] and cfg.modes == ["ws", "normal"]
    assert cfg.edge_args == ["--cloud-timeout-s", "3"] and cfg.table and cfg.timeline
    full = config_from_args(build_parser().parse_args(["testbed", "--out", str(tmp_path), "--no-table"]))
    assert full.limit == RunConfig(out=tmp_path).limit and not full.table
