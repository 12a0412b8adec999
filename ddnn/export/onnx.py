"""Export a checkpoint's edge and cloud parts as ONNX graphs in a bundle directory.

Each edge graph takes uint8 NHWC images (the normalization is inside the graph) and returns the
logits of every edge exit up to its split point plus the features handed over; each cloud graph
maps the features at a split (or uint8 pixels, split ``input``) to the final logits. Opset 18,
dynamic batch, named inputs and outputs, metadata_props. See :mod:`ddnn.export.bundle`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ddnn.checkpoint import Checkpoint, load_checkpoint
from ddnn.data import IMAGE_SHAPE
from ddnn.data.transforms import CIFAR_MEAN, CIFAR_STD, to_tensor
from ddnn.export.bundle import (
    FEATURES_INPUT,
    FEATURES_OUTPUT,
    IMAGES_INPUT,
    INPUT_SPLIT,
    LOGITS_OUTPUT,
    PIXELS_INPUT,
    Arrangement,
    Bundle,
    CloudGraph,
    EdgeGraph,
    Mode,
    Precision,
    exit_output,
)
from ddnn.models import EdgePart, aux_principal, cloud_part, split_at

log = logging.getLogger(__name__)

OPSET = 18


class _EdgeGraph(nn.Module):
    """uint8 NHWC images -> (logits of each exit, features): the export wrapper of an EdgePart."""

    def __init__(self, edge: EdgePart, with_features: bool):
        super().__init__()
        self.edge = edge
        self.with_features = with_features

    def forward(self, images: torch.Tensor):
        logits, h = self.edge(to_tensor(images, images.device))
        out = [logits[name] for name in self.edge.exit_names]
        return (*out, h) if self.with_features else tuple(out)


def _export(module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_names: list[str],
            metadata: dict[str, str]) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" is no news
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[input_name], output_names=output_names,
                          dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False,
                          verbose=False)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, metadata)
    model.producer_name = "ddnn"
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _cloud_graph(cloud: nn.Module, split: str, position: int, shape: tuple[int, ...], out: Path,
                 meta: dict[str, str]) -> CloudGraph:
    dtype = "uint8" if position == 0 else "float32"
    name = PIXELS_INPUT if position == 0 else FEATURES_INPUT
    example = (torch.randint(0, 256, (2, *shape), dtype=torch.uint8) if position == 0
               else torch.randn(2, *shape))
    file = f"cloud-{split}.onnx"
    _export(cloud, example, out / file, name, [LOGITS_OUTPUT], {**meta, "ddnn.part": "cloud", "ddnn.split": split})
    return CloudGraph(split, position, name, dtype, tuple(shape), file)


def _edge_graph(edge: EdgePart, split: str, cloud_split: str, out: Path, meta: dict[str, str]) -> EdgeGraph:
    with_features = edge.offload == "features"
    outputs = [exit_output(e) for e in edge.exit_names] + ([FEATURES_OUTPUT] if with_features else [])
    file = f"edge-{split}.onnx"
    example = torch.randint(0, 256, (2, *IMAGE_SHAPE), dtype=torch.uint8)
    _export(_EdgeGraph(edge, with_features), example, out / file, IMAGES_INPUT, outputs,
            {**meta, "ddnn.part": "edge", "ddnn.split": split, "ddnn.exits": ",".join(edge.exit_names)})
    shape = tuple(edge.feature_shape) if with_features else IMAGE_SHAPE
    return EdgeGraph(split, tuple(edge.exit_names), shape, edge.offload, {Precision.FP32.value: file}, cloud_split)


def export_cloud_graph(checkpoint: Checkpoint, split: str, position: int, out: Path) -> CloudGraph:
    """Export the cloud part of ``checkpoint`` from block ``position`` (0 = pixels) as ``out/cloud-<split>.onnx``."""
    model = checkpoint.model.eval().cpu()
    cloud = cloud_part(model, position)
    shape = IMAGE_SHAPE if position == 0 else tuple(cloud.input_shape)
    return _cloud_graph(cloud, split, position, shape, out, {"ddnn.checkpoint_sha256": checkpoint.sha256})


def default_modes(edge_splits: list[str]) -> dict[str, str]:
    """The edge service's modes: ``normal`` runs the deepest edge exit, ``ws`` the shallowest."""
    return {Mode.NORMAL: edge_splits[-1], Mode.WS: edge_splits[0]}


