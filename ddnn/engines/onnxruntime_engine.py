"""ONNX Runtime (CPU execution provider) on the graphs of an export bundle: the serving default."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from ddnn.engines.base import Backend, CloudPartEngine, EdgePartEngine, EngineSpec
from ddnn.export.bundle import FEATURES_OUTPUT, Bundle, exit_output


def session(path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads (0 = one per core), no inter-op parallelism.

    Spinning is off: on a small machine the edge shares its cores with other processes, and a
    spinning pool steals them (the same reason ddnn sets OMP_WAIT_POLICY=PASSIVE for torch).
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class OrtEdgePart(EdgePartEngine):
    """The bundle's edge graph for a split, at the spec's precision."""

    def __init__(self, bundle: Bundle, split: str, spec: EngineSpec | None = None, offload: str | None = None):
        self.spec = spec or EngineSpec(Backend.ONNXRUNTIME)
        graph = bundle.edge(split)
        self.exits = graph.exits
        self.offload = offload or graph.offload
        self.split = "input" if self.offload == "input" else graph.split
        self.feature_shape = tuple(bundle.image_shape) if self.offload == "input" else graph.feature_shape
        self.session = session(bundle.edge_file(split, self.spec.precision), self.spec.threads)
        self.outputs = [exit_output(e) for e in self.exits]
        if self.offload == "features":
            self.outputs.append(FEATURES_OUTPUT)

    def run(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        out = self.session.run(self.outputs, {"images": np.ascontiguousarray(images)})
        logits = dict(zip(self.exits, out[: len(self.exits)], strict=True))
        return logits, (images if self.offload == "input" else out[-1])


class OrtCloudPart(CloudPartEngine):
    """The bundle's cloud graph for a split (always fp32: int8 is for the edge)."""

    def __init__(self, bundle: Bundle, split: str, spec: EngineSpec | None = None):
        self.spec = spec or EngineSpec(Backend.ONNXRUNTIME)
        graph = bundle.cloud(split)
        self.split, self.input_dtype, self.input_shape = split, graph.input_dtype, graph.input_shape
        self.input_name = graph.input_name
        self.session = session(bundle.cloud_file(split), self.spec.threads)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x)})[0]
