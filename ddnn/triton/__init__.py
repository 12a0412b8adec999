"""Triton for the cloud segment: model-repository export, the Python-backend model, a launcher, a client.

Importing ``ddnn.triton`` needs no server and no tritonclient. The launcher and the client live in
``ddnn.triton.server`` and ``ddnn.triton.client`` (they need the ``serve`` extra).
"""

from ddnn.triton.repository import (
    FEATURES_INPUT,
    INPUT_SPLIT,
    LOGITS_OUTPUT,
    MANIFEST_NAME,
    PIXELS_INPUT,
    ExportOptions,
    RepositoryManifest,
    TensorSpec,
    TritonModelInfo,
    default_splits,
    export_repository,
    load_manifest,
)

__all__ = [
    "FEATURES_INPUT",
    "INPUT_SPLIT",
    "LOGITS_OUTPUT",
    "MANIFEST_NAME",
    "PIXELS_INPUT",
    "ExportOptions",
    "RepositoryManifest",
    "TensorSpec",
    "TritonModelInfo",
    "default_splits",
    "export_repository",
    "load_manifest",
]
