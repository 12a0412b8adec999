"""Parts of the training recipes that the loop switches on from :class:`TrainConfig`.

Each is independent so its effect can be measured alone: the learning-rate schedules, the
decoupled SGD parametrisation, alternating flips, and an
exponential moving average of the weights. (Crop-and-flip itself is ``ddnn.data.random_crop_flip``,
given the flips.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ddnn.training.config import TrainConfig

TRIANGLE_START = 0.2  # airbench: the schedule starts at 20% of the peak
NORM_BIAS_LR_SCALE = 64.0  # airbench's bias_scaler: BN shifts learn 64x faster under sgd-decoupled


def lr_factor(cfg: TrainConfig, step: int, total: int, warmup: int) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total``."""
    if cfg.schedule == "triangle":
        if step < warmup:
            return TRIANGLE_START + (1 - TRIANGLE_START) * step / max(1, warmup)
        progress = (step - warmup) / max(1, total - warmup)
        return 1 + (cfg.final_lr_fraction - 1) * min(1.0, progress)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def kilostep_scale(momentum: float) -> float:
    """airbench's normalisation: lr per 1024 samples, accounting for momentum's gain 1/(1-m)."""
    return 1024 * (1 + 1 / (1 - momentum))


def make_optimizer(cfg: TrainConfig, model: nn.Module, params: list[nn.Parameter]) -> torch.optim.SGD:
    """SGD with each group's peak lr in ``group['peak_lr']`` (the loop multiplies it by the schedule).

    ``sgd``: lr and weight decay as given, loss averaged over the batch. ``sgd-decoupled``: the loss
    is summed over the batch, lr is per 1024 samples and the weight decay's strength does not change
    with lr or batch size (it is divided by the group's lr, so lr x decay stays as configured).
    """
    if cfg.optimizer == "sgd":
        group = {"params": params, "lr": cfg.lr, "peak_lr": cfg.lr, "weight_decay": cfg.weight_decay}
        return torch.optim.SGD([group], lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    scale = kilostep_scale(cfg.momentum)
    lr = cfg.lr / scale
    wd = cfg.weight_decay * cfg.batch_size / scale
    wanted = {id(p) for p in params}
    norm = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m.bias) in wanted]
    norm_ids = {id(p) for p in norm}
    other = [p for p in params if id(p) not in norm_ids]
    groups = [{"params": other, "lr": lr, "peak_lr": lr, "weight_decay": wd / lr}]
    if norm:
        lr_norm = lr * NORM_BIAS_LR_SCALE
        groups.append({"params": norm, "lr": lr_norm, "peak_lr": lr_norm, "weight_decay": wd / lr_norm})
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def flip_mask(idx: torch.Tensor, epoch: int, base: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
    """Which images of a batch to flip. Alternating flips (``base`` given: one random bit per image,
    drawn once): epoch e flips image i iff base[i] xor (e odd), so every image is seen both ways in
    any two consecutive epochs. Otherwise an independent coin per image and step."""
    if base is not None:
        return base[idx.cpu()] ^ bool(epoch % 2)
    return torch.rand(len(idx), generator=generator, device=generator.device).cpu() < 0.5


class WeightAverage:
    """Exponential moving average of a model's parameters; buffers (BN statistics) are copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if k in params and v.is_floating_point():
                self.state[k].mul_(self.decay).add_(v.detach().float(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v.detach())

    def load_into(self, model: nn.Module) -> None:
        own = model.state_dict()
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in self.state.items()})
