"""Turn replays and status polls into the testbed report: JSON, Markdown and a timeline plot.

Everything here is a pure function of the load generator's ``report.json`` / ``samples.csv`` and
the watcher's status polls (``{"t": unix time, "effective_mode": ..., "samples_by_outcome": ...}``),
so it is tested without namespaces.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections import Counter
from pathlib import Path

import numpy as np

from ddnn.export.bundle import Mode
from ddnn.outcome import Outcome

FORMAT = "ddnn.testbed.report/v1"
_MODE_LEVEL = {Mode.LOCAL: 0, Mode.NORMAL: 1, Mode.WS: 2}  # the plot's y axis: fewer to more offloads
EDGE, CLOUD, DEGRADED, DROPPED, REJECTED = (o.label for o in (Outcome.EDGE, Outcome.CLOUD, Outcome.DEGRADED,
                                                               Outcome.DROPPED, Outcome.REJECTED))
PATHS = (EDGE, CLOUD, DEGRADED)  # how a sample came back, as the tables and the plot split them


# -- status polls ---------------------------------------------------------------------------------

def window(polls: list[dict], t0: float, t1: float) -> list[dict]:
    """Successful polls with ``t0 <= t < t1``."""
    return [p for p in polls if p.get("ok") and t0 <= p["t"] < t1]


def mode_shares(polls: list[dict]) -> dict[str, float]:
    """Fraction of polls (time, at a fixed poll interval) in each effective mode."""
    counts = Counter(p["effective_mode"] for p in polls if p.get("effective_mode"))
    total = sum(counts.values())
    return {m: counts[m] / total for m in sorted(counts, key=lambda m: -counts[m])} if total else {}


def dominant(shares: dict[str, float]) -> str | None:
    return max(shares, key=shares.__getitem__) if shares else None


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else None


def link_summary(polls: list[dict]) -> dict:
    """Medians of the edge's own link estimates over some polls."""
    links = [p["link"] for p in polls if p.get("link")]
    return {"rtt_ms": _ms(_median([lk["rtt_s"] for lk in links if lk["rtt_s"] > 0])),
            "throughput_mbit": _mbit(_median([lk["throughput_bytes_per_s"] for lk in links
                                              if lk["throughput_bytes_per_s"] > 0])),
            "error_rate": _median([lk["error_rate"] for lk in links]),
            "cloud_connected": (sum(bool(p.get("cloud_connected")) for p in polls) / len(polls)) if polls else None}


def _ms(x):
    return None if x is None else 1000 * x


def _mbit(x):
    return None if x is None else 8 * x / 1e6


def answered_delta(first: dict | None, last: dict | None) -> dict[str, int]:
    """Samples the edge answered between two polls, by outcome (edge exits folded into 'edge')."""
    if not first or not last:
        return {}
    a, b = first.get("samples_by_outcome", {}), last.get("samples_by_outcome", {})
    out: Counter[str] = Counter()
    for k in set(a) | set(b):
        d = int(b.get(k, 0)) - int(a.get(k, 0))
        if d:
            out[_path(k)] += d
    return dict(out)


def _path(outcome: str) -> str:
    return outcome if outcome in (CLOUD, DEGRADED, DROPPED) else EDGE


# -- one fixed-profile replay (the Table III rows) -------------------------------------------------

def replay_row(profile: str, mode: str, rep: dict, polls: list[dict], rtt: dict | None) -> dict:
    """One row: a replay of the load generator under one profile and one configured mode."""
    rates = rep["exit_rates"]
    non_edge = {CLOUD, DROPPED, DEGRADED, REJECTED}
    lat = rep["latency_s"]["overall"]
    return {
        "profile": profile, "mode": mode,
        "effective_modes": mode_shares(polls),
        "samples": rep["samples"],
        "integrity": rep["integrity"],
        "exit_rates": rates,
        "edge_rate": sum(v for k, v in rates.items() if k not in non_edge),
        "cloud_rate": rates.get(CLOUD, 0.0), "degraded_rate": rates.get(DEGRADED, 0.0),
        "accuracy": {k: rep["accuracy"].get(k) for k in (*PATHS, "overall")},
        "latency_ms": {k: _ms(lat.get(k)) for k in ("mean", "p50", "p95", "p99")},
        "bytes_per_sample": rep["bytes"]["per_sample"],
        "bytes_per_offloaded_sample": rep["bytes"]["per_offloaded_sample"],
        "throughput_samples_per_s": rep.get("throughput_samples_per_s"),
        "wall_s": rep["wall_s"],
        "link": link_summary(polls),
        "tcp_rtt_ms": rtt,
    }


