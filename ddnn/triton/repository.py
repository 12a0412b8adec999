"""Export a checkpoint's cloud parts as a standard Triton model repository, and read it back.

Layout (one Triton model per split point; see docs/triton.md)::

    REPO/
      repository.json                 # manifest: checkpoint sha256, split -> model, names, shapes, dtypes
      <stem>-<split>/config.pbtxt     # backend "python", explicit I/O, max_batch_size, dynamic batching
      <stem>-<split>/1/model.py       # ddnn/triton/backend_model.py, verbatim
      <stem>-<split>/1/cloud.pt       # the cloud part's state dict + the spec to rebuild it

Split ``input`` is the whole network from raw uint8 pixels (raw-input offload, principal networks);
``blockN`` continues from the features after block N. Export is deterministic (same checkpoint and
options, same bytes) and idempotent (unchanged files are not rewritten).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ddnn.checkpoint import Checkpoint, load_checkpoint
from ddnn.errors import InvalidInput, NotFound
from ddnn.models import ModelSpec, cloud_part, exit_block
from ddnn.triton.runtime import cloud_weights_bytes

MANIFEST_NAME = "repository.json"
MANIFEST_FORMAT = "ddnn.triton-repository/v1"
INPUT_SPLIT = "input"
FEATURES_INPUT = "FEATURES"
PIXELS_INPUT = "PIXELS"
LOGITS_OUTPUT = "LOGITS"
WEIGHTS_FILE = "cloud.pt"
MODEL_VERSION = 1
KINDS = ("cpu", "gpu")
# numpy dtype name -> (Triton wire datatype, config.pbtxt data_type)
DATATYPES = {"float32": ("FP32", "TYPE_FP32"), "uint8": ("UINT8", "TYPE_UINT8")}

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
        torch_threads: torch intra-op threads per instance; 0 = usable cores / instances.
        name: model-name prefix; default the checkpoint file's stem.
    """

    max_batch_size: int = 256
    kind: str = "cpu"
    instances: int = 1
    max_queue_delay_us: int = 100
    preferred_batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    torch_threads: int = 0
    name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {KINDS}, got {self.kind!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch_size}")
        if self.instances < 1:
            raise ValueError(f"--instances must be >= 1, got {self.instances}")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"--max-queue-delay-us must be >= 0, got {self.max_queue_delay_us}")
        if self.torch_threads < 0:
            raise ValueError(f"--torch-threads must be >= 0, got {self.torch_threads}")
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


def render_config(info: TritonModelInfo, options: ExportOptions) -> str:
    """config.pbtxt for one model, in Triton's text protobuf format, with the why in comments."""
    dims = lambda shape: ", ".join(str(d) for d in shape)  # noqa: E731
    kind = "KIND_GPU" if options.kind == "gpu" else "KIND_CPU"
    preferred = dims(options.batch_sizes)
    lines = [
        f"# Generated by `ddnn export-triton` (split {info.split!r}); re-export instead of editing.",
        f'name: "{info.model}"',
        'backend: "python"',
        f"max_batch_size: {info.max_batch_size}",
        "input [",
        "  {",
        f'    name: "{info.input.name}"',
        f"    data_type: {DATATYPES[info.input.dtype][1]}",
        f"    dims: [ {dims(info.input.shape)} ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{info.output.name}"',
        f"    data_type: {DATATYPES[info.output.dtype][1]}",
        f"    dims: [ {dims(info.output.shape)} ]",
        "  }",
        "]",
        "# Requests from several edge streams are merged into one forward pass. Batches of the edge's",
        "# batch size (and multiples) go at once; anything else waits at most max_queue_delay for company.",
        "# The delay is kept small: on CPU a busy instance already lets the queue fill, and when the",
        "# instance is idle every microsecond of waiting is added to the edge's latency.",
        "dynamic_batching {",
        *([f"  preferred_batch_size: [ {preferred} ]"] if preferred else []),
        f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {options.instances}",
        f"    kind: {kind}",
        "  }",
        "]",
        "parameters [",
        f'  {{ key: "weights" value: {{ string_value: "{WEIGHTS_FILE}" }} }},',
        "  # torch intra-op threads per instance; 0 = usable cores / instances.",
        f'  {{ key: "torch_threads" value: {{ string_value: "{options.torch_threads}" }} }},',
        '  { key: "require_finite" value: { string_value: "true" } }',
        "]",
    ]
    return "\n".join(lines) + "\n"


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


def export_repository(checkpoint: str | Path | Checkpoint, out: str | Path, splits: list[str] | None = None,
                      options: ExportOptions | None = None) -> RepositoryManifest:
    """Export one Triton model per split point of ``checkpoint`` into the repository ``out``.

    Args:
        checkpoint: a checkpoint path or a loaded :class:`~ddnn.checkpoint.Checkpoint`.
        out: repository directory (created if needed). Models a previous export listed in its
            manifest but not exported now are removed; other directories are left alone.
        splits: split point names (``blockN`` or ``input``); default: every early exit and ``input``.
        options: model configuration; see :class:`ExportOptions`.

    Returns:
        The manifest written to ``out/repository.json``.
    """
    options = options or ExportOptions()
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    ck.model.eval()
    spec = ck.spec
    splits = list(dict.fromkeys(splits or default_splits(spec)))
    if not splits:
        raise InvalidInput("no split points to export")
    positions = {s: split_position(s, spec) for s in splits}
    prefix = options.name or _sanitize(Path(ck.path).stem if ck.path else spec.label)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        previous = load_manifest(out)
    except (NotFound, ValueError):
        previous = None

    models: dict[str, TritonModelInfo] = {}
    model_source = _BACKEND_MODEL.read_bytes()
    for split, pos in positions.items():
        cloud = cloud_part(ck.model, pos)
        weights = cloud_weights_bytes(cloud, spec, split, ck.classes, ck.sha256)
        in_dtype = "uint8" if pos == 0 else "float32"
        info = TritonModelInfo(
            model=model_name(prefix, split), split=split, position=pos,
            input=TensorSpec(PIXELS_INPUT if pos == 0 else FEATURES_INPUT, in_dtype, tuple(cloud.input_shape)),
            output=TensorSpec(LOGITS_OUTPUT, "float32", (spec.num_classes,)),
            max_batch_size=options.max_batch_size, weights_sha256=hashlib.sha256(weights).hexdigest())
        model_dir = out / info.model
        version_dir = model_dir / str(info.version)
        _write_if_changed(model_dir / "config.pbtxt", render_config(info, options).encode())
        _write_if_changed(version_dir / "model.py", model_source)
        _write_if_changed(version_dir / WEIGHTS_FILE, weights)
        models[split] = info

    if previous is not None:
        keep = {m.model for m in models.values()}
        for stale in set(previous.model_names) - keep:
            if (out / stale / "config.pbtxt").is_file():
                shutil.rmtree(out / stale)

    export = asdict(options)
    export["preferred_batch_sizes"] = list(options.batch_sizes)
    export["name"] = prefix
    manifest = RepositoryManifest(ck.sha256, Path(ck.path).name if ck.path else "", spec.to_dict(), tuple(ck.classes),
                                  export, models)
    _write_if_changed(out / MANIFEST_NAME, (json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n").encode())
    return manifest
