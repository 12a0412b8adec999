"""Exported models: ONNX bundles (edge and cloud graphs) that serve without torch.

:mod:`ddnn.export.bundle` reads a bundle (no torch, no onnx); :mod:`ddnn.export.onnx` writes one
from a checkpoint (torch); :mod:`ddnn.export.quantize` adds int8 edge graphs (onnxruntime).
"""
