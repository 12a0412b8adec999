"""MultiExitNet: a backbone of blocks with early exits, built from a ModelSpec."""

from __future__ import annotations

import torch
from torch import nn

from ddnn.data import IMAGE_SHAPE_CHW
from ddnn.models.compact import ConvGroup, MaxPoolHead, WhiteningStem, compact_plan
from ddnn.models.heads import ExitHead, FinalHead
from ddnn.models.plain import PlainBlock, plain_block_plan
from ddnn.models.resnet import BasicBlock, resnet_block_plan, resnet_stem
from ddnn.models.spec import ModelSpec, exit_block, exit_name


class MultiExitNet(nn.Module):
    """Stem, a list of blocks, early exits after chosen blocks, and a final head.

    ``forward`` returns the logits of every exit (a dict, depth order, ``final`` last), which is
    what joint training and offline evaluation need. Positions are block indices: position ``k``
    is the output of block ``k``; position 0 is the normalized input.
    """

    def __init__(self, spec: ModelSpec, stem: nn.Module, blocks: list[nn.Module],
                 shapes: list[tuple[int, int, int]], final_head: nn.Module):
        super().__init__()
        self.spec = spec
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        # shapes[k] = (C, H, W) of the output at position k (0 = input).
        self.shapes = shapes
        self.exits = nn.ModuleDict({
            exit_name(b): ExitHead(shapes[b][0], shapes[b][1], spec.num_classes, spec.exit_pool)
            for b in spec.exits
        })
        self.final = final_head

    @property
    def exit_names(self) -> tuple[str, ...]:
        return self.spec.exit_names

    def position(self, exit: str) -> int:
        """Block index of an exit (``final`` = number of blocks)."""
        if exit != "final" and exit not in self.exits:
            raise KeyError(f"model has no exit {exit!r}; exits: {list(self.exit_names)}")
        return exit_block(exit, len(self.blocks))

    def head(self, exit: str) -> nn.Module:
        return self.final if exit == "final" else self.exits[exit]

    def trunk(self, start: int, stop: int) -> nn.Sequential:
        """Layers from position ``start`` to ``stop`` (the stem is included when start == 0)."""
        layers = [self.stem] if start == 0 and stop > 0 else []
        layers += list(self.blocks[max(start, 0):stop])
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        h = self.stem(x)
        for i, block in enumerate(self.blocks, 1):
            h = block(h)
            name = exit_name(i)
            if name in self.exits:
                out[name] = self.exits[name](h)
        out["final"] = self.final(h)
        return out


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:  # the compact net's final layer has none
                nn.init.zeros_(m.bias)
    # Zero-init the last BN of each residual branch: blocks start as identities, which trains
    # faster and more stably (Goyal et al. 2017).
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def build_model(spec: ModelSpec) -> MultiExitNet:
    """Build the network a ModelSpec describes, freshly initialized."""
    w = spec.base_width
    shapes: list[tuple[int, int, int]] = [IMAGE_SHAPE_CHW]
    blocks: list[nn.Module] = []
    if spec.arch == "resnet":
        stem = resnet_stem(w)
        spatial = IMAGE_SHAPE_CHW[1]
        for i, (cin, cout, stride) in enumerate(resnet_block_plan(spec.depth, w), 1):
            if spec.quant and i <= spec.quant.blocks:
                from ddnn.models.quant import QuantBasicBlock

                blocks.append(QuantBasicBlock(cin, cout, stride, spec.quant.bits))
            else:
                blocks.append(BasicBlock(cin, cout, stride))
            spatial //= stride
            shapes.append((cout, spatial, spatial))
    elif spec.arch == "compact":
        stem = WhiteningStem()
        spatial = IMAGE_SHAPE_CHW[1] - stem.conv.kernel_size[0] + 1  # no padding: 31
        for cin, cout in compact_plan(w):
            blocks.append(ConvGroup(cin, cout))
            spatial //= 2
            shapes.append((cout, spatial, spatial))
    else:
        stem = nn.Identity()
        spatial = IMAGE_SHAPE_CHW[1]
        for cin, cout, down in plain_block_plan(w):
            blocks.append(PlainBlock(cin, cout, down))
            spatial //= 2 if down else 1
            shapes.append((cout, spatial, spatial))
    if spec.arch == "compact":
        final: nn.Module = MaxPoolHead(shapes[-1][0], spec.num_classes)
    else:
        final = FinalHead(shapes[-1][0], spec.num_classes)
    model = MultiExitNet(spec, stem, blocks, shapes, final)
    _init_weights(model)
    return model
