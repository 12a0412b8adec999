"""A thin client for the exported models: one batch in, logits out, Triton errors as ddnn's domain errors.

``TritonClient`` (blocking) and ``AsyncTritonClient`` (asyncio; construct it inside the running
loop) wrap ``tritonclient.grpc`` and ``tritonclient.grpc.aio`` with explicit message-size limits,
keepalive and a deadline on every call. Errors map to :mod:`ddnn.errors` so a service turns them
into gRPC status codes in one place:

=======================  ==========================  ===========================
Triton status            raised                      typical cause
=======================  ==========================  ===========================
INVALID_ARGUMENT         InvalidInput                wrong dtype/shape, empty, NaN, batch > max
NOT_FOUND                NotFound                    unknown model
UNAVAILABLE              NotReady                    server down, model not loaded
DEADLINE_EXCEEDED        TritonDeadlineExceeded      the call's deadline passed (a NotReady)
RESOURCE_EXHAUSTED       Overloaded                  Triton's queue is full
anything else            TritonInternalError         a bug; Triton's log has the traceback
=======================  ==========================  ===========================
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from ddnn.errors import InvalidInput, NotFound, NotReady, Overloaded

DEFAULT_TIMEOUT_S = 10.0
# The largest request the cloud sends: 256 block4 feature maps (64x16x16 fp32) = 16 MiB.
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20
DEFAULT_KEEPALIVE_S = 30.0


class TritonDeadlineExceeded(NotReady, TimeoutError):
    """A Triton call did not finish within its deadline (map to DEADLINE_EXCEEDED where you can)."""


class TritonInternalError(RuntimeError):
    """Triton or the model failed in a way the caller cannot fix (INTERNAL); see Triton's log."""


_REQUEST_ID = re.compile(r"^\[request id: [^\]]*\]\s*")


def map_triton_error(exc: InferenceServerException, model: str | None = None) -> Exception:
    """The ddnn domain error for a tritonclient exception (see the module docstring)."""
    status = (exc.status() or "").removeprefix("StatusCode.")
    message = _REQUEST_ID.sub("", exc.message() or str(exc))
    where = f"Triton model {model!r}: " if model else "Triton: "
    kind = {"INVALID_ARGUMENT": InvalidInput, "NOT_FOUND": NotFound, "UNAVAILABLE": NotReady,
            "CANCELLED": NotReady, "DEADLINE_EXCEEDED": TritonDeadlineExceeded,
            "RESOURCE_EXHAUSTED": Overloaded}.get(status, TritonInternalError)
    return kind(f"{where}{message}" + (f" [{status}]" if status else ""))


