"""Conversions between the protobuf messages and the library's codec, arrays and outcomes.

protoc's ``.pyi`` stubs type an enum field as the enum's own ``int`` subclass, though protobuf takes
any int with a valid number; the casts here say that the library's numbers are those numbers
(``ddnn.codec``'s dtype and encoding codes, :class:`~ddnn.outcome.Outcome`, which
``tests/unit/test_outcome.py`` pins to ``ddnn.v1.Outcome``).
"""

from __future__ import annotations

from typing import cast

import numpy as np

from ddnn.codec import Encoded, Payload, encode
from ddnn.outcome import Outcome
from ddnn.pb.ddnn.v1 import edge_pb2, tensor_pb2


def to_proto(enc: Encoded) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(dtype=cast(tensor_pb2.DType, enc.dtype), shape=list(enc.shape), data=enc.data,
                             encoding=cast(tensor_pb2.Encoding, enc.encoding), scale=enc.scale,
                             zero_point=enc.zero_point)


def outcome_to_proto(outcome: Outcome) -> edge_pb2.Outcome:
    """An outcome as the ``ddnn.v1.Outcome`` of the same number (no client-only outcome goes on the wire)."""
    return cast(edge_pb2.Outcome, outcome)


def from_proto(t: tensor_pb2.Tensor) -> Encoded:
    return Encoded(t.dtype, tuple(t.shape), t.data, t.encoding, list(t.scale), list(t.zero_point))


def images_to_proto(images: np.ndarray) -> tensor_pb2.Tensor:
    """uint8 pixels, shape (N, *ddnn.data.IMAGE_SHAPE), as a raw tensor."""
    return to_proto(encode(images, Payload.RAW))
