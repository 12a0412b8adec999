"""Render benchmarks/results.json as BENCHMARKS.md."""

from __future__ import annotations

from ddnn.codec import PAYLOADS


def _env(sec: dict) -> str:
    e = sec["environment"]
    return (f"Measured {e['date']} at commit `{e['commit']}` on {e['cpu'] or 'an unknown CPU'} ({e['cores']} cores), "
            f"Python {e['python']}, torch {e['torch']}; load average at start "
            f"{', '.join(f'{x:.1f}' for x in e['loadavg_at_start'])}. Command: `{sec['command']}`"
            f"{' (QUICK smoke run: sizes too small to quote)' if sec.get('quick') else ''}.")


def _check(ok: bool) -> str:
    return "met" if ok else "**missed**"


def core(sec: dict) -> list[str]:
    r = sec["result"]
    ev, tr = r["eval"], r["train"]
    by = ev["images_per_s_by_threads"]
    lines = ["## Core library (issue 2)", "", _env(sec), "",
             f"Offline evaluation throughput of the shipped {ev['model']} (all exits' logits, batch "
             f"{ev['batch_size']}, {ev['images']} test images):", "",
             "| torch threads | images/s |", "|---|---|"]
    lines += [f"| {t} | {v:,.0f} |" for t, v in by.items()]
    g = tr["gpu_recorded"]
    lines += ["", f"Training time per epoch (45,000 images, batch {tr['batch_size']}) of {tr['model']}: "
              f"**{tr['cpu_seconds_per_epoch']:,.0f} s on this CPU** ({tr['threads']} threads; "
              f"{1000 * tr['seconds_per_step']:.0f} ms per step, timed over 20 steps after 2 warm-up steps). "
              f"The shipped checkpoint was trained on {g['device']}: median {g['median_seconds_per_epoch']:.1f} s per "
              f"epoch at batch {g['batch_size']} (recorded in the checkpoint's history, three trainings sharing the "
              f"GPU); first stage {g['first_stage_seconds']} s, fine-tuning {g['fine_tune_seconds']} s.", ""]
    return lines


