"""The plain CNN of Lee et al. (ETRI): each block is two (conv, BN, ReLU) layers.

The paper places eight local exits and says the samples that miss exit 8 get "just one more
convolutional block" before the cloud exit, so the backbone has nine blocks: an early exit may
follow any of the first eight.
"""

from __future__ import annotations

from torch import nn

# Channel multipliers of the 8 blocks and whether a block starts with 2x2 average pooling.
PLAIN_PLAN = (
    (1, False), (1, False), (2, True), (2, False), (4, True), (4, False), (8, True), (8, False), (8, False),
)


class PlainBlock(nn.Sequential):
    """[avgpool 2x2] -> (conv3x3, BN, ReLU) x 2."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool):
        layers: list[nn.Module] = [nn.AvgPool2d(2)] if downsample else []
        for c_in in (in_ch, out_ch):
            layers += [nn.Conv2d(c_in, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        super().__init__(*layers)


def plain_block_plan(width: int) -> list[tuple[int, int, bool]]:
    """(in_channels, out_channels, downsample) for each of the nine blocks."""
    plan, in_ch = [], 3
    for mult, down in PLAIN_PLAN:
        plan.append((in_ch, width * mult, down))
        in_ch = width * mult
    return plan
