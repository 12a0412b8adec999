"""The training loop: data on the device, batched augmentation, per-exit weighted losses."""

from __future__ import annotations

import logging
import os
import platform
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ddnn.checkpoint import load_checkpoint, save_checkpoint
from ddnn.data import DatasetError, load_split, to_tensor, train_val_split
from ddnn.models import ModelSpec, MultiExitNet, QuantSpec, build_model
from ddnn.models.compact import airbench_init, whitening_stem
from ddnn.paths import default_train_root
from ddnn.training.config import TrainConfig
from ddnn.training.recipe import Lookahead, WeightAverage, flip_mask, lr_factor, make_optimizer, translate_flip

WHITEN_SAMPLE = 5000  # training images the whitening stem's patch statistics come from

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def exit_weights(cfg: TrainConfig, spec: ModelSpec) -> dict[str, float]:
    """lambda_k per exit: explicit ``loss_weights``, else the defaults (early 0.5, final 1.0)."""
    unknown = set(cfg.loss_weights) - set(spec.exit_names)
    if unknown:
        raise ValueError(f"--loss-weights names unknown exits {sorted(unknown)}; exits: {list(spec.exit_names)}")
    w = {e: cfg.default_exit_weight for e in spec.exit_names[:-1]}
    w["final"] = 1.0
    w.update(cfg.loss_weights)
    return w


@torch.no_grad()
def evaluate_exits(model: MultiExitNet, images: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 1000, amp: bool = False) -> dict[str, float]:
    """Accuracy of every exit over a uint8 NHWC image tensor (already on the model's device)."""
    was_training = model.training
    model.eval()
    correct: dict[str, int] = {}
    for i in range(0, len(labels), batch_size):
        x = to_tensor(images[i : i + batch_size], images.device)
        with torch.autocast(images.device.type, torch.bfloat16, enabled=amp):
            out = model(x)
        y = labels[i : i + batch_size]
        for name, logits in out.items():
            correct[name] = correct.get(name, 0) + int((logits.argmax(1) == y).sum())
    model.train(was_training)
    return {k: v / max(1, len(labels)) for k, v in correct.items()}


