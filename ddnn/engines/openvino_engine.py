"""OpenVINO (CPU plugin) on the graphs of an export bundle; optional (``pip install ddnn[openvino]``)."""

from __future__ import annotations

import numpy as np

from ddnn.engines.base import Backend, CloudPartEngine, EdgePartEngine, EngineSpec
from ddnn.export.bundle import FEATURES_OUTPUT, Bundle, exit_output


def compiled(path, spec: EngineSpec):
    """Compile an ONNX file for the CPU: fp32 unless the spec asks bf16 (OpenVINO would otherwise
    pick bf16 by itself on CPUs with AMX, changing the logits under a policy fitted for fp32)."""
    try:
        import openvino as ov
    except ImportError:
        raise RuntimeError("the openvino engine needs the optional extra: pip install 'ddnn[openvino]'") from None
    config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "bf16" if spec.precision == "bf16" else "f32",
                                    "PERFORMANCE_HINT": "LATENCY"}
    if spec.threads:
        config["INFERENCE_NUM_THREADS"] = spec.threads
    return ov.Core().compile_model(str(path), "CPU", config)


class OvEdgePart(EdgePartEngine):
    def __init__(self, bundle: Bundle, split: str, spec: EngineSpec | None = None, offload: str | None = None):
        self.spec = spec or EngineSpec(Backend.OPENVINO)
        graph = bundle.edge(split)
        self.exits = graph.exits
        self.offload = offload or graph.offload
        self.split = "input" if self.offload == "input" else graph.split
        self.feature_shape = tuple(bundle.image_shape) if self.offload == "input" else graph.feature_shape
        precision = "int8" if self.spec.precision == "int8" else "fp32"
        self.model = compiled(bundle.edge_file(split, precision), self.spec)
        self.names = [exit_output(e) for e in self.exits]

    def run(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        out = self.model(np.ascontiguousarray(images))
        logits = {e: np.asarray(out[name], np.float32) for e, name in zip(self.exits, self.names, strict=True)}
        return logits, (images if self.offload == "input" else np.asarray(out[FEATURES_OUTPUT], np.float32))


class OvCloudPart(CloudPartEngine):
    def __init__(self, bundle: Bundle, split: str, spec: EngineSpec | None = None):
        self.spec = spec or EngineSpec(Backend.OPENVINO)
        graph = bundle.cloud(split)
        self.split, self.input_dtype, self.input_shape = split, graph.input_dtype, graph.input_shape
        self.model = compiled(bundle.cloud_file(split), EngineSpec(Backend.OPENVINO, "fp32", self.spec.threads))

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(np.ascontiguousarray(x))[0], np.float32)
