"""Long et al.'s "xE + yC" hybrid configurations of a CIFAR ResNet.

Long et al. count the convolutions inside residual blocks (two per block; the first layer and
the classifier are not counted): ResNet-32 has 30, so "10E + 20C" quantizes the first 5 blocks
(the edge) and keeps 10 blocks full precision (the cloud), with the edge exit after block 5.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ddnn.models.spec import ModelSpec, QuantSpec

_PATTERN = re.compile(r"^\s*(\d+)\s*E\s*\+\s*(\d+)\s*C\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class HybridConfig:
    """An "xE + yC" split: ``edge_layers`` quantized block convolutions, ``cloud_layers`` full precision."""

    edge_layers: int
    cloud_layers: int

    @property
    def edge_blocks(self) -> int:
        """Residual blocks at the edge (all quantized)."""
        return self.edge_layers // 2

    @property
    def label(self) -> str:
        return f"{self.edge_layers}E+{self.cloud_layers}C"

    def quant(self, bits: int) -> QuantSpec:
        """The QuantSpec that quantizes the edge blocks to ``bits`` bits."""
        return QuantSpec(bits, self.edge_blocks)

    def exits(self, count: int = 1) -> tuple[int, ...]:
        """Edge exit positions: ``count`` exits evenly spread over the edge, the last one at its end.

        One exit sits after the last edge block (Long et al. §III-B); two exits put the other in
        the middle of the edge (Table IV); zero gives the hybrid network without early exit.
        """
        if not 0 <= count <= self.edge_blocks:
            raise ValueError(f"{self.label}: edge exit count must be 0..{self.edge_blocks}, got {count}")
        return tuple(sorted({round(k * self.edge_blocks / count) for k in range(1, count + 1)}))

    def spec(self, bits: int, depth: int, num_classes: int = 10, exit_count: int = 1, width: int = 0,
             exit_pool: int = 4) -> ModelSpec:
        """The ResNet ModelSpec of this hybrid configuration."""
        check_fits(self, depth)
        return ModelSpec("resnet", depth, num_classes, self.exits(exit_count), exit_pool, width, self.quant(bits))


def parse_hybrid(text: str) -> HybridConfig:
    """Parse ``"16E+14C"`` (case and spaces ignored) into a HybridConfig."""
    m = _PATTERN.match(text)
    if not m:
        raise ValueError(f"hybrid configuration must look like '16E+14C', got {text!r}")
    edge, cloud = int(m.group(1)), int(m.group(2))
    if edge < 2 or edge % 2:
        raise ValueError(f"{text!r}: the edge must hold whole residual blocks (an even number >= 2 of convs)")
    if cloud < 2 or cloud % 2:
        raise ValueError(f"{text!r}: the cloud must hold whole residual blocks (an even number >= 2 of convs)")
    return HybridConfig(edge, cloud)


def block_convs(depth: int) -> int:
    """Convolutions inside the residual blocks of a 6n+2-layer CIFAR ResNet (6n)."""
    return 6 * ((depth - 2) // 6)


def check_fits(config: HybridConfig, depth: int) -> None:
    """Raise ValueError unless ``config`` splits exactly the block convs of a ResNet-``depth``."""
    total = block_convs(depth)
    if config.edge_layers + config.cloud_layers != total:
        raise ValueError(f"{config.label} has {config.edge_layers + config.cloud_layers} block convolutions; "
                         f"ResNet-{depth} has {total} (x + y must equal {total})")


def hybrid_configs(depth: int) -> list[HybridConfig]:
    """Every xE + yC split of a ResNet-``depth`` (at least one block on each side)."""
    total = block_convs(depth)
    return [HybridConfig(e, total - e) for e in range(2, total - 1, 2)]


def init_from_full_precision(model, state_dict: dict) -> list[str]:
    """Copy a full-precision ResNet's weights into a hybrid ``model``; return the keys set.

    Full-precision blocks, the first layer, the final head and exit heads of the same name and
    shape copy over unchanged. A quantized block takes only the two convolution weights
    (``blocks.i.conv1.weight`` → ``blocks.i.conv1.conv.weight``): its BN layers sit before the
    convolutions, where the full-precision block has none, so they keep their fresh init.
    Starting a low-precision network from a trained full-precision one is the usual way to
    shorten its training (e.g. Zhuang et al. 2018, "Towards effective low-bitwidth CNNs").
    """
    own = model.state_dict()
    picked = {}
    for key, value in state_dict.items():
        target = key
        parts = key.split(".")
        # blocks.<i>.conv<j>.weight of a full-precision block -> blocks.<i>.conv<j>.conv.weight
        if len(parts) == 4 and parts[0] == "blocks" and parts[2] in ("conv1", "conv2") and parts[3] == "weight":
            alt = f"blocks.{parts[1]}.{parts[2]}.conv.weight"
            if alt in own:
                target = alt
        if target in own and own[target].shape == value.shape:
            picked[target] = value
    model.load_state_dict(picked, strict=False)
    return sorted(picked)