def system(sec: dict) -> list[str]:
    r = sec["result"]
    rounds = r["rounds"]
    ratios = [x["ratio"] for x in rounds]
    ratio = sorted(ratios)[len(ratios) // 2]
    links = [x["link_overhead_ms_median"] for x in rounds if x["link_overhead_ms_median"] is not None]
    link = sorted(links)[len(links) // 2] if links else float("nan")
    lines = ["## The three-node system (issue 3)", "", _env(sec), "",
             f"Triton (Python backend, 1 thread) + cloud service, edge service ({r.get('edge_threads', 1)} torch "
             f"thread(s); the edge does ~90% of the work at this split) and load generator "
             f"({r['concurrency']} closed-loop streams, batches of 32) as separate processes on loopback, against the "
             f"same split ({'block7'}) and shipped AO policy evaluated in-process (`InProcessPipeline`, best of 1 and "
             f"2 threads), alternating on the same {r['images']} test images.", "",
             "**(a) End-to-end throughput vs in-process** (target ratio >= 0.8):", "",
             "| round | distributed img/s | in-process img/s (1 thr / 2 thr) | ratio |", "|---|---|---|---|"]
    for i, x in enumerate(rounds):
        ip = x["in_process_images_per_s_by_threads"]
        lines.append(f"| {i + 1} | {x['distributed_images_per_s']:,.0f} | {ip['1']:,.0f} / {ip['2']:,.0f} | "
                     f"{x['ratio']:.2f} |")
    lines += ["", f"Median ratio **{ratio:.2f}**: target {_check(ratio >= 0.8)}.", "",
              "**(b) Per-batch link overhead on loopback** (edge->cloud round trip minus the cloud's reported queue "
              "and compute time; target median <= 2 ms):", "",
              "| round | offloaded batches | median ms | p95 ms | cloud compute median ms |", "|---|---|---|---|---|"]
    for i, x in enumerate(rounds):
        lines.append(f"| {i + 1} | {x['offloaded_batches']} | {x['link_overhead_ms_median']:.2f} | "
                     f"{x['link_overhead_ms_p95']:.2f} | {x['cloud_compute_ms_median']:.2f} |")
    lines += ["", f"Median **{link:.2f} ms**: target {_check(link <= 2.0)}.", ""]
    pd, pf = r["payloads_distributed"], r["payloads_full_test_split"]
    fp32 = pf["fp32"]
    lines += ["**(c) Offload payloads** (target: int8 <= 0.26x fp32 bytes with <= 0.3 point accuracy loss). "
              "Bytes per offloaded sample as measured by the load generator; accuracy on the whole test split "
              "in-process, both with the shipped policy (only offloaded samples see the codec) and with every "
              "sample sent to the cloud (the codec's worst case):", "",
              "| payload | bytes/offloaded sample | vs fp32 | overall acc. (policy) | change | acc. all-to-cloud | "
              "change |", "|---|---|---|---|---|---|---|"]
    for p in PAYLOADS:
        b = pd[p]["bytes_per_offloaded_sample"]
        pol, all_ = pf[p]["policy_accuracy"], pf[p]["cloud_only_accuracy"]
        lines.append(f"| {p} | {b:,.0f} | {b / pd['fp32']['bytes_per_offloaded_sample']:.3f}x | "
                     f"{100 * pol:.2f}% | {100 * (pol - fp32['policy_accuracy']):+.2f} | "
                     f"{100 * all_:.2f}% | {100 * (all_ - fp32['cloud_only_accuracy']):+.2f} |")
    int8_ratio = pd["int8"]["bytes_per_offloaded_sample"] / pd["fp32"]["bytes_per_offloaded_sample"]
    int8_loss = 100 * (fp32["cloud_only_accuracy"] - pf["int8"]["cloud_only_accuracy"])
    lines += ["", f"int8: {int8_ratio:.3f}x the bytes, {int8_loss:+.2f} points lost with every sample offloaded: "
              f"target {_check(int8_ratio <= 0.26 and int8_loss <= 0.3)}. Raw input (the 3 KB image; the cloud "
              "runs the whole network) is smaller than any feature payload at this split.", "",
              "**(d) Per-sample latency** (client side, from the first round):", "",
              "| path | count | p50 ms | p99 ms | mean ms |", "|---|---|---|---|---|"]
    for path, s in rounds[0]["latency_s"].items():
        if s.get("count"):
            lines.append(f"| {path} | {s['count']} | {1000 * s['p50']:.1f} | {1000 * s['p99']:.1f} | "
                         f"{1000 * s['mean']:.1f} |")
    lines.append("")
    return lines


def slo(sec: dict) -> list[str]:
    from benchmarks.slo import render

    return ["## SLO controller under link profiles (issue 5)", "", _env(sec), "", *render(sec["result"]), ""]


def engines(sec: dict) -> list[str]:
    from benchmarks.engines import render

    return ["## Engines: ONNX Runtime, OpenVINO, int8 against torch eager (issue 12)", "", _env(sec), "",
            *render(sec["result"]), ""]


def training(sec: dict) -> list[str]:
    from benchmarks.training import render

    return ["## Training on this CPU: classic vs fast recipe (issue 14)", "", _env(sec), "",
            *render(sec["result"]), ""]


def compose(sec: dict) -> list[str]:
    from benchmarks.compose_report import render

    return ["## Compose testbed vs local processes, and the images (issue 13)", "", _env(sec), "",
            *render(sec["result"]), ""]


def render(results: dict) -> str:
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (`python -m benchmarks.run`); the raw numbers are in "
             "`benchmarks/results.json`. This machine is shared and noisy, so every comparison is measured side by "
             "side in one run and reported as a ratio; absolute times are for orientation only. Accuracies are on "
             "the CIFAR-10 test split re-encoded as JPEG (quality 75).", ""]
    for name, fn in (("core", core), ("system", system), ("slo", slo), ("engines", engines), ("training", training),
                     ("compose", compose)):
        if name in results:
            lines += fn(results[name])
        else:
            lines += [f"## {name}", "", "Not run yet: `python -m benchmarks.run --only " + name + "`.", ""]
    return "\n".join(lines)
