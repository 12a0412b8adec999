"""A real tritonserver (the nvidia-pytriton wheel's binary, Python backend) on ephemeral ports.

One server per module serves two exported repositories: a tiny checkpoint trained here in seconds
and the shipped ResNet-20 checkpoint. Triton's logits must equal the in-process CloudPart's.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.data import read_pack, to_tensor
from ddnn.errors import InvalidInput, NotFound, NotReady
from ddnn.models import cloud_part, split_at
from ddnn.paths import SHIPPED_CHECKPOINT, SHIPPED_TEST_PACK
from ddnn.training import TrainConfig, train
from ddnn.triton import ExportOptions, export_repository
from ddnn.triton.client import AsyncTritonClient, TritonClient, TritonDeadlineExceeded
from ddnn.triton.server import ExistingTriton, TritonServer, TritonStartupError, free_port, remove_stale_work_dirs
from tests.conftest import make_imagefolder

pytestmark = pytest.mark.integration

TINY_MAX_BATCH = 16


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    data = make_imagefolder(root / "data", classes=tuple(f"c{i}" for i in range(10)), per_class=6)
    cfg = TrainConfig(out=str(root / "tiny.pt"), data=str(data), depth=8, width=4, exits=(1,), epochs=1,
                      batch_size=16, device="cpu", val_fraction=0.25)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDNN_CACHE_DIR", str(root / "cache"))
        return train(cfg, progress=False)


@pytest.fixture(scope="module")
def repos(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("repos")
    tiny = export_repository(tiny_checkpoint, root / "tiny", ["block1", "input"],
                             ExportOptions(max_batch_size=TINY_MAX_BATCH))
    shipped = export_repository(SHIPPED_CHECKPOINT, root / "shipped")
    return {"tiny": (root / "tiny", tiny, tiny_checkpoint), "shipped": (root / "shipped", shipped, SHIPPED_CHECKPOINT)}


@pytest.fixture(scope="module")
def triton(repos):
    with TritonServer([repos["tiny"][0], repos["shipped"][0]], startup_timeout=240) as server:
        yield server


@pytest.fixture(scope="module")
def client(triton):
    with TritonClient(triton.url, timeout_s=30) as c:
        yield c


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """32 CIFAR-10 test images spread over the classes (random pixels if the pack is absent)."""
    if SHIPPED_TEST_PACK.is_file():
        return np.ascontiguousarray(read_pack(SHIPPED_TEST_PACK).images[::311][:32])
    return np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)


def cloud_input(ck, split: str, images: np.ndarray) -> np.ndarray:
    """What the edge would send for ``split``: raw pixels, or the features at the split's block."""
    if split == "input":
        return images
    with torch.inference_mode():
        return split_at(ck.model, split).edge(to_tensor(images))[1].numpy()


@pytest.mark.parametrize(("repo", "split"), [("tiny", "block1"), ("tiny", "input"), ("shipped", "block4"),
                                             ("shipped", "block7"), ("shipped", "input")])
def test_triton_logits_equal_the_in_process_cloud_part(repos, client, images, repo, split):
    _, manifest, path = repos[repo]
    ck = load_checkpoint(path)
    info = manifest.model_for(split)
    x = cloud_input(ck, split, images[: TINY_MAX_BATCH if repo == "tiny" else 32])
    with torch.inference_mode():
        expected = cloud_part(ck.model, info.position)(torch.from_numpy(x)).numpy()
    got = client.infer(info.model, x)
    assert got.dtype == np.float32 and got.shape == (len(x), 10)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_concurrent_requests_are_batched_and_answered_each_with_its_own_logits(repos, triton, images):
    _, manifest, path = repos["shipped"]
    info = manifest.model_for("block7")
    ck = load_checkpoint(path)
    feats = cloud_input(ck, "block7", images)
    sizes = [5, 1, 8, 3, 7, 2, 4, 2]
    parts = np.split(feats, np.cumsum(sizes)[:-1])
    with torch.inference_mode():
        expected = [cloud_part(ck.model, info.position)(torch.from_numpy(p)).numpy() for p in parts]

    async def burst():
        async with AsyncTritonClient(triton.url, timeout_s=30) as c:
            await c.infer(info.model, parts[0])  # metadata cached, model warm
            before = await c._client.get_inference_statistics(info.model)
            results = await asyncio.gather(*(c.infer(info.model, p) for p in parts))
            after = await c._client.get_inference_statistics(info.model)
            return results, before.model_stats[0], after.model_stats[0]

    results, before, after = asyncio.run(burst())
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    requests = after.inference_count - before.inference_count  # samples
    executions = after.execution_count - before.execution_count
    assert requests == sum(sizes)
    assert executions < len(parts), "dynamic batching should merge requests that queue up together"


