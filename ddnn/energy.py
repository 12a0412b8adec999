"""Inference energy of an edge/cloud split, with Long et al.'s per-operation energies (Table I).

What is counted, per inference of one 32x32 image:

Compute energy (what Long et al. call computational energy; their headline ratios use it):
  * every multiply-accumulate of a Conv2d / Linear layer at that layer's precision (its ``bits``
    attribute, 32 when absent): ``macs × mac_pj[bits]``; a MAC's own accumulate is included;
  * quantized convolutions (Long et al.'s QuanConv): the BN before the quantizer cannot be folded
    into the low-precision weights, so it costs one 32-bit MAC per input element (scale and
    shift), and rescaling the output by α costs one 32-bit MAC per output element;
  * 32-bit additions: residual additions (one per block output element), average-pooling
    accumulations (one per pooled input element) and linear-layer biases (one per output);
  * full-precision BN folds into the preceding convolution, ReLU and the exit decision are free.

Memory energy (reported separately, ``memory_pj_per_bit`` per bit moved):
  * weights are read once per inference at their stored precision (quantized convolutions:
    ``bits`` per weight plus a 32-bit α per filter; their BN: scale and shift, 32 bits each);
  * activations: every Conv2d / Linear reads its input once (at ``bits`` for a quantized
    convolution, whose input is quantized, else 32 bits) and writes its output once at 32 bits;
    no re-fetches (perfect on-chip reuse within a layer).

The table is data (``ddnn/resources/energy_table1.json``); pass another JSON file with the same
fields to change the per-operation energies or the k-bit rule.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ddnn.data import IMAGE_SHAPE_CHW
from ddnn.outcome import Outcome

ENERGY_TABLE_FORMAT = "ddnn.energy-table/v1"
DEFAULT_TABLE = "energy_table1.json"


@dataclass(frozen=True)
class EnergyTable:
    """Per-operation energies in picojoules."""

    mac_pj: Mapping[int, float]
    add_32bit_pj: float
    memory_pj_per_bit: float
    name: str = ""
    source: str = ""

    def mac(self, bits: int) -> float:
        """Energy of one MAC at ``bits`` bits; an error names the missing entry."""
        try:
            return self.mac_pj[int(bits)]
        except KeyError:
            raise ValueError(f"energy table {self.name!r} has no {bits}-bit MAC energy; "
                             f"it lists {sorted(self.mac_pj)}") from None

    @classmethod
    def from_dict(cls, d: dict, source: str = "energy table") -> EnergyTable:
        if not isinstance(d, dict) or d.get("format") != ENERGY_TABLE_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"{source}: format {got!r}, expected {ENERGY_TABLE_FORMAT!r}")
        try:
            macs = {int(k): float(v) for k, v in d["mac_pj"].items()}
            table = cls(macs, float(d["add_32bit_pj"]), float(d["memory_pj_per_bit"]), str(d.get("name", "")),
                        str(d.get("source", "")))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{source}: needs mac_pj {{bits: pJ}}, add_32bit_pj and memory_pj_per_bit ({exc})") \
                from None
        if 32 not in macs:
            raise ValueError(f"{source}: mac_pj must list the 32-bit MAC")
        if any(v < 0 for v in (*macs.values(), table.add_32bit_pj, table.memory_pj_per_bit)):
            raise ValueError(f"{source}: energies must be >= 0")
        return table

    @classmethod
    def load(cls, path: str | Path | None = None) -> EnergyTable:
        """Load a table from ``path``, or Long et al.'s Table I shipped with ddnn."""
        if path is None:
            text = resources.files("ddnn.resources").joinpath(DEFAULT_TABLE).read_text()
            return cls.from_dict(json.loads(text), DEFAULT_TABLE)
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such energy table") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        return cls.from_dict(doc, str(path))


@dataclass
class OpCounts:
    """Operation counts of one network piece for one input."""

    macs: dict[int, int] = field(default_factory=dict)  # bits -> MACs
    adds_32bit: int = 0
    weight_bits: int = 0
    activation_bits: int = 0

    def add_macs(self, bits: int, n: int) -> None:
        self.macs[bits] = self.macs.get(bits, 0) + int(n)

    def __iadd__(self, other: OpCounts) -> OpCounts:
        for b, n in other.macs.items():
            self.add_macs(b, n)
        self.adds_32bit += other.adds_32bit
        self.weight_bits += other.weight_bits
        self.activation_bits += other.activation_bits
        return self

    def compute_pj(self, table: EnergyTable) -> float:
        return sum(n * table.mac(b) for b, n in self.macs.items()) + self.adds_32bit * table.add_32bit_pj

    def memory_pj(self, table: EnergyTable) -> float:
        return (self.weight_bits + self.activation_bits) * table.memory_pj_per_bit

    def energy_pj(self, table: EnergyTable, memory: bool = False) -> float:
        return self.compute_pj(table) + (self.memory_pj(table) if memory else 0.0)


