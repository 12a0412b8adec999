"""Split a multi-exit network between edge and cloud.

Two arrangements:
* ``split_at(model, exit)``: the edge runs the network up to an exit's block (and every edge exit
  on the way); the cloud part continues from those features to the final exit.
* ``aux_principal(aux, principal)`` (Lo et al.): a shallow auxiliary network at the edge and a
  separate principal network in the cloud that receives the raw input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from ddnn.data import IMAGE_SHAPE
from ddnn.data.transforms import to_tensor
from ddnn.models.network import MultiExitNet


class EdgeSegment(nn.Module):
    """One step of the edge cascade: layers up to an exit, and that exit's head."""

    def __init__(self, name: str, trunk: nn.Module, head: nn.Module):
        super().__init__()
        self.name = name
        self.trunk = trunk
        self.head = head


class EdgePart(nn.Module):
    """Input -> logits of each edge exit and the features handed to the cloud.

    ``segments`` run in order; an edge runtime may continue only the samples that did not exit
    at the previous segment (see :mod:`ddnn.inference`).
    """

    def __init__(self, segments: list[EdgeSegment], offload_position: int, feature_shape: tuple[int, ...],
                 offload: str):
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.offload_position = offload_position
        self.feature_shape = tuple(feature_shape)
        self.offload = offload  # "features" or "input"

    @property
    def segment_list(self) -> list[EdgeSegment]:
        """The segments in order (iterating the ModuleList types them as plain Modules)."""
        return cast("list[EdgeSegment]", list(self.segments))

    @property
    def exit_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.segment_list)

    def forward(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        logits, h = {}, x
        for seg in self.segment_list:
            h = seg.trunk(h)
            logits[seg.name] = seg.head(h)
        return logits, (x if self.offload == "input" else h)


class PixelInput(nn.Module):
    """uint8 NHWC pixels -> normalized float NCHW, so a cloud model can take raw images."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_tensor(x, x.device) if x.dtype == torch.uint8 else x


class CloudPart(nn.Module):
    """Features at a split position (or raw uint8 pixels for position 0) -> final logits."""

    def __init__(self, trunk: nn.Module, head: nn.Module, position: int, input_shape: tuple[int, ...],
                 input_dtype: str):
        super().__init__()
        self.prep = PixelInput() if position == 0 else nn.Identity()
        self.trunk = trunk
        self.head = head
        self.position = position
        self.input_shape = tuple(input_shape)
        self.input_dtype = input_dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.prep(x)))


@dataclass
class Split:
    """An edge part, its cloud part, and where they meet."""

    edge: EdgePart
    cloud: CloudPart
    name: str  # split point name: an exit name, or "input" for raw-input offload


def cloud_part(model: MultiExitNet, position: int) -> CloudPart:
    """The cloud part of ``model`` from block ``position`` (0 = raw uint8 input) to the final exit."""
    n = len(model.blocks)
    if not 0 <= position < n:
        raise ValueError(f"split position {position} out of range 0..{n - 1}")
    if position == 0:
        return CloudPart(model.trunk(0, n), model.final, 0, IMAGE_SHAPE, "uint8")
    return CloudPart(model.trunk(position, n), model.final, position, model.shapes[position], "float32")


def split_at(model: MultiExitNet, exit: str, edge_exits: list[str] | None = None) -> Split:
    """Split ``model`` after the block of early exit ``exit``.

    The edge part runs every early exit up to and including ``exit`` (or only ``edge_exits``,
    which must end with ``exit``) and returns the features at ``exit``'s block; the cloud part
    maps those features to the final logits. ``cloud(edge(x)[1]) == model(x)["final"]``.
    """
    if exit == "final":
        raise ValueError("cannot split at 'final': nothing would be left for the cloud")
    pos = model.position(exit)
    if edge_exits is None:
        edge_exits = [e for e in model.exit_names[:-1] if model.position(e) <= pos]
    if not edge_exits or edge_exits[-1] != exit:
        raise ValueError(f"edge exits {edge_exits} must end with the split exit {exit!r}")
    segments, start = [], 0
    for name in edge_exits:
        p = model.position(name)
        if p < start:
            raise ValueError(f"edge exits must be in depth order, got {edge_exits}")
        segments.append(EdgeSegment(name, model.trunk(start, p), model.head(name)))
        start = p
    edge = EdgePart(segments, pos, model.shapes[pos], "features")
    return Split(edge, cloud_part(model, pos), exit)


def raw_input_split(model: MultiExitNet, edge_exits: list[str]) -> Split:
    """Edge exits of ``model`` at the edge, but offload the raw input to the full model in the
    cloud (the choice when the raw image is cheaper to send than the features)."""
    split = split_at(model, edge_exits[-1], edge_exits)
    split.edge.offload = "input"
    split.edge.offload_position = 0
    split.edge.feature_shape = IMAGE_SHAPE
    return Split(split.edge, cloud_part(model, 0), "input")


def aux_principal(aux: MultiExitNet, principal: MultiExitNet, aux_exits: list[str] | None = None) -> Split:
    """Lo et al.'s arrangement: every exit of the auxiliary network (its final exit included) is
    an edge exit; offloaded samples send their raw input to the principal network."""
    names = list(aux_exits or aux.exit_names)
    segments, start = [], 0
    for name in names:
        p = aux.position(name)
        segments.append(EdgeSegment(f"aux_{name}", aux.trunk(start, p), aux.head(name)))
        start = p
    edge = EdgePart(segments, 0, IMAGE_SHAPE, "input")
    return Split(edge, cloud_part(principal, 0), "input")
