"""The reference engine: the checkpoint's own torch modules, eager, fp32 (research and training)."""

from __future__ import annotations

import numpy as np
import torch

from ddnn.data.transforms import to_tensor
from ddnn.engines.base import CloudPartEngine, EdgePartEngine, EngineSpec
from ddnn.models.split import CloudPart, EdgePart


class TorchEdgePart(EdgePartEngine):
    """An :class:`~ddnn.models.split.EdgePart` on numpy batches."""

    def __init__(self, edge: EdgePart, split: str = "", spec: EngineSpec | None = None,
                 device: str | torch.device = "cpu"):
        self.edge = edge.eval()
        self.device = torch.device(device)
        self.exits = tuple(edge.exit_names)
        self.offload = edge.offload
        self.split = "input" if edge.offload == "input" else (split or self.exits[-1])
        self.feature_shape = tuple(edge.feature_shape)
        self.spec = spec or EngineSpec()
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        logits, h = self.edge(to_tensor(images, self.device))
        out = {k: v.float().cpu().numpy() for k, v in logits.items()}
        return out, (images if self.offload == "input" else h.float().cpu().numpy())


class TorchCloudPart(CloudPartEngine):
    """A :class:`~ddnn.models.split.CloudPart` on numpy batches."""

    def __init__(self, cloud: CloudPart, split: str = "", spec: EngineSpec | None = None,
                 device: str | torch.device = "cpu"):
        self.cloud = cloud.eval()
        self.device = torch.device(device)
        self.split = split or ("input" if cloud.position == 0 else f"position{cloud.position}")
        self.input_dtype = cloud.input_dtype
        self.input_shape = tuple(cloud.input_shape)
        self.spec = spec or EngineSpec()
        if self.spec.threads:
            torch.set_num_threads(self.spec.threads)

    @torch.inference_mode()
    def run(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.array(x, copy=not x.flags.writeable)).to(self.device)
        return self.cloud(t).float().cpu().numpy()
