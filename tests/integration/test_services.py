"""The three services as real processes on ephemeral ports: equivalence, faults, bad input."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ddnn.checkpoint import load_checkpoint
from ddnn.codec import encode
from ddnn.data import load_split
from ddnn.inference import InProcessPipeline
from ddnn.launch import scrape, start
from ddnn.models import split_at
from ddnn.paths import REPO_ROOT, SHIPPED_CHECKPOINT, default_test_source
from ddnn.pb.ddnn.v1 import cloud_pb2, cloud_pb2_grpc, edge_pb2, edge_pb2_grpc, tensor_pb2
from ddnn.policies import EdgePolicy
from ddnn.serving.convert import images_to_proto, to_proto

pytestmark = pytest.mark.integration

POLICY = {"format": "ddnn.policy/v1", "drop": None, "meta": {"note": "integration test"},
          "exits": {"block4": {"kind": "normalized_entropy", "threshold": 0.2},
                    "block7": {"kind": "max_softmax", "threshold": 0.9}}}
N_EQUIV = 1024


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("services")
    (d / "policy.json").write_text(json.dumps(POLICY))
    return d


@pytest.fixture(scope="module")
def cloud(work):
    # The real thing: the cloud exports the checkpoint to a Triton repository and starts Triton.
    svc = start("services.cloud", ["--backend", "triton", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                   "--max-batch", "64", "--max-message-bytes", str(8 * 1024 * 1024),
                                   "--triton-repository", str(work / "triton-repo")], work, timeout=300)
    yield svc
    assert svc.stop() == 0, svc.log_tail()


@pytest.fixture(scope="module")
def edge(work, cloud):
    svc = start("services.edge", ["--policy", str(work / "policy.json"), "--cloud", cloud.grpc, "--listen",
                                  "127.0.0.1:0", "--metrics-port", "0", "--max-batch", "64",
                                  "--max-message-bytes", str(1024 * 1024)], work)
    yield svc
    assert svc.stop() == 0, svc.log_tail()


ENGINES = ("torch", "onnxruntime", "onnxruntime-int8")


@pytest.fixture(scope="module", params=ENGINES)
def engine_edge(request, work, cloud):
    """An edge on each engine, the same cloud (Triton) behind them all."""
    svc = start("services.edge", ["--policy", str(work / "policy.json"), "--cloud", cloud.grpc, "--listen",
                                  "127.0.0.1:0", "--metrics-port", "0", "--max-batch", "64", "--engine", request.param,
                                  "--max-message-bytes", str(1024 * 1024)], work, name=f"edge-{request.param}")
    yield request.param, svc
    assert svc.stop() == 0, svc.log_tail()


def reference_pipeline(engine: str) -> InProcessPipeline:
    """The offline pipeline on ``engine``: its edge part, and the cloud graph Triton serves (torch: torch's)."""
    from ddnn.engines import Backend, EngineSpec, cloud_part, edge_part
    from ddnn.export.cache import bundle_for, file_precision

    spec = EngineSpec.parse(engine)
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    source = ck if spec.backend == Backend.TORCH else bundle_for(ck, file_precision(spec.precision))
    return InProcessPipeline(edge_part(spec, source, ["block7"]), cloud_part(spec, source, "block7"),
                             EdgePolicy.from_dict(POLICY), exits=["block7"])


@pytest.fixture(scope="module")
def test_images():
    arrays = load_split(default_test_source(), "test")
    return arrays.images, arrays.labels


def read_rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def run_loadgen(edge_addr: str, out, limit: int, *extra: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "services.loadgen", "--edge", edge_addr, "--limit", str(limit),
                           "--metrics-port", "-1", "--out", str(out), "--progress", "false", *extra],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / "report.json").read_text())


