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

import contextlib
import os
import re
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

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
    if kind is NotFound and "no available versions" in message:
        kind = NotReady  # a known model that is not loaded (yet, or any more: Triton is stopping)
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
    """A model's input and output as Triton reports them (asked once per model, then cached)."""

    input: str
    datatype: str
    shape: tuple[int, ...]  # with -1 for the batch dimension
    output: str
    output_datatype: str = "FP32"
    output_shape: tuple[int, ...] = ()  # per sample

    @property
    def output_item_bytes(self) -> int:
        return int(np.prod(self.output_shape, dtype=np.int64)) * triton_to_np_dtype(self.output_datatype)().itemsize


def _model_io(model: str, metadata) -> ModelIO:
    if len(metadata.inputs) != 1 or len(metadata.outputs) != 1:
        raise InvalidInput(f"Triton model {model!r} has {len(metadata.inputs)} inputs and {len(metadata.outputs)} "
                           "outputs; ddnn cloud models have one of each")
    inp, out = metadata.inputs[0], metadata.outputs[0]
    return ModelIO(inp.name, inp.datatype, tuple(int(d) for d in inp.shape), out.name, out.datatype,
                   tuple(int(d) for d in out.shape[1:]))


_ALIGN = 64
_MIN_REGION = 1 << 20


@dataclass
class _Region:
    """One system shared-memory region, registered with Triton: a call's input, then its output."""

    name: str  # Triton's name for it and the file under /dev/shm; Triton's key is "/" + name
    shm: SharedMemory
    size: int

    @staticmethod
    def output_offset(input_bytes: int) -> int:
        return -(-input_bytes // _ALIGN) * _ALIGN


class _RegionPool:
    """Free regions for calls in flight; a call takes one (or a new one is made) and gives it back."""

    def __init__(self):
        self.prefix = f"ddnn_triton_client_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._free: list[_Region] = []
        self._all: dict[str, _Region] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _unlink_all, self._all)

    def take(self) -> _Region | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give_back(self, region: _Region) -> None:
        with self._lock:
            if region.name in self._all:
                self._free.append(region)

    def create(self, need: int) -> _Region:
        with self._lock:
            self._count += 1
            name = f"{self.prefix}_{self._count}"
        size = max(_MIN_REGION, 1 << (need - 1).bit_length())
        region = _Region(name, SharedMemory(name, create=True, size=size), size)
        with self._lock:
            self._all[name] = region
        return region

    def drop(self, region: _Region) -> None:
        with self._lock:
            self._all.pop(region.name, None)
        _unlink(region)

    def regions(self) -> list[_Region]:
        with self._lock:
            return list(self._all.values())


def _unlink(region: _Region) -> None:
    with contextlib.suppress(OSError, BufferError):
        region.shm.close()
    with contextlib.suppress(OSError):
        region.shm.unlink()


def _unlink_all(regions: dict[str, _Region]) -> None:
    for region in list(regions.values()):
        _unlink(region)
    regions.clear()


