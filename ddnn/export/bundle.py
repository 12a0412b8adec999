"""An ONNX export bundle: a directory of edge and cloud graphs plus ``manifest.json``.

Reading a bundle needs neither torch nor onnx (the serving processes read it); writing one is
:mod:`ddnn.export.onnx`. Layout::

    BUNDLE/
      manifest.json             # checkpoint sha256, classes, input normalization, edges, splits, files
      edge-<split>.onnx         # uint8 NHWC images -> logits of every edge exit up to <split> (+ features)
      edge-<split>.int8.onnx    # the same, int8 QDQ (static PTQ on training-split images), if made
      cloud-<split>.onnx        # features at <split> (or uint8 pixels for split "input") -> final logits

One edge graph per split point (each early exit): a mode (:class:`Mode` ``normal``, ``ws``) names the
split it runs (``manifest.modes``), and a cascade of exits ending at a split runs on that split's graph.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from ddnn.errors import NotFound

BUNDLE_FORMAT = "ddnn.onnx-bundle/v1"
MANIFEST_NAME = "manifest.json"
IMAGES_INPUT = "images"
FEATURES_INPUT = "features"
PIXELS_INPUT = "pixels"
FEATURES_OUTPUT = "features"
LOGITS_OUTPUT = "logits"
INPUT_SPLIT = "input"


class Precision(str, Enum):
    """Numeric precision of an exported edge graph."""

    FP32 = "fp32"
    INT8 = "int8"


class Mode(str, Enum):
    """The edge's operating mode (``--mode``; Lo et al.'s dynamic network sizing).

    ``normal`` and ``ws`` each run one split of the bundle (``manifest.modes``); ``local`` runs
    normal's exits and offloads nothing; ``auto`` lets the channel monitor pick among the three.
    """

    NORMAL = "normal"  # the deepest edge exit; fewer samples offloaded
    WS = "ws"  # workload sharing: the shallowest edge exit; more samples offloaded
    LOCAL = "local"  # nothing offloaded: would-be offloads are answered at the edge, marked degraded
    AUTO = "auto"  # the channel monitor switches among normal, ws and local

    def __str__(self) -> str:  # the flag value, in messages, metrics labels and reports
        return self.value


MODES = tuple(m.value for m in Mode)  # the flag values, in the enum's order
SPLIT_MODES = (Mode.NORMAL, Mode.WS)  # the modes that name a split of their own (manifest.modes)


class Arrangement(str, Enum):
    """How edge and cloud share the work: one network split in two, or Lo et al.'s aux + principal."""

    SPLIT = "split"
    AUX_PRINCIPAL = "aux_principal"


def exit_output(exit: str) -> str:
    """The edge graph's output name for an exit's logits."""
    return f"logits_{exit}"


@dataclass(frozen=True)
class EdgeGraph:
    """The edge part up to one split point: its exits (depth order), features and files by precision."""

    split: str
    exits: tuple[str, ...]
    feature_shape: tuple[int, ...]
    offload: str  # "features" (the graph outputs them) or "input" (aux arrangement: the images are sent)
    files: dict[str, str]  # precision -> file name
    cloud_split: str  # the cloud split its offloaded samples go to

    def to_dict(self) -> dict:
        return {"split": self.split, "exits": list(self.exits), "feature_shape": list(self.feature_shape),
                "offload": self.offload, "files": dict(self.files), "cloud_split": self.cloud_split}

    @classmethod
    def from_dict(cls, d: dict) -> EdgeGraph:
        return cls(d["split"], tuple(d["exits"]), tuple(int(x) for x in d["feature_shape"]), d["offload"],
                   dict(d["files"]), d["cloud_split"])


@dataclass(frozen=True)
class CloudGraph:
    """The cloud part from one split point to the final logits."""

    split: str
    position: int
    input_name: str
    input_dtype: str  # "float32" (features) or "uint8" (pixels)
    input_shape: tuple[int, ...]
    file: str

    def to_dict(self) -> dict:
        return {"split": self.split, "position": self.position, "input": {"name": self.input_name,
                "dtype": self.input_dtype, "shape": list(self.input_shape)}, "output": LOGITS_OUTPUT,
                "file": self.file}

    @classmethod
    def from_dict(cls, d: dict) -> CloudGraph:
        i = d["input"]
        return cls(d["split"], int(d["position"]), i["name"], i["dtype"], tuple(int(x) for x in i["shape"]), d["file"])


