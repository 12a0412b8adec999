"""Per-exit logits of an exported bundle over a dataset, as an engine computes them.

Exit E's logits come from the edge graph ending at E (what the edge runs in the mode whose split
is E); ``final`` comes from the cloud graph of the deepest split, fed that graph's features.
"""

from __future__ import annotations

import numpy as np

from ddnn.engines import EngineSpec, cloud_part, edge_part
from ddnn.export.bundle import INPUT_SPLIT, Arrangement, Bundle


def engine_exit_logits(spec: EngineSpec, bundle: Bundle, images: np.ndarray, batch_size: int = 500,
                       progress: bool | None = None) -> dict[str, np.ndarray]:
    """float32 logits per exit (edge exits, then ``final``) of ``images`` under ``spec``."""
    from tqdm import tqdm

    splits = list(bundle.edges)
    deepest = splits[-1]
    aux = bundle.arrangement == Arrangement.AUX_PRINCIPAL
    edges = {s: edge_part(spec, bundle, [s]) for s in splits}
    cloud = cloud_part(spec, bundle, INPUT_SPLIT if aux else deepest)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in [*splits, "final"]}
    disable = (not progress) if progress is not None else None
    for i in tqdm(range(0, len(images), batch_size), desc=f"logits ({spec.name})", unit="batch", disable=disable,
                  leave=False):
        x = images[i : i + batch_size]
        for s, engine in edges.items():
            logits, features = engine.run(x)
            chunks[s].append(logits[s])
            if s == deepest:
                chunks["final"].append(cloud.run(x if aux else features))
    k = bundle.num_classes
    return {name: (np.concatenate(c) if c else np.zeros((0, k), np.float32)) for name, c in chunks.items()}
