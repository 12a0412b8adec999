"""Checkpoints: weights plus everything needed to rebuild, audit and reproduce a model."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a checkpoint does: CheckpointError is imported by torch-free services
    import torch

    from ddnn.models import ModelSpec, MultiExitNet

CHECKPOINT_FORMAT = "ddnn.checkpoint/v1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or not a ddnn checkpoint."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode) and its recorded metadata."""

    model: MultiExitNet
    spec: ModelSpec
    classes: tuple[str, ...]
    meta: dict = field(default_factory=dict)
    path: str = ""
    sha256: str = ""

    @property
    def exit_names(self) -> tuple[str, ...]:
        return self.spec.exit_names


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, model: MultiExitNet, classes, **meta) -> Path:
    """Write a slim checkpoint (weights in fp32, no optimizer state) atomically."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().float() if v.is_floating_point() else v.detach().cpu()
             for k, v in model.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT, "spec": model.spec.to_dict(), "classes": list(classes),
               "state_dict": state, **meta}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint written by ``ddnn train``; errors name the file and the problem."""
    import torch

    from ddnn.models import ModelSpec, build_model

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        # TorchVersion: checkpoints written before meta stored the version as a plain string.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt files
        raise CheckpointError(path, f"not a readable torch checkpoint ({exc})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(path, f"format {got!r}, expected {CHECKPOINT_FORMAT!r}")
    try:
        spec = ModelSpec.from_dict(payload["spec"])
        model = build_model(spec)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(path, f"does not match its recorded architecture ({exc})") from None
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "spec", "classes", "format")}
    return Checkpoint(model, spec, tuple(payload["classes"]), meta, str(path), file_sha256(path))