def _freeze_backbone(model: MultiExitNet) -> list[nn.Parameter]:
    """Separate optimization: only exit heads learn; the backbone (and its BN statistics) stay fixed."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("exits.")
    return [p for p in model.parameters() if p.requires_grad]


def _set_train_mode(model: MultiExitNet, separate: bool) -> None:
    model.train()
    if separate:
        for name, m in model.named_modules():
            if name and not name.startswith("exits"):
                m.eval()


def _load_init(model: MultiExitNet, path: str) -> dict:
    """Copy the matching weights of checkpoint ``path`` into ``model``; return its provenance."""
    src = load_checkpoint(path)
    own = model.state_dict()
    shared = {k: v for k, v in src.model.state_dict().items() if k in own and own[k].shape == v.shape}
    missing_backbone = [k for k in own if not k.startswith("exits.") and k not in shared]
    if missing_backbone:
        raise ValueError(f"--init {path}: backbone does not match ({len(missing_backbone)} tensors differ, "
                         f"e.g. {missing_backbone[0]})")
    model.load_state_dict(shared, strict=False)
    return {"path": path, "sha256": src.sha256, "command": src.meta.get("command"),
            "config": src.meta.get("config"), "metrics": src.meta.get("metrics"),
            "train_seconds": src.meta.get("train_seconds"), "init": src.meta.get("init")}


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("amx_bf16", "avx512_bf16"))


def train(cfg: TrainConfig, command: str = "", progress: bool | None = None) -> Path:
    """Run one training job described by ``cfg`` (never modified); return the checkpoint path."""
    t_start = time.time()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    root = cfg.data or default_train_root()
    if root is None:
        raise DatasetError("(no --data given)", "no training data: pass --data PATH or set DDNN_TRAIN_DATA")
    arrays = load_split(root, "train")
    idx_all = np.arange(len(arrays))
    if cfg.limit:
        idx_all = np.sort(np.random.default_rng(cfg.split_seed).permutation(len(arrays))[: cfg.limit])
    train_rel, val_rel = train_val_split(arrays.labels[idx_all], cfg.val_fraction, cfg.split_seed)
    train_idx, val_idx = idx_all[train_rel], idx_all[val_rel]

    quant = QuantSpec(cfg.quant_bits, cfg.quant_blocks) if cfg.quant_bits else None
    spec = ModelSpec(cfg.arch, cfg.depth, cfg.num_classes or arrays.num_classes, tuple(cfg.exits),
                     cfg.exit_pool, cfg.width, quant)
    model = build_model(spec)
    init_meta = _load_init(model, cfg.init) if cfg.init else None
    stem = whitening_stem(model)
    if stem is not None and cfg.airbench_init and not cfg.init:
        airbench_init(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = cfg.bn_momentum
    if stem is not None and cfg.whiten_init and not cfg.init:
        pick = np.random.default_rng(cfg.seed).permutation(len(train_idx))[:WHITEN_SAMPLE]
        stem.init_from(to_tensor(torch.from_numpy(arrays.images[train_idx[np.sort(pick)]]), torch.device("cpu")))
    separate = cfg.mode == "separate"
    params = _freeze_backbone(model) if separate else list(model.parameters())
    weights = exit_weights(cfg, spec)
    if separate:
        weights["final"] = 0.0
    model.to(device)
    channels_last = cfg.channels_last and device.type == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)

    x_train = torch.from_numpy(arrays.images[train_idx]).to(device)
    y_train = torch.from_numpy(arrays.labels[train_idx]).to(device)
    x_val = torch.from_numpy(arrays.images[val_idx]).to(device)
    y_val = torch.from_numpy(arrays.labels[val_idx]).to(device)
    n = len(y_train)
    steps_per_epoch = max(1, n // cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    warmup = int(cfg.warmup_epochs * steps_per_epoch)

    opt = make_optimizer(cfg, model, [p for p in params if p.requires_grad])
    reduction = "sum" if cfg.optimizer == "sgd-decoupled" else "mean"
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction=reduction)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    flip_base = (torch.rand(n, generator=torch.Generator().manual_seed(cfg.seed + 2)) < 0.5
                 if cfg.alternating_flip else None)
    amp = (cfg.amp and device.type == "cuda") or (cfg.cpu_bf16 and device.type == "cpu" and _cpu_has_bf16())
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    lookahead = Lookahead(model) if cfg.lookahead else None

    out = Path(cfg.out)
    state_path = out.with_name(out.name + ".state")
    history: list[dict] = []
    start_epoch = 0
    epochs_planned = cfg.epochs
    if cfg.resume and state_path.is_file():
        st = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        order_gen.set_state(st["order_gen"])
        aug_gen.set_state(st["aug_gen"])
        history, start_epoch = st["history"], st["epoch"]
        epochs_planned = st.get("epochs_total", cfg.epochs)  # a time budget's choice survives a resume
        if average is not None and st.get("average"):
            average.state = st["average"]
        if lookahead is not None and st.get("lookahead"):
            lookahead.state = st["lookahead"]
        log.info("resumed from %s at epoch %d", state_path, start_epoch)

    log.info("training %s exits=%s on %s: %d train / %d val images, %d epochs, weights %s",
             spec.label, list(spec.exit_names), device, n, len(y_val), cfg.epochs, weights)
    epochs_bar = tqdm(range(start_epoch, cfg.epochs), desc=f"train {spec.label}", unit="epoch",
                      initial=start_epoch, total=cfg.epochs, disable=True if progress is False else None)
    epochs = epochs_planned
    total_steps = steps_per_epoch * epochs
    for epoch in epochs_bar:
        if epoch >= epochs:
            break
        t_epoch = time.time()
        _set_train_mode(model, separate)
        if stem is not None and stem.conv.bias is not None and not separate and cfg.whiten_bias_epochs is not None:
            stem.conv.bias.requires_grad_(epoch < cfg.whiten_bias_epochs)  # frozen: no grad, so SGD skips it
        perm = torch.randperm(n, generator=order_gen).to(device)
        loss_sum = torch.zeros((), device=device)
        for step in range(steps_per_epoch):
            factor = lr_factor(cfg, epoch * steps_per_epoch + step, total_steps, warmup)
            for g in opt.param_groups:
                g["lr"] = g["peak_lr"] * factor
            lr = cfg.lr * factor
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            flips = flip_mask(idx, epoch, flip_base, aug_gen)
            xb = translate_flip(to_tensor(x_train[idx], device), aug_gen, cfg.crop_padding, flips, cfg.crop_reflect)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_train[idx]
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                outs = model(xb)
                loss = sum(w * criterion(outs[e].float(), yb) for e, w in weights.items() if w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if average is not None:
                average.update(model)
            if lookahead is not None:
                lookahead.step(model, epoch * steps_per_epoch + step + 1, total_steps, steps_per_epoch)
            loss_sum += loss.detach() / (len(idx) if reduction == "sum" else 1)
        if cfg.time_budget and epoch == 0 and start_epoch == 0:
            # Fix the epoch count from the first epoch's cost. The warm-up covers epoch 1, so the
            # LR schedule of that epoch does not depend on the total: `--epochs N` replays it.
            per_epoch = time.time() - t_epoch
            remaining = cfg.time_budget - (time.time() - t_start)
            epochs = max(2, min(cfg.epochs, 1 + int(remaining / (per_epoch * 1.05))))
            total_steps = steps_per_epoch * epochs
            epochs_bar.total = epochs
            log.info("time budget %.0fs: %.1fs/epoch -> %d epochs", cfg.time_budget, per_epoch, epochs)
            if epochs <= cfg.warmup_epochs:
                log.warning("the %g-epoch warm-up covers all %d epochs the time budget allows: the learning rate "
                            "never decays; give a larger --time-budget or a shorter --warmup-epochs",
                            cfg.warmup_epochs, epochs)
        record: dict[str, Any] = {"epoch": epoch + 1, "loss": float(loss_sum) / steps_per_epoch, "lr": lr,
                  "seconds": round(time.time() - t_epoch, 2)}
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == epochs:
            record["val_accuracy"] = evaluate_exits(model, x_val, y_val, amp=amp)
        history.append(record)
        epochs_bar.set_postfix(loss=f"{record['loss']:.3f}",
                               val=f"{record.get('val_accuracy', {}).get('final', float('nan')):.4f}")
        log.info("epoch %d/%d loss %.4f val %s (%.1fs)", epoch + 1, epochs, record["loss"],
                 record.get("val_accuracy"), record["seconds"])
        state_path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                    "order_gen": order_gen.get_state(), "aug_gen": aug_gen.get_state(), "history": history,
                    "average": average.state if average is not None else None, "epochs_total": epochs,
                    "lookahead": lookahead.state if lookahead is not None else None},
                   state_path)

    if average is not None:  # the averaged weights are what is evaluated and shipped
        average.load_into(model)
    val_acc = evaluate_exits(model, x_val, y_val)  # fp32, what calibration will see
    meta = {
        "data": {"name": arrays.name, "source": str(root), "split": "train", "train_count": int(n),
                 "val_count": len(val_idx), "val_fraction": cfg.val_fraction, "split_seed": cfg.split_seed,
                 "limit": cfg.limit},
        "metrics": {"val_accuracy": val_acc},
        "loss_weights": weights,
        "config": cfg.replace(epochs=epochs).to_dict(),  # the epochs run (a time budget picks them)
        "command": command,
        "init": init_meta,
        "history": history,
        "train_seconds": round(time.time() - t_start, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_version": str(torch.__version__),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
    }
    path = save_checkpoint(out, model.cpu(), arrays.classes, **meta)
    state_path.unlink(missing_ok=True)
    log.info("saved %s (val accuracy %s)", path, val_acc)
    return path
