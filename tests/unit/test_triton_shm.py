"""The client's shared-memory lifecycle, driven against a fake Triton: reuse, and release after failures."""

import asyncio
from pathlib import Path

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from ddnn.errors import NotReady
from ddnn.triton.client import TritonDeadlineExceeded, map_triton_error
from ddnn.triton.shm import (
    Infer,
    ModelIO,
    Region,
    RegionPool,
    Register,
    Unregister,
    drive,
    drive_async,
    infer_steps,
    release_all,
)

IO = ModelIO("x", "FP32", (-1, 4), "logits", "FP32", (2,))


class FakeTriton:
    """Records the calls; an Infer writes each row's sum into both logits, unless told to fail."""

    def __init__(self, fail_infer: InferenceServerException | BaseException | None = None,
                 fail_register: InferenceServerException | None = None):
        self.calls: list[str] = []
        self.fail_infer, self.fail_register = fail_infer, fail_register
        self.array: np.ndarray | None = None
        self.region: Region | None = None

    def __call__(self, step):
        self.calls.append(type(step).__name__)
        if isinstance(step, Register):
            if self.fail_register:
                raise self.fail_register
            self.region = step.region
        elif isinstance(step, Infer):
            if self.fail_infer:
                raise self.fail_infer
            out = np.repeat(self.array.sum(axis=1, keepdims=True), 2, axis=1)
            offset = Region.output_offset(self.array.nbytes)
            np.ndarray(out.shape, np.float32, buffer=self.region.shm.buf, offset=offset)[...] = out
        else:
            assert isinstance(step, Unregister)


def call(pool: RegionPool, triton: FakeTriton, array: np.ndarray):
    triton.array = array
    return drive(infer_steps(pool, "m", IO, array, "FP32", "fake:1", map_triton_error), triton)


def test_a_region_is_registered_once_and_reused():
    pool, triton = RegionPool(), FakeTriton()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert np.array_equal(call(pool, triton, x), [[6, 6], [22, 22], [38, 38]])
    assert np.array_equal(call(pool, triton, x[:1]), [[6, 6]])
    assert triton.calls == ["Register", "Infer", "Infer"]
    drive(release_all(pool), triton)
    assert triton.calls[-1] == "Unregister" and not pool.regions()


def test_a_failed_call_unregisters_and_removes_its_region():
    late = InferenceServerException("deadline", status="StatusCode.DEADLINE_EXCEEDED")
    pool, triton = RegionPool(), FakeTriton(fail_infer=late)
    with pytest.raises(TritonDeadlineExceeded, match="Triton model 'm'"):
        call(pool, triton, np.ones((2, 4), np.float32))
    assert triton.calls == ["Register", "Infer", "Unregister"]
    assert not pool.regions() and not Path("/dev/shm", triton.region.name).exists()


def test_a_region_triton_cannot_map_is_named():
    refused = InferenceServerException("cannot open", status="StatusCode.INTERNAL")
    pool = RegionPool()
    with pytest.raises(NotReady, match="cannot map this client's shared memory"):
        call(pool, FakeTriton(fail_register=refused), np.ones((2, 4), np.float32))
    assert not pool.regions()


def test_a_cancelled_async_call_still_releases_its_region():
    pool, triton = RegionPool(), FakeTriton(fail_infer=asyncio.CancelledError())
    triton.array = np.ones((2, 4), np.float32)

    async def step(s):
        triton(s)

    steps = infer_steps(pool, "m", IO, triton.array, "FP32", "fake:1", map_triton_error)
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(drive_async(steps, step))
    assert triton.calls == ["Register", "Infer", "Unregister"] and not pool.regions()
