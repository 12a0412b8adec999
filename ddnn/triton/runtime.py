"""What runs inside Triton's Python backend: the cloud-part weights file, input checks, batched inference.

Kept free of ``triton_python_backend_utils`` so it is testable in-process; ``backend_model.py``
(copied into every model version as ``model.py``) is the thin Triton adapter around it.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from ddnn.models import CloudPart, ModelSpec, build_model, cloud_part

WEIGHTS_FORMAT = "ddnn.triton-cloud/v1"

# config.pbtxt data types the exported models use, as numpy dtypes.
CONFIG_DTYPES = {"TYPE_FP32": np.dtype(np.float32), "TYPE_FP16": np.dtype(np.float16), "TYPE_UINT8": np.dtype(np.uint8)}


def cloud_weights_bytes(cloud: CloudPart, spec: ModelSpec, split: str, classes, checkpoint_sha256: str) -> bytes:
    """Serialize a cloud part (its own state dict only, plus the spec to rebuild it) deterministically.

    Saved through a buffer so the archive's inner name, and so the bytes, never depend on the
    file name; torch's zip writer adds no timestamps, so the same weights give the same bytes.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in cloud.state_dict().items()}
    payload = {"format": WEIGHTS_FORMAT, "spec": spec.to_dict(), "position": int(cloud.position), "split": split,
               "classes": list(classes), "checkpoint_sha256": checkpoint_sha256, "state_dict": state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return buf.getvalue()


def load_cloud_weights(path: str | Path, device: str | torch.device = "cpu") -> CloudPart:
    """Rebuild the cloud part saved by :func:`cloud_weights_bytes` (eval mode, on ``device``)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: not a readable torch file ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: not a ddnn cloud-part weights file (expected format {WEIGHTS_FORMAT!r})")
    model = build_model(ModelSpec.from_dict(payload["spec"]))
    cloud = cloud_part(model, int(payload["position"]))
    cloud.load_state_dict(payload["state_dict"], strict=True)
    return cloud.to(device).eval()


def batch_problem(array: np.ndarray, dtype: np.dtype, item_shape: tuple[int, ...], max_batch: int,
                  require_finite: bool = True) -> str | None:
    """Why ``array`` is not a valid batch of ``item_shape`` items of ``dtype``, or None if it is.

    Triton already enforces dtype, rank and the batch limit from config.pbtxt; these checks make
    the model safe under any server and add what Triton cannot know (empty batch, NaN/Inf).
    """
    if array.dtype != dtype:
        return f"expected dtype {np.dtype(dtype).name}, got {array.dtype.name}"
    if array.ndim != len(item_shape) + 1 or tuple(array.shape[1:]) != tuple(item_shape):
        return f"expected shape [N, {', '.join(map(str, item_shape))}], got {list(array.shape)}"
    if array.shape[0] == 0:
        return "empty batch (N = 0)"
    if max_batch and array.shape[0] > max_batch:
        return f"batch of {array.shape[0]} exceeds max_batch_size {max_batch}"
    if require_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        return "features contain NaN or Inf"
    return None


def default_threads(instances: int) -> int:
    """CPU threads per model instance: the usable cores shared among the instances."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, instances))


class CloudRunner:
    """Runs a cloud part on a list of request batches as one batch and splits the logits back."""

    def __init__(self, cloud: CloudPart, device: str | torch.device = "cpu"):
        self.cloud = cloud
        self.device = torch.device(device)

    def __call__(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        x = batches[0] if len(batches) == 1 else np.concatenate(batches)
        with warnings.catch_warnings():
            # Triton hands over read-only views of its shared memory; the model never writes to them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            t = torch.from_numpy(x)
        with torch.inference_mode():
            logits = self.cloud(t.to(self.device, non_blocking=True)).float().cpu().numpy()
        if len(batches) == 1:
            return [logits]
        return np.split(logits, np.cumsum([len(b) for b in batches[:-1]]))

    def warm_up(self, item_shape: tuple[int, ...], dtype: np.dtype) -> None:
        """One tiny batch so the first real request does not pay for lazy initialization."""
        self([np.zeros((1, *item_shape), dtype=dtype)])