def test_shared_memory_client_gives_the_same_logits_and_cleans_up(repos, triton, images):
    _, manifest, path = repos["shipped"]
    ck = load_checkpoint(path)
    with TritonClient(triton.url, timeout_s=30) as plain, \
            TritonClient(triton.url, timeout_s=30, shared_memory=True) as shm:
        for split in ("block7", "input"):
            x = cloud_input(ck, split, images)
            model = manifest.model_for(split).model
            np.testing.assert_array_equal(shm.infer(model, x), plain.infer(model, x))
            np.testing.assert_array_equal(shm.infer(model, x[:3]), plain.infer(model, x[:3]))  # region reused
        names = [r.name for r in shm._pool.regions()]
        assert len(names) == 1 and Path("/dev/shm", names[0]).exists()  # sequential calls share one region
        registered = shm._client.get_system_shared_memory_status(as_json=True).get("regions", {})
        assert set(names) <= set(registered)
        with pytest.raises(InvalidInput, match="FP64"):
            shm.infer(manifest.model_for("block7").model, cloud_input(ck, "block7", images).astype(np.float64))
        assert not shm._pool.regions() and not Path("/dev/shm", names[0]).exists()  # a failed call's region goes
        x = cloud_input(ck, "block7", images)
        np.testing.assert_array_equal(shm.infer(manifest.model_for("block7").model, x),
                                      plain.infer(manifest.model_for("block7").model, x))
        names += [r.name for r in shm._pool.regions()]
    assert not any(Path("/dev/shm", n).exists() for n in names)
    with TritonClient(triton.url) as other:
        registered = other._client.get_system_shared_memory_status(as_json=True).get("regions", {})
    assert not set(names) & set(registered)

    async def burst():  # concurrent calls each get a region of their own
        async with AsyncTritonClient(triton.url, timeout_s=30, shared_memory=True) as c:
            feats = cloud_input(ck, "block7", images)
            parts = np.split(feats, 8)
            got = await asyncio.gather(*(c.infer(manifest.model_for("block7").model, p) for p in parts))
            return feats, np.concatenate(got)

    feats, got = asyncio.run(burst())
    with torch.inference_mode():
        expected = cloud_part(ck.model, 7)(torch.from_numpy(feats)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_come_back_as_invalid_input(repos, client):
    model = repos["tiny"][1].model_for("block1").model
    shape = repos["tiny"][1].model_for("block1").input.shape
    good = np.zeros((2, *shape), np.float32)
    nan = good.copy()
    nan[1, 0, 0, 0] = np.nan
    cases = {
        "wrong dtype": (good.astype(np.float64), "FP64"),
        "wrong shape": (np.zeros((2, shape[0] + 1, *shape[1:]), np.float32), "unexpected shape"),
        "missing batch dim": (np.zeros(shape, np.float32), "unexpected shape"),
        "empty batch": (np.zeros((0, *shape), np.float32), "empty batch"),
        "batch over max": (np.zeros((TINY_MAX_BATCH + 1, *shape), np.float32), f"<= {TINY_MAX_BATCH}"),
        "NaN features": (nan, "NaN or Inf"),
    }
    for what, (array, words) in cases.items():
        with pytest.raises(InvalidInput, match=words) as err:
            client.infer(model, array)
        assert model in str(err.value), what
    pixels = repos["tiny"][1].model_for("input").model
    with pytest.raises(InvalidInput, match="FP32"):
        client.infer(pixels, np.zeros((2, 32, 32, 3), np.float32))
    assert client.infer(model, good).shape == (2, 10)  # the model keeps serving after bad requests


def test_unknown_model_is_not_found(client):
    with pytest.raises(NotFound, match="no-such-model"):
        client.infer("no-such-model", np.zeros((1, 4), np.float32))


def test_a_missed_deadline_is_reported(repos, client):
    model = repos["shipped"][1].model_for("input").model
    client.model_io(model)
    batch = np.zeros((256, 32, 32, 3), np.uint8)  # tens of ms of compute on CPU
    with pytest.raises(TritonDeadlineExceeded):
        client.infer(model, batch, timeout_s=0.001)


def test_async_client_and_readiness(repos, triton):
    tiny = repos["tiny"][1]

    async def run():
        async with AsyncTritonClient(triton.url) as c:
            assert await c.is_ready(list(tiny.model_names))
            assert not await c.is_ready(["no-such-model"])
            with pytest.raises(InvalidInput):
                await c.infer(tiny.model_for("input").model, np.zeros((1, 32, 32, 3), np.int64))
            return await c.infer(tiny.model_for("input").model, np.zeros((3, 32, 32, 3), np.uint8))

    assert asyncio.run(run()).shape == (3, 10)


def test_existing_server_is_used_without_launching(repos, triton):
    models = list(repos["tiny"][1].model_names)
    with ExistingTriton(triton.url, models=models, startup_timeout=5) as existing:
        assert TritonClient(existing.url).is_ready(models)
    assert triton.running  # leaving the context did not stop someone else's server
    with pytest.raises(TritonStartupError, match="server not ready"):
        ExistingTriton(f"127.0.0.1:{free_port()}", startup_timeout=1).start()


def test_metrics_endpoint_reports_inference_counts(triton, client, repos):
    client.infer(repos["tiny"][1].model_for("input").model, np.zeros((1, 32, 32, 3), np.uint8))
    with urllib.request.urlopen(triton.metrics_url, timeout=10) as r:
        text = r.read().decode()
    assert "nv_inference_count" in text and "nv_inference_queue_duration_us" in text


def test_stopped_server_answers_not_ready_and_leaves_nothing_behind(repos):
    repo, manifest, _ = repos["tiny"]
    model = manifest.model_for("input").model
    server = TritonServer(repo, models=[model], http_port=None, metrics_port=None, startup_timeout=120)
    with server:
        client = TritonClient(server.url, timeout_s=10)
        assert client.infer(model, np.zeros((1, 32, 32, 3), np.uint8)).shape == (1, 10)
        pid, prefix, work_dir = server.process.pid, server._shm_prefix, server._work_dir
        assert list(Path("/dev/shm").glob(f"{prefix}*"))  # the backend's shared memory, named by us
    assert server.process.returncode == 0  # SIGTERM: Triton drained and exited cleanly
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no stub process left in the server's process group
    assert not list(Path("/dev/shm").glob(f"{prefix}*"))
    assert not Path(work_dir).exists()
    assert client.is_ready() is False
    with pytest.raises(NotReady):
        client.infer(model, np.zeros((1, 32, 32, 3), np.uint8))
    client.close()


def test_startup_failure_names_the_problem_and_shows_the_log(repos, tmp_path):
    repo, manifest, _ = repos["tiny"]
    broken = tmp_path / "broken"
    name = manifest.model_for("input").model
    (broken / name / "1").mkdir(parents=True)
    (broken / name / "config.pbtxt").write_bytes((repo / name / "config.pbtxt").read_bytes())
    (broken / name / "1" / "model.py").write_bytes((repo / name / "1" / "model.py").read_bytes())
    (broken / name / "1" / "model.onnx").write_bytes(b"not an onnx file")
    server = TritonServer(broken, startup_timeout=120)
    with pytest.raises(TritonStartupError) as err:
        server.start()
    message = str(err.value)
    assert "exited with code" in message and "tritonserver log" in message
    assert name in err.value.log_tail and "model.onnx" in err.value.log_tail
    assert not server.running


def test_a_taken_port_fails_startup_naming_the_port(repos):
    import socket

    repo, manifest, _ = repos["tiny"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TritonServer(repo, models=[manifest.model_for("input").model], metrics_port=port)
        with pytest.raises(TritonStartupError, match=f"127.0.0.1:{port}' already in use"):
            server.start()  # a port given explicitly is not retried: it would stay taken
    assert not server.running


def test_stop_kills_a_server_that_ignores_sigterm(repos):
    repo, manifest, _ = repos["tiny"]
    model = manifest.model_for("input").model
    server = TritonServer(repo, models=[model], http_port=None, metrics_port=None, stop_grace=1).start()
    os.kill(server.process.pid, signal.SIGSTOP)  # a hung server: SIGTERM is not acted on
    pid = server.process.pid
    server.stop()
    assert server.process.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # stop() returned only once the stubs were gone too


def test_a_killed_launcher_takes_its_triton_with_it(repos, tmp_path):
    repo, manifest, _ = repos["tiny"]
    script = tmp_path / "launch.py"
    script.write_text(
        "import os, signal, sys\n"
        "from ddnn.triton.server import TritonServer\n"
        f"s = TritonServer({str(repo)!r}, models=[{manifest.model_for('input').model!r}], http_port=None,"
        " metrics_port=None).start()\n"
        "print(s.process.pid, os.getpid(), flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    pid, launcher = (int(v) for v in proc.stdout.split()[:2])
    deadline = time.monotonic() + 30
    while True:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)  # do not leave it running, then fail
            pytest.fail("tritonserver outlived the process that launched it")
        time.sleep(0.2)
    # What the killed launcher could not clean up, the next launcher does.
    assert any(n.startswith(f"ddnn-triton-{launcher}-") for n in remove_stale_work_dirs())