# -- the continuous run with a changing profile ----------------------------------------------------

def read_samples(path: str | Path) -> dict[str, np.ndarray]:
    """samples.csv columns the timeline needs. Rows are in send order (``position``); sample ids
    need not be (the load generator may replay a shuffled split)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return {"position": np.arange(len(rows), dtype=np.int64),
            "sample_id": np.array([int(r["sample_id"]) for r in rows], np.int64),
            "outcome": np.array([r["outcome"] for r in rows], object),
            "correct": np.array([r["prediction"] == r["label"] and int(r["prediction"]) >= 0 for r in rows]),
            "latency_s": np.array([float(r["latency_s"]) for r in rows])}


def phase_of(send_t: np.ndarray, starts: list[float]) -> np.ndarray:
    """Index of the phase in effect at each send time (phases start at ``starts``, ascending)."""
    return np.clip(np.searchsorted(np.asarray(starts), send_t, side="right") - 1, 0, len(starts) - 1)


def timeline_phases(samples: dict[str, np.ndarray], schedule: list[dict], send0: float, rate: float,
                    batch_size: int, polls: list[dict], run_end: float) -> list[dict]:
    """Per phase: samples sent in it (open loop: batch k leaves at send0 + k / rate), how each was
    answered, and the effective modes the edge reported while the phase lasted."""
    starts = [send0] + [ph["applied_at"] for ph in schedule[1:]]
    ends = [*starts[1:], run_end]
    send_t = send0 + (samples["position"] // batch_size) / rate
    idx = phase_of(send_t, starts)
    out = []
    for k, ph in enumerate(schedule):
        m = idx == k
        outcome = samples["outcome"][m]
        paths = Counter(_path(o) if o not in ("none", "rejected") else o for o in outcome)
        lat = samples["latency_s"][m]
        lat = lat[np.isfinite(lat)]
        pw = window(polls, starts[k], ends[k])
        # the second half shows where the monitor settled, past its reaction time
        settled = window(polls, (starts[k] + ends[k]) / 2, ends[k])
        out.append({
            "phase": k, "profile": ph["profile"], "start_s": starts[k] - send0, "end_s": ends[k] - send0,
            "sent": int(m.sum()), "answered": int((outcome != "none").sum()),
            "missing": int((outcome == "none").sum()), "rejected": int((outcome == "rejected").sum()),
            "paths": dict(paths),
            "accuracy": float(samples["correct"][m].mean()) if m.any() else None,
            "latency_ms": {"p50": _ms(float(np.percentile(lat, 50))) if len(lat) else None,
                           "p95": _ms(float(np.percentile(lat, 95))) if len(lat) else None},
            "effective_modes": mode_shares(pw),
            "settled_mode": dominant(mode_shares(settled)),
            "link": link_summary(pw),
        })
    return out


def segments(polls: list[dict], schedule: list[dict], send0: float, run_end: float) -> list[dict]:
    """Run-length timeline: a new row whenever the profile or the effective mode changes."""
    starts = [send0] + [ph["applied_at"] for ph in schedule[1:]]
    groups: list[tuple[str, str | None, list[dict]]] = []
    for p in window(polls, send0, run_end):
        prof = schedule[int(phase_of(np.array([p["t"]]), starts)[0])]["profile"]
        if not groups or groups[-1][:2] != (prof, p.get("effective_mode")):
            groups.append((prof, p.get("effective_mode"), []))
        groups[-1][2].append(p)
    rows = []
    for k, (prof, mode, ps) in enumerate(groups):
        nxt = groups[k + 1][2][0] if k + 1 < len(groups) else None
        rows.append({"profile": prof, "effective_mode": mode, "start_s": ps[0]["t"] - send0,
                     "end_s": (nxt["t"] if nxt else run_end) - send0, "polls": len(ps),
                     "answered": answered_delta(ps[0], nxt or ps[-1]), "link": link_summary(ps)})
    return rows


def series(polls: list[dict], send0: float, run_end: float, bin_s: float = 1.0) -> dict:
    """Per-poll mode and RTT, and answered samples per second by path, for the plot."""
    pw = window(polls, send0, run_end)
    t = [p["t"] - send0 for p in pw]
    nbins = max(1, math.ceil((run_end - send0) / bin_s))
    rates = {k: [0.0] * nbins for k in PATHS}
    for a, b in itertools.pairwise(pw):
        k = min(nbins - 1, int((b["t"] - send0) // bin_s))
        for path, n in answered_delta(a, b).items():
            if path in rates:
                rates[path][k] += n / bin_s
    return {"t_s": t, "effective_mode": [p.get("effective_mode") for p in pw],
            "rtt_ms": [_ms(p["link"]["rtt_s"]) if p.get("link") else None for p in pw],
            "cloud_connected": [bool(p.get("cloud_connected")) for p in pw],
            "bin_s": bin_s, "answered_per_s": rates}


# -- checks the tests and the reader look at ---------------------------------------------------------

def rtt_check(rtt: dict | None, rtt_floor_ms: float, slack_ms: float = 30.0) -> dict:
    """Does the measured handshake round trip sit where the profile's delay puts it?"""
    med = (rtt or {}).get("median_ms")
    ok = med is not None and 0.9 * rtt_floor_ms <= med <= rtt_floor_ms + slack_ms
    return {"median_ms": med, "expected_floor_ms": rtt_floor_ms, "ok": ok}