def count_ops(module: nn.Module, x: torch.Tensor) -> tuple[OpCounts, torch.Tensor]:
    """Run ``module`` on ``x`` (one sample) and count its operations; return the counts and output."""
    from ddnn.models.heads import FinalHead
    from ddnn.models.quant import QuanConv, QuantBasicBlock
    from ddnn.models.resnet import BasicBlock

    ops = OpCounts()

    def hook(m, inputs, output):
        inp = inputs[0]
        if isinstance(m, nn.Conv2d):
            bits = int(getattr(m, "bits", 32))
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            ops.add_macs(bits, output.numel() // output.shape[0] * k)
            ops.weight_bits += m.weight.numel() * bits + (32 * m.out_channels if bits < 32 else 0)
            ops.activation_bits += inp.numel() * (bits if bits < 32 else 32) + output.numel() * 32
        elif isinstance(m, nn.Linear):
            ops.add_macs(int(getattr(m, "bits", 32)), m.in_features * m.out_features)
            ops.adds_32bit += m.out_features if m.bias is not None else 0
            ops.weight_bits += 32 * sum(p.numel() for p in m.parameters(recurse=False))
            ops.activation_bits += (inp.numel() + output.numel()) * 32
        elif isinstance(m, QuanConv):
            ops.add_macs(32, inp.numel() + output.numel())  # unfoldable BN, then α rescaling
            ops.weight_bits += 2 * 32 * m.bn.num_features
        elif isinstance(m, (BasicBlock, QuantBasicBlock)):
            ops.adds_32bit += output.numel()  # residual addition
        elif isinstance(m, (nn.AvgPool2d, FinalHead)):
            ops.adds_32bit += inp.numel()  # pooling accumulations (FinalHead: global average pool)

    hooks = [m.register_forward_hook(hook) for m in module.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear, QuanConv, BasicBlock, QuantBasicBlock, nn.AvgPool2d, FinalHead))]
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            out = module(x)
    finally:
        for h in hooks:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return ops, out


@dataclass(frozen=True)
class SplitOps:
    """Operation counts of each edge segment (trunk since the previous exit plus its head), of the
    cloud part, and of the full network run cloud-only (the energy reference)."""

    segments: tuple[tuple[str, OpCounts], ...]
    cloud: OpCounts
    reference: OpCounts


def split_ops(model_or_split, edge_exits: Sequence[str] | None = None,
              input_shape: tuple[int, ...] = (1, *IMAGE_SHAPE_CHW)) -> SplitOps:
    """Count the operations of an edge/cloud split.

    ``model_or_split`` is a :class:`~ddnn.models.MultiExitNet` (split after the last of
    ``edge_exits``; default every early exit; an empty list means cloud-only) or a
    :class:`~ddnn.models.Split`. The reference is the same network's backbone and final head
    without any exit head (cloud-only inference of this network, at its own precisions).
    """
    from ddnn.models import MultiExitNet, cloud_part, split_at

    if isinstance(model_or_split, MultiExitNet):
        model = model_or_split
        exits = list(model.exit_names[:-1] if edge_exits is None else edge_exits)
        reference, _ = count_ops(cloud_part(model, 0), torch.zeros(input_shape))
        if not exits:
            return SplitOps((), reference, reference)
        split = split_at(model, exits[-1], exits)
    else:
        split = model_or_split
        reference = None
    h = torch.zeros(input_shape)
    segments = []
    for seg in split.edge.segments:
        trunk_ops, h = count_ops(seg.trunk, h)
        head_ops, _ = count_ops(seg.head, h)
        trunk_ops += head_ops
        segments.append((seg.name, trunk_ops))
    if split.edge.offload == "input":
        h = torch.zeros(input_shape)
    cloud, _ = count_ops(split.cloud, h)
    if reference is None:
        # A bare split: the reference is its edge trunks and cloud part without the exit heads.
        reference = OpCounts()
        h = torch.zeros(input_shape)
        if split.edge.offload != "input":
            for seg in split.edge.segments:
                trunk_ops, h = count_ops(seg.trunk, h)
                reference += trunk_ops
        reference += cloud
    return SplitOps(tuple(segments), cloud, reference)


