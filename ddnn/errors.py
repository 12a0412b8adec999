"""Domain errors of the core library. Services map these to gRPC status codes in one place.

Also raised by the library: ``ddnn.data.DatasetError`` and ``ddnn.checkpoint.CheckpointError``.
"""


class InvalidInput(ValueError):
    """A request or tensor is malformed (wrong dtype, shape, size, non-finite values...)."""


class NotFound(LookupError):
    """A named thing (exit, split point, model) does not exist."""


class NotReady(RuntimeError):
    """A dependency (cloud, Triton) is not reachable or not ready yet."""


class Overloaded(RuntimeError):
    """A bounded queue is full; the caller should back off."""


class PolicyError(ValueError):
    """A policy file or policy parameters are invalid."""