# -- Markdown ------------------------------------------------------------------------------------------

def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x, fmt="{:.1f}") -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else fmt.format(x)


def _shares(sh: dict[str, float]) -> str:
    return ", ".join(f"{m} {100 * v:.0f}%" for m, v in sh.items()) or "-"


def _paths(d: dict[str, int]) -> str:
    return " / ".join(str(d.get(k, 0)) for k in PATHS)


def markdown(rep: dict) -> str:
    """The whole report as Markdown."""
    L = [f"# ddnn netem testbed — {rep['created']}", "",
         f"`{rep['command']}`", "",
         f"Shaper: **{rep['shaper']}**{' (' + rep['shaper_note'] + ')' if rep.get('shaper_note') else ''}. "
         f"Cloud backend: {rep['settings']['backend']}. Edge policy: `{rep['settings']['policy']}`. "
         f"Namespaces: {', '.join(rep['topology']['namespaces'].values())}.", ""]
    host = rep.get("host")
    if host:
        L += [f"Host: {host['cpus']} CPUs, kernel {host['kernel']}, load average (1/5/15 min) "
              f"{'/'.join(f'{x:g}' for x in host['loadavg_at_start'])} at the start"
              + (f", {'/'.join(f'{x:g}' for x in host['loadavg_at_end'])} at the end" if "loadavg_at_end" in host
                 else "")
              + (f"; run took {host['duration_s']:.0f} s" if "duration_s" in host else "")
              + ". Edge, cloud and load generator share these CPUs, so compute and queueing times are "
                "those of one shared machine; link times are the emulated link's.", ""]
    profs = rep["profiles"]
    if rep.get("table"):
        s = rep["settings"]
        L += ["## Per profile: WS vs normal vs auto (Lo et al. Table III on an emulated link)", "",
              f"Closed loop, {s['limit']} images per replay, batch {s['batch_size']}, {s['concurrency']} streams. "
              "Effective mode = share of status polls during the replay. Latency is the load generator's, "
              "per sample, from sending its batch to its answer.", "",
              "| profile | link | TCP RTT median (floor) | mode | effective mode | edge | cloud | degraded | "
              "acc edge | acc cloud | acc overall | latency mean / p50 / p95 (ms) | KiB/sample | samples/s | "
              "answered once |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rep["table"]:
            p = profs[r["profile"]]
            rtt = r.get("tcp_rtt_ms") or {}
            rtt_txt = (f"{_num(rtt.get('median_ms'))} ms ({2 * p['delay_ms']:g})" if rtt.get("median_ms") is not None
                       else f"lost ({2 * p['delay_ms']:g})")
            if r.get("error"):
                L.append(f"| {r['profile']} | | | {r['mode']} | failed: {r['error']} |" + " |" * 10)
                continue
            lat = r["latency_ms"]
            acc = r["accuracy"]
            integ = r["integrity"]
            once = f"{integ['answered_exactly_once']}/{r['samples']}" + ("" if integ["ok"] else " FAIL")
            L.append(f"| {r['profile']} | {_link(p)} | {rtt_txt} | {r['mode']} | {_shares(r['effective_modes'])} | "
                     f"{_pct(r['edge_rate'])} | {_pct(r['cloud_rate'])} | {_pct(r['degraded_rate'])} | "
                     f"{_pct(acc['edge'])} | {_pct(acc['cloud'])} | {_pct(acc['overall'])} | "
                     f"{_num(lat['mean'])} / {_num(lat['p50'])} / {_num(lat['p95'])} | "
                     f"{_num(r['bytes_per_sample'] / 1024, '{:.2f}')} | {_num(r['throughput_samples_per_s'])} | "
                     f"{once} |")
        L.append("")
    tl = rep.get("timeline")
    if tl:
        sched = " → ".join(f"{ph['profile']} {ph['seconds']:g}s" for ph in tl["schedule"])
        integ = tl["integrity"]
        L += ["## One continuous `auto` run, profile changed mid-run", "",
              f"Schedule: {sched}. Open loop, {tl['rate']:g} batches/s of {rep['settings']['batch_size']}, "
              f"{tl['samples']} samples. Every sample answered exactly once: "
              f"**{'yes' if integ['ok'] else 'NO'}** (missing {integ['missing']}, duplicated {integ['duplicated']}, "
              f"rejected {integ['rejected']}, unknown ids {integ.get('unknown_ids', 0)}).", "",
              "### Phases", "",
              "| # | profile | from–to (s) | sent | answered | edge / cloud / degraded | accuracy | "
              "latency p50 / p95 (ms) | effective mode (share) | settled mode | edge's RTT estimate (ms) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for ph in tl["phases"]:
            L.append(f"| {ph['phase']} | {ph['profile']} | {ph['start_s']:.1f}–{ph['end_s']:.1f} | {ph['sent']} | "
                     f"{ph['answered']} | {_paths(ph['paths'])} | {_pct(ph['accuracy'])} | "
                     f"{_num(ph['latency_ms']['p50'])} / {_num(ph['latency_ms']['p95'])} | "
                     f"{_shares(ph['effective_modes'])} | {ph['settled_mode'] or '-'} | "
                     f"{_num(ph['link']['rtt_ms'])} |")
        L += ["", "### Effective mode over time", "",
              "A row per stretch of constant profile and effective mode (status polled every "
              f"{rep['settings']['poll_s']:g}s); answered = samples the edge answered meanwhile.", "",
              "| from (s) | to (s) | profile | effective mode | cloud connected | edge's RTT estimate (ms) | "
              "error rate | answered edge / cloud / degraded |",
              "|---|---|---|---|---|---|---|---|"]
        for sg in tl["segments"]:
            L.append(f"| {sg['start_s']:.1f} | {sg['end_s']:.1f} | {sg['profile']} | **{sg['effective_mode']}** | "
                     f"{_pct(sg['link']['cloud_connected'])} | {_num(sg['link']['rtt_ms'])} | "
                     f"{_num(sg['link']['error_rate'], '{:.2f}')} | {_paths(sg['answered'])} |")
        if tl.get("plot"):
            L += ["", f"![effective mode over time]({tl['plot']})"]
        L.append("")
    checks = rep.get("checks", {})
    if checks:
        L += ["## Checks", ""]
        for name, c in checks.items():
            L.append(f"- {'PASS' if c.get('ok') else 'FAIL'} {name}: {c.get('detail', '')}")
        L.append("")
    L += ["## Link profiles", "", "| profile | rate | one-way delay | jitter | loss | down | |",
          "|---|---|---|---|---|---|---|"]
    for name, p in profs.items():
        L.append(f"| {name} | {_num(p['rate_mbit'], '{:g} Mbit/s')} | {p['delay_ms']:g} ms | {p['jitter_ms']:g} ms | "
                 f"{p['loss_pct']:g}% | {'yes' if p['down'] else ''} | {p['description']} |")
    cl = rep.get("cleanup", {})
    L += ["", f"Cleanup: namespaces left {cl.get('namespaces_left', '?')}; services' exit codes "
              f"{cl.get('exit_codes', {})}.", ""]
    return "\n".join(L)


def _link(p: dict) -> str:
    if p["down"]:
        return "down"
    parts = [f"{p['rate_mbit']:g} Mbit/s" if p["rate_mbit"] else "unlimited", f"{p['delay_ms']:g} ms"]
    if p["loss_pct"]:
        parts.append(f"{p['loss_pct']:g}% loss")
    return ", ".join(parts)


# -- plot ------------------------------------------------------------------------------------------------

def plot_timeline(tl: dict, path: str | Path) -> None:
    """Effective mode, answered samples per second by path, and the edge's RTT estimate, over time,
    with the link profile of each phase shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = tl["series"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 7.5), sharex=True, gridspec_kw={"height_ratios": [1.1, 1.4, 1]})
    colors = {"good": "#d9f2d9", "constrained": "#fff1c9", "lossy": "#f4dcf7", "outage": "#f7d4d4",
              "linkdown": "#f7d4d4"}
    for ax in axes:
        for ph in tl["phases"]:
            ax.axvspan(ph["start_s"], ph["end_s"], color=colors.get(ph["profile"], "#e8e8e8"), lw=0)
    for ph in tl["phases"]:
        axes[0].text((ph["start_s"] + ph["end_s"]) / 2, 2.45, ph["profile"], ha="center", va="center", fontsize=9)
    levels = [_MODE_LEVEL.get(m, np.nan) if m else np.nan for m in s["effective_mode"]]
    axes[0].step(s["t_s"], levels, where="post", color="black", lw=1.8)
    axes[0].set_yticks(list(_MODE_LEVEL.values()), [str(m) for m in _MODE_LEVEL])
    axes[0].set_ylim(-0.4, 2.7)
    axes[0].set_ylabel("effective mode")
    t_bins = np.arange(len(s["answered_per_s"][EDGE])) * s["bin_s"]
    bottom = np.zeros(len(t_bins))
    for kind, color in zip(PATHS, ("#4c72b0", "#55a868", "#c44e52"), strict=True):
        v = np.asarray(s["answered_per_s"][kind])
        axes[1].bar(t_bins, v, width=s["bin_s"], bottom=bottom, align="edge", color=color, label=kind, lw=0)
        bottom += v
    axes[1].set_ylabel("answered / s")
    axes[1].legend(loc="upper right", fontsize=8, ncol=3)
    rtt = [np.nan if r is None or r <= 0 else r for r in s["rtt_ms"]]
    axes[2].plot(s["t_s"], rtt, color="#8172b2")
    axes[2].set_ylabel("edge's RTT\nestimate (ms)")
    axes[2].set_xlabel("seconds since the first batch")
    if any(np.isfinite(rtt)):
        axes[2].set_yscale("log")
    fig.suptitle("auto mode under a changing edge-cloud link")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
