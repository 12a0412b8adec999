"""The engine interface: run the edge part (images -> logits per exit, features) or the cloud part.

An engine is a backend (``torch``, ``onnxruntime``, ``openvino``) at a precision (``fp32``,
``int8``, ``bf16``); it is named ``backend`` for fp32 and ``backend-precision`` otherwise
(``onnxruntime-int8``). Exit thresholds depend on the logits, so a policy records the engine it
was calibrated with (:func:`policy_engine`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Backend(str, Enum):
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


# Precisions each backend runs: int8 is the bundle's QDQ edge graph; bf16 is OpenVINO's inference
# precision hint on the fp32 graph (CPUs with AVX512-BF16 or AMX).
PRECISIONS = {Backend.TORCH: ("fp32",), Backend.ONNXRUNTIME: ("fp32", "int8"),
              Backend.OPENVINO: ("fp32", "int8", "bf16")}
ENGINE_NAMES = tuple(b.value if p == "fp32" else f"{b.value}-{p}" for b, ps in PRECISIONS.items() for p in ps)


@dataclass(frozen=True)
class EngineSpec:
    """Which engine runs a model part: backend, precision and CPU threads (0 = the runtime's default)."""

    backend: Backend = Backend.TORCH
    precision: str = "fp32"
    threads: int = 0

    def __post_init__(self):
        object.__setattr__(self, "backend", Backend(self.backend))
        if self.precision not in PRECISIONS[self.backend]:
            raise ValueError(f"engine {self.backend.value} runs precisions {list(PRECISIONS[self.backend])}, "
                             f"not {self.precision!r}")
        if self.threads < 0:
            raise ValueError(f"engine threads must be >= 0, got {self.threads}")

    @property
    def name(self) -> str:
        return self.backend.value if self.precision == "fp32" else f"{self.backend.value}-{self.precision}"

    @classmethod
    def parse(cls, text: str, threads: int = 0) -> EngineSpec:
        """``torch``, ``onnxruntime``, ``onnxruntime-int8``, ``openvino-bf16``, ..."""
        if text not in ENGINE_NAMES:
            raise ValueError(f"unknown engine {text!r}; choose one of {', '.join(ENGINE_NAMES)}")
        backend, _, precision = text.partition("-")
        return cls(Backend(backend), precision or "fp32", threads)

    def to_dict(self) -> dict:
        return {"backend": self.backend.value, "precision": self.precision}


TORCH_FP32 = EngineSpec()


def policy_engine(meta: dict) -> EngineSpec:
    """The engine a policy was calibrated for (its ``meta.engine``); policies from before engines
    existed were calibrated with torch fp32."""
    e = (meta or {}).get("engine")
    if not e:
        return TORCH_FP32
    return EngineSpec(Backend(e["backend"]), e.get("precision", "fp32"))


class EdgePartEngine(abc.ABC):
    """Runs the edge part on uint8 NHWC images: the logits of every exit and the offloaded payload.

    Attributes:
        exits: the exits it computes, in depth order.
        split: the split point its features feed (``input`` when the raw images are offloaded).
        offload: ``features`` or ``input``.
        feature_shape: per-sample shape of what is offloaded.
    """

    exits: tuple[str, ...]
    split: str
    offload: str
    feature_shape: tuple[int, ...]
    spec: EngineSpec

    @abc.abstractmethod
    def run(self, images: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """float32 logits per exit (N x classes) and the payload (features, or ``images`` itself)."""


class CloudPartEngine(abc.ABC):
    """Runs the cloud part of one split point: features (or uint8 pixels) -> final float32 logits."""

    split: str
    input_dtype: str
    input_shape: tuple[int, ...]
    spec: EngineSpec

    @abc.abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Final logits (N x classes) for a batch of features or pixels."""

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Alias of :meth:`run` (the name the cloud backends call)."""
        return self.run(x)
