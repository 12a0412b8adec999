"""Where the deep segment runs: a Triton server (production) or in-process PyTorch."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from ddnn.checkpoint import Checkpoint
from ddnn.inference import CloudRunner
from ddnn.models import cloud_part


@dataclass(frozen=True)
class SplitModel:
    """A served split point: its name, the per-sample input shape and dtype."""

    split: str
    position: int
    input_shape: tuple[int, ...]
    input_dtype: str  # "float32" (features) or "uint8" (raw pixels)
    triton_model: str = ""


def split_models(ck: Checkpoint, names: list[str] | None = None) -> dict[str, SplitModel]:
    """Split points of a checkpoint: each early exit, plus ``input`` (the whole network)."""
    names = names or [*ck.exit_names[:-1], "input"]
    out = {}
    for name in names:
        if name == "input":
            out[name] = SplitModel("input", 0, (32, 32, 3), "uint8")
            continue
        if name not in ck.exit_names[:-1]:
            raise ValueError(f"split point {name!r} is not an edge exit of {ck.path} "
                             f"(exits: {list(ck.exit_names[:-1])})")
        pos = ck.model.position(name)
        out[name] = SplitModel(name, pos, tuple(ck.model.shapes[pos]), "float32")
    return out


class TorchBackend:
    """In-process PyTorch, one compute thread (for machines without Triton, and as a reference)."""

    name = "torch"

    def __init__(self, ck: Checkpoint, splits: dict[str, SplitModel], threads: int = 0):
        if threads:
            torch.set_num_threads(threads)
        self.runners = {s.split: CloudRunner(cloud_part(ck.model, s.position)) for s in splits.values()}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="torch-cloud")

    async def start(self) -> None:
        return None

    async def logits(self, split: str, x: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.runners[split].logits, x)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
