"""Where a checkpoint's training images are, and repository-relative paths for what the repo ships.

Used by calibration (the validation split) and by int8 quantization (calibration images from the
training part), which sit in different layers; both need the same answer.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ddnn.data.errors import DatasetError
from ddnn.paths import REPO_ROOT, default_train_root

if TYPE_CHECKING:
    from ddnn.checkpoint import Checkpoint

log = logging.getLogger(__name__)


def repo_relative(path: str | Path) -> str:
    """``path`` relative to the repository root when it lies in or beside the repository (so
    files the repo ships stay portable), else as given."""
    p = Path(path)
    if p.is_absolute() and p.resolve().is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(p, REPO_ROOT)
    return str(p)


def _existing(path: Path) -> Path | None:
    for candidate in (path, REPO_ROOT / path):
        if candidate.exists():
            return candidate
    return None


def training_source(checkpoint: Checkpoint, data: str | Path | None = None) -> Path:
    """Where the checkpoint's training images are: ``data`` if given, else the recorded source,
    else ``ddnn.paths.default_train_root()``; DatasetError naming the path otherwise."""
    if data is not None:
        if not Path(data).exists():
            raise DatasetError(data, "--data path does not exist")
        return Path(data)
    recorded = (checkpoint.meta.get("data") or {}).get("source")
    found = _existing(Path(recorded)) if recorded else None
    if found:
        return found
    default = default_train_root()
    if default is not None and default.exists():
        if recorded:
            log.info("recorded training data %s not found; using %s", recorded, default)
        return default
    where = recorded or default or "(no training data recorded)"
    raise DatasetError(where, "the checkpoint's training data (needed for its validation split) is not available; "
                       "pass --data PATH (the training set it was trained on) or set DDNN_TRAIN_DATA")
