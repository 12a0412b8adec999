"""What a testbed run must show: integrity everywhere, the emulated delay in the RTT, auto following the link."""

from __future__ import annotations

from ddnn.export.bundle import Mode
from ddnn.testbed import report as R
from ddnn.testbed.profiles import LinkProfile


def reachable(p: LinkProfile) -> bool:
    """Whether the cloud can be reached at all under ``p``."""
    return not p.down and p.loss_pct < 100


def checks(rep: dict, profiles: dict[str, LinkProfile]) -> dict:
    """What the run must show: integrity everywhere, the emulated delay in the RTT, auto following the link."""
    out = {}
    rows = rep.get("table") or []
    tl = rep.get("timeline")
    bad = [f"{r['profile']}/{r['mode']}" for r in rows if r.get("error") or not r["integrity"]["ok"]]
    if tl:
        bad += [f"timeline phase {ph['phase']} ({ph['profile']})" for ph in tl["phases"]
                if ph["missing"] or ph["rejected"]]
        if not tl["integrity"]["ok"]:
            bad.append("timeline (duplicates or unknown ids)")
    n = sum(r.get("samples", 0) for r in rows) + (tl["samples"] if tl else 0)
    out["answered_exactly_once"] = {"ok": not bad, "detail": f"{n} samples over {len(rows)} replays"
                                    + (f" and {len(tl['phases'])} timeline phases" if tl else "")
                                    + (f"; failed: {', '.join(bad)}" if bad else "")}
    seen = set()
    for r in rows:
        p = profiles[r["profile"]]
        if r["profile"] in seen or not reachable(p) or p.loss_pct or r.get("tcp_rtt_ms") is None:
            continue
        seen.add(r["profile"])
        c = R.rtt_check(r["tcp_rtt_ms"], p.rtt_floor_ms)
        out[f"rtt_{r['profile']}"] = {**c, "detail": f"TCP handshake median {R._num(c['median_ms'])} ms, "
                                                    f"profile adds {c['expected_floor_ms']:g} ms"}
    if tl:
        settled: dict[str, list[str | None]] = {}
        for ph in tl["phases"]:
            settled.setdefault(ph["profile"], []).append(ph["settled_mode"])
        outage = [m for name, ms in settled.items() if not reachable(profiles[name]) for m in ms]
        good = settled.get("good", [])
        ok = bool(outage) and bool(good) and all(m == Mode.LOCAL for m in outage) and all(
            m not in (None, Mode.LOCAL) for m in good)
        out["auto_follows_link"] = {"ok": ok, "settled": settled,
                                    "detail": ", ".join(f"{k}: {'/'.join(str(m) for m in v)}"
                                                        for k, v in settled.items())}
    cl = rep.get("cleanup", {})
    out["cleanup"] = {"ok": not cl.get("namespaces_left") and all(v == 0 for v in cl.get("exit_codes", {}).values()),
                      "detail": f"namespaces left {cl.get('namespaces_left')}, exit codes {cl.get('exit_codes')}"}
    return out
