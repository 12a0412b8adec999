"""The training runs behind ``ddnn reproduce sem-vs-mem`` (Lee et al., ``003_…``), full and quick.

Eight single-exit models SEM-k (an early exit after block k of the plain CNN, plus the cloud
exit) and one multi-exit model MEM (early exits after blocks 1..8). Lee et al. weight every exit's
loss equally; we use equal weights that sum to 1 (1/2 each for a SEM, 1/9 each for the MEM), so
SEM and MEM see the same overall gradient scale at the same learning rate.
"""

from __future__ import annotations

from dataclasses import dataclass

POSITIONS = tuple(range(1, 9))


@dataclass(frozen=True)
class SemMemSetup:
    """Plain-CNN width and training knobs of one mode."""

    width: int
    epochs: int
    lr: float
    limit: int | None

    def train_flags(self) -> list[str]:
        # Lee et al. Table 1: SGD, lr 0.1, momentum 0.9, weight decay 1e-4 (batch 32, 2000 epochs).
        flags = ["--arch", "plain", "--width", str(self.width), "--epochs", str(self.epochs), "--lr", str(self.lr),
                 "--warmup-epochs", "0.5", "--batch-size", "128", "--weight-decay", "1e-4", "--seed", "0"]
        if self.limit:
            flags += ["--limit", str(self.limit)]
        return flags


FULL = SemMemSetup(width=8, epochs=4, lr=0.1, limit=None)
QUICK = SemMemSetup(width=4, epochs=1, lr=0.1, limit=512)


def sem_argv(k: int) -> list[str]:
    return ["--exits", str(k), "--loss-weights", f"block{k}=0.5,final=0.5"]


def mem_argv() -> list[str]:
    w = f"{1 / 9:.6g}"
    weights = ",".join([*(f"block{k}={w}" for k in POSITIONS), f"final={w}"])
    return ["--exits", ",".join(map(str, POSITIONS)), "--loss-weights", weights]