def test_distributed_equals_in_process(engine_edge, work, test_images):
    engine, edge = engine_edge
    lg = work / f"lg-{engine}"
    report = run_loadgen(edge.grpc, lg, N_EQUIV, "--concurrency", "2")
    assert report["integrity"]["ok"] and report["samples"] == N_EQUIV
    rows = read_rows(lg / "samples.csv")
    ids = np.array([int(r["sample_id"]) for r in rows])
    assert len(set(ids)) == N_EQUIV and len(set(test_images[1][ids])) == 10  # a shuffled subset: all classes
    offline = reference_pipeline(engine).run(test_images[0][ids])  # same images, same order, same batches of 32
    assert [r["exit"] for r in rows] == offline.exit
    assert np.array_equal([int(r["prediction"]) for r in rows], offline.prediction)
    # ... and equal `ddnn eval`'s per-sample output on the same engine (logits cached, its own batching).
    proc = subprocess.run([sys.executable, "-m", "ddnn", "eval", "--policy", str(work / "policy.json"), "--exits",
                           "block7", "--per-sample", str(work / f"eval-{engine}.csv"), "--no-progress",
                           "--engine", engine], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    evaluated = {int(r["sample_id"]): r for r in read_rows(work / f"eval-{engine}.csv")}
    for r in rows:
        e = evaluated[int(r["sample_id"])]
        assert (e["exit"], int(e["prediction"])) == (r["exit"], int(r["prediction"])), (r, e)
    # Both paths were exercised, and the edge's own counters say what the client saw.
    rates = report["exit_rates"]
    assert 0.05 < rates["cloud"] < 0.95
    m = scrape(edge.metrics)
    edge_block7 = m['ddnn_edge_samples_total{outcome="block7"}']
    edge_cloud = m['ddnn_edge_samples_total{outcome="cloud"}']
    assert edge_block7 / (edge_block7 + edge_cloud) == pytest.approx(rates["block7"], abs=1e-9)
    assert report["bytes"]["per_offloaded_sample"] == 128 * 8 * 8 * 4


def test_triton_and_torch_backends_give_identical_predictions(cloud, work, test_images):
    torch_cloud = start("services.cloud", ["--backend", "torch", "--listen", "127.0.0.1:0", "--metrics-port", "0"],
                        work, name="cloud-torch")
    rng = np.random.default_rng(1)
    ck = load_checkpoint(SHIPPED_CHECKPOINT)
    from ddnn.data.transforms import to_tensor

    pixels = test_images[0][rng.choice(len(test_images[0]), 64, replace=False)]
    with __import__("torch").inference_mode():
        feats = split_at(ck.model, "block4").edge(to_tensor(pixels))[1].numpy()
    batches = [feature_batch("block4", feats, payload="fp32"), feature_batch("input", pixels, payload="raw"),
               feature_batch("block4", feats, payload="int8")]

    async def ask(addr):
        async with grpc.aio.insecure_channel(addr) as ch:
            stub = cloud_pb2_grpc.CloudStub(ch)
            return [await stub.InferBatch(b, timeout=60) for b in batches]

    try:
        via_triton, via_torch = asyncio.run(ask(cloud.grpc)), asyncio.run(ask(torch_cloud.grpc))
        for a, b in zip(via_triton, via_torch, strict=True):
            assert list(a.predictions) == list(b.predictions)
            np.testing.assert_allclose(a.confidences, b.confidences, rtol=1e-5, atol=1e-6)
        status = asyncio.run(_cloud_status(cloud.grpc))
        assert status.backend == "triton" and all(s.triton_model for s in status.splits)
    finally:
        torch_cloud.stop()


async def _cloud_status(addr):
    async with grpc.aio.insecure_channel(addr) as ch:
        return await cloud_pb2_grpc.CloudStub(ch).GetStatus(cloud_pb2.CloudStatusRequest(), timeout=10)


def test_health_and_reflection(edge, cloud):
    async def check():
        for svc, name in ((edge, "ddnn.v1.Edge"), (cloud, "ddnn.v1.Cloud")):
            async with grpc.aio.insecure_channel(svc.grpc) as ch:
                resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=name),
                                                                 timeout=5)
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
                from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

                stub = reflection_pb2_grpc.ServerReflectionStub(ch)
                req = reflection_pb2.ServerReflectionRequest(list_services="")
                async for r in stub.ServerReflectionInfo(iter([req]), timeout=5):
                    names = {s.name for s in r.list_services_response.service}
                    assert name in names and "grpc.health.v1.Health" in names

    asyncio.run(check())


