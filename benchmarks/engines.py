"""Engines side by side (issue 12): edge img/s per engine, precision, batch and threads; cloud segment
img/s; agreement with torch fp32 and accuracy on the test split.

Every configuration is timed in interleaved rounds (best of the rounds), so a load spike from other
processes on this shared machine hits all engines alike.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from ddnn.engines import Backend, EngineSpec, cloud_part, edge_part

EDGE_EXIT = "block7"
BATCHES = (1, 8, 32)
THREADS = (1, 2)


def engines() -> list[str]:
    names = ["torch", "onnxruntime", "onnxruntime-int8"]
    if importlib.util.find_spec("openvino") is not None:
        names += ["openvino", "openvino-int8"]
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            names.append("openvino-bf16")
    return names


def _source(spec: EngineSpec, ck, bundle):
    return ck if spec.backend == Backend.TORCH else bundle


def _time(fn, x: np.ndarray, images: int) -> float:
    """Seconds per image over about ``images`` images (one warm-up call first)."""
    fn(x)
    calls = max(1, images // len(x))
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(x)
    return (time.perf_counter() - t0) / (calls * len(x))


def throughput(ck, bundle, images: np.ndarray, names: list[str], rounds: int, per_point: int) -> dict:
    """Edge img/s by engine, threads and batch; cloud img/s (batch 32) by engine and threads."""
    import torch

    edge: dict = {n: {t: {b: 0.0 for b in BATCHES} for t in THREADS} for n in names}
    cloud_names = [n for n in names if "-" not in n]
    cloud: dict = {n: {t: 0.0 for t in THREADS} for n in cloud_names}
    for _ in range(rounds):
        for t in THREADS:
            torch.set_num_threads(t)
            for n in names:
                spec = EngineSpec.parse(n, t)
                part = edge_part(spec, _source(spec, ck, bundle), [EDGE_EXIT])
                for b in BATCHES:
                    edge[n][t][b] = max(edge[n][t][b], 1 / _time(part.run, images[:b], per_point))
            feats = edge_part(EngineSpec(), ck, [EDGE_EXIT]).run(images[:32])[1]
            for n in cloud_names:
                spec = EngineSpec.parse(n, t)
                part = cloud_part(spec, _source(spec, ck, bundle), EDGE_EXIT)
                cloud[n][t] = max(cloud[n][t], 1 / _time(part.run, feats, per_point))
    return {"edge_img_per_s": edge, "cloud_img_per_s": cloud}


def agreement(ck, arrays, names: list[str]) -> dict:
    """Per engine, on the test split: top-1 agreement with torch fp32 per exit, exit decisions and
    predictions under the policy calibrated for that engine's precision, accuracy."""
    from ddnn.evaluation import exit_logits, route_samples
    from ddnn.paths import SHIPPED_INT8_POLICY, SHIPPED_POLICY
    from ddnn.policies import EdgePolicy

    ref_logits = exit_logits(ck, arrays, progress=False)
    ref_policy = EdgePolicy.load(SHIPPED_POLICY)
    ref = route_samples(ref_policy, ref_logits, [EDGE_EXIT])
    y = arrays.labels
    out = {}
    for n in names:
        spec = EngineSpec.parse(n)
        logits = exit_logits(ck, arrays, progress=False, engine=spec)
        policy = EdgePolicy.load(SHIPPED_INT8_POLICY if spec.precision == "int8" else SHIPPED_POLICY)
        got = route_samples(policy, logits, [EDGE_EXIT])
        out[n] = {
            "top1_agreement": {e: float((logits[e].argmax(1) == ref_logits[e].argmax(1)).mean()) for e in logits},
            "max_abs_logit_diff": {e: float(np.abs(logits[e] - ref_logits[e]).max()) for e in logits},
            "exit_decision_agreement": float((got.exit_index == ref.exit_index).mean()),
            "prediction_agreement": float((got.prediction == ref.prediction).mean()),
            "edge_exit_rate": float((got.exit_index == 0).mean()),
            "accuracy": float((got.prediction == y).mean()),
            "accuracy_torch_fp32": float((ref.prediction == y).mean()),
            "policy": "int8" if spec.precision == "int8" else "fp32",
        }
    return out


def run(quick: bool = False) -> dict:
    from ddnn.checkpoint import load_checkpoint
    from ddnn.data import load_split
    from ddnn.export.cache import bundle_for
    from ddnn.paths import SHIPPED_CHECKPOINT, default_test_source

    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    bundle = bundle_for(ck, "int8")
    arrays = load_split(default_test_source(), "test")
    if quick:
        arrays = arrays.subset(np.arange(512), split="test")
    names = engines()
    result = throughput(ck, bundle, arrays.images, names, rounds=1 if quick else 3, per_point=64 if quick else 512)
    result["agreement"] = agreement(ck, arrays, names)
    result["images"] = len(arrays)
    result["engines"] = names
    return result


def render(r: dict) -> list[str]:
    names = r["engines"]
    edge, cloud, agree = r["edge_img_per_s"], r["cloud_img_per_s"], r["agreement"]
    lines = [f"Edge part of the shipped model (input -> exits block4, {EDGE_EXIT} + features), images/s, best of "
             "interleaved rounds; the speedup is against torch eager fp32 at the same batch and threads.", "",
             "| engine | " + " | ".join(f"b{b} t{t}" for t in THREADS for b in BATCHES) + " | speedup b32 t2 |",
             "|---|" + "---|" * (len(BATCHES) * len(THREADS) + 1)]
    base = edge["torch"]
    for n in names:
        cells = [f"{_get(edge[n], t, b):,.0f}" for t in THREADS for b in BATCHES]
        ratio = _get(edge[n], 2, 32) / _get(base, 2, 32)
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
    lines += ["", f"Cloud segment from {EDGE_EXIT} (batch 32), images/s:", "",
              "| engine | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in THREADS) + " |",
              "|---|" + "---|" * len(THREADS)]
    for n, by in cloud.items():
        lines.append(f"| {n} | " + " | ".join(f"{_get1(by, t):,.0f}" for t in THREADS) + " |")
    lines += ["", f"Agreement with torch fp32 on {r['images']:,} test images (normal mode, exit {EDGE_EXIT}; each "
              "engine runs the policy calibrated for its precision: fp32 engines the shipped policy, int8 "
              "`models/resnet20w32-cifar10.onnxruntime-int8.policy.json`):", "",
              f"| engine | top-1 agreement {EDGE_EXIT} | top-1 final | max logit diff | exit decisions | "
              "answers | edge exit rate | accuracy (torch fp32) |", "|---|---|---|---|---|---|---|---|"]
    for n in names:
        a = agree[n]
        lines.append(f"| {n} | {100 * a['top1_agreement'][EDGE_EXIT]:.2f}% | {100 * a['top1_agreement']['final']:.2f}% "
                     f"| {a['max_abs_logit_diff'][EDGE_EXIT]:.1e} | {100 * a['exit_decision_agreement']:.2f}% | "
                     f"{100 * a['prediction_agreement']:.2f}% | {100 * a['edge_exit_rate']:.2f}% | "
                     f"{100 * a['accuracy']:.2f}% ({100 * a['accuracy_torch_fp32']:.2f}%) |")
    return lines


def _get(by: dict, t: int, b: int) -> float:
    inner = by.get(str(t), by.get(t))
    return inner.get(str(b), inner.get(b))


def _get1(by: dict, t: int) -> float:
    return by.get(str(t), by.get(t))