@dataclass
class Bundle:
    """A loaded bundle manifest, with the directory its files lie in."""

    root: Path
    checkpoint_sha256: str
    checkpoint_file: str
    spec: dict
    classes: tuple[str, ...]
    normalization: dict  # {"mean": [...], "std": [...], "scale": "0-255", "layout": "NHWC"}
    image_shape: tuple[int, ...]
    opset: int
    arrangement: str
    edges: dict[str, EdgeGraph]  # by split
    clouds: dict[str, CloudGraph]  # by split
    modes: dict[str, str]  # mode -> split
    principal_sha256: str = ""
    quantization: dict = field(default_factory=dict)
    format: str = BUNDLE_FORMAT

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def edge_exits(self) -> tuple[str, ...]:
        """Every exit the edge can answer from, in depth order."""
        deepest = max(self.edges.values(), key=lambda g: len(g.exits))
        return deepest.exits

    @property
    def cloud_sha256(self) -> str:
        """The checkpoint whose cloud part the offloaded samples need (the principal's, if any)."""
        return self.principal_sha256 or self.checkpoint_sha256

    def precisions(self, split: str) -> tuple[str, ...]:
        return tuple(self.edge(split).files)

    def edge(self, split: str) -> EdgeGraph:
        try:
            return self.edges[split]
        except KeyError:
            raise NotFound(f"{self.root}: no edge graph ending at {split!r}; it has {list(self.edges)}") from None

    def edge_for_exits(self, exits: list[str] | tuple[str, ...]) -> EdgeGraph:
        """The edge graph that runs a cascade of ``exits`` (it ends at the deepest of them)."""
        graph = self.edge(exits[-1])
        missing = [e for e in exits if e not in graph.exits]
        if missing:
            raise NotFound(f"{self.root}: edge graph {graph.split!r} has no exits {missing}")
        return graph

    def cloud(self, split: str) -> CloudGraph:
        try:
            return self.clouds[split]
        except KeyError:
            raise NotFound(f"{self.root}: no cloud graph for split {split!r}; it has {list(self.clouds)}") from None

    def edge_file(self, split: str, precision: str = Precision.FP32) -> Path:
        graph = self.edge(split)
        precision = Precision(precision).value
        if precision not in graph.files:
            raise NotFound(f"{self.root}: no {precision} edge graph for {split!r} (has {sorted(graph.files)}); "
                           f"make it with `ddnn export-onnx --int8`")
        return self.root / graph.files[precision]

    def cloud_file(self, split: str) -> Path:
        return self.root / self.cloud(split).file

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "checkpoint": {"file": self.checkpoint_file, "sha256": self.checkpoint_sha256, "spec": self.spec},
            "principal_sha256": self.principal_sha256, "arrangement": self.arrangement,
            "classes": list(self.classes),
            "input": {"name": IMAGES_INPUT, "dtype": "uint8", "shape": list(self.image_shape), **self.normalization},
            "opset": self.opset, "modes": dict(self.modes),
            "edges": {k: g.to_dict() for k, g in self.edges.items()},
            "clouds": {k: g.to_dict() for k, g in self.clouds.items()},
            "quantization": self.quantization,
        }

    @classmethod
    def from_dict(cls, d: dict, root: Path) -> Bundle:
        if d.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"bundle format {d.get('format')!r}, expected {BUNDLE_FORMAT!r}")
        inp = d["input"]
        norm = {k: inp[k] for k in ("mean", "std", "scale", "layout")}
        return cls(root, d["checkpoint"]["sha256"], d["checkpoint"]["file"], d["checkpoint"]["spec"],
                   tuple(d["classes"]), norm, tuple(inp["shape"]), int(d["opset"]), d["arrangement"],
                   {k: EdgeGraph.from_dict(g) for k, g in d["edges"].items()},
                   {k: CloudGraph.from_dict(g) for k, g in d["clouds"].items()}, dict(d["modes"]),
                   d.get("principal_sha256", ""), d.get("quantization") or {})

    def save(self) -> Path:
        path = self.root / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path


def is_bundle(path: str | Path) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def load_bundle(path: str | Path) -> Bundle:
    """Read ``BUNDLE/manifest.json``; errors name the file."""
    root = Path(path)
    manifest = root / MANIFEST_NAME
    try:
        return Bundle.from_dict(json.loads(manifest.read_text()), root)
    except FileNotFoundError:
        raise NotFound(f"{manifest}: no bundle manifest; export one with `ddnn export-onnx`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{manifest}: not a ddnn ONNX bundle manifest ({exc})") from None
