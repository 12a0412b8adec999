"""ModelSpec: everything needed to rebuild a network, stored in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ARCHS = ("resnet", "plain", "compact")
RESNET_DEPTHS = (8, 14, 20, 32, 44, 56, 110)
DEFAULT_WIDTH = {"resnet": 16, "plain": 32, "compact": 64}


@dataclass(frozen=True)
class QuantSpec:
    """Quantized edge blocks (Long et al.): the first ``blocks`` residual blocks use ``bits``-bit
    weights and activations; residual connections, the first layer, exits and the cloud part stay
    full precision."""

    bits: int
    blocks: int

    def __post_init__(self):
        if self.bits not in (1, 2, 4, 8):
            raise ValueError(f"quant bits must be 1, 2, 4 or 8, got {self.bits}")
        if self.blocks < 1:
            raise ValueError(f"quant blocks must be >= 1, got {self.blocks}")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a multi-exit network.

    Attributes:
        arch: ``resnet`` (He et al. CIFAR ResNet, 6n+2 layers) or ``plain`` (the plain CNN of Lee et
            al.: nine blocks, early exits after any of the first eight) or ``compact`` (the airbench
            network: whitening stem and three conv groups, early exits after group 1 or 2).
        depth: ResNet depth (8, 14, 20, 32, 44, 56, 110); ignored for ``plain``.
        num_classes: output classes.
        exits: block indices (1-based) after which an early exit is attached; the final exit
            is always present.
        exit_pool: kernel (and stride) of the exit's average pooling before its FC layer.
        width: channels of the first stage (ResNet: 16; plain: 32; compact: 64), doubled at each
            downsampling (compact: w, 4w, 4w).
        quant: optional quantized edge blocks.
    """

    arch: str = "resnet"
    depth: int = 32
    num_classes: int = 10
    exits: tuple[int, ...] = (7, 12)
    exit_pool: int = 4
    width: int = 0
    quant: QuantSpec | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.arch == "resnet" and self.depth not in RESNET_DEPTHS:
            raise ValueError(f"resnet depth must be one of {RESNET_DEPTHS}, got {self.depth}")
        n = self.num_blocks
        bad = [e for e in self.exits if not 1 <= e < n]
        if bad:
            raise ValueError(f"exit positions {bad} out of range: blocks are 1..{n}, "
                             f"an early exit must come before the last block ({n})")
        if len(set(self.exits)) != len(self.exits) or list(self.exits) != sorted(self.exits):
            raise ValueError(f"exit positions must be strictly increasing, got {list(self.exits)}")
        if self.quant and self.quant.blocks > n:
            raise ValueError(f"quant blocks {self.quant.blocks} exceeds the {n} blocks")

    @property
    def num_blocks(self) -> int:
        if self.arch == "plain":
            return 9
        if self.arch == "compact":
            return 3
        return 3 * ((self.depth - 2) // 6)

    @property
    def base_width(self) -> int:
        return self.width or DEFAULT_WIDTH[self.arch]

    @property
    def exit_names(self) -> tuple[str, ...]:
        """Names of all exits in depth order; ``final`` last."""
        return (*(exit_name(b) for b in self.exits), "final")

    @property
    def label(self) -> str:
        if self.arch == "compact":
            return f"compact{self.base_width}"
        base = f"resnet{self.depth}" if self.arch == "resnet" else "plaincnn"
        return base if self.base_width == DEFAULT_WIDTH[self.arch] else f"{base}w{self.base_width}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exits"] = list(self.exits)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelSpec:
        d = dict(d)
        q = d.get("quant")
        d["quant"] = QuantSpec(**q) if q else None
        d["exits"] = tuple(d.get("exits", ()))
        return cls(**d)


def exit_name(block: int) -> str:
    """The name of an early exit placed after ``block``."""
    return f"block{block}"


def exit_block(name: str, num_blocks: int) -> int:
    """The block index an exit name refers to (``final`` is the last block)."""
    if name == "final":
        return num_blocks
    if name.startswith("block") and name[5:].isdigit():
        return int(name[5:])
    raise ValueError(f"not an exit name: {name!r} (expected 'blockN' or 'final')")
