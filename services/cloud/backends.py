"""Where the deep segment runs: a Triton server (production), in-process ONNX Runtime, or torch (research)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ddnn.engines import Backend, CloudPartEngine, EngineSpec, cloud_part
from ddnn.export.bundle import INPUT_SPLIT, Bundle


@dataclass(frozen=True)
class SplitModel:
    """A served split point: its name, the per-sample input shape and dtype."""

    split: str
    position: int
    input_shape: tuple[int, ...]
    input_dtype: str  # "float32" (features) or "uint8" (raw pixels)
    triton_model: str = ""


def split_models(bundle: Bundle, names: list[str] | None = None) -> dict[str, SplitModel]:
    """Split points of an export bundle: each early exit, plus ``input`` (the whole network)."""
    names = names or list(bundle.clouds)
    out = {}
    for name in names:
        if name not in bundle.clouds:
            edge = [s for s in bundle.clouds if s != INPUT_SPLIT]
            raise ValueError(f"split point {name!r} is not an edge exit of {bundle.checkpoint_file or bundle.root} "
                             f"(exits: {edge})")
        g = bundle.cloud(name)
        out[name] = SplitModel(name, g.position, tuple(g.input_shape), g.input_dtype)
    return out


class EngineBackend:
    """The cloud parts in-process on an engine (ONNX Runtime; torch for research), one compute thread."""

    def __init__(self, spec: EngineSpec, source, splits: dict[str, SplitModel]):
        self.name = spec.backend.value
        self.parts: dict[str, CloudPartEngine] = {s: cloud_part(spec, source, s) for s in splits}
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.name}-cloud")

    async def start(self) -> None:
        return None

    async def logits(self, split: str, x: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self.parts[split].run, x)

    async def ready(self) -> bool:
        return True

    async def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def TorchBackend(ck, splits: dict[str, SplitModel], threads: int = 0) -> EngineBackend:
    """In-process PyTorch on a checkpoint (torch is imported only here)."""
    return EngineBackend(EngineSpec(Backend.TORCH, threads=threads), ck, splits)
