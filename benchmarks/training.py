"""Training-time benchmarks on this CPU: the classic recipe (ResNet-20w32, SGD + cosine, fp32) and
the fast recipe (compact64, airbench-style) in fp32 and bf16, side by side in one run, plus the
recorded fast-recipe training run (docs/training-logs/fast-compact64.json) when it exists."""

from __future__ import annotations

import json
import time

import numpy as np
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.data import load_split, random_crop_flip, to_tensor
from ddnn.models import ModelSpec, build_model
from ddnn.models.complexity import count_macs
from ddnn.paths import REPO_ROOT, SHIPPED_CHECKPOINT, default_test_source
from ddnn.training import TrainConfig
from ddnn.training.loop import _cpu_has_bf16
from ddnn.training.recipe import make_optimizer

TRAIN_IMAGES = 45000
# The next rung up (not a recipe ddnn ships): airbench95 reaches 95.0% on canonical CIFAR-10 with about
# 3.9x airbench94's training compute (1.39 vs 0.36 PFLOPs: widths 128/384/384, 15 epochs instead of 9.9).
# compact96 (96/384/384) is the nearest width this architecture has; timed here so the cost of that
# rung on this CPU is measured, not guessed.
NEXT_RUNG_WIDTH = 96
NEXT_RUNG_EPOCHS = 15
RECORDED_RUN = REPO_ROOT / "docs" / "training-logs" / "fast-compact64.json"


def _seconds_per_epoch(cfg: TrainConfig, spec: ModelSpec, amp: bool, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    model = build_model(spec).train()
    opt = make_optimizer(cfg, model, [p for p in model.parameters() if p.requires_grad])
    arrays = load_split(default_test_source(), "test")  # pixels only stand in for training images here
    labels = torch.from_numpy(arrays.labels)
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    reduction = "sum" if cfg.optimizer == "sgd-decoupled" else "mean"

    def step():
        idx = rng.choice(len(arrays), cfg.batch_size, replace=False)
        flips = torch.from_numpy(rng.random(cfg.batch_size) < 0.5)
        x = random_crop_flip(to_tensor(arrays.images[idx]), gen, cfg.crop_padding, flips)
        with torch.autocast("cpu", torch.bfloat16, enabled=amp):
            outs = model(x)
            loss = sum(torch.nn.functional.cross_entropy(o.float(), labels[idx], reduction=reduction,
                                                         label_smoothing=cfg.label_smoothing) for o in outs.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps * (TRAIN_IMAGES // cfg.batch_size)


def run(quick: bool = False, threads: int = 2) -> dict:
    shipped = load_checkpoint(SHIPPED_CHECKPOINT).spec
    classic = TrainConfig.from_recipe("classic")
    fast = TrainConfig.from_recipe("fast")
    fast_spec = ModelSpec("compact", num_classes=10, exits=fast.exits, exit_pool=fast.exit_pool)
    rows = [("classic", shipped.label, "fp32", classic, shipped, False)]
    rows.append(("fast", fast_spec.label, "fp32", fast, fast_spec, False))
    wide_spec = ModelSpec("compact", num_classes=10, exits=fast.exits, exit_pool=fast.exit_pool, width=NEXT_RUNG_WIDTH)
    rows.append(("fast", wide_spec.label, "fp32", fast, wide_spec, False))
    if _cpu_has_bf16():
        rows.append(("fast", fast_spec.label, "bf16", fast, fast_spec, True))
        rows.append(("fast", wide_spec.label, "bf16", fast, wide_spec, True))
    steps = 2 if quick else 6
    table = []
    for recipe, label, precision, cfg, spec, amp in rows:  # interleaved in one run: same load for all
        table.append({"recipe": recipe, "model": label, "precision": precision, "batch_size": cfg.batch_size,
                      "macs_per_image": count_macs(build_model(spec).eval()),
                      "seconds_per_epoch": _seconds_per_epoch(cfg, spec, amp, steps, threads)})
    out = {"threads": threads, "timed_steps": steps, "table": table}
    if RECORDED_RUN.exists():
        out["recorded_run"] = json.loads(RECORDED_RUN.read_text())
    return out


def render(r: dict) -> list[str]:
    lines = [f"Seconds per training epoch ({TRAIN_IMAGES:,} images) on this CPU, {r['threads']} threads, "
             f"from {r['timed_steps']} timed steps after one warm-up, each configuration in turn:", "",
             "| recipe | model | MMACs/image | precision | batch | s/epoch | vs classic |",
             "|---|---|---|---|---|---|---|"]
    base = r["table"][0]["seconds_per_epoch"]
    for row in r["table"]:
        macs = f"{row['macs_per_image'] / 1e6:,.0f}" if "macs_per_image" in row else "-"
        lines.append(f"| {row['recipe']} | {row['model']} | {macs} | {row['precision']} | {row['batch_size']} | "
                     f"{row['seconds_per_epoch']:,.0f} | {base / row['seconds_per_epoch']:.2f}x |")
    wide = [row for row in r["table"] if row["model"] == f"compact{NEXT_RUNG_WIDTH}"]
    if wide:
        fastest = min(wide, key=lambda row: row["seconds_per_epoch"])
        minutes = NEXT_RUNG_EPOCHS * fastest["seconds_per_epoch"] / 60
        lines += ["", f"compact{NEXT_RUNG_WIDTH} is not shipped: it is the nearest width to airbench95 (95.0% on "
                  "canonical CIFAR-10 in 15 epochs, about 3.9x airbench94's compute), the rung the 91%-on-JPEG goal "
                  f"of issue 14 needs. At the rate above, {NEXT_RUNG_EPOCHS} epochs of it take {minutes:.0f} min on "
                  f"this CPU ({fastest['precision']}; a projection from the timed steps, not a training run, and a "
                  "lower bound: airbench95's first group is wider, 128 channels)."]
    rec = r.get("recorded_run")
    if rec:
        lines += ["", f"Recorded fast-recipe run (`{rec['command']}`): {rec['epochs']} epochs in "
                  f"{rec['train_seconds'] / 60:.1f} min on {rec['machine']}; test accuracy (JPEG CIFAR-10, no TTA) "
                  + ", ".join(f"{k} {100 * v:.2f}%" for k, v in rec["test_accuracy"].items()) + ". "
                  f"Epochs to 90% / 91% final-exit validation accuracy: {rec.get('epochs_to_90') or 'not reached'} / "
                  f"{rec.get('epochs_to_91') or 'not reached'}. The shipped ResNet-20w32 (88.56% final) took 184 "
                  "GPU epochs; on this CPU the classic recipe's epoch time above puts that out of reach."]
        if "seconds_to_shipped" in rec:
            to = rec["seconds_to_shipped"]
            lines[-1] += (f" Training time to the shipped model's final-exit validation accuracy "
                          f"({100 * rec['shipped_val_final']:.2f}%): "
                          + (f"{to / 60:.1f} min ({rec['epochs_to_shipped']} epochs)." if to is not None
                             else "not reached in this run."))
    return lines
