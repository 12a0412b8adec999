"""The compose section's figures from its rounds, and its part of BENCHMARKS.md (pure: no Docker)."""

from __future__ import annotations

import statistics

RATIO_GOAL = 0.9  # compose throughput / local (ddnn demo) throughput
EDGE_SIZE_GOAL_MB = 400
PARTS = ("edge", "cloud", "triton", "loadgen", "prometheus", "docker engine", "other")
SIDES = ("local", "compose")


def median_by_part(values: list[dict[str, float]]) -> dict[str, float]:
    """Median of each part over the rounds (a part missing from a round counts 0 there)."""
    keys = sorted({k for v in values for k in v}, key=lambda k: (PARTS.index(k) if k in PARTS else len(PARTS), k))
    return {k: statistics.median(v.get(k, 0.0) for v in values) for k in keys}


def summarize(rounds: list[dict]) -> dict:
    """Medians of each side, their ratio (compose / local), each round's ratio and the goal; where the rounds
    carry CPU figures, each ratio split into cores obtained x CPU per sample, CPU per sample by part and the
    compose testbed's cost at rest."""
    local = [r["local"]["throughput"] for r in rounds]
    comp = [r["compose"]["throughput"] for r in rounds]
    ratio = statistics.median(comp) / statistics.median(local)
    out = {"local_median": statistics.median(local), "compose_median": statistics.median(comp), "ratio": ratio,
           "round_ratios": [c / lo for c, lo in zip(comp, local, strict=True)], "goal_met": ratio >= RATIO_GOAL,
           "same_workload": same_workload(rounds)}
    if all("cpu" in r[s] for r in rounds for s in SIDES):
        cores = [r["compose"]["cpu"]["cores_ours"] / r["local"]["cpu"]["cores_ours"] for r in rounds]
        cost = [r["local"]["cpu"]["cpu_ms_per_sample"] / r["compose"]["cpu"]["cpu_ms_per_sample"] for r in rounds]
        out["factors"] = {"cores": cores, "cpu_per_sample": cost, "cores_median": statistics.median(cores),
                          "cpu_per_sample_median": statistics.median(cost)}
        out["cpu_ms_per_sample_by_part"] = {s: median_by_part([
            {k: 1000 * v / r[s]["samples"] for k, v in r[s]["cpu"]["cpu_s_by_part"].items()} for r in rounds])
            for s in SIDES}
        out["cores_median"] = {s: statistics.median(r[s]["cpu"]["cores_ours"] for r in rounds) for s in SIDES}
        out["cores_others_median"] = {s: statistics.median(r[s]["cpu"]["cores_others"] for r in rounds)
                                      for s in SIDES}
    if "factors" in out and all("at_rest" in r["compose"] for r in rounds):
        rest = [{k: v / r["compose"]["at_rest"]["wall_s"] for k, v in r["compose"]["at_rest"]["cpu_s_by_part"].items()}
                for r in rounds]
        out["compose_at_rest_cores_by_part"] = median_by_part(rest)
        out["compose_at_rest_cores"] = statistics.median(sum(x.values()) for x in rest)
        # what each side spent per sample on serving: compose's total less its at-rest cost over the replay
        out["serving_cpu_ms_per_sample"] = {
            "local": statistics.median(r["local"]["cpu"]["cpu_ms_per_sample"] for r in rounds),
            "compose": statistics.median(r["compose"]["cpu"]["cpu_ms_per_sample"]
                                         - 1000 * sum(x.values()) / r["compose"]["throughput"]
                                         for r, x in zip(rounds, rest, strict=True))}
    return out


def same_workload(rounds: list[dict]) -> bool:
    """Both sides replayed the same way and gave the same exits and accuracy (same engine, policy, data)."""
    keys = ("replay", "samples", "exit_rates", "accuracy")
    first = rounds[0]["local"]
    return all(r[s][k] == first[k] for r in rounds for s in SIDES for k in keys)


def _rates(x: dict) -> str:
    return f"cloud {100 * x['exit_rates']['cloud']:.2f}%, acc. {100 * x['accuracy']:.2f}%"


def _both(r: dict, f) -> str:
    return " / ".join(f(r[s]) for s in SIDES)


def render(r: dict) -> list[str]:
    if "skipped" in r:
        return [f"Not measured: {r['skipped']}."]
    w = r["workload"]
    cpu = "factors" in r
    lines = [f"Closed-loop replay of the first {w['images']:,} test images (shuffled, seed 0) in batches of "
             f"{w['batch_size']} on {w['concurrency']} streams; edge engine {w['engine']} with policy "
             f"`{w['policy']}`, mode {w['mode']}, payload {w['payload']}, cloud on Triton. **local**: `ddnn demo` "
             "(processes on loopback; the cloud starts its own Triton). **compose**: docker-compose.yml under a "
             f"fresh project (`{r['compose']} -p ddnn-bench-<random> -f docker-compose.yml -f <override> up -d "
             "--no-build`, then `down -v`) with an override that sets the same replay, engine, policy and no "
             "SLO controller on the edge, and Triton's ONNX Runtime threads to the demo's. Throughput is the load "
             "generator's own (samples / replay wall time, clock started once the edge answers: start-up "
             "excluded), alternating local and compose on the same machine"
             + (" (cores: CPU seconds per second of the replay that the side's processes or containers got; CPU "
                "ms/sample: what they spent per sample)" if cpu else "") + ":", ""]
    head = "| round | local samples/s | compose samples/s | compose / local |"
    if cpu:
        head += " cores local / compose | CPU ms/sample local / compose |"
    lines += [head + " compose up (s) |", "|---" * (head.count("|")) + "|"]
    for i, (x, c) in enumerate(zip(r["rounds"], r["round_ratios"], strict=True)):
        row = f"| {i + 1} | {x['local']['throughput']:,.0f} | {x['compose']['throughput']:,.0f} | {c:.2f} |"
        if cpu:
            row += (f" {_both(x, lambda s: format(s['cpu']['cores_ours'], '.2f'))} |"
                    f" {_both(x, lambda s: format(s['cpu']['cpu_ms_per_sample'], '.2f'))} |")
        lines.append(row + f" {x['compose']['up_s']:.0f} |")
    first = r["rounds"][0]
    lines += ["", f"Medians: local {r['local_median']:,.0f}, compose {r['compose_median']:,.0f} samples/s; ratio "
              f"**{r['ratio']:.2f}**: goal >= {RATIO_GOAL} {'met' if r['goal_met'] else '**missed**'}. "
              f"Same workload on both sides (replay settings, exits and accuracy equal in every round): "
              f"{'yes' if r['same_workload'] else '**no**'} (local {_rates(first['local'])}; compose "
              f"{_rates(first['compose'])}).", ""]
    if cpu:
        lines += why(r)
    lines += images(r["images"])
    return lines


