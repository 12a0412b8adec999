"""System shared memory between a client and Triton: the regions, and one lifecycle for a call.

A call through shared memory takes a free region (or makes and registers a bigger one), writes
its input there, has Triton write the output behind it, and gives the region back; after any
failure (a missed deadline above all) Triton may still write into the region, so it is
unregistered and removed instead. :func:`infer_steps` is that lifecycle written once, as a
generator that *yields* each Triton call it needs (:class:`Register`, :class:`Infer`,
:class:`Unregister`) and is *sent* the result or *thrown* the exception; the blocking and the
asyncio client each drive it with their own tritonclient (:func:`drive`, :func:`drive_async`).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import weakref
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from ddnn.errors import NotReady
from ddnn.triton.cleanup import client_shm_prefix

ALIGN = 64  # the output starts on a cache-line boundary after the input
MIN_REGION = 1 << 20  # regions grow in powers of two from 1 MiB, so a few sizes serve every batch
# Unregistering is cleanup after the call's own deadline may have passed: it gets its own.
UNREGISTER_TIMEOUT_S = 5.0


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


@dataclass
class Region:
    """One system shared-memory region, registered with Triton: a call's input, then its output."""

    name: str  # Triton's name for it and the file under /dev/shm; Triton's key is "/" + name
    shm: SharedMemory
    size: int

    @staticmethod
    def output_offset(input_bytes: int) -> int:
        return -(-input_bytes // ALIGN) * ALIGN


class RegionPool:
    """Free regions for calls in flight; a call takes one (or a new one is made) and gives it back.
    Thread-safe; whatever is left is removed when the pool is collected or the interpreter exits."""

    def __init__(self):
        self.prefix = client_shm_prefix(uuid.uuid4().hex[:8])
        self._free: list[Region] = []
        self._all: dict[str, Region] = {}
        self._count = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _unlink_all, self._all)

    def take(self) -> Region | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give_back(self, region: Region) -> None:
        with self._lock:
            if region.name in self._all:
                self._free.append(region)

    def create(self, need: int) -> Region:
        with self._lock:
            self._count += 1
            name = f"{self.prefix}_{self._count}"
        size = max(MIN_REGION, 1 << (need - 1).bit_length())
        region = Region(name, SharedMemory(name, create=True, size=size), size)
        with self._lock:
            self._all[name] = region
        return region

    def drop(self, region: Region) -> None:
        with self._lock:
            self._all.pop(region.name, None)
        _unlink(region)

    def regions(self) -> list[Region]:
        with self._lock:
            return list(self._all.values())


def _unlink(region: Region) -> None:
    with contextlib.suppress(OSError, BufferError):
        region.shm.close()
    with contextlib.suppress(OSError):
        region.shm.unlink()


def _unlink_all(regions: dict[str, Region]) -> None:
    for region in list(regions.values()):
        _unlink(region)
    regions.clear()


# -- the Triton calls the lifecycle asks its driver to make ---------------------------------------

@dataclass(frozen=True)
class Register:
    region: Region


@dataclass(frozen=True)
class Unregister:
    region: Region


@dataclass(frozen=True)
class Infer:
    model: str
    inputs: list
    outputs: list


Step = Register | Unregister | Infer
T = TypeVar("T")


def _request(io: ModelIO, array: np.ndarray, datatype: str, region: Region) -> tuple[list, list]:
    """Copy the array into ``region``; inputs and outputs that point Triton at it."""
    np.ndarray(array.shape, array.dtype, buffer=region.shm.buf)[...] = array
    inp = grpcclient.InferInput(io.input, list(array.shape), datatype)
    inp.set_shared_memory(region.name, array.nbytes)
    out = grpcclient.InferRequestedOutput(io.output)
    out.set_shared_memory(region.name, len(array) * io.output_item_bytes, offset=Region.output_offset(array.nbytes))
    return [inp], [out]


def _result(io: ModelIO, n: int, input_bytes: int, region: Region) -> np.ndarray:
    dtype = triton_to_np_dtype(io.output_datatype)
    return np.ndarray((n, *io.output_shape), dtype, buffer=region.shm.buf,
                      offset=Region.output_offset(input_bytes)).copy()


def release(pool: RegionPool, region: Region) -> Generator[Step, Any, None]:
    """Unregister ``region`` from Triton (if it still answers) and remove it."""
    with contextlib.suppress(InferenceServerException):
        yield Unregister(region)
    pool.drop(region)


def release_all(pool: RegionPool) -> Generator[Step, Any, None]:
    for region in pool.regions():
        yield from release(pool, region)


def infer_steps(pool: RegionPool, model: str, io: ModelIO, array: np.ndarray, datatype: str, url: str,
                map_error: Callable[..., Exception]) -> Generator[Step, Any, np.ndarray]:
    """One call through shared memory; returns the output array (see the module docstring).

    ``map_error(exc, model=None)`` turns a tritonclient exception into ddnn's domain error.
    """
    need = Region.output_offset(array.nbytes) + len(array) * io.output_item_bytes
    region = pool.take()
    if region is not None and region.size < need:
        yield from release(pool, region)
        region = None
    if region is None:
        region = pool.create(need)
        try:
            yield Register(region)
        except InferenceServerException as exc:
            pool.drop(region)
            if (exc.status() or "").endswith(("UNAVAILABLE", "DEADLINE_EXCEEDED")):
                raise map_error(exc) from None
            raise NotReady(f"Triton at {url} cannot map this client's shared memory ({exc.message()}); it must "
                           "run on the same host and see the same /dev/shm, or use shared_memory=False") from None
    done = False
    try:
        inputs, outputs = _request(io, array, datatype, region)
        try:
            yield Infer(model, inputs, outputs)
        except InferenceServerException as exc:
            raise map_error(exc, model) from None
        result = _result(io, len(array), array.nbytes, region)
        done = True
        return result
    finally:
        if done:
            pool.give_back(region)
        else:  # after a failure (a missed deadline above all) Triton may still write into it
            yield from release(pool, region)


def drive(steps: Generator[Step, Any, T], call: Callable[[Step], Any]) -> T:
    """Run a lifecycle with a blocking ``call`` for each step."""
    try:
        step = next(steps)
        while True:
            try:
                result = call(step)
            except BaseException as exc:  # the lifecycle decides; a KeyboardInterrupt still drops the region
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value


async def drive_async(steps: Generator[Step, Any, T], call: Callable[[Step], Awaitable[Any]]) -> T:
    """Run a lifecycle with an awaitable ``call`` for each step (a cancelled call still releases)."""
    try:
        step = next(steps)
        while True:
            try:
                result = await call(step)
            except BaseException as exc:
                step = steps.throw(exc)
            else:
                step = steps.send(result)
    except StopIteration as stop:
        return stop.value
