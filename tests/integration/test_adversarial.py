"""A hostile client against real edge and cloud processes (torch backend) on ephemeral ports.

Raw bytes go on the wire through channels with identity serializers, so the services see exactly
what a broken or malicious client would send: garbage mid-stream, undecodable unary requests,
pathological values, junk messages just under the size limit, clients that leave mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import re

import grpc
import numpy as np
import psutil
import pytest

from ddnn.codec import encode
from ddnn.data import load_split
from ddnn.launch import scrape, start
from ddnn.paths import default_test_source
from ddnn.pb.ddnn.v1 import cloud_pb2, cloud_pb2_grpc, edge_pb2, edge_pb2_grpc
from ddnn.serving.convert import images_to_proto, to_proto

pytestmark = pytest.mark.integration

POLICY = {"format": "ddnn.policy/v1", "drop": None, "meta": {},
          "exits": {"block4": {"kind": "normalized_entropy", "threshold": 0.2},
                    "block7": {"kind": "max_softmax", "threshold": 0.9}}}
GARBAGE = b"\x0a\xff\xff\xff\xff\x0f\x01"  # field 1, length-delimited, 4 GiB long: cannot be parsed
MAX_BATCH = 64
INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("adversarial")
    (d / "policy.json").write_text(json.dumps(POLICY))
    return d


@pytest.fixture(scope="module")
def cloud(work):
    svc = start("services.cloud", ["--backend", "torch", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                   "--torch-threads", "1", "--max-batch", str(MAX_BATCH)], work)
    yield svc
    assert svc.stop() == 0, svc.log_tail()


@pytest.fixture(scope="module")
def edge(work, cloud):
    svc = start("services.edge", ["--policy", str(work / "policy.json"), "--cloud", cloud.grpc, "--listen",
                                  "127.0.0.1:0", "--metrics-port", "0", "--torch-threads", "1",
                                  "--max-batch", str(MAX_BATCH)], work)
    yield svc
    assert svc.stop() == 0, svc.log_tail()


@pytest.fixture(scope="module")
def images():
    return load_split(default_test_source(), "test").images[:256]


def batch(images, first_id: int, batch_id: int) -> edge_pb2.ImageBatch:
    return edge_pb2.ImageBatch(batch_id=batch_id, sample_ids=list(range(first_id, first_id + len(images))),
                               images=images_to_proto(images))


def features(n=3, value=None, batch_id=1, first_id=0) -> cloud_pb2.FeatureBatch:
    x = np.random.default_rng(0).random((n, 128, 8, 8), np.float32) if value is None else \
        np.full((n, 128, 8, 8), value, np.float32)
    return cloud_pb2.FeatureBatch(batch_id=batch_id, sample_ids=list(range(first_id, first_id + n)), split="block7",
                                  features=to_proto(encode(x, "fp32")))


async def raw_stream(addr: str, method: str, messages, decode, pause_after: int = -1, pause_s: float = 0.0,
                     options=None):
    """Send raw byte messages on a bidirectional stream; return (answers, final status, details)."""
    async def gen():
        for i, m in enumerate(messages):
            yield m
            if i == pause_after:
                await asyncio.sleep(pause_s)

    got = []
    async with grpc.aio.insecure_channel(addr, options=options) as ch:
        call = ch.stream_stream(method, request_serializer=None, response_deserializer=decode)(gen(), timeout=60)
        try:
            async for r in call:
                got.append(r)
        except grpc.aio.AioRpcError as exc:
            return got, exc.code(), exc.details()
        return got, await call.code(), await call.details()


def answered_ids(results) -> dict[int, int]:
    out: dict[int, int] = {}
    for rb in results:
        for r in rb.results:
            out[r.sample_id] = out.get(r.sample_id, 0) + 1
        if rb.HasField("error"):
            for sid in rb.sample_ids:
                out[sid] = out.get(sid, 0) + 1
    return out


@pytest.mark.parametrize("pause_s", [0.0, 0.5], ids=["garbage at once", "garbage after a pause"])
def test_edge_garbage_mid_stream_answers_every_accepted_id_then_fails(edge, images, pause_s):
    valid = [batch(images[32 * k:32 * k + 32], 32 * k, k).SerializeToString() for k in range(4)]
    late = batch(images[128:160], 128, 99).SerializeToString()  # sent after the garbage: never accepted
    got, code, details = asyncio.run(raw_stream(edge.grpc, "/ddnn.v1.Edge/Classify", [*valid, GARBAGE, late],
                                                edge_pb2.ResultBatch.FromString, pause_after=3, pause_s=pause_s))
    assert answered_ids(got) == {i: 1 for i in range(128)}, sorted(answered_ids(got))[:5]
    assert code == INVALID, (code, details)
    assert "request stream message" in details and "not a valid protobuf message" in details


def test_cloud_garbage_mid_stream_answers_every_accepted_batch_then_fails(cloud):
    valid = [features(batch_id=k, first_id=3 * k).SerializeToString() for k in range(4)]
    got, code, details = asyncio.run(raw_stream(cloud.grpc, "/ddnn.v1.Cloud/Infer", [*valid, GARBAGE],
                                                cloud_pb2.CloudResult.FromString))
    assert sorted(r.batch_id for r in got) == [0, 1, 2, 3]
    assert all(not r.HasField("error") and len(r.predictions) == 3 for r in got)
    assert code == INVALID and "request stream message" in details, (code, details)


@pytest.mark.parametrize("method, reply", [("/ddnn.v1.Edge/ClassifyBatch", edge_pb2.ResultBatch),
                                           ("/ddnn.v1.Edge/Configure", edge_pb2.EdgeStatus),
                                           ("/ddnn.v1.Edge/GetStatus", edge_pb2.EdgeStatus)])
def test_undecodable_unary_request_is_invalid_argument(edge, method, reply):
    async def call():
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary(method, request_serializer=None,
                                     response_deserializer=reply.FromString)(GARBAGE, timeout=10)
            return err.value

    err = asyncio.run(call())
    assert err.code() == INVALID and "request: 7 bytes" in err.details(), err


def test_undecodable_unary_request_to_the_cloud_is_invalid_argument(cloud):
    async def call():
        async with grpc.aio.insecure_channel(cloud.grpc) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await ch.unary_unary("/ddnn.v1.Cloud/InferBatch", request_serializer=None,
                                     response_deserializer=cloud_pb2.CloudResult.FromString)(GARBAGE, timeout=10)
            return err.value

    err = asyncio.run(call())
    assert err.code() == INVALID, err


def test_client_leaving_mid_stream_leaves_nothing_in_flight(edge, images):
    async def leave():
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            stub = edge_pb2_grpc.EdgeStub(ch)
            call = stub.Classify(iter([batch(images[:64], 1000 + 64 * k, k) for k in range(8)]), timeout=60)
            await call.read()  # one answer, then go away with the rest in flight
            call.cancel()
            for _ in range(100):  # the edge settles: nothing held for the client that left
                status = await stub.GetStatus(edge_pb2.StatusRequest(), timeout=10)
                if status.inflight_samples == 0:
                    break
                await asyncio.sleep(0.1)
            ok = await stub.ClassifyBatch(batch(images[:8], 0, 1), timeout=30)
            return status, ok

    status, ok = asyncio.run(leave())
    assert status.inflight_samples == 0
    assert len(ok.results) == 8
    assert scrape(edge.metrics)["ddnn_edge_inflight_bytes"] == 0


@pytest.mark.parametrize("value", [3e38, -3e38, 1e30])
def test_extreme_finite_features_give_finite_confidences(cloud, value):
    async def call():
        async with grpc.aio.insecure_channel(cloud.grpc) as ch:
            return await cloud_pb2_grpc.CloudStub(ch).InferBatch(features(value=value), timeout=30)

    res = asyncio.run(call())
    conf = np.asarray(res.confidences)
    assert np.all(np.isfinite(conf)) and np.all((conf > 0) & (conf <= 1)), conf
    assert all(0 <= p < 10 for p in res.predictions)


def junk_rss_growth(svc, method: str, size: int, n: int = 16) -> tuple[float, list]:
    """Send ``n`` concurrent junk messages of ``size`` bytes; RSS growth in MiB and the codes seen."""
    proc = psutil.Process(svc.proc.pid)
    before = proc.memory_info().rss

    async def flood():
        opts = [("grpc.max_send_message_length", 1 << 30)]
        async with grpc.aio.insecure_channel(svc.grpc, options=opts) as ch:
            call = ch.unary_unary(method, request_serializer=None, response_deserializer=lambda b: b)
            junk = b"\x0a" + b"\xff" * (size - 1)

            async def one():
                try:
                    await call(junk, timeout=60)
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    return exc.code()

            return await asyncio.gather(*(one() for _ in range(n)))

    codes = asyncio.run(flood())
    growth = (proc.memory_info().rss - before) / 2**20
    print(f"{svc.name}: {n} x {size} B junk on {method}: RSS +{growth:.1f} MiB, codes {set(codes)}")  # pytest -s
    return growth, codes


def test_junk_messages_just_under_the_limit_keep_memory_bounded(edge, cloud):
    # The edge's limit is derived from its largest valid request: here a 1 MiB policy (64 images
    # are 198 KB) + 64 KiB slack = 1,114,112 bytes. 16 concurrent junk messages just under it are
    # refused INVALID_ARGUMENT, and the edge's resident memory grows by less than 64 MiB (stated
    # bound: under 2 x 16 x the limit).
    limit = logged_limit(edge)
    growth, codes = junk_rss_growth(edge, "/ddnn.v1.Edge/ClassifyBatch", limit - 64)
    assert set(codes) == {INVALID}, codes
    assert growth < 64, f"edge RSS grew {growth:.1f} MiB"
    # Over the limit but under the transport's (twice it): refused RESOURCE_EXHAUSTED unparsed,
    # within the same bound.
    growth, codes = junk_rss_growth(edge, "/ddnn.v1.Edge/ClassifyBatch", 2 * limit - 64)
    assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert growth < 2 * 64, f"edge RSS grew {growth:.1f} MiB"
    # The cloud's largest valid request is a batch of its largest split input, fp32 (its log says
    # the derived limit). 16 junk messages just under it: the RSS grows by less than 3 x 16 x the
    # limit (the raw message, gRPC's buffer and the parse attempt), i.e. under 200 MiB here.
    limit = logged_limit(cloud)
    assert limit < MAX_BATCH * 70_000 + 64 * 1024
    growth, codes = junk_rss_growth(cloud, "/ddnn.v1.Cloud/InferBatch", limit - 64)
    assert set(codes) == {INVALID}, codes
    assert growth < 3 * 16 * limit / 2**20, f"cloud RSS grew {growth:.1f} MiB"


def logged_limit(svc) -> int:
    """The message size limit the service derived (it logs it at start)."""
    return int(re.search(r"message limit (\d+) bytes", svc.log.read_text()).group(1))


def test_edge_oversize_message_mid_stream_answers_accepted_ids_then_fails(edge, images):
    limit = logged_limit(edge)
    assert limit == 2**20 + 64 * 1024  # 64 images (198 KB) < a 1 MiB policy: the policy sets it
    valid = [batch(images[32 * k:32 * k + 32], 32 * k, k).SerializeToString() for k in range(4)]
    over = batch(np.repeat(images[:64], 6, axis=0), 500, 9).SerializeToString()  # 1.18 MB: over, < 2x
    assert limit < len(over) < 2 * limit
    got, code, details = asyncio.run(raw_stream(edge.grpc, "/ddnn.v1.Edge/Classify", [*valid, over],
                                                edge_pb2.ResultBatch.FromString,
                                                options=[("grpc.max_send_message_length", 1 << 30)]))
    assert answered_ids(got) == {i: 1 for i in range(128)}
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_message_bytes" in details, (code, details)
    # Past twice the limit the transport itself fails the whole call: still RESOURCE_EXHAUSTED,
    # never OK (documented in docs/grpc-status.md).
    huge = batch(np.repeat(images[:64], 12, axis=0), 500, 9).SerializeToString()
    assert len(huge) > 2 * limit
    got, code, details = asyncio.run(raw_stream(edge.grpc, "/ddnn.v1.Edge/Classify", [huge],
                                                edge_pb2.ResultBatch.FromString,
                                                options=[("grpc.max_send_message_length", 1 << 30)]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and not got


def test_health_watch_streams_the_status(edge, cloud):
    """grpc.health.v1 Watch (a handler that writes through context.write) passes the interceptor."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async def watch(addr, service):
        async with grpc.aio.insecure_channel(addr) as ch:
            call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=service), timeout=10)
            first = await call.read()
            call.cancel()
            return first.status

    for addr, service in ((edge.grpc, ""), (edge.grpc, "ddnn.v1.Edge"), (cloud.grpc, "ddnn.v1.Cloud")):
        assert asyncio.run(watch(addr, service)) == 1  # SERVING