def channel_args(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 keepalive_s: float | None = DEFAULT_KEEPALIVE_S) -> list[tuple[str, int]]:
    """gRPC channel options: message limits both ways and keepalive pings on the long-lived channel.

    Pings every ``keepalive_s`` even between calls, so a dead cloud→Triton connection is noticed
    before a request needs it. The Triton side must accept them (``ddnn.triton.server`` passes
    ``--grpc-keepalive-permit-without-calls=true --grpc-http2-min-recv-ping-interval-without-data=10000
    --grpc-http2-max-pings-without-data=0``; a Triton deployed elsewhere needs the same flags,
    or ``keepalive_s=None``).
    """
    args = [("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes))]
    if keepalive_s:
        args += [("grpc.keepalive_time_ms", int(keepalive_s * 1000)), ("grpc.keepalive_timeout_ms", 10_000),
                 ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
    return args


@dataclass(frozen=True)
class ModelIO:
    """A model's input and output names as Triton reports them (cached per model)."""

    input: str
    datatype: str
    shape: tuple[int, ...]  # with -1 for the batch dimension
    output: str


def _model_io(model: str, metadata) -> ModelIO:
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise InvalidInput(f"Triton model {model!r} has {len(metadata.inputs)} inputs and {len(metadata.outputs)} "
                           "outputs; ddnn cloud models have one of each")
    inp, out = metadata.inputs[0], metadata.outputs[0]
    return ModelIO(inp.name, inp.datatype, tuple(int(d) for d in inp.shape), out.name)


class _Base:
    def __init__(self, url: str, timeout_s: float, max_message_bytes: int):
        self.url = url.removeprefix("grpc://")
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self._io: dict[str, ModelIO] = {}

    def _request(self, model: str, io: ModelIO, array) -> list:
        array = np.asarray(array)
        datatype = np_to_triton_dtype(array.dtype)
        if datatype is None or array.dtype.kind not in "biuf":
            raise InvalidInput(f"Triton model {model!r}: unsupported dtype {array.dtype}")
        if array.ndim == 0:
            raise InvalidInput(f"Triton model {model!r}: expected a batch [N, ...], got a scalar")
        if array.shape[0] == 0:  # Triton's own answer to this is a confusing byte-size mismatch
            raise InvalidInput(f"Triton model {model!r}: empty batch (N = 0)")
        if array.nbytes > self.max_message_bytes:
            raise InvalidInput(f"Triton model {model!r}: request of {array.nbytes} bytes exceeds the message "
                               f"size limit of {self.max_message_bytes} bytes; send smaller batches")
        # The array's own dtype and shape are sent as they are: Triton checks them against the model.
        inp = grpcclient.InferInput(io.input, list(array.shape), datatype)
        inp.set_data_from_numpy(np.ascontiguousarray(array))
        return [inp]

    def _timeout(self, timeout_s: float | None) -> float:
        t = self.timeout_s if timeout_s is None else timeout_s
        if t <= 0:
            raise TritonDeadlineExceeded(f"deadline already passed before calling Triton at {self.url}")
        return t


class TritonClient(_Base):
    """Blocking client. ``infer(model, batch) -> logits``; every call has a deadline.

    Args:
        url: Triton's gRPC address, ``host:port``.
        timeout_s: default deadline per call (override per call with ``timeout_s=``).
        max_message_bytes: gRPC message limit for requests and responses.
        keepalive_s: keepalive ping period on the channel; None for gRPC's default (off).
    """

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_s: float | None = DEFAULT_KEEPALIVE_S):
        super().__init__(url, timeout_s, max_message_bytes)
        self._client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args(max_message_bytes,
                                                                                             keepalive_s))

    def model_io(self, model: str, timeout_s: float | None = None) -> ModelIO:
        """Input/output names of ``model`` (asked once, then cached). NotFound for an unknown model."""
        io = self._io.get(model)
        if io is None:
            try:
                meta = self._client.get_model_metadata(model, client_timeout=self._timeout(timeout_s))
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from None
            io = self._io[model] = _model_io(model, meta)
        return io

    def infer(self, model: str, array: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """Run one batch (``[N, ...]``, the model's dtype) through ``model``; returns float32 logits ``[N, C]``."""
        deadline = time.monotonic() + self._timeout(timeout_s)
        io = self.model_io(model, timeout_s)
        inputs = self._request(model, io, array)
        try:
            result = self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    def is_ready(self, models: list[str] | tuple[str, ...] = (), timeout_s: float = 2.0) -> bool:
        """True when the server and every model in ``models`` are ready; False if unreachable."""
        try:
            return bool(self._client.is_server_ready(client_timeout=timeout_s)) and all(
                self._client.is_model_ready(m, client_timeout=timeout_s) for m in models)
        except InferenceServerException:
            return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncTritonClient(_Base):
    """asyncio twin of :class:`TritonClient` (same arguments); create it inside the running event loop."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_s: float | None = DEFAULT_KEEPALIVE_S):
        super().__init__(url, timeout_s, max_message_bytes)
        self._client = aioclient.InferenceServerClient(self.url, channel_args=channel_args(max_message_bytes,
                                                                                            keepalive_s))

    async def model_io(self, model: str, timeout_s: float | None = None) -> ModelIO:
        io = self._io.get(model)
        if io is None:
            try:
                meta = await self._client.get_model_metadata(model, client_timeout=self._timeout(timeout_s))
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from None
            io = self._io[model] = _model_io(model, meta)
        return io

    async def infer(self, model: str, array: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        deadline = time.monotonic() + self._timeout(timeout_s)
        io = await self.model_io(model, timeout_s)
        inputs = self._request(model, io, array)
        try:
            result = await self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    async def is_ready(self, models: list[str] | tuple[str, ...] = (), timeout_s: float = 2.0) -> bool:
        try:
            if not await self._client.is_server_ready(client_timeout=timeout_s):
                return False
            for m in models:
                if not await self._client.is_model_ready(m, client_timeout=timeout_s):
                    return False
            return True
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