def image_batch(images, ids=None, **tensor_overrides):
    t = images_to_proto(images)
    for k, v in tensor_overrides.items():
        if k == "shape":
            del t.shape[:]
            t.shape.extend(v)
        else:
            setattr(t, k, v)
    ids = list(range(len(images))) if ids is None else ids
    return edge_pb2.ImageBatch(batch_id=7, sample_ids=ids, images=t)


BAD_EDGE_INPUTS = [
    ("wrong dtype", lambda im: image_batch(im, data=im.astype(np.float32).tobytes(), dtype=1), "uint8"),
    ("wrong shape", lambda im: image_batch(im[:, :16], ids=[0, 1, 2, 3]), "32, 32, 3"),
    ("byte length", lambda im: image_batch(im, data=im.tobytes()[:-10]), "bytes"),
    ("empty batch", lambda im: image_batch(im[:0], ids=[]), "empty batch"),
    ("over the batch limit", lambda im: image_batch(np.repeat(im, 17, axis=0)[:65]), "limit of 64"),
    ("id count", lambda im: image_batch(im, ids=[1, 2]), "sample ids"),
    ("duplicate ids", lambda im: image_batch(im, ids=[1, 1, 2, 3]), "duplicate"),
]


@pytest.mark.parametrize("case, make, message", BAD_EDGE_INPUTS, ids=[c[0] for c in BAD_EDGE_INPUTS])
def test_edge_bad_input_unary_gets_invalid_argument(edge, test_images, case, make, message):
    async def call():
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await edge_pb2_grpc.EdgeStub(ch).ClassifyBatch(make(test_images[0][:4]), timeout=30)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert message in err.value.details()

    asyncio.run(call())


def test_edge_stream_answers_bad_batches_in_band_and_keeps_serving(edge, test_images):
    images = test_images[0][:4]
    good = [image_batch(images, ids=[10 * k + i for i in range(4)]) for k in range(3)]
    for k, b in enumerate(good):
        b.batch_id = 100 + k
    bads = [make(images) for _, make, _ in BAD_EDGE_INPUTS]
    for k, b in enumerate(bads):
        b.batch_id = 200 + k
    stream = [good[0], *bads[:4], good[1], *bads[4:], good[2]]

    async def call():
        answered: dict[int, int] = {}
        errors = {}
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            async for rb in edge_pb2_grpc.EdgeStub(ch).Classify(iter(stream), timeout=60):
                if rb.HasField("error"):
                    errors[rb.batch_id] = rb.error
                for r in rb.results:
                    answered[r.sample_id] = answered.get(r.sample_id, 0) + 1
        return answered, errors

    answered, errors = asyncio.run(call())
    assert answered == {10 * k + i: 1 for k in range(3) for i in range(4)}
    assert set(errors) == {200 + k for k in range(len(bads))}
    assert all(e.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] for e in errors.values())


