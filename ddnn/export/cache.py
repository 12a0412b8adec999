"""The bundle an engine runs for a checkpoint: the one shipped beside it, else exported into the cache."""

from __future__ import annotations

import logging
from pathlib import Path

from ddnn.export.bundle import Bundle, is_bundle, load_bundle
from ddnn.paths import cache_dir

log = logging.getLogger(__name__)


def bundle_path(checkpoint_path: str | Path) -> Path:
    """Where a checkpoint's bundle is shipped: ``models/x.pt`` -> ``models/x.bundle/``."""
    return Path(checkpoint_path).with_suffix(".bundle")


def file_precision(precision: str) -> str:
    """Which graph files a precision runs: int8 its own, fp32 and bf16 (a runtime hint) the fp32 ones."""
    return "int8" if precision == "int8" else "fp32"


def _usable(root: Path, sha256: str, precision: str) -> Bundle | None:
    if not is_bundle(root):
        return None
    try:
        bundle = load_bundle(root)
    except ValueError:
        return None
    if bundle.checkpoint_sha256 != sha256 or bundle.principal_sha256:
        return None
    if not all(file_precision(precision) in g.files for g in bundle.edges.values()):
        return None
    return bundle


def bundle_for(checkpoint, precision: str = "fp32", data: str | Path | None = None) -> Bundle:
    """A bundle of ``checkpoint`` with graphs for ``precision``: the shipped one (``x.bundle`` beside
    ``x.pt``) if it matches the checkpoint, else one exported (and, for int8, quantized on the
    checkpoint's training data, see :mod:`ddnn.export.quantize`) into the cache directory."""
    candidates = [bundle_path(checkpoint.path)] if checkpoint.path else []
    cached = cache_dir() / "bundles" / checkpoint.sha256[:16]
    for root in [*candidates, cached]:
        bundle = _usable(root, checkpoint.sha256, precision)
        if bundle is not None:
            return bundle
    from ddnn.export.onnx import export_bundle

    bundle = _usable(cached, checkpoint.sha256, "fp32")
    if bundle is None:
        log.info("exporting %s to %s", checkpoint.path, cached)
        bundle = export_bundle(checkpoint, cached)
    if file_precision(precision) == "int8":
        from ddnn.export.quantize import quantize_bundle

        bundle = quantize_bundle(bundle, checkpoint, data)
    return bundle
