"""Engines: what runs the edge part and the cloud part (torch, ONNX Runtime, OpenVINO).

:func:`edge_part` and :func:`cloud_part` build one from a checkpoint (torch) or an export bundle
(ONNX Runtime, OpenVINO). Backends are imported only when asked for, so a serving process that
uses ONNX Runtime never imports torch.
"""

from __future__ import annotations

from ddnn.engines.base import (
    ENGINE_NAMES,
    PRECISIONS,
    TORCH_FP32,
    Backend,
    CloudPartEngine,
    EdgePartEngine,
    EngineSpec,
    policy_engine,
)

__all__ = [
    "ENGINE_NAMES",
    "PRECISIONS",
    "TORCH_FP32",
    "Backend",
    "CloudPartEngine",
    "EdgePartEngine",
    "EngineSpec",
    "cloud_part",
    "edge_part",
    "policy_engine",
]


def edge_part(spec: EngineSpec, source, exits: list[str] | tuple[str, ...], offload: str = "features",
              principal=None) -> EdgePartEngine:
    """The edge part that computes ``exits`` (depth order, ending at the split point).

    Args:
        spec: the engine.
        source: a :class:`~ddnn.checkpoint.Checkpoint` (torch) or a :class:`~ddnn.export.bundle.Bundle`.
        exits: edge exits; for a bundle of the aux arrangement, its ``aux_``-prefixed names.
        offload: ``features``, or ``input`` to hand over the raw images (raw payload).
        principal: torch only: the principal checkpoint of Lo et al.'s arrangement (``source`` is the aux).
    """
    exits = list(exits)
    if spec.backend == Backend.TORCH:
        from ddnn.engines.torch_engine import TorchEdgePart
        from ddnn.models import aux_principal, raw_input_split, split_at

        model = _checkpoint(source, spec).model
        if principal is not None:
            split = aux_principal(model, principal.model, [e.removeprefix("aux_") for e in exits])
        elif offload == "input":
            split = raw_input_split(model, exits)
        else:
            split = split_at(model, exits[-1], exits)
        return TorchEdgePart(split.edge, split.name, spec)
    graph = _bundle(source, spec).edge_for_exits(exits)
    if spec.backend == Backend.ONNXRUNTIME:
        from ddnn.engines.onnxruntime_engine import OrtEdgePart

        return OrtEdgePart(source, graph.split, spec, offload if graph.offload == "features" else "input")
    from ddnn.engines.openvino_engine import OvEdgePart

    return OvEdgePart(source, graph.split, spec, offload if graph.offload == "features" else "input")


def cloud_part(spec: EngineSpec, source, split: str) -> CloudPartEngine:
    """The cloud part from ``split`` (an early exit, or ``input``) to the final logits."""
    if spec.backend == Backend.TORCH:
        from ddnn.engines.torch_engine import TorchCloudPart
        from ddnn.models import cloud_part as torch_cloud_part

        model = _checkpoint(source, spec).model
        position = 0 if split == "input" else model.position(split)
        return TorchCloudPart(torch_cloud_part(model, position), split, spec)
    if spec.backend == Backend.ONNXRUNTIME:
        from ddnn.engines.onnxruntime_engine import OrtCloudPart

        return OrtCloudPart(_bundle(source, spec), split, spec)
    from ddnn.engines.openvino_engine import OvCloudPart

    return OvCloudPart(_bundle(source, spec), split, spec)


def _checkpoint(source, spec: EngineSpec):
    if not hasattr(source, "model"):
        raise ValueError(f"engine {spec.name} runs a checkpoint (.pt), not an export bundle")
    return source


def _bundle(source, spec: EngineSpec):
    if not hasattr(source, "edges"):
        raise ValueError(f"engine {spec.name} runs an export bundle (`ddnn export-onnx`), not a checkpoint")
    return source