def why(r: dict) -> list[str]:
    f, by = r["factors"], r["cpu_ms_per_sample_by_part"]
    lines = ["**Why.** A side's throughput is the cores it obtained over its replay divided by the CPU it spent per "
             "sample (the demo's processes read from /proc; the containers' cgroups plus Docker's own processes), so "
             "each round's ratio is (cores compose / local) x (CPU per sample local / compose): median factors "
             f"**{f['cores_median']:.2f}** (cores) and **{f['cpu_per_sample_median']:.2f}** (CPU per sample). CPU "
             "per sample by part (median over the rounds, ms):", "", "| part | local | compose |", "|---|---|---|"]
    for part in [p for p in PARTS if p in by["local"] or p in by["compose"]]:
        lines.append(f"| {part} | {by['local'].get(part, 0):.2f} | {by['compose'].get(part, 0):.2f} |")
    lines.append(f"| total | {sum(by['local'].values()):.2f} | {sum(by['compose'].values()):.2f} |")
    rest = r.get("compose_at_rest_cores_by_part")
    if rest:
        total = sum(rest.values())
        rest_s = r["rounds"][0]["compose"]["at_rest"]["wall_s"]
        parts = ", ".join(f"{k} {v:.3f}" for k, v in rest.items())
        lines += ["", f"At rest (the {rest_s:.0f} s after each compose replay, nothing to serve) the compose testbed "
                  f"still used **{total:.2f} cores** ({parts}): its healthchecks (a Python gRPC probe started "
                  "every 5 s in triton, cloud and edge, promtool in prometheus, each run through Docker) and "
                  "Prometheus's 5 s scrapes"
                  + (f" (one probe costs {r['healthcheck_probe_cpu_s']:.2f} CPU s, measured in the edge image)"
                     if "healthcheck_probe_cpu_s" in r else "") + "; at the compose median throughput that is "
                  f"{1000 * total / r['compose_median']:.2f} ms per sample. The demo has no healthchecks and no "
                  "Prometheus, and its cloud hands tensors to the Triton it started through shared memory where the "
                  "compose cloud sends them to the triton container inside gRPC messages."]
        lines += ["", *weight(r)]
    return [*lines, ""]


def weight(r: dict) -> list[str]:
    """What the compose testbed's fixed cost weighs: serving per sample on both sides, cores obtained."""
    sv, rest, cores, others = (r["serving_cpu_ms_per_sample"], r["compose_at_rest_cores"], r["cores_median"],
                               r["cores_others_median"])
    rel = sv["compose"] / sv["local"] - 1
    same = "about the same as" if abs(rel) <= 0.05 else f"{100 * abs(rel):.0f}% {'more' if rel > 0 else 'less'} than"
    n = r.get("machine_cores", 2)
    return [f"Without that at-rest cost, compose spent {sv['compose']:.2f} ms of CPU per sample on serving, {same} "
            f"the demo's {sv['local']:.2f}: what the compose testbed spends more is mostly its fixed "
            f"{rest:.2f} cores, and what that costs in throughput depends on the cores a side gets. With c cores for "
            f"both sides the ratio would be about 1 - {rest:.2f}/c: {1 - rest / n:.2f} with all {n} of this "
            f"machine's cores, {1 - rest:.2f} with one. In this run other work on the machine took "
            f"{others['local']:.2f} / {others['compose']:.2f} cores (median) during the local / compose replays, "
            f"leaving them {cores['local']:.2f} / {cores['compose']:.2f} cores (the cores factor in the table)."]


def images(facts: dict) -> list[str]:
    lines = [f"Images (`docker image inspect` Size, MB = 10^6 bytes; goal: edge <= {EDGE_SIZE_GOAL_MB} MB, no torch):",
             "", "| image | MB | torch |", "|---|---|---|"]
    for f in facts.values():
        t = f.get("torch")
        torch = "-" if t is None else ("not installed, not importable" if not t["installed"] and not t["importable"]
                                       else f"installed {t['installed']}, importable {t['importable']}")
        lines.append(f"| {f['tag']} | {f['size_mb']:,.0f} | {torch} |")
    edge = facts["edge"]
    ok = edge["size_mb"] <= EDGE_SIZE_GOAL_MB and not any(
        f["torch"]["installed"] or f["torch"]["importable"] for f in facts.values() if "torch" in f)
    return [*lines, "", f"Edge {edge['size_mb']:,.0f} MB, no torch in any service image: "
                        f"goal {'met' if ok else '**missed**'}."]
