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
NOT_FOUND, no versions   NotReady                    model known but not loaded (startup, shutdown)
UNAVAILABLE              NotReady                    server down, model not ready
DEADLINE_EXCEEDED        TritonDeadlineExceeded      the call's deadline passed (a NotReady)
RESOURCE_EXHAUSTED       Overloaded                  Triton's queue is full
anything else            TritonInternalError         a bug; Triton's log has the traceback
=======================  ==========================  ===========================
"""

from __future__ import annotations

import re
import time

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from ddnn.errors import InvalidInput, NotFound, NotReady, Overloaded
from ddnn.triton.shm import (
    UNREGISTER_TIMEOUT_S,
    Infer,
    ModelIO,
    RegionPool,
    Register,
    Step,
    Unregister,
    drive,
    drive_async,
    infer_steps,
    release_all,
)

__all__ = ["DEFAULT_KEEPALIVE_S", "DEFAULT_MAX_MESSAGE_BYTES", "DEFAULT_TIMEOUT_S", "AsyncTritonClient", "ModelIO",
           "TritonClient", "TritonDeadlineExceeded", "TritonInternalError", "channel_args", "map_triton_error"]

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
    if kind is NotFound and "no available versions" in message:
        kind = NotReady  # a known model that is not loaded (yet, or any more: Triton is stopping)
    return kind(f"{where}{message}" + (f" [{status}]" if status else ""))


def channel_args(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 keepalive_s: float | None = DEFAULT_KEEPALIVE_S) -> list[tuple[str, int]]:
    """gRPC channel options: message limits both ways and keepalive pings on the long-lived channel.

    Pings every ``keepalive_s`` even between calls, so a dead cloud→Triton connection is noticed
    before a request needs it. The Triton side must accept them (``TritonServerConfig.flags`` in
    ``ddnn.triton.config`` passes ``--grpc-keepalive-permit-without-calls=true
    --grpc-http2-min-recv-ping-interval-without-data=10000 --grpc-http2-max-pings-without-data=0``;
    a Triton deployed elsewhere needs the same flags, or ``keepalive_s=None``).
    """
    args = [("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.max_receive_message_length", int(max_message_bytes))]
    if keepalive_s:
        args += [("grpc.keepalive_time_ms", int(keepalive_s * 1000)), ("grpc.keepalive_timeout_ms", 10_000),
                 ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0)]
    return args


def _model_io(model: str, metadata) -> ModelIO:
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise InvalidInput(f"Triton model {model!r} has {len(metadata.inputs)} inputs and {len(metadata.outputs)} "
                           "outputs; ddnn cloud models have one of each")
    inp, out = metadata.inputs[0], metadata.outputs[0]
    return ModelIO(inp.name, inp.datatype, tuple(int(d) for d in inp.shape), out.name, out.datatype,
                   tuple(int(d) for d in out.shape[1:]))


class _Base:
    def __init__(self, url: str, timeout_s: float, max_message_bytes: int, shared_memory: bool):
        self.url = url.removeprefix("grpc://")
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self.shared_memory = shared_memory
        self._io: dict[str, ModelIO] = {}
        self._pool = RegionPool() if shared_memory else None

    def _check(self, model: str, array) -> tuple[np.ndarray, str]:
        array = np.asarray(array)
        datatype = np_to_triton_dtype(array.dtype)
        if datatype is None or array.dtype.kind not in "biuf":
            raise InvalidInput(f"Triton model {model!r}: unsupported dtype {array.dtype}")
        if array.ndim == 0:
            raise InvalidInput(f"Triton model {model!r}: expected a batch [N, ...], got a scalar")
        if array.shape[0] == 0:  # Triton's own answer to this is a confusing byte-size mismatch
            raise InvalidInput(f"Triton model {model!r}: empty batch (N = 0)")
        if not self.shared_memory and array.nbytes > self.max_message_bytes:
            raise InvalidInput(f"Triton model {model!r}: request of {array.nbytes} bytes exceeds the message "
                               f"size limit of {self.max_message_bytes} bytes; send smaller batches")
        return array, datatype

    def _request(self, model: str, io: ModelIO, array) -> list:
        """Inputs carrying the array in the message. Its own dtype and shape are sent as they are:
        Triton checks them against the model."""
        array, datatype = self._check(model, array)
        inp = grpcclient.InferInput(io.input, list(array.shape), datatype)
        inp.set_data_from_numpy(np.ascontiguousarray(array))
        return [inp]

    def _timeout(self, timeout_s: float | None) -> float:
        t = self.timeout_s if timeout_s is None else timeout_s
        if t <= 0:
            raise TritonDeadlineExceeded(f"deadline already passed before calling Triton at {self.url}")
        return t


class TritonClient(_Base):
    """Blocking client. ``infer(model, batch) -> logits``; every call has a deadline. Thread-safe.

    Args:
        url: Triton's gRPC address, ``host:port``.
        timeout_s: default deadline per call (override per call with ``timeout_s=``).
        max_message_bytes: gRPC message limit for requests and responses.
        keepalive_s: keepalive ping period on the channel; None for gRPC's default (off).
        shared_memory: pass tensors through system shared memory registered with Triton instead
            of inside the gRPC messages (same host only; a 1 MiB batch costs ~1 ms instead of ~5).
    """

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_s: float | None = DEFAULT_KEEPALIVE_S,
                 shared_memory: bool = False):
        super().__init__(url, timeout_s, max_message_bytes, shared_memory)
        self._client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args(max_message_bytes,
                                                                                             keepalive_s))

    def model_io(self, model: str, timeout_s: float | None = None) -> ModelIO:
        """Input/output of ``model`` (asked once, then cached). NotFound for an unknown model."""
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
        if self._pool is not None:
            return self._infer_shm(self._pool, model, io, array, deadline)
        inputs = self._request(model, io, array)
        try:
            result = self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    def _infer_shm(self, pool: RegionPool, model: str, io: ModelIO, array, deadline: float) -> np.ndarray:
        array, datatype = self._check(model, array)
        steps = infer_steps(pool, model, io, array, datatype, self.url, map_triton_error)
        return drive(steps, lambda step: self._call(step, deadline))

    def _call(self, step: Step, deadline: float | None = None):
        """Make one Triton call the shared-memory lifecycle asks for."""
        if isinstance(step, Unregister):
            return self._client.unregister_system_shared_memory(step.region.name, client_timeout=UNREGISTER_TIMEOUT_S)
        timeout = self._timeout(deadline - time.monotonic() if deadline is not None else None)
        if isinstance(step, Register):
            return self._client.register_system_shared_memory(step.region.name, "/" + step.region.name,
                                                              step.region.size, client_timeout=timeout)
        assert isinstance(step, Infer)
        return self._client.infer(step.model, step.inputs, outputs=step.outputs, client_timeout=timeout)

    def is_ready(self, models: list[str] | tuple[str, ...] = (), timeout_s: float = 2.0) -> bool:
        """True when the server and every model in ``models`` are ready; False if unreachable."""
        try:
            return bool(self._client.is_server_ready(client_timeout=timeout_s)) and all(
                self._client.is_model_ready(m, client_timeout=timeout_s) for m in models)
        except InferenceServerException:
            return False

    def close(self) -> None:
        """Unregister and remove the shared-memory regions (if any), close the channel."""
        if self._pool is not None:
            drive(release_all(self._pool), self._call)
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AsyncTritonClient(_Base):
    """asyncio twin of :class:`TritonClient` (same arguments); create it inside the running event loop."""

    def __init__(self, url: str, *, timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, keepalive_s: float | None = DEFAULT_KEEPALIVE_S,
                 shared_memory: bool = False):
        super().__init__(url, timeout_s, max_message_bytes, shared_memory)
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
        if self._pool is not None:
            return await self._infer_shm(self._pool, model, io, array, deadline)
        inputs = self._request(model, io, array)
        try:
            result = await self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    async def _infer_shm(self, pool: RegionPool, model: str, io: ModelIO, array, deadline: float) -> np.ndarray:
        array, datatype = self._check(model, array)
        steps = infer_steps(pool, model, io, array, datatype, self.url, map_triton_error)
        return await drive_async(steps, lambda step: self._call(step, deadline))

    async def _call(self, step: Step, deadline: float | None = None):
        """Make one Triton call the shared-memory lifecycle asks for."""
        if isinstance(step, Unregister):
            return await self._client.unregister_system_shared_memory(step.region.name,
                                                                      client_timeout=UNREGISTER_TIMEOUT_S)
        timeout = self._timeout(deadline - time.monotonic() if deadline is not None else None)
        if isinstance(step, Register):
            return await self._client.register_system_shared_memory(step.region.name, "/" + step.region.name,
                                                                    step.region.size, client_timeout=timeout)
        assert isinstance(step, Infer)
        return await self._client.infer(step.model, step.inputs, outputs=step.outputs, client_timeout=timeout)

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
        if self._pool is not None:
            await drive_async(release_all(self._pool), self._call)
        await self._client.close()

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
