"""int8 edge graphs: static post-training quantization (QDQ, per-channel) with onnxruntime.quantization.

Activation ranges are calibrated on images of the checkpoint's *training* split (the part that is
neither validation nor test): the validation split is what exit policies are then fitted on, and
the test split is only ever reported on. Only the edge graphs are quantized; the cloud stays fp32.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from ddnn.data import load_split, train_val_split
from ddnn.export.bundle import IMAGES_INPUT, Bundle, Precision

log = logging.getLogger(__name__)

DEFAULT_SAMPLES = 512
CALIBRATION_SEED = 0


class ImageReader(CalibrationDataReader):
    """Feeds uint8 image batches to the calibrator."""

    def __init__(self, images: np.ndarray, batch_size: int = 64):
        self.batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
        self.rewind()

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter({IMAGES_INPUT: b} for b in self.batches)


def calibration_images(checkpoint, data: str | Path | None = None, samples: int = DEFAULT_SAMPLES) -> tuple[
        np.ndarray, dict]:
    """``samples`` images drawn (stratified, seeded) from the checkpoint's training part of the
    training split, never from its validation split or from test data; and a record of which."""
    from ddnn.data.provenance import repo_relative, training_source

    d = checkpoint.meta.get("data") or {}
    source = training_source(checkpoint, data)
    arrays = load_split(source, "train")
    if arrays.split != "train":
        raise ValueError(f"{source}: int8 calibration reads training images only, got split {arrays.split!r}")
    train_idx, _ = train_val_split(arrays.labels, float(d.get("val_fraction", 0.1)), int(d.get("split_seed", 0)))
    rng = np.random.default_rng(CALIBRATION_SEED)
    pick = np.sort(rng.choice(train_idx, size=min(samples, len(train_idx)), replace=False))
    record = {"source": repo_relative(source), "split": "train", "exclude": "validation split", "samples": len(pick),
              "seed": CALIBRATION_SEED}
    return arrays.images[pick], record


def quantize_edge(src: Path, dst: Path, images: np.ndarray, method: str = "minmax") -> None:
    """Quantize one edge graph: weights int8 per channel, activations uint8... as QDQ pairs."""
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), ImageReader(images), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax,
                                          "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[method],
                        op_types_to_quantize=["Conv", "Gemm", "MatMul", "Add", "Relu", "GlobalAveragePool",
                                              "AveragePool"],
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})


def quantize_bundle(bundle: Bundle, checkpoint, data: str | Path | None = None, samples: int = DEFAULT_SAMPLES,
                    method: str = "minmax") -> Bundle:
    """Add ``edge-<split>.int8.onnx`` for every edge graph of ``bundle`` and record it in the manifest."""
    from ddnn.checkpoint import Checkpoint, load_checkpoint

    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    if ck.sha256 != bundle.checkpoint_sha256:
        raise ValueError(f"{bundle.root} was exported from checkpoint {bundle.checkpoint_sha256[:12]}, "
                         f"not {ck.sha256[:12]} ({ck.path})")
    images, record = calibration_images(ck, data, samples)
    for graph in bundle.edges.values():
        fp32 = bundle.root / graph.files[Precision.FP32.value]
        name = fp32.name.removesuffix(".onnx") + ".int8.onnx"
        quantize_edge(fp32, bundle.root / name, images, method)
        graph.files[Precision.INT8.value] = name
        log.info("quantized %s -> %s on %d training images", fp32.name, name, len(images))
    bundle.quantization = {"int8": {"method": f"static QDQ, per-channel int8 weights, uint8 activations, {method}",
                                    "tool": "onnxruntime.quantization", "calibration": record}}
    bundle.save()
    return bundle
