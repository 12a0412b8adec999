"""The control plane of a real edge process: Configure is all-or-nothing, checked against the
model, and can be restricted (bearer token, mTLS client names) or switched off."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import grpc
import pytest

from ddnn.launch import start
from ddnn.paths import REPO_ROOT
from ddnn.pb.ddnn.v1 import edge_pb2, edge_pb2_grpc
from tests.integration.certs import make_pki

pytestmark = pytest.mark.integration

POLICY = {"format": "ddnn.policy/v1", "drop": None, "meta": {},
          "exits": {"block4": {"kind": "normalized_entropy", "threshold": 0.2},
                    "block7": {"kind": "max_softmax", "threshold": 0.9}}}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def ao_margin(num_classes: int) -> dict:
    """A well-formed ao_margin policy fitted for ``num_classes`` classes (the model has 10)."""
    return {"format": "ddnn.policy/v1", "drop": None, "meta": {},
            "exits": {"block7": {"kind": "ao_margin", "ratio": 1.0, "num_classes": num_classes, "bandwidth": 0.05,
                                 "min_pair_samples": 1, "grid_points": 2,
                                 "groups": {"*": {"n_correct": 1, "n_incorrect": 0}}}}}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("control")
    (d / "policy.json").write_text(json.dumps(POLICY))
    return d


def edge_args(work, *extra: str) -> list[str]:
    return ["--policy", str(work / "policy.json"), "--cloud", "", "--listen", "127.0.0.1:0", "--metrics-port", "0",
            "--torch-threads", "1", *extra]


@pytest.fixture(scope="module")
def edge(work):
    svc = start("services.edge", edge_args(work), work, name="edge-control")
    yield svc
    assert svc.stop() == 0, svc.log_tail()


async def _configure(addr: str, req: edge_pb2.ConfigureRequest, metadata=None, creds=None):
    ch = grpc.aio.secure_channel(addr, creds) if creds else grpc.aio.insecure_channel(addr)
    try:
        stub = edge_pb2_grpc.EdgeStub(ch)
        try:
            return await stub.Configure(req, metadata=metadata, timeout=30), None
        except grpc.aio.AioRpcError as exc:
            return await stub.GetStatus(edge_pb2.StatusRequest(), timeout=10), exc
    finally:
        await ch.close()


def configure(addr, metadata=None, creds=None, **fields):
    """(status after the call, the error or None)."""
    return asyncio.run(_configure(addr, edge_pb2.ConfigureRequest(**fields), metadata, creds))


def snapshot(status: edge_pb2.EdgeStatus) -> tuple:
    return (status.mode, status.payload, status.policy_json, dict(status.knobs), status.slo)


BAD_CONFIGURES = [
    ("malformed slo", {"slo": "p95_latency"}, "slo:"),
    ("slo with unknown kind", {"slo": "speed=3"}, "slo:"),
    ("slo not a number", {"slo": "p95_latency=fast"}, "slo:"),
    ("slo infinite", {"slo": "bandwidth=inf"}, "finite"),
    ("slo NaN", {"slo": "cloud_rate=nan"}, "slo:"),
    ("valid slo with a bad mode", {"slo": "p95_latency=0.2", "mode": "warp"}, "mode must be one of"),
    ("valid slo with a bad payload", {"slo": "cloud_rate=50", "payload": "bf16"}, "payload must be one of"),
    ("policy for 2 classes", {"policy_json": json.dumps(ao_margin(2))}, "num_classes must be 10"),
    ("policy for a billion classes", {"policy_json": json.dumps(ao_margin(10**9))}, "num_classes must be 10"),
    ("policy nested without end", {"policy_json": "[" * 100000 + "]" * 100000}, "policy_json"),
    ("policy with NaN", {"policy_json": json.dumps(POLICY).replace("0.9", "NaN")}, "NaN"),
    ("policy with an enormous number", {"policy_json": json.dumps(POLICY).replace("0.9", "1" * 400)}, "policy"),
    ("policy for an exit the model lacks", {"policy_json": json.dumps(
        {**POLICY, "exits": {"block99": {"kind": "max_softmax", "threshold": 0.9}}})}, "block99"),
    ("policy not an object", {"policy_json": "[1, 2]"}, "JSON object"),
    ("knob NaN", {"knobs": {"block7": float("nan")}}, "block7"),
    ("knob out of range with a good mode", {"knobs": {"block7": 7.0}, "mode": "ws"}, ""),
    ("knob for an unknown exit", {"knobs": {"block99": 0.5}}, "block99"),
]


@pytest.mark.parametrize("case, fields, message", BAD_CONFIGURES, ids=[c[0] for c in BAD_CONFIGURES])
def test_a_rejected_configure_changes_nothing(edge, case, fields, message):
    before, err = configure(edge.grpc)  # an empty Configure changes nothing and answers the status
    assert err is None
    after, err = configure(edge.grpc, **fields)
    assert err is not None and err.code() == INVALID, (case, err)
    assert message in err.details(), err.details()
    assert snapshot(after) == snapshot(before)


def test_a_good_configure_applies_and_batches_keep_being_answered(edge):
    status, err = configure(edge.grpc, knobs={"block7": 0.5}, slo="off", mode="local")
    assert err is None and status.knobs["block7"] == 0.5 and status.mode == "local"
    status, err = configure(edge.grpc, knobs={"block7": 0.9}, mode="normal")
    assert err is None


def test_control_token_is_required_when_set(work):
    svc = start("services.edge", edge_args(work, "--control-token", "s3cret"), work, name="edge-token")
    try:
        _, err = configure(svc.grpc, mode="local")
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and "authorization" in err.details()
        status, err = configure(svc.grpc, metadata=(("authorization", "Bearer wrong"),), mode="local")
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED and status.mode == "normal"
        status, err = configure(svc.grpc, metadata=(("authorization", "Bearer s3cret"),), mode="local")
        assert err is None and status.mode == "local"
        # The operator's CLI sends the token too (flag or $DDNN_CONTROL_TOKEN).
        cli = [sys.executable, "-m", "ddnn", "control", "set", "--edge", svc.grpc, "--mode", "ws"]
        refused = subprocess.run(cli, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stdout + refused.stderr
        ok = subprocess.run(cli, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "DDNN_CONTROL_TOKEN": "s3cret"})
        assert ok.returncode == 0, ok.stdout + ok.stderr
        status, _ = configure(svc.grpc)
        assert status.mode == "ws"
    finally:
        svc.stop()


def test_control_off_refuses_configure(work):
    svc = start("services.edge", edge_args(work, "--control", "off"), work, name="edge-nocontrol")
    try:
        status, err = configure(svc.grpc, mode="local")
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "control=off" in err.details()
        assert status.mode == "normal"
    finally:
        svc.stop()


def test_control_restricted_to_named_mtls_clients(work):
    pki = make_pki(work / "pki")
    svc = start("services.edge", edge_args(work, "--tls-cert", str(pki["server"]), "--tls-key", str(pki["server_key"]),
                                           "--tls-ca", str(pki["ca"]), "--control-clients", "client"),
                work, name="edge-mtls-control")
    ca = pki["ca"].read_bytes()

    def creds(name):
        return grpc.ssl_channel_credentials(ca, pki[f"{name}_key"].read_bytes(), pki[name].read_bytes())

    try:
        status, err = configure(svc.grpc, creds=creds("server"), mode="local")  # our CA, but not allowed
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "client" in err.details()
        assert status.mode == "normal"
        status, err = configure(svc.grpc, creds=creds("client"), mode="local")
        assert err is None and status.mode == "local"
    finally:
        svc.stop()