@dataclass(frozen=True)
class EnergyEstimate:
    """Expected energy per inference (picojoules) given the exit rates."""

    edge_pj: float
    cloud_pj: float
    reference_pj: float
    segment_pj: tuple[tuple[str, float], ...]
    cloud_part_pj: float
    reach: tuple[tuple[str, float], ...]  # fraction of samples that run each edge segment, then "cloud"
    memory: bool

    @property
    def total_pj(self) -> float:
        return self.edge_pj + self.cloud_pj

    @property
    def reduction(self) -> float:
        """Reference (cloud-only full network) energy divided by this split's expected energy."""
        return self.reference_pj / self.total_pj if self.total_pj else float("inf")

    def to_dict(self) -> dict:
        """JSON-ready summary in microjoules."""
        uj = 1e-6
        return {"edge_uj": self.edge_pj * uj, "cloud_uj": self.cloud_pj * uj, "total_uj": self.total_pj * uj,
                "reference_uj": self.reference_pj * uj, "reduction": self.reduction,
                "segments_uj": {n: e * uj for n, e in self.segment_pj}, "cloud_part_uj": self.cloud_part_pj * uj,
                "reach": dict(self.reach), "memory_included": self.memory}


def expected_energy(ops: SplitOps, exit_rates: Mapping[str, float], table: EnergyTable,
                    memory: bool = False) -> EnergyEstimate:
    """Expected energy per inference from operation counts and exit rates.

    ``exit_rates`` maps edge exit names to the fraction of samples answered there; the optional
    key ``dropped`` is the fraction that ran every edge segment and was then dropped; everything
    else continues to the cloud. A sample runs edge segment k if it did not exit before it.
    """
    names = [n for n, _ in ops.segments]
    unknown = set(exit_rates) - set(names) - {Outcome.DROPPED.label}
    if unknown:
        raise ValueError(f"exit rates name {sorted(unknown)}, which are not edge exits {names}")
    rates = {k: float(v) for k, v in exit_rates.items()}
    if any(v < 0 for v in rates.values()) or sum(rates.values()) > 1 + 1e-9:
        raise ValueError(f"exit rates must be >= 0 and sum to at most 1, got {rates}")
    reach, left = [], 1.0
    edge = 0.0
    seg_pj = []
    for name, seg in ops.segments:
        e = seg.energy_pj(table, memory)
        seg_pj.append((name, e))
        reach.append((name, left))
        edge += left * e
        left -= rates.get(name, 0.0)
    to_cloud = max(0.0, left - rates.get(Outcome.DROPPED.label, 0.0))
    cloud_e = ops.cloud.energy_pj(table, memory)
    reach.append((Outcome.CLOUD.label, to_cloud))
    return EnergyEstimate(edge, to_cloud * cloud_e, ops.reference.energy_pj(table, memory), tuple(seg_pj), cloud_e,
                          tuple(reach), memory)


def energy_per_inference(model_or_split, exit_rates: Mapping[str, float], table: EnergyTable | str | Path | None = None,
                         edge_exits: Sequence[str] | None = None, memory: bool = False,
                         reference=None) -> EnergyEstimate:
    """Edge, expected cloud and total energy per inference of a split, given the exit rates.

    The entry point for evaluation code: ``model_or_split`` is a MultiExitNet (with
    ``edge_exits``, default: the exits named in ``exit_rates`` in depth order, else every early
    exit) or a Split; ``exit_rates`` maps edge exit names to the fraction answered there;
    ``table`` is an EnergyTable, a JSON path, or None for Long et al.'s Table I. ``memory=True``
    adds the memory-access energy to the compute energy. ``reference`` (a MultiExitNet, e.g.
    the full-precision network of Long et al.'s comparison) replaces the default reference, this
    network run cloud-only, in ``reference_pj`` and ``reduction``.
    """
    from ddnn.models import MultiExitNet

    if not isinstance(table, EnergyTable):
        table = EnergyTable.load(table)
    if isinstance(model_or_split, MultiExitNet) and edge_exits is None:
        named = [e for e in model_or_split.exit_names[:-1] if e in exit_rates]
        edge_exits = named or list(model_or_split.exit_names[:-1])
    ops = split_ops(model_or_split, edge_exits)
    if reference is not None:
        ops = SplitOps(ops.segments, ops.cloud, split_ops(reference, []).reference)
    return expected_energy(ops, exit_rates, table, memory)
