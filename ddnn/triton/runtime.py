"""What runs inside Triton's Python backend: input checks and batched ONNX Runtime inference.

Kept free of ``triton_python_backend_utils`` so it is testable in-process; ``backend_model.py``
(copied into every model version as ``model.py``) is the thin Triton adapter around it. No torch:
the model is the cloud part's ONNX graph.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# config.pbtxt data types the exported models use, as numpy dtypes.
CONFIG_DTYPES: dict[str, np.dtype] = {"TYPE_FP32": np.dtype(np.float32), "TYPE_FP16": np.dtype(np.float16),
                                      "TYPE_UINT8": np.dtype(np.uint8)}


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
    """Runs a cloud graph on a list of request batches as one batch and splits the logits back.

    Args:
        path: the ONNX file.
        threads: intra-op threads (0 = ONNX Runtime's default).
        device_id: a GPU to run on (CUDA execution provider, when ONNX Runtime has it), or None for the CPU.
    """

    def __init__(self, path: str | Path, threads: int = 0, device_id: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        providers: list = ["CPUExecutionProvider"]
        if device_id is not None and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": device_id}))
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        self.input_name = self.session.get_inputs()[0].name
        self.providers = self.session.get_providers()

    def __call__(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        x = batches[0] if len(batches) == 1 else np.concatenate(batches)
        (logits,) = self.session.run(None, {self.input_name: np.ascontiguousarray(x)})
        if len(batches) == 1:
            return [logits]
        return np.split(logits, np.cumsum([len(b) for b in batches[:-1]]))

    def warm_up(self, item_shape: tuple[int, ...], dtype: np.dtype) -> None:
        """One tiny batch so the first real request does not pay for lazy initialization."""
        self([np.zeros((1, *item_shape), dtype=dtype)])
