"""TrainConfig: every knob of a training run, recorded in the checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainConfig:
    """Settings of one ``ddnn train`` run.

    ``loss_weights`` maps exit names (``block7``, ``final``) to lambda_k; exits not named get
    ``default_exit_weight`` (early) or 1.0 (final). ``mode='separate'`` freezes the backbone
    loaded from ``init`` and trains only the exit heads (Long et al. §II-B1).
    """

    out: str = "models/model.pt"
    data: str | None = None
    arch: str = "resnet"
    depth: int = 32
    exits: tuple[int, ...] = (7, 12)
    exit_pool: int = 4
    width: int = 0
    num_classes: int | None = None
    quant_bits: int | None = None
    quant_blocks: int = 0
    mode: str = "joint"
    init: str | None = None
    loss_weights: dict[str, float] = field(default_factory=dict)
    default_exit_weight: float = 0.5
    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    val_fraction: float = 0.1
    split_seed: int = 0
    seed: int = 0
    limit: int | None = None
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    eval_every: int = 1
    time_budget: float | None = None
    resume: bool = False

    def __post_init__(self):
        if self.mode not in ("joint", "separate"):
            raise ValueError(f"--mode must be 'joint' or 'separate', got {self.mode!r}")
        if self.mode == "separate" and not self.init:
            raise ValueError("--mode separate needs --init CHECKPOINT (the backbone to freeze)")
        for name, v in {"epochs": self.epochs, "batch_size": self.batch_size}.items():
            if v < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
        if self.time_budget is not None and self.warmup_epochs < 1:
            raise ValueError("--time-budget needs --warmup-epochs >= 1: the epoch count is fixed after "
                             "the first epoch, which must not depend on it")
        if self.lr <= 0:
            raise ValueError(f"--lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exits"] = list(self.exits)
        return d
