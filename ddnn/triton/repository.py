"""Export a checkpoint's cloud parts as a standard Triton model repository, and read it back.

Layout (one Triton model per split point; see docs/triton.md)::

    REPO/
      repository.json                 # manifest: checkpoint sha256, split -> model, names, shapes, dtypes
      <stem>-<split>/config.pbtxt     # backend "python" (or platform "onnxruntime_onnx"), explicit I/O,
                                      # max_batch_size, dynamic batching
      <stem>-<split>/1/model.onnx     # the cloud part as ONNX (the bundle's cloud graph, I/O named as below)
      <stem>-<split>/1/model.py       # platform python: ddnn/triton/backend_model.py, verbatim (ONNX Runtime)

Split ``input`` is the whole network from raw uint8 pixels (raw-input offload, principal networks);
``blockN`` continues from the features after block N. The graphs come from the checkpoint's ONNX
bundle (:mod:`ddnn.export`); nothing in the repository needs torch. ``platform="onnxruntime"``
writes the native ``onnxruntime_onnx`` configuration a full Triton (the NGC container) serves
(TensorRT accelerator for GPU instances); the nvidia-pytriton wheel ships only the Python backend,
so that one is checked against Triton's configuration schema in the tests, not run here. Export
is deterministic (same graphs and options, same bytes) and idempotent (unchanged files are not
rewritten).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ddnn.errors import InvalidInput, NotFound
from ddnn.export.bundle import Bundle, is_bundle, load_bundle
from ddnn.models.spec import ModelSpec, exit_block
from ddnn.triton.model_config import DATATYPES, LOGITS_OUTPUT, WEIGHTS_FILE, render_config, triton_graph

if TYPE_CHECKING:
    from ddnn.checkpoint import Checkpoint

MANIFEST_NAME = "repository.json"
MANIFEST_FORMAT = "ddnn.triton-repository/v1"
INPUT_SPLIT = "input"
FEATURES_INPUT = "FEATURES"
PIXELS_INPUT = "PIXELS"
MODEL_VERSION = 1
KINDS = ("cpu", "gpu")
PLATFORMS = ("python", "onnxruntime")
# numpy dtype name -> (Triton wire datatype, config.pbtxt data_type)

_BACKEND_MODEL = Path(__file__).with_name("backend_model.py")


@dataclass(frozen=True)
class ExportOptions:
    """How the exported models are configured (recorded in the manifest).

    Attributes:
        max_batch_size: largest batch (samples) one execution may take; Triton rejects larger requests.
        kind: ``cpu`` (KIND_CPU instances) or ``gpu`` (KIND_GPU; the model runs on the instance's GPU).
        instances: model instances per model (each a stub process).
        max_queue_delay_us: how long the dynamic batcher may hold a request to merge it with others.
        preferred_batch_sizes: batch sizes dispatched at once, without waiting the queue delay.
        threads: ONNX Runtime intra-op threads per instance; 0 = usable cores / instances.
        name: model-name prefix; default the checkpoint file's stem.
        platform: ``python`` (the Python backend running ONNX Runtime: what the pytriton wheel
            serves) or ``onnxruntime`` (Triton's native onnxruntime_onnx backend, full Triton only).
    """

    max_batch_size: int = 256
    kind: str = "cpu"
    instances: int = 1
    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    threads: int = 0
    name: str | None = None
    platform: str = "python"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {KINDS}, got {self.kind!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise ValueError(f"--instances must be >= 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if self.threads < 0:
            raise ValueError(f"--threads must be >= 0, got {self.threads}")
        if self.platform not in PLATFORMS:
            raise ValueError(f"--platform must be one of {PLATFORMS}, got {self.platform!r}")
        if any(b < 1 for b in self.preferred_batch_sizes):
            raise ValueError(f"preferred batch sizes must be >= 1, got {list(self.preferred_batch_sizes)}")
        if self.name is not None and not _NAME_OK.fullmatch(self.name):
            raise ValueError(f"model name prefix {self.name!r} may only use letters, digits, '.', '_' and '-'")

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Preferred sizes that fit under max_batch_size, ascending, without duplicates."""
        return tuple(sorted({b for b in self.preferred_batch_sizes if b <= self.max_batch_size}))


_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, numpy dtype, Triton datatype and per-sample shape."""

    name: str
    dtype: str  # numpy dtype name: float32, uint8
    shape: tuple[int, ...]

    @property
    def datatype(self) -> str:
        """Triton wire datatype (``FP32``, ``UINT8``): what a client puts in an InferInput."""
        return DATATYPES[self.dtype][0]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "datatype": self.datatype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(d["name"], d["dtype"], tuple(int(x) for x in d["shape"]))


@dataclass(frozen=True)
class TritonModelInfo:
    """The Triton model serving one split point."""

    model: str  # Triton model name
    split: str  # "input" or an exit name such as "block7"
    position: int  # block index the cloud part starts from (0 = raw pixels)
    input: TensorSpec
    output: TensorSpec
    max_batch_size: int
    version: int = MODEL_VERSION
    weights_sha256: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "split": self.split, "position": self.position, "input": self.input.to_dict(),
                "output": self.output.to_dict(), "max_batch_size": self.max_batch_size, "version": self.version,
                "weights_sha256": self.weights_sha256}

    @classmethod
    def from_dict(cls, d: dict) -> TritonModelInfo:
        return cls(d["model"], d["split"], int(d["position"]), TensorSpec.from_dict(d["input"]),
                   TensorSpec.from_dict(d["output"]), int(d["max_batch_size"]), int(d.get("version", MODEL_VERSION)),
                   d.get("weights_sha256", ""))


@dataclass
class RepositoryManifest:
    """``repository.json``: which checkpoint the repository serves and which model serves each split."""

    checkpoint_sha256: str
    checkpoint_file: str
    spec: dict
    classes: tuple[str, ...]
    options: dict
    models: dict[str, TritonModelInfo] = field(default_factory=dict)  # split -> model
    format: str = MANIFEST_FORMAT

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.models)

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.model for m in self.models.values())

    def model_for(self, split: str) -> TritonModelInfo:
        """The Triton model for a split point name; NotFound names the splits that exist."""
        try:
            return self.models[split]
        except KeyError:
            raise NotFound(f"no Triton model for split point {split!r}; this repository serves "
                           f"{list(self.models)}") from None

    def to_dict(self) -> dict:
        return {"format": self.format,
                "checkpoint": {"file": self.checkpoint_file, "sha256": self.checkpoint_sha256, "spec": self.spec,
                               "classes": list(self.classes)},
                "export": self.options,
                "models": {split: info.to_dict() for split, info in self.models.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> RepositoryManifest:
        if d.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"manifest format {d.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        ck = d["checkpoint"]
        models = {split: TritonModelInfo.from_dict(m) for split, m in d["models"].items()}
        return cls(ck["sha256"], ck["file"], ck["spec"], tuple(ck["classes"]), d.get("export", {}), models)


def load_manifest(repository: str | Path) -> RepositoryManifest:
    """Read ``REPO/repository.json``; errors name the file."""
    path = Path(repository) / MANIFEST_NAME
    try:
        return RepositoryManifest.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise NotFound(f"{path}: no manifest; export the repository with `ddnn export-triton`") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a ddnn repository manifest ({exc})") from None


def default_splits(spec: ModelSpec) -> tuple[str, ...]:
    """Every early exit of the checkpoint, then ``input`` (the whole network from raw pixels)."""
    return (*spec.exit_names[:-1], INPUT_SPLIT)


def split_position(split: str, spec: ModelSpec) -> int:
    """Block index a split point starts the cloud part from (``input`` = 0)."""
    if split == INPUT_SPLIT:
        return 0
    try:
        pos = exit_block(split, spec.num_blocks)
    except ValueError:
        pos = -1
    if split == "final" or not 1 <= pos < spec.num_blocks:
        raise NotFound(f"unknown split point {split!r}: expected 'input' or blockN with 1 <= N < "
                       f"{spec.num_blocks} (this checkpoint's exits: {list(spec.exit_names[:-1])})")
    return pos


def model_name(prefix: str, split: str) -> str:
    return f"{prefix}-{split}"


def _write_if_changed(path: Path, data: bytes) -> bool:
    """Write atomically, and only when the content differs (a polling Triton sees no spurious change)."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def _sanitize(stem: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    return name or "ddnn"


def _source(source) -> tuple[Bundle, Checkpoint | None]:
    """(bundle, checkpoint or None) for a bundle directory, a checkpoint path or a loaded checkpoint."""
    if isinstance(source, Bundle):
        return source, None
    if isinstance(source, (str, Path)) and is_bundle(source):
        return load_bundle(source), None
    if isinstance(source, (str, Path)) and is_bundle(Path(source).with_suffix(".bundle")):
        return load_bundle(Path(source).with_suffix(".bundle")), None  # the shipped bundle: no torch needed
    from ddnn.checkpoint import Checkpoint, load_checkpoint
    from ddnn.export.cache import bundle_for

    ck = source if isinstance(source, Checkpoint) else load_checkpoint(source)
    return bundle_for(ck), ck


def _cloud_onnx(bundle: Bundle, ck, split: str, pos: int) -> bytes:
    """The cloud graph of a split: the bundle's, or (a block without an exit) exported from the checkpoint."""
    if split in bundle.clouds:
        return bundle.cloud_file(split).read_bytes()
    if ck is None:
        raise NotFound(f"bundle {bundle.root} has no cloud graph for split {split!r} (it has {list(bundle.clouds)}); "
                       "export the repository from the checkpoint instead")
    import tempfile

    from ddnn.export.onnx import export_cloud_graph

    with tempfile.TemporaryDirectory() as tmp:
        graph = export_cloud_graph(ck, split, pos, Path(tmp))
        return (Path(tmp) / graph.file).read_bytes()


def export_repository(checkpoint, out: str | Path, splits: list[str] | None = None,
                      options: ExportOptions | None = None) -> RepositoryManifest:
    """Export one Triton model per split point into the repository ``out``.

    Args:
        checkpoint: an ONNX bundle (directory or :class:`~ddnn.export.bundle.Bundle`), or a checkpoint
            path or loaded :class:`~ddnn.checkpoint.Checkpoint` (its bundle: the shipped one beside it,
            else exported with torch into the cache).
        out: repository directory (created if needed). Models a previous export listed in its
            manifest but not exported now are removed; other directories are left alone.
        splits: split point names (``blockN`` or ``input``); default: every early exit and ``input``.
        options: model configuration; see :class:`ExportOptions`.

    Returns:
        The manifest written to ``out/repository.json``.
    """
    options = options or ExportOptions()
    bundle, ck = _source(checkpoint)
    spec = ModelSpec.from_dict(bundle.spec)
    splits = list(dict.fromkeys(splits or default_splits(spec)))
    if not splits:
        raise InvalidInput("no split points to export")
    positions = {s: split_position(s, spec) for s in splits}
    stem = Path(ck.path).stem if ck is not None and ck.path else Path(bundle.checkpoint_file).stem
    prefix = options.name or _sanitize(stem or spec.label)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        previous = load_manifest(out)
    except (NotFound, ValueError):
        previous = None

    models: dict[str, TritonModelInfo] = {}
    model_source = _BACKEND_MODEL.read_bytes()
    for split, pos in positions.items():
        in_dtype = "uint8" if pos == 0 else "float32"
        in_shape = tuple(bundle.image_shape) if pos == 0 else tuple(spec_shape(bundle, ck, split, pos))
        in_name = PIXELS_INPUT if pos == 0 else FEATURES_INPUT
        graph = triton_graph(_cloud_onnx(bundle, ck, split, pos), in_name)
        info = TritonModelInfo(
            model=model_name(prefix, split), split=split, position=pos,
            input=TensorSpec(in_name, in_dtype, in_shape),
            output=TensorSpec(LOGITS_OUTPUT, "float32", (spec.num_classes,)),
            max_batch_size=options.max_batch_size, weights_sha256=hashlib.sha256(graph).hexdigest())
        model_dir = out / info.model
        version_dir = model_dir / str(info.version)
        _write_if_changed(model_dir / "config.pbtxt", render_config(info, options).encode())
        if options.platform == "python":
            _write_if_changed(version_dir / "model.py", model_source)
        elif (version_dir / "model.py").is_file():
            (version_dir / "model.py").unlink()
        _write_if_changed(version_dir / WEIGHTS_FILE, graph)
        models[split] = info

    if previous is not None:
        keep = {m.model for m in models.values()}
        for stale in set(previous.model_names) - keep:
            if (out / stale / "config.pbtxt").is_file():
                shutil.rmtree(out / stale)

    export = asdict(options)
    export["preferred_batch_sizes"] = list(options.batch_sizes)
    export["name"] = prefix
    manifest = RepositoryManifest(bundle.checkpoint_sha256, bundle.checkpoint_file, spec.to_dict(),
                                  tuple(bundle.classes), export, models)
    _write_if_changed(out / MANIFEST_NAME, (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return manifest


def spec_shape(bundle: Bundle, ck, split: str, pos: int) -> tuple[int, ...]:
    """Per-sample feature shape at a split: from the bundle, else from the checkpoint's model."""
    if split in bundle.clouds:
        return bundle.cloud(split).input_shape
    return tuple(ck.model.shapes[pos])