def test_message_over_the_size_limit_is_resource_exhausted(edge, test_images):
    big = np.repeat(test_images[0][:64], 20, axis=0)  # 3.9 MB > the edge's 1 MiB limit

    async def call():
        async with grpc.aio.insecure_channel(edge.grpc, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
            stub = edge_pb2_grpc.EdgeStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.ClassifyBatch(image_batch(big), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # ... and the edge keeps serving.
            ok = await stub.ClassifyBatch(image_batch(test_images[0][:2]), timeout=30)
            assert len(ok.results) == 2

    asyncio.run(call())


def feature_batch(split="block7", x=None, sha=None, payload="fp32", ids=None):
    x = np.random.default_rng(0).random((3, 128, 8, 8), np.float32) if x is None else x
    return cloud_pb2.FeatureBatch(batch_id=1, sample_ids=list(range(len(x))) if ids is None else ids, split=split,
                                  model_sha256=sha if sha is not None else "", features=to_proto(encode(x, payload)))


BAD_CLOUD_INPUTS = [
    ("unknown split", lambda: feature_batch(split="block99"), grpc.StatusCode.NOT_FOUND, "unknown split point"),
    ("wrong shape", lambda: feature_batch(x=np.ones((2, 64, 8, 8), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
     "does not match"),
    ("NaN features", lambda: feature_batch(x=np.full((2, 128, 8, 8), np.nan, np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
    ("model mismatch", lambda: feature_batch(sha="f" * 64), grpc.StatusCode.INVALID_ARGUMENT, "model mismatch"),
    ("floats for the raw-input model", lambda: feature_batch(split="input", x=np.ones((2, 32, 32, 3), np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "uint8"),
    ("batch over the limit", lambda: feature_batch(x=np.ones((65, 128, 8, 8), np.float32)),
     grpc.StatusCode.INVALID_ARGUMENT, "limit of 64"),
    ("empty", lambda: cloud_pb2.FeatureBatch(split="block7", features=tensor_pb2.Tensor(dtype=1, shape=[0, 128, 8, 8])),
     grpc.StatusCode.INVALID_ARGUMENT, "empty batch"),
]


@pytest.mark.parametrize("case, make, code, message", BAD_CLOUD_INPUTS, ids=[c[0] for c in BAD_CLOUD_INPUTS])
def test_cloud_bad_input(cloud, case, make, code, message):
    async def call():
        async with grpc.aio.insecure_channel(cloud.grpc) as ch:
            stub = cloud_pb2_grpc.CloudStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.InferBatch(make(), timeout=30)
            assert err.value.code() == code and message in err.value.details(), err.value
            # In-band on the stream, followed by a good batch that is still answered.
            good = feature_batch()
            good.batch_id = 2
            got = [r async for r in stub.Infer(iter([make(), good]), timeout=30)]
            assert {r.batch_id for r in got} == {1, 2} or len(got) == 2
            bad = next(r for r in got if r.HasField("error"))
            assert bad.error.code == code.value[0] and message in bad.error.message
            ok = next(r for r in got if not r.HasField("error"))
            assert len(ok.predictions) == 3

    asyncio.run(call())


def test_cloud_down_every_sample_answered_degraded(work, test_images):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    svc = start("services.edge", ["--policy", str(work / "policy.json"), "--cloud", dead, "--listen", "127.0.0.1:0",
                                  "--metrics-port", "0", "--connect-timeout-s", "0.5"], work, name="edge-nocloud")
    try:
        report = run_loadgen(svc.grpc, work / "lg-down", 256)
        assert report["integrity"]["ok"]
        rates = report["exit_rates"]
        assert rates["cloud"] == 0 and rates["degraded"] > 0
        assert rates["block7"] + rates["degraded"] == pytest.approx(1.0)
        rows = read_rows(work / "lg-down" / "samples.csv")
        degraded = [r for r in rows if r["outcome"] == "degraded"]
        assert all(r["exit"] == "block7" and int(r["prediction"]) >= 0 for r in degraded)
        assert scrape(svc.metrics)["ddnn_edge_cloud_connected"] == 0
    finally:
        assert svc.stop() == 0


def test_sigterm_drains_and_exits_cleanly(work):
    svc = start("services.cloud", ["--backend", "torch", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                   "--grace-s", "2"], work, name="cloud-term")
    assert svc.stop(timeout=15) == 0
    assert "cloud stopped" in svc.log_tail()
