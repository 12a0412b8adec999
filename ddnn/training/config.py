"""TrainConfig: every knob of a training run, recorded in the checkpoint.

It is the one source of truth for training settings: ``ddnn train``'s flags are generated from
these fields (:mod:`ddnn.training.cli_args`), each field's ``metadata`` carrying its help text,
and the experiments build a ``TrainConfig`` directly. ``RECIPES`` are named sets of defaults
(``classic``: SGD + cosine as the shipped model was trained; ``fast``: the airbench-style recipe
for a CPU); a field given explicitly always wins over the recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace


def _f(default, help: str, **meta):
    """A dataclass field (immutable default) with its CLI help and optional flag metadata."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one ``ddnn train`` run.

    ``loss_weights`` maps exit names (``block7``, ``final``) to lambda_k; exits not named get
    ``default_exit_weight`` (early) or 1.0 (final). ``mode='separate'`` freezes the backbone
    loaded from ``init`` and trains only the exit heads (Long et al. §II-B1).
    """

    out: str = _f("models/model.pt", "checkpoint to write", short="-o")
    data: str | None = _f(None, "training data: ImageFolder root, CIFAR pickle folder or pack "
                          "(default: $DDNN_TRAIN_DATA, else ../shared/datasets/cifar10-jpeg)")
    arch: str = _f("resnet", "network family", choices=("resnet", "plain", "compact"))
    depth: int = _f(32, "ResNet depth (6n+2)")
    exits: tuple[int, ...] = _f((7, 12), "blocks after which to attach early exits, e.g. 7,12 ('' for none)",
                                parse="ints")
    exit_pool: int = _f(4, "average-pool kernel of each exit")
    width: int = _f(0, "first-stage channels (0 = arch default)")
    num_classes: int | None = _f(None, "output classes (default: the dataset's)")
    quant_bits: int | None = _f(None, "quantize edge blocks to this many bits", choices=(1, 2, 4, 8))
    quant_blocks: int = _f(0, "how many leading blocks are quantized")
    mode: str = _f("joint", "joint: weighted sum of every exit's loss; separate: frozen backbone, exits only",
                   choices=("joint", "separate"))
    init: str | None = _f(None, "checkpoint to start from (required for --mode separate)")
    loss_weights: dict[str, float] = field(default_factory=dict, metadata={
        "help": "lambda_k per exit, e.g. block7=0.3,block12=0.3,final=1.0", "parse": "weights"})
    default_exit_weight: float = _f(0.5, "lambda for early exits not named")
    epochs: int = _f(30, "training epochs (at most, with --time-budget)")
    batch_size: int = _f(128, "images per step")
    optimizer: str = _f("sgd", "sgd: lr and weight decay as usual; sgd-decoupled: airbench's parametrisation "
                        "(loss summed over the batch, lr per 1024 samples, weight decay independent of lr "
                        "and batch size)", choices=("sgd", "sgd-decoupled"))
    lr: float = _f(0.1, "peak learning rate")
    momentum: float = _f(0.9, "SGD momentum")
    nesterov: bool = _f(True, "Nesterov momentum")
    weight_decay: float = _f(5e-4, "weight decay")
    schedule: str = _f("cosine", "cosine: warm-up then cosine to 0; triangle: warm-up then linear to "
                       "--final-lr-fraction of the peak", choices=("cosine", "triangle"))
    warmup_epochs: float = _f(1.0, "linear learning-rate warm-up")
    final_lr_fraction: float = _f(0.0, "with --schedule triangle: the last step's lr / peak")
    label_smoothing: float = _f(0.0, "label smoothing of every exit's cross-entropy")
    crop_padding: int = _f(4, "random-crop padding in pixels (0 = no translation)")
    alternating_flip: bool = _f(False, "flip each image in every other epoch (airbench) instead of at random")
    whiten_init: bool = _f(True, "compact arch: set the whitening stem from training-patch statistics")
    whiten_bias_epochs: int | None = _f(None, "compact arch: train the whitening stem's bias for this many epochs, "
                                        "then freeze it (airbench: 3; default: always trains)")
    airbench_init: bool = _f(False, "compact arch: airbench's initialisation (PyTorch's default conv and final-layer "
                             "init, each conv's first filters the identity (dirac), zero conv biases) instead of "
                             "Kaiming-normal convs and a N(0, 0.01) final layer")
    bn_momentum: float = _f(0.1, "BatchNorm running-statistics momentum, PyTorch's convention (the new batch's "
                            "weight; airbench's 0.6 is 0.4 here)")
    exit_lr_scale: float = _f(1.0, "learning-rate multiplier of the early-exit heads (1/81 trains them as if their "
                              "logits were scaled by 1/9, airbench's classifier temperature)")
    crop_reflect: bool = _f(False, "translate with reflected border pixels (airbench) instead of zero padding")
    lookahead: bool = _f(False, "airbench's lookahead: every 5 steps pull the weights toward a slow copy with "
                         "strength 0.95^5 (step/total)^3 (from epoch 2), and end on the slow copy")
    ema_decay: float = _f(0.0, "keep an exponential moving average of the weights with this per-step decay "
                          "and save it (0 = off)")
    val_fraction: float = _f(0.1, "held out for validation/calibration")
    split_seed: int = _f(0, "seed of the train/validation split")
    seed: int = _f(0, "seed of initialization, order and augmentation")
    limit: int | None = _f(None, "use only this many training images (smoke tests)")
    device: str = _f("auto", "auto, cpu, cuda, cuda:1 ...")
    amp: bool = _f(True, "bf16 autocast on CUDA")
    cpu_bf16: bool = _f(False, "bf16 autocast on the CPU too (fast where it has AMX or AVX512-BF16)")
    channels_last: bool = _f(True, "channels-last memory format on CUDA")
    eval_every: int = _f(1, "validate every N epochs")
    time_budget: float | None = _f(None, "choose the epoch count (at most --epochs) after epoch 1 to finish in "
                                   "about this many seconds; the checkpoint records the count, so --epochs N "
                                   "replays the run", metavar="SECONDS")
    resume: bool = _f(False, "continue from OUT.state if present")

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
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.final_lr_fraction <= 1:
            raise ValueError(f"--final-lr-fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.lookahead and self.ema_decay:
            raise ValueError("--lookahead and --ema-decay are two kinds of weight averaging: choose one")
        if not 0 < self.bn_momentum <= 1:
            raise ValueError(f"--bn-momentum must be in (0, 1], got {self.bn_momentum}")
        if self.exit_lr_scale <= 0:
            raise ValueError(f"--exit-lr-scale must be > 0, got {self.exit_lr_scale}")
        if self.whiten_bias_epochs is not None and self.whiten_bias_epochs < 0:
            raise ValueError(f"--whiten-bias-epochs must be >= 0, got {self.whiten_bias_epochs}")
        if self.crop_padding < 0:
            raise ValueError(f"--crop-padding must be >= 0, got {self.crop_padding}")
        object.__setattr__(self, "exits", tuple(self.exits))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exits"] = list(self.exits)
        return d

    def replace(self, **changes) -> TrainConfig:
        return replace(self, **changes)

    @classmethod
    def from_recipe(cls, recipe: str = "classic", **overrides) -> TrainConfig:
        """The recipe's defaults with ``overrides`` on top (explicit settings win)."""
        if recipe not in RECIPES:
            raise ValueError(f"--recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(**{**RECIPES[recipe], **overrides})


# Named sets of defaults. `fast` follows airbench94 (Jordan 2024) adapted to the multi-exit net and a
# CPU: the compact architecture, batches of 512 (1024 diverged in the first epoch with the exit heads),
# the decoupled SGD parametrisation (lr 11.5 and weight decay 5e-3 per 1024 samples, Nesterov 0.85),
# a triangular schedule ending at 7% of the peak, label smoothing 0.2, 2-pixel translation,
# alternating flips and a whitened stem. Weight averaging (--ema-decay) is available but off: its
# effect has not been measured yet.
RECIPES: dict[str, dict] = {
    "classic": {},
    "fast": {
        "arch": "compact", "exits": (1, 2), "exit_pool": 4, "epochs": 10, "batch_size": 512,
        "optimizer": "sgd-decoupled", "lr": 11.5, "momentum": 0.85, "nesterov": True, "weight_decay": 5e-3,
        "schedule": "triangle", "warmup_epochs": 1.0, "final_lr_fraction": 0.07, "label_smoothing": 0.2,
        "crop_padding": 2, "alternating_flip": True, "whiten_init": True, "ema_decay": 0.0,
        "loss_weights": {"block1": 0.3, "block2": 0.5, "final": 1.0}, "cpu_bf16": True,
    },
}
