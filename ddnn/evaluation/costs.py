"""Compute, energy and link costs of an edge/cloud split: MACs and operation counts per part,
bytes per offloaded sample."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddnn.codec import Payload
from ddnn.data import IMAGE_BYTES, IMAGE_SHAPE
from ddnn.energy import EnergyTable, SplitOps, expected_energy, split_ops
from ddnn.models import MultiExitNet, aux_principal, cloud_part, count_macs, split_at
from ddnn.outcome import Outcome

# Bytes of one feature value per feature payload (int8's per-sample scale and zero point not counted).
BYTES_PER_VALUE = {Payload.FP32: 4, Payload.FP16: 2, Payload.INT8: 1}


@dataclass(frozen=True)
class SplitCosts:
    """MACs of each edge segment (layers since the previous exit plus the exit head), of the
    cloud part, and of the full model (backbone + final head: what cloud-only inference costs);
    and the shape of the features sent to the cloud."""

    segment_macs: tuple[tuple[str, int], ...]
    cloud_macs: int
    full_macs: int
    feature_shape: tuple[int, ...]
    offload: str = "features"  # or "input": offloaded samples send their raw uint8 image
    ops: SplitOps | None = None  # operation counts per part, for the energy estimate
    energy_table: EnergyTable | None = None  # None: Long et al.'s Table I

    @property
    def feature_values(self) -> int:
        """Number of values in one offloaded feature tensor."""
        return int(np.prod(self.feature_shape)) if self.feature_shape else 0


def split_costs(model: MultiExitNet, exits: Sequence[str]) -> SplitCosts:
    """Costs of running ``exits`` (depth order) at the edge and the rest of ``model`` in the cloud.

    With no edge exits the cloud runs the whole model on the raw input.
    """
    full = cloud_part(model, 0)
    full_macs = count_macs(full, (1, *model.shapes[0]))
    if not exits:
        return SplitCosts((), full_macs, full_macs, IMAGE_SHAPE, "input", split_ops(model, []))
    split = split_at(model, exits[-1], list(exits))
    segments, start = [], 0
    for seg in split.edge.segments:
        pos = model.position(seg.name)
        macs = count_macs(seg.trunk, (1, *model.shapes[start])) if pos > start else 0
        segments.append((seg.name, macs + count_macs(seg.head, (1, *model.shapes[pos]))))
        start = pos
    cloud_macs = count_macs(split.cloud, (1, *model.shapes[start]))
    return SplitCosts(tuple(segments), cloud_macs, full_macs, tuple(split.edge.feature_shape), "features",
                      split_ops(split))


def aux_principal_costs(aux: MultiExitNet, principal: MultiExitNet, aux_exits: Sequence[str]) -> SplitCosts:
    """Costs of Lo et al.'s arrangement: exits of an auxiliary network at the edge, the whole
    principal network in the cloud on the raw input. MACs are normalized to the principal."""
    split = aux_principal(aux, principal, list(aux_exits))
    segments, start = [], 0
    for name, seg in zip(aux_exits, split.edge.segments, strict=True):
        pos = aux.position(name)
        macs = count_macs(seg.trunk, (1, *aux.shapes[start])) if pos > start else 0
        segments.append((seg.name, macs + count_macs(seg.head, (1, *aux.shapes[pos]))))
        start = pos
    full = count_macs(split.cloud, (1, *principal.shapes[0]))
    return SplitCosts(tuple(segments), full, full, IMAGE_SHAPE, "input", split_ops(split))


def expected_costs(costs: SplitCosts, exit_index: np.ndarray) -> dict:
    """Expected per-sample MACs and link bytes given which route point answered each sample.

    ``exit_index`` follows :class:`~ddnn.evaluation.routing.Outcomes`: k < number of edge exits
    = answered at edge exit k, that number = cloud, -1 = dropped (ran every edge segment, sent
    nothing). MACs are also given normalized to the full model.
    """
    n_edge = len(costs.segment_macs)
    n = max(1, len(exit_index))
    cloud_rate = float(np.sum(exit_index == n_edge)) / n
    edge_macs = 0.0
    for k, (_, macs) in enumerate(costs.segment_macs):
        # A sample runs segment k unless it already exited at an earlier edge exit.
        reached = float(np.sum((exit_index >= k) | (exit_index < 0))) / n
        edge_macs += reached * macs
    cloud_macs = cloud_rate * costs.cloud_macs
    per_offload: dict[str, int]
    if costs.offload == "features":
        payload, per_offload = "features", {k.value: costs.feature_values * b for k, b in BYTES_PER_VALUE.items()}
    else:
        payload, per_offload = "raw_input", {"uint8": IMAGE_BYTES}
    out: dict[str, Any] = {
        "macs": {
            "full_model": costs.full_macs,
            "edge_segments": dict(costs.segment_macs),
            "cloud_part": costs.cloud_macs,
            "edge_expected": edge_macs,
            "cloud_expected": cloud_macs,
            "edge_expected_norm": edge_macs / costs.full_macs,
            "cloud_expected_norm": cloud_macs / costs.full_macs,
            "total_expected_norm": (edge_macs + cloud_macs) / costs.full_macs,
        },
        "link_bytes": {
            "payload": payload,
            "feature_shape": list(costs.feature_shape),
            "per_offload": per_offload,
            "expected_per_sample": {k: cloud_rate * v for k, v in per_offload.items()},
            "raw_input": IMAGE_BYTES,
            "raw_offload_expected_per_sample": cloud_rate * IMAGE_BYTES,
            "cloud_only_per_sample": IMAGE_BYTES,
        },
    }
    if costs.ops is not None:
        out["energy"] = expected_energy_costs(costs, exit_index)
    return out


def expected_energy_costs(costs: SplitCosts, exit_index: np.ndarray) -> dict:
    """Edge, expected cloud and total energy per inference (µJ) at the exit rates of
    ``exit_index``, compute only and with memory accesses, against cloud-only inference."""
    ops = costs.ops
    if ops is None:
        raise ValueError("these split costs carry no operation counts (SplitCosts.ops) to estimate energy from")
    table = costs.energy_table or _default_table()
    n = max(1, len(exit_index))
    rates = {name: float(np.sum(exit_index == k)) / n for k, (name, _) in enumerate(ops.segments)}
    rates[Outcome.DROPPED.label] = float(np.sum(exit_index < 0)) / n
    return {"table": table.name or "energy table", "compute": expected_energy(ops, rates, table).to_dict(),
            "with_memory": expected_energy(ops, rates, table, memory=True).to_dict()}


@functools.cache
def _default_table() -> EnergyTable:
    return EnergyTable.load()
