"""What every ``ddnn reproduce`` experiment shares: where it writes, how it trains, how it reports."""

from __future__ import annotations

import logging
import os
import platform
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ddnn.checkpoint import CheckpointError, load_checkpoint
from ddnn.data import ImageArrays, load_split
from ddnn.paths import default_test_source, default_train_root
from ddnn.training import train
from ddnn.training.cli_args import config_from_argv

log = logging.getLogger(__name__)

DATA_NOTE = ("CIFAR-10 images here are JPEG re-encodings (quality 75, 4:2:0 chroma subsampling) of the "
             "original PNG-equivalent CIFAR-10; our models score about 4 points below published numbers on "
             "them (ResNet-32, 60 epochs: 87.3% test). CIFAR-100 is not on this machine: its code path is "
             "tested on fixtures only, so no CIFAR-100 results are reported.")


@dataclass
class Context:
    """One ``ddnn reproduce`` run: options, output folders, and the log of commands it ran."""

    name: str
    out: Path
    work: Path
    quick: bool = False
    train_data: str | None = None
    test_data: str | None = None
    threads: int | None = None
    train_only: bool = False
    test_limit: int | None = None
    energy_table: str | None = None
    commands: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def __post_init__(self):
        self.out = Path(self.out)
        self.work = Path(self.work)
        self.out.mkdir(parents=True, exist_ok=True)
        self.work.mkdir(parents=True, exist_ok=True)

    @property
    def train_root(self) -> str:
        root = self.train_data or default_train_root()
        if root is None:
            raise FileNotFoundError("no training data: pass --data PATH or set DDNN_TRAIN_DATA")
        return str(root)

    def test_arrays(self) -> ImageArrays:
        """The evaluation images: ``--test-data`` (its test split), else the shipped CIFAR-10 test pack."""
        arrays = load_split(self.test_data or default_test_source(), "test")
        if self.test_limit and self.test_limit < len(arrays):
            # A class-balanced-in-expectation subset: a fixed random draw, not the first N (packs
            # and ImageFolder trees are sorted by class).
            idx = np.sort(np.random.default_rng(0).permutation(len(arrays))[: self.test_limit])
            arrays = ImageArrays(arrays.images[idx], arrays.labels[idx], arrays.classes, arrays.name,
                                 arrays.split, arrays.source)
        return arrays

    def train(self, name: str, argv: list[str]) -> Path:
        """Train checkpoint ``WORK/name.pt`` as ``ddnn train ARGV`` would, unless one made by the same
        command exists. The run is recorded as that command, so the report's commands replay it."""
        path = self.work / f"{name}.pt"
        full = ["train", *argv, "--data", self.train_root, "--no-progress", "-o", str(path)]
        command = "ddnn " + shlex.join(full)
        self.commands.append(command)
        if path.is_file():
            try:
                if load_checkpoint(path).meta.get("command") == command:
                    log.info("reusing %s (same command)", path)
                    return path
            except CheckpointError as exc:
                log.warning("retraining %s: %s", path, exc)
            log.info("retraining %s: it was made by a different command", path)
        config = config_from_argv(full[1:])
        log.info("running: %s", command)
        t0 = time.time()
        train(config, command=command, progress=False)
        log.info("trained %s in %.0fs", path, time.time() - t0)
        return path

    def environment(self) -> str:
        """One line describing the machine and thread count the numbers come from."""
        return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)")


def table(headers: list[str], rows: list[list]) -> str:
    """A Markdown table; floats get 4 significant digits unless already formatted."""
    def cell(v) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage string ('—' for missing)."""
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.{digits}f}%"


def write_report(ctx: Context, title: str, sections: list[str]) -> Path:
    """Write ``OUT/README.md``: the sections, then the exact commands and the environment."""
    commands = "\n".join(dict.fromkeys(ctx.commands))
    mode = "quick (smoke test: tiny models, few images; numbers are not meaningful)" if ctx.quick else "full"
    footer = [
        "## How this report was made",
        f"Mode: {mode}. Machine: {ctx.environment()}. Wall time of this run: "
        f"{time.time() - ctx.started:.0f} s (training reused from `{ctx.work}` when the same command had "
        "already produced a checkpoint).",
        f"Data: {DATA_NOTE}",
        "Commands run (training checkpoints go to the work folder, which is not committed):",
        "```\n" + (commands or "(no training)") + "\n```",
    ]
    path = ctx.out / "README.md"
    path.write_text(f"# {title}\n\n" + "\n\n".join(sections + footer) + "\n")
    log.info("wrote %s", path)
    return path


def savefig(fig, ctx: Context, name: str) -> str:
    """Save a matplotlib figure as ``OUT/name`` (PNG) and return the Markdown image link."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(ctx.out / name, dpi=110)
    plt.close(fig)
    return f"![{name}]({name})"
