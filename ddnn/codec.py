"""Tensor codecs for the edge->cloud link: fp32, fp16, per-sample affine int8, raw uint8 pixels.

Pure numpy, no protobuf: :class:`Encoded` carries exactly the fields of ``ddnn.v1.Tensor``, and
the services copy them across. Decoding validates everything a peer could get wrong and raises
:class:`~ddnn.errors.InvalidInput` naming the problem.

int8 uses one scale and zero point **per sample** (not per batch), so a sample's decoded
features never depend on which other samples shared its batch: offline evaluation and the
distributed system see the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from ddnn.data.arrays import IMAGE_BYTES
from ddnn.errors import InvalidInput


class Payload(str, Enum):
    """How offloaded samples travel to the cloud (``--payload``; ``ddnn.v1.Tensor`` says which on the wire)."""

    FP32 = "fp32"  # float32 features
    FP16 = "fp16"  # float16 features
    INT8 = "int8"  # per-sample affine int8 features
    RAW = "raw"  # the uint8 input image (a split at the input, or the aux/principal arrangement)

    def __str__(self) -> str:  # the flag value, in messages, metrics labels and reports
        return self.value


PAYLOADS = tuple(p.value for p in Payload)  # the flag values, in the enum's order
# ddnn.v1.DType / Encoding numbers (kept in sync with protos/ddnn/v1/tensor.proto).
DTYPE_CODES = {"float32": 1, "float16": 2, "int8": 3, "uint8": 4}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}
ENC_RAW, ENC_AFFINE_INT8 = 1, 2


@dataclass
class Encoded:
    """The wire form of a tensor (mirrors ``ddnn.v1.Tensor``)."""

    dtype: int
    shape: tuple[int, ...]
    data: bytes
    encoding: int = ENC_RAW
    scale: list[float] = field(default_factory=list)
    zero_point: list[int] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        """Bytes of payload on the wire (data plus per-sample scale/zero point)."""
        return len(self.data) + 8 * len(self.scale)


def encode(array: np.ndarray, payload: str) -> Encoded:
    """Encode a batch (first dimension = samples) as ``fp32``, ``fp16``, ``int8`` or ``raw`` (uint8)."""
    a = np.asarray(array)
    if payload == Payload.FP32:
        return Encoded(DTYPE_CODES["float32"], a.shape, np.ascontiguousarray(a, "<f4").tobytes())
    if payload == Payload.FP16:
        return Encoded(DTYPE_CODES["float16"], a.shape, np.ascontiguousarray(a, "<f2").tobytes())
    if payload == Payload.RAW:
        if a.dtype != np.uint8:
            raise InvalidInput(f"raw payload needs uint8 pixels, got {a.dtype}")
        return Encoded(DTYPE_CODES["uint8"], a.shape, np.ascontiguousarray(a).tobytes())
    if payload == Payload.INT8:
        flat = a.reshape(len(a), -1).astype(np.float32)
        # The range always includes 0 (exact for ReLU features, which start at 0), which keeps
        # the zero point inside int8 and makes constant samples exact.
        lo, hi = np.minimum(flat.min(axis=1), 0), np.maximum(flat.max(axis=1), 0)
        scale = np.maximum(hi - lo, 1e-30).astype(np.float32) / np.float32(255.0)
        # zero_point maps lo to -128: q = round(x / scale) + zp
        zp = np.clip(np.round(-128.0 - lo / scale), -128, 127).astype(np.int64)
        q = np.clip(np.round(flat / scale[:, None]) + zp[:, None], -128, 127).astype(np.int8)
        return Encoded(DTYPE_CODES["int8"], a.shape, q.tobytes(), ENC_AFFINE_INT8,
                       scale.tolist(), zp.astype(np.int32).tolist())
    raise InvalidInput(f"unknown payload {payload!r}; choose one of {', '.join(PAYLOADS)}")


def decode(t: Encoded, expect_shape: tuple[int, ...] | None = None, max_batch: int | None = None) -> np.ndarray:
    """Decode to float32 (features) or uint8 (raw pixels), validating dtype, shape and size.

    ``expect_shape`` is the per-sample shape (without the batch dimension).
    """
    name = DTYPE_NAMES.get(t.dtype)
    if name is None:
        raise InvalidInput(f"tensor dtype {t.dtype} is not one of {sorted(DTYPE_NAMES)} "
                           "(float32, float16, int8, uint8)")
    shape = tuple(int(s) for s in t.shape)
    if not shape or any(s < 0 for s in shape):
        raise InvalidInput(f"tensor shape {list(shape)} is invalid (needs a batch dimension, no negative sizes)")
    if shape[0] == 0:
        raise InvalidInput("empty batch: tensor shape has 0 samples")
    if max_batch is not None and shape[0] > max_batch:
        raise InvalidInput(f"batch of {shape[0]} samples exceeds the limit of {max_batch}")
    if expect_shape is not None and shape[1:] != tuple(expect_shape):
        raise InvalidInput(f"tensor shape {list(shape)} does not match [N, {', '.join(map(str, expect_shape))}]")
    itemsize = np.dtype(name).itemsize
    count = int(np.prod(shape))
    if len(t.data) != count * itemsize:
        raise InvalidInput(f"tensor data has {len(t.data)} bytes, shape {list(shape)} of {name} "
                           f"needs {count * itemsize}")
    arr = np.frombuffer(t.data, dtype=np.dtype(name).newbyteorder("<")).reshape(shape)
    if t.encoding == ENC_AFFINE_INT8:
        if name != "int8":
            raise InvalidInput(f"affine int8 encoding needs dtype int8, got {name}")
        if len(t.scale) != shape[0] or len(t.zero_point) != shape[0]:
            raise InvalidInput(f"affine int8 needs one scale and zero point per sample: {shape[0]} samples, "
                               f"{len(t.scale)} scales, {len(t.zero_point)} zero points")
        scale = np.asarray(t.scale, np.float32)
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            raise InvalidInput("affine int8 scales must be finite and positive")
        zp = np.asarray(t.zero_point, np.float32)
        if not np.all(np.isfinite(zp)):
            raise InvalidInput("affine int8 zero points must be finite")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, as the client's error
            out = (arr.reshape(shape[0], -1).astype(np.float32) - zp[:, None]) * scale[:, None]
        if not np.all(np.isfinite(out)):
            raise InvalidInput("affine int8 scale/zero point dequantize to values beyond float32 (NaN/Inf)")
        return out.reshape(shape)
    if t.encoding not in (ENC_RAW, 0):
        raise InvalidInput(f"unknown tensor encoding {t.encoding}")
    if name == "uint8":
        return arr
    if name == "int8":
        raise InvalidInput("int8 tensors need ENCODING_AFFINE_INT8 with scales")
    out = arr.astype(np.float32)
    if not np.all(np.isfinite(out)):
        bad = int(np.count_nonzero(~np.isfinite(out)))
        raise InvalidInput(f"tensor holds {bad} NaN/Inf value(s)")
    return out


def payload_bytes(feature_shape: tuple[int, ...], payload: str) -> int:
    """Bytes one sample puts on the wire for a payload kind (raw = the uint8 input image, whatever the shape)."""
    n = int(np.prod(feature_shape))
    return {Payload.FP32: 4 * n, Payload.FP16: 2 * n, Payload.INT8: n + 8, Payload.RAW: IMAGE_BYTES}[Payload(payload)]