class _Base:
    def __init__(self, url: str, timeout_s: float, max_message_bytes: int, shared_memory: bool):
        self.url = url.removeprefix("grpc://")
        self.timeout_s = timeout_s
        self.max_message_bytes = max_message_bytes
        self.shared_memory = shared_memory
        self._io: dict[str, ModelIO] = {}
        self._pool = _RegionPool() if shared_memory else None

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

    def _shm_request(self, io: ModelIO, array: np.ndarray, datatype: str, region: _Region):
        """Copy the array into ``region``; inputs and outputs that point Triton at it."""
        np.ndarray(array.shape, array.dtype, buffer=region.shm.buf)[...] = array
        inp = grpcclient.InferInput(io.input, list(array.shape), datatype)
        inp.set_shared_memory(region.name, array.nbytes)
        out = grpcclient.InferRequestedOutput(io.output)
        out.set_shared_memory(region.name, len(array) * io.output_item_bytes,
                              offset=_Region.output_offset(array.nbytes))
        return [inp], [out]

    @staticmethod
    def _shm_result(io: ModelIO, n: int, input_bytes: int, region: _Region) -> np.ndarray:
        dtype = triton_to_np_dtype(io.output_datatype)
        return np.ndarray((n, *io.output_shape), dtype, buffer=region.shm.buf,
                          offset=_Region.output_offset(input_bytes)).copy()

    @staticmethod
    def _region_need(io: ModelIO, array: np.ndarray) -> int:
        return _Region.output_offset(array.nbytes) + len(array) * io.output_item_bytes

    def _shm_unusable(self, exc: InferenceServerException) -> NotReady:
        return NotReady(f"Triton at {self.url} cannot map this client's shared memory ({exc.message()}); it must "
                        "run on the same host and see the same /dev/shm, or use shared_memory=False")

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
            return self._infer_shm(model, io, array, deadline)
        inputs = self._request(model, io, array)
        try:
            result = self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    def _infer_shm(self, model: str, io: ModelIO, array, deadline: float) -> np.ndarray:
        array, datatype = self._check(model, array)
        need = self._region_need(io, array)
        region = self._pool.take()
        if region is not None and region.size < need:
            self._drop(region)
            region = None
        if region is None:
            region = self._new_region(need, deadline)
        done = False
        try:
            inputs, outputs = self._shm_request(io, array, datatype, region)
            try:
                self._client.infer(model, inputs, outputs=outputs,
                                   client_timeout=self._timeout(deadline - time.monotonic()))
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from None
            result = self._shm_result(io, len(array), array.nbytes, region)
            done = True
            return result
        finally:
            if done:
                self._pool.give_back(region)
            else:  # after a failure (a missed deadline above all) Triton may still write into it
                self._drop(region)

    def _new_region(self, need: int, deadline: float) -> _Region:
        region = self._pool.create(need)
        try:
            self._client.register_system_shared_memory(region.name, "/" + region.name, region.size,
                                                       client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            self._pool.drop(region)
            if (exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                raise map_triton_error(exc) from None
            raise self._shm_unusable(exc) from None
        return region

    def _drop(self, region: _Region) -> None:
        with contextlib.suppress(InferenceServerException):
            self._client.unregister_system_shared_memory(region.name, client_timeout=5.0)
        self._pool.drop(region)

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
            for region in self._pool.regions():
                self._drop(region)
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
            return await self._infer_shm(model, io, array, deadline)
        inputs = self._request(model, io, array)
        try:
            result = await self._client.infer(model, inputs, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            raise map_triton_error(exc, model) from None
        return np.array(result.as_numpy(io.output))

    async def _infer_shm(self, model: str, io: ModelIO, array, deadline: float) -> np.ndarray:
        array, datatype = self._check(model, array)
        need = self._region_need(io, array)
        region = self._pool.take()
        if region is not None and region.size < need:
            await self._drop(region)
            region = None
        if region is None:
            region = await self._new_region(need, deadline)
        done = False
        try:
            inputs, outputs = self._shm_request(io, array, datatype, region)
            try:
                await self._client.infer(model, inputs, outputs=outputs,
                                         client_timeout=self._timeout(deadline - time.monotonic()))
            except InferenceServerException as exc:
                raise map_triton_error(exc, model) from None
            result = self._shm_result(io, len(array), array.nbytes, region)
            done = True
            return result
        finally:
            if done:
                self._pool.give_back(region)
            else:  # Triton may still write into it after a failure; never reuse it
                await self._drop(region)

    async def _new_region(self, need: int, deadline: float) -> _Region:
        region = self._pool.create(need)
        try:
            await self._client.register_system_shared_memory(
                region.name, "/" + region.name, region.size, client_timeout=self._timeout(deadline - time.monotonic()))
        except InferenceServerException as exc:
            self._pool.drop(region)
            if (exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                raise map_triton_error(exc) from None
            raise self._shm_unusable(exc) from None
        return region

    async def _drop(self, region: _Region) -> None:
        with contextlib.suppress(InferenceServerException):
            await self._client.unregister_system_shared_memory(region.name, client_timeout=5.0)
        self._pool.drop(region)

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
            for region in self._pool.regions():
                await self._drop(region)
        await self._client.close()

    async def __aenter__(self) -> AsyncTritonClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
