"""Triton Python-backend model serving one ddnn cloud part (features or raw pixels -> LOGITS).

``ddnn export-triton`` copies this file verbatim into every model version as ``model.py``, next to
the cloud part's ONNX graph (``model.onnx``), which it runs with ONNX Runtime; ddnn itself never
imports it. It needs ``onnxruntime``, ``numpy`` and ``ddnn`` (no torch) importable by the backend's Python:
installed into that Python (the official Triton container), or listed in the environment
variable ``DDNN_TRITON_SITE_DIRS`` (``os.pathsep``-separated), which ``ddnn.triton.server`` sets
when it launches the ``tritonserver`` of the nvidia-pytriton wheel. The stub's embedded
interpreter ignores ``PYTHONPATH``, hence the variable.

Config parameters (config.pbtxt ``parameters``): ``model`` (ONNX file in the version directory,
default ``model.onnx``), ``threads`` (ONNX Runtime intra-op threads, 0 = usable cores / instances),
``require_finite`` (``true``: reject NaN/Inf features).
"""

import os
import site
import sys


def _extend_sys_path() -> None:
    """Put ``DDNN_TRITON_SITE_DIRS`` (and their .pth files) first on sys.path.

    Must run before numpy is imported: the interpreter's own site-packages may hold another numpy
    (for example numpy 2 under pyenv), and with that one the stub returns empty output tensors.
    """
    dirs = [d for d in os.environ.get("DDNN_TRITON_SITE_DIRS", "").split(os.pathsep) if d]
    before = list(sys.path)
    for d in dirs:
        site.addsitedir(d)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + before


_extend_sys_path()

import json  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

from ddnn.triton.runtime import CONFIG_DTYPES, CloudRunner, batch_problem, default_threads  # noqa: E402


def _error(message: str, code_name: str = "INVALID_ARG"):
    code = getattr(pb_utils.TritonError, code_name, None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(error=error)


class TritonPythonModel:
    """One cloud part; every instance is its own stub process with its own ONNX Runtime session."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        (inp,), (out,) = config["input"], config["output"]
        self.name = args["model_name"]
        self.input_name, self.output_name = inp["name"], out["name"]
        self.dtype = CONFIG_DTYPES[inp["data_type"]]
        self.item_shape = tuple(int(d) for d in inp["dims"])
        self.max_batch = int(config.get("max_batch_size", 0))
        self.require_finite = params.get("require_finite", "true").lower() == "true"
        instances = sum(int(g.get("count", 1)) for g in config.get("instance_group", [])) or 1
        threads = int(params.get("threads") or 0) or default_threads(instances)
        gpu = int(args["model_instance_device_id"]) if args["model_instance_kind"] == "GPU" else None
        graph = Path(args["model_repository"]) / args["model_version"] / (params.get("model") or "model.onnx")
        self.runner = CloudRunner(graph, threads, gpu)
        self.runner.warm_up(self.item_shape, self.dtype)
        pb_utils.Logger.log_info(
            f"{self.name}: {self.input_name} {self.dtype.name}{list(self.item_shape)} -> {self.output_name} on "
            f"{self.runner.providers[0]}, {threads} threads, onnxruntime {ort.__version__}, numpy {np.__version__} "
            f"({np.__file__})")
        if int(np.__version__.split(".")[0]) >= 2:
            # Python backends built with pybind11 < 2.12 (Triton <= 2.51, python_backend#384) return
            # empty output tensors, without an error, when numpy 2 is loaded.
            pb_utils.Logger.log_warn(f"{self.name}: numpy {np.__version__} is loaded; with Triton <= 2.51 the "
                                     "responses come back empty. Install numpy<2 for the backend's Python.")

    def execute(self, requests):
        responses = [None] * len(requests)
        batches, slots = [], []
        for i, request in enumerate(requests):
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                responses[i] = _error(f"missing input {self.input_name!r}")
                continue
            array = tensor.as_numpy()
            problem = batch_problem(array, self.dtype, self.item_shape, self.max_batch, self.require_finite)
            if problem:
                responses[i] = _error(f"input {self.input_name!r}: {problem}")
                continue
            batches.append(array)
            slots.append(i)
        if batches:
            try:
                logits = self.runner(batches)
            except Exception:
                pb_utils.Logger.log_error(f"{self.name}: inference failed\n{traceback.format_exc()}")
                for i in slots:
                    responses[i] = _error("inference failed (see the server log)", "INTERNAL")
            else:
                for i, out in zip(slots, logits, strict=True):
                    responses[i] = pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, out)])
        return responses
