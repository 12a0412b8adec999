"""Health follows the backend: a real cloud on a real Triton, which is hung, unloaded and killed.

The cloud probes Triton every 0.2 s with a 0.5 s deadline here, so its grpc.health.v1 status
(overall and per service) must turn NOT_SERVING within 2 s of each fault and SERVING again after
recovery; the edge in front of it stays SERVING (it answers degraded) and reports the link.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

import grpc
import psutil
import pytest
import tritonclient.grpc as tgrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from ddnn.data import load_split
from ddnn.launch import scrape, start
from ddnn.paths import default_test_source
from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc
from ddnn.serving.convert import images_to_proto
from ddnn.triton.server import CONTROL_HEADER, CONTROL_KEY

pytestmark = pytest.mark.integration

POLICY = {"format": "ddnn.policy/v1", "drop": None, "meta": {},
          "exits": {"block4": {"kind": "normalized_entropy", "threshold": 0.2},
                    "block7": {"kind": "max_softmax", "threshold": 0.9}}}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
DEADLINE_S = 2.0  # the bound; the configured probe (0.2 s + 0.5 s deadline) is well inside it


def health(addr: str, service: str = "") -> int:
    async def check():
        async with grpc.aio.insecure_channel(addr) as ch:
            r = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            return r.status

    return asyncio.run(check())


def wait_health(addr: str, want: int, within: float) -> float:
    """Seconds until both the overall and the Cloud service's status are ``want`` (fails past ``within``)."""
    t0 = time.monotonic()
    while True:
        got = {s: health(addr, s) for s in ("", "ddnn.v1.Cloud")}
        if set(got.values()) == {want}:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < within, f"health {got}, wanted {want} within {within}s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    work = tmp_path_factory.mktemp("health")
    (work / "policy.json").write_text(json.dumps(POLICY))
    cloud = start("services.cloud", ["--backend", "triton", "--listen", "127.0.0.1:0", "--metrics-port", "0",
                                     "--max-batch", "64", "--health-interval-s", "0.2", "--health-timeout-s", "0.5",
                                     "--request-timeout-s", "2", "--triton-repository", str(work / "triton-repo")],
                  work, timeout=300)
    edge = start("services.edge", ["--policy", str(work / "policy.json"), "--cloud", cloud.grpc, "--listen",
                                   "127.0.0.1:0", "--metrics-port", "0", "--max-batch", "64", "--torch-threads", "1",
                                   "--cloud-timeout-s", "1"], work)
    yield cloud, edge
    edge.stop()
    assert cloud.stop() == 0, cloud.log_tail()


def triton_process(cloud) -> psutil.Process:
    procs = [p for p in psutil.Process(cloud.proc.pid).children(recursive=True) if p.name() == "tritonserver"]
    assert len(procs) == 1, procs
    return procs[0]


def control_header(proc: psutil.Process) -> dict[str, str]:
    """The secret the cloud started Triton with (only readable by whoever may read its command line)."""
    flag = next(a for a in proc.cmdline() if a.startswith("--grpc-restricted-protocol="))
    key, _, value = flag.split(":", 1)[1].partition("=")
    assert key == CONTROL_KEY
    return {CONTROL_HEADER: value}


def classify(edge, images) -> edge_pb2.ResultBatch:
    async def call():
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            return await edge_pb2_grpc.EdgeStub(ch).ClassifyBatch(
                edge_pb2.ImageBatch(batch_id=1, sample_ids=list(range(len(images))),
                                    images=images_to_proto(images)), timeout=30)

    return asyncio.run(call())


def edge_status(edge) -> edge_pb2.EdgeStatus:
    async def call():
        async with grpc.aio.insecure_channel(edge.grpc) as ch:
            return await edge_pb2_grpc.EdgeStub(ch).GetStatus(edge_pb2.StatusRequest(), timeout=10)

    return asyncio.run(call())


def test_serving_when_triton_is_ready(stack):
    cloud, edge = stack
    assert wait_health(cloud.grpc, SERVING, 10) >= 0
    assert scrape(cloud.metrics)["ddnn_cloud_backend_ready"] == 1
    assert health(edge.grpc) == SERVING and health(edge.grpc, "ddnn.v1.Edge") == SERVING


def test_hung_triton_is_not_serving_then_serving_again(stack):
    cloud, edge = stack
    images = load_split(default_test_source(), "test").images[:64]
    triton = triton_process(cloud)
    triton.send_signal(signal.SIGSTOP)
    try:
        assert wait_health(cloud.grpc, NOT_SERVING, DEADLINE_S) < DEADLINE_S
        assert scrape(cloud.metrics)["ddnn_cloud_backend_ready"] == 0
        # The edge follows the cloud's health: it offloads nothing to it and answers every sample
        # locally (degraded), stays SERVING, and reports the cloud NOT_SERVING.
        deadline = time.monotonic() + 10
        while scrape(edge.metrics)["ddnn_edge_cloud_serving"] != 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scrape(edge.metrics)["ddnn_edge_cloud_serving"] == 0
        rb = classify(edge, images)
        assert sorted(r.sample_id for r in rb.results) == list(range(64))
        assert {r.outcome for r in rb.results} <= {edge_pb2.OUTCOME_EDGE, edge_pb2.OUTCOME_DEGRADED}
        assert any(r.outcome == edge_pb2.OUTCOME_DEGRADED for r in rb.results)
        assert health(edge.grpc) == SERVING
        assert edge_status(edge).cloud_connected  # the connection to the cloud service itself is up
    finally:
        triton.send_signal(signal.SIGCONT)
    assert wait_health(cloud.grpc, SERVING, 30) >= 0
    assert scrape(cloud.metrics)["ddnn_cloud_backend_ready"] == 1
    deadline = time.monotonic() + 10
    while scrape(edge.metrics)["ddnn_edge_cloud_serving"] != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scrape(edge.metrics)["ddnn_edge_cloud_serving"] == 1
    rb = classify(edge, images)
    assert any(r.outcome == edge_pb2.OUTCOME_CLOUD for r in rb.results)  # offloading resumed by itself


def test_model_control_is_locked_and_an_unloaded_model_is_not_serving(stack):
    cloud, _ = stack
    triton = triton_process(cloud)
    header = control_header(triton)
    client = tgrpc.InferenceServerClient(cloud.info["triton_url"])
    model = next(m.name for m in client.get_model_repository_index(headers=header).models if m.state == "READY")
    try:
        # Without the secret, Triton's model-repository API refuses: nobody else can unload the model.
        with pytest.raises(InferenceServerException):
            client.unload_model(model)
        with pytest.raises(InferenceServerException):
            client.get_model_repository_index()
        assert client.is_model_ready(model)
        client.unload_model(model, headers=header)
        assert wait_health(cloud.grpc, NOT_SERVING, DEADLINE_S) < DEADLINE_S
        client.load_model(model, headers=header)
        assert wait_health(cloud.grpc, SERVING, 120) >= 0
    finally:
        client.close()


def test_killed_triton_is_not_serving_until_restarted(stack):
    cloud, edge = stack
    triton_process(cloud).kill()
    assert wait_health(cloud.grpc, NOT_SERVING, DEADLINE_S) < DEADLINE_S
    assert health(edge.grpc) == SERVING
    assert wait_health(cloud.grpc, SERVING, 240) >= 0  # the watchdog restarted it
    assert "Triton restarted" in cloud.log.read_text()
