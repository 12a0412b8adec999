"""The training runs behind ``ddnn reproduce hybrid`` (Long et al., ``001_…``), full and quick.

Full mode scales the paper's ResNet-32 study to ResNet-20 so it fits a few CPU hours: ResNet-20
has 18 block convolutions instead of 30, and the splits keep the edge exit at the same place in
the network's stages as the paper's (see :data:`PAPER_EQUIVALENT`). Every model starts from the
shipped full-precision ResNet-20 (``models/resnet20-aux-cifar10.pt``, 60 GPU epochs on the same
45k training split) and is fine-tuned in its own configuration for the same number of epochs, on
a fixed 24,000-image draw of the training data (21,600 train / 2,400 validation), so that the 17
fine-tunes take about an hour on 2 CPU cores instead of two.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddnn.models.hybrid import HybridConfig, parse_hybrid
from ddnn.paths import SHIPPED_AUX_CHECKPOINT

BITS = (1, 2, 4)
# Our ResNet-20 split -> the ResNet-32 split of the paper it stands for. Both exits sit at the
# same stage position: end of stage 1 (10E / 6E), middle of stage 2 (16E: block 8 of 5..10;
# 10E: block 5 of 4..6), end of stage 2 (20E / 12E), early in stage 3 (24E: block 12; 14E: block 7),
# so each pair has the same exit head input (16x8x8, 32x4x4, 32x4x4, 64x2x2 values).
PAPER_EQUIVALENT = {"6E+12C": "10E+20C", "10E+8C": "16E+14C", "12E+6C": "20E+10C", "14E+4C": "24E+6C",
                    "2E+4C": "10E+20C", "4E+2C": "20E+10C"}
EARLY_WEIGHT = 0.6  # Long et al. §III-B1: lambda = 0.6 for the early exit, the rest for the final one


@dataclass(frozen=True)
class HybridSetup:
    """Model size, splits and training knobs of one mode."""

    depth: int
    width: int
    splits: tuple[str, ...]
    separate_split: str  # the paper's 16E+14C comparison (Table II)
    two_exit_split: str  # the paper's 20E+10C comparison (Table IV)
    epochs: int
    lr: float
    limit: int | None

    def train_flags(self) -> list[str]:
        flags = ["--depth", str(self.depth), "--epochs", str(self.epochs), "--lr", str(self.lr),
                 "--warmup-epochs", "0.2", "--batch-size", "128", "--weight-decay", "5e-4", "--seed", "0"]
        if self.width:
            flags += ["--width", str(self.width)]
        if self.limit:
            flags += ["--limit", str(self.limit)]
        return flags

    def config(self, label: str) -> HybridConfig:
        return parse_hybrid(label)


FULL = HybridSetup(depth=20, width=0, splits=("6E+12C", "10E+8C", "12E+6C", "14E+4C"), separate_split="10E+8C",
                   two_exit_split="12E+6C", epochs=1, lr=0.05, limit=24000)
QUICK = HybridSetup(depth=8, width=4, splits=("2E+4C", "4E+2C"), separate_split="2E+4C", two_exit_split="4E+2C",
                    epochs=1, lr=0.05, limit=512)

FULL_BASE = SHIPPED_AUX_CHECKPOINT


def exit_weights(exits: tuple[int, ...]) -> str:
    """``--loss-weights``: the edge exits share EARLY_WEIGHT equally, the final exit gets the rest."""
    parts = [f"block{e}={EARLY_WEIGHT / len(exits):.6g}" for e in exits]
    return ",".join([*parts, f"final={1 - EARLY_WEIGHT:.6g}"])


def run_name(bits: int | None, label: str, variant: str = "") -> str:
    """File-name-safe name of one run, e.g. ``b1-10E8C`` or ``b1-10E8C-noexit``."""
    prec = f"b{bits}" if bits else "fp"
    return f"{prec}-{label.replace('+', '')}" + (f"-{variant}" if variant else "")
