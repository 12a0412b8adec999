"""Conversions between ``ddnn.v1.Tensor`` and the library's codec/arrays."""

from __future__ import annotations

import numpy as np

from ddnn.codec import Encoded, Payload, encode
from ddnn.pb.ddnn.v1 import tensor_pb2


def to_proto(enc: Encoded) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=enc.dtype, shape=list(enc.shape), data=enc.data, encoding=enc.encoding,
                             scale=enc.scale, zero_point=enc.zero_point)


def from_proto(t: tensor_pb2.Tensor) -> Encoded:
    return Encoded(t.dtype, tuple(t.shape), t.data, t.encoding, list(t.scale), list(t.zero_point))


def images_to_proto(images: np.ndarray) -> tensor_pb2.Tensor:
    """uint8 pixels, shape (N, *ddnn.data.IMAGE_SHAPE), as a raw tensor."""
    return to_proto(encode(images, Payload.RAW))
