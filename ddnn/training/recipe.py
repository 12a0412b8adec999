"""Parts of the training recipes that the loop switches on from :class:`TrainConfig`.

Each is independent so its effect can be measured alone: the learning-rate schedules, the
decoupled SGD parametrisation (with its per-group learning-rate multipliers), alternating flips,
translation with reflected borders, an exponential moving average of the weights and airbench's
lookahead. (Crop-and-flip itself is ``ddnn.data.random_crop_flip``, given the flips.)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ddnn.data import random_crop_flip
from ddnn.training.config import TrainConfig

TRIANGLE_START = 0.2  # airbench: the schedule starts at 20% of the peak
NORM_BIAS_LR_SCALE = 64.0  # airbench's bias_scaler: BN shifts learn 64x faster under sgd-decoupled
LOOKAHEAD_EVERY = 5  # airbench: steps between lookahead pulls
LOOKAHEAD_PEAK = 0.95**5  # airbench: the pull's strength at the last step


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
    with lr or batch size (it is divided by the group's lr, so lr x decay stays as configured); BN
    shifts learn ``NORM_BIAS_LR_SCALE`` times faster. Under both, the early-exit heads' lr is
    multiplied by ``cfg.exit_lr_scale`` (their decay per step unchanged).
    Groups, in order: the rest, BN shifts (sgd-decoupled), exit heads (when scaled).
    """
    wanted = {id(p) for p in params}
    exit_ids = set()
    if cfg.exit_lr_scale != 1.0:
        exit_ids = {id(p) for name, p in model.named_parameters() if name.startswith("exits.") and id(p) in wanted}
    if cfg.optimizer == "sgd":
        lr, norm_ids = cfg.lr, set()

        def decay(group_lr: float) -> float:
            return cfg.weight_decay * (lr / group_lr)
    else:
        scale = kilostep_scale(cfg.momentum)
        lr, wd = cfg.lr / scale, cfg.weight_decay * cfg.batch_size / scale
        norm_ids = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and id(m.bias) in wanted}

        def decay(group_lr: float) -> float:
            return wd / group_lr
    plan = [([p for p in params if id(p) not in norm_ids | exit_ids], lr),
            ([p for p in params if id(p) in norm_ids], lr * NORM_BIAS_LR_SCALE),
            ([p for p in params if id(p) in exit_ids], lr * cfg.exit_lr_scale)]
    groups = [{"params": members, "lr": group_lr, "peak_lr": group_lr, "weight_decay": decay(group_lr)}
              for i, (members, group_lr) in enumerate(plan) if members or i == 0]
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def translate_flip(x: torch.Tensor, generator: torch.Generator, padding: int, flips: torch.Tensor | None,
                   reflect: bool) -> torch.Tensor:
    """Random translation by up to ``padding`` pixels plus the given flips (``random_crop_flip``).

    ``reflect``: the border is filled with reflected pixels (airbench) instead of zeros. The batch is
    reflect-padded first, cropped by ``random_crop_flip`` with the same offsets it would draw for
    the original, then centre-cropped: only the border's values change, never the random draws.
    """
    if not reflect or padding == 0:
        return random_crop_flip(x, generator, padding, flips)
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (padding,) * 4, mode="reflect")
    return random_crop_flip(padded, generator, padding, flips)[..., padding : padding + h, padding : padding + w]


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


class Lookahead:
    """airbench's lookahead: a slow copy of every floating-point tensor of the state (weights and BN
    statistics). Every ``LOOKAHEAD_EVERY`` steps the slow copy moves toward the model by 1 - alpha and the
    model is set to it, alpha = ``LOOKAHEAD_PEAK`` (step/total)^3; the last step ends on the slow copy.

    Unlike airbench, alpha is 0 during the first epoch (there it is at most 0.77/epochs^3): a time budget
    fixes the total after epoch 1, and epoch 1 must not depend on it so ``--epochs N`` replays the run.
    """

    def __init__(self, model: nn.Module):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @staticmethod
    def alpha(step: int, total: int, steps_per_epoch: int) -> float:
        """Pull strength after ``step`` steps (1-based) of ``total``; 0 where no pull happens."""
        if step % LOOKAHEAD_EVERY or step <= steps_per_epoch:
            return 0.0
        return LOOKAHEAD_PEAK * (step / total) ** 3

    @torch.no_grad()
    def step(self, model: nn.Module, step: int, total: int, steps_per_epoch: int) -> None:
        """Called after optimizer step number ``step`` (1-based)."""
        own = model.state_dict()
        if step % LOOKAHEAD_EVERY == 0:
            a = self.alpha(step, total, steps_per_epoch)
            for k, slow in self.state.items():
                slow.lerp_(own[k], 1 - a)
                own[k].copy_(slow)
        if step >= total:
            for k, slow in self.state.items():
                own[k].copy_(slow)
