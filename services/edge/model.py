"""What the edge runs: an export bundle on ONNX Runtime / OpenVINO (serving), or a checkpoint on torch.

Serving needs no torch: the bundle's graphs run on ONNX Runtime. Given only a ``.pt`` checkpoint,
the edge uses the bundle shipped beside it (``x.bundle``), else exports one on the fly when torch
is importable; otherwise it fails naming ``--bundle``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ddnn.engines import Backend, EdgePartEngine, EngineSpec, edge_part
from ddnn.export.bundle import Arrangement, is_bundle, load_bundle

log = logging.getLogger(__name__)


@dataclass
class EdgeModel:
    """The edge's model and engine.

    Attributes:
        path: the bundle directory or checkpoint file.
        sha256: the (edge) checkpoint's sha256; ``cloud_sha256`` that of the network the cloud must run.
        edge_exits: exits the edge answers from, in depth order, as the policy names them.
        aux: Lo et al.'s arrangement (the engine's exits are ``aux_``-prefixed, the raw input is offloaded).
    """

    path: str
    sha256: str
    cloud_sha256: str
    edge_exits: tuple[str, ...]
    num_classes: int
    aux: bool
    spec: EngineSpec
    source: object  # Bundle or Checkpoint
    principal: object = None  # torch, aux arrangement: the principal Checkpoint

    def part(self, exits: list[str], offload: str) -> EdgePartEngine:
        """The engine computing ``exits`` (policy names), offloading ``features`` or the raw ``input``."""
        names = [f"aux_{e}" for e in exits] if self.aux else list(exits)
        return edge_part(self.spec, self.source, names, offload, self.principal)

    @classmethod
    def from_checkpoint(cls, ck, principal=None, spec: EngineSpec | None = None) -> EdgeModel:
        """torch on a loaded checkpoint (and principal, for the aux arrangement)."""
        exits = tuple(ck.exit_names[:-1]) if principal is None else tuple(ck.exit_names)
        return cls(ck.path, ck.sha256, (principal or ck).sha256, exits, ck.spec.num_classes, principal is not None,
                   spec or EngineSpec(), ck, principal)

    @classmethod
    def from_bundle(cls, bundle, spec: EngineSpec) -> EdgeModel:
        aux = bundle.arrangement == Arrangement.AUX_PRINCIPAL
        exits = tuple(e.removeprefix("aux_") for e in bundle.edge_exits) if aux else bundle.edge_exits
        return cls(str(bundle.root), bundle.checkpoint_sha256, bundle.cloud_sha256, exits, bundle.num_classes, aux,
                   spec, bundle)


def load_edge_model(spec: EngineSpec, bundle: str = "", checkpoint: str = "",
                    principal_checkpoint: str = "") -> EdgeModel:
    """The edge model for the settings: ``bundle`` for ONNX engines (else the one beside
    ``checkpoint``, else exported from it with torch); ``checkpoint`` for torch."""
    if spec.backend == Backend.TORCH:
        from ddnn.checkpoint import load_checkpoint

        principal = load_checkpoint(principal_checkpoint) if principal_checkpoint else None
        return EdgeModel.from_checkpoint(load_checkpoint(checkpoint), principal, spec)
    if bundle:
        return EdgeModel.from_bundle(load_bundle(bundle), spec)
    if principal_checkpoint:
        raise ValueError("--principal-checkpoint is for --engine torch; for ONNX engines export the aux/principal "
                         "pair with `ddnn export-onnx AUX --principal PRINCIPAL -o DIR` and pass --bundle DIR")
    beside = Path(checkpoint).with_suffix(".bundle")
    if is_bundle(beside):
        return EdgeModel.from_bundle(load_bundle(beside), spec)
    try:
        from ddnn.checkpoint import load_checkpoint
        from ddnn.export.cache import bundle_for
    except ImportError:
        raise ValueError(f"--bundle: engine {spec.name} runs an ONNX bundle and none lies beside {checkpoint}; "
                         "export one with `ddnn export-onnx` and pass --bundle DIR (DDNN_EDGE_BUNDLE)") from None
    log.info("no bundle beside %s: exporting one (torch)", checkpoint)
    from ddnn.export.cache import file_precision

    return EdgeModel.from_bundle(bundle_for(load_checkpoint(checkpoint), file_precision(spec.precision)), spec)