def export_bundle(checkpoint: str | Path | Checkpoint, out: str | Path,
                  principal: str | Path | Checkpoint | None = None) -> Bundle:
    """Export every edge split and every cloud split of ``checkpoint`` into the bundle ``out``.

    Args:
        checkpoint: the (edge) checkpoint, a path or a loaded checkpoint.
        out: bundle directory; existing ONNX files and manifest in it are replaced.
        principal: Lo et al.'s arrangement: ``checkpoint`` is the auxiliary network (all its exits
            at the edge, offloading the raw input) and this is the principal network in the cloud.

    Returns:
        The bundle, its manifest written to ``out/manifest.json``.
    """
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    pr = principal if principal is None or isinstance(principal, Checkpoint) else load_checkpoint(principal)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.onnx"):
        stale.unlink()
    meta = {"ddnn.checkpoint_sha256": ck.sha256, "ddnn.classes": ",".join(ck.classes),
            "ddnn.input_mean": ",".join(map(str, CIFAR_MEAN)), "ddnn.input_std": ",".join(map(str, CIFAR_STD)),
            "ddnn.input_layout": "NHWC uint8, 0-255"}
    edges: dict[str, EdgeGraph] = {}
    clouds: dict[str, CloudGraph] = {}
    model = ck.model.eval().cpu()
    if pr is None:
        splits = list(ck.exit_names[:-1])
        for split in splits:
            parts = split_at(model, split)
            edges[split] = _edge_graph(parts.edge, split, split, out, meta)
            clouds[split] = _cloud_graph(parts.cloud, split, parts.cloud.position, parts.cloud.input_shape, out, meta)
        full = cloud_part(model, 0)
        clouds[INPUT_SPLIT] = _cloud_graph(full, INPUT_SPLIT, 0, IMAGE_SHAPE, out, meta)
        arrangement = Arrangement.SPLIT
    else:
        meta["ddnn.principal_sha256"] = pr.sha256
        names = list(ck.exit_names)
        splits = [f"aux_{n}" for n in names]
        for i in range(len(names)):
            parts = aux_principal(model, pr.model.eval().cpu(), names[: i + 1])
            edges[splits[i]] = _edge_graph(parts.edge, splits[i], INPUT_SPLIT, out, meta)
        clouds[INPUT_SPLIT] = _cloud_graph(cloud_part(pr.model.eval().cpu(), 0), INPUT_SPLIT, 0, IMAGE_SHAPE, out, meta)
        arrangement = Arrangement.AUX_PRINCIPAL
    norm = {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD), "scale": "0-255", "layout": "NHWC"}
    bundle = Bundle(out, ck.sha256, Path(ck.path).name if ck.path else "", ck.spec.to_dict(), tuple(ck.classes), norm,
                    IMAGE_SHAPE, OPSET, arrangement.value, edges, clouds, default_modes(splits),
                    pr.sha256 if pr is not None else "")
    bundle.save()
    log.info("exported %s to %s: edges %s, clouds %s", ck.path, out, list(edges), list(clouds))
    return bundle


def torch_reference(ck: Checkpoint, images: np.ndarray, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The torch edge part's logits per exit and features for ``images`` (what the edge graph must equal)."""
    parts = split_at(ck.model.eval(), split)
    with torch.inference_mode():
        logits, h = parts.edge(to_tensor(images))
    return {k: v.numpy() for k, v in logits.items()}, h.numpy()
