"""The serving core without ports: stream fan-out, admission, control guard, health probing,
settings precedence, edge reconfiguration and its rollback, status."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest

from ddnn.checkpoint import load_checkpoint
from ddnn.errors import InvalidInput, Overloaded, PolicyError
from ddnn.paths import SHIPPED_CHECKPOINT
from ddnn.policies import EdgePolicy, softmax
from ddnn.serving.admission import ByteBudget
from ddnn.serving.control import ControlGuard
from ddnn.serving.errors import Forbidden, Misconfigured, Unauthenticated, _decoder, status_for
from ddnn.serving.server import GrpcServer
from ddnn.serving.settings import SettingsError, load_settings
from ddnn.serving.streams import answer_concurrently
from services.cloud.settings import CloudSettings
from services.edge.settings import EdgeSettings
from services.loadgen.settings import LoadgenSettings

POLICY = {"format": "ddnn.policy/v1", "drop": None, "meta": {},
          "exits": {"block4": {"kind": "normalized_entropy", "threshold": 0.2},
                    "block7": {"kind": "max_softmax", "threshold": 0.9}}}


# -- stream fan-out -----------------------------------------------------------------------------

async def _requests(items, fail_after: int | None = None):
    for i, x in enumerate(items):
        if fail_after is not None and i == fail_after:
            raise InvalidInput("request stream message: garbage")
        yield x
        await asyncio.sleep(0)


async def _slow_echo(req, emit):
    await asyncio.sleep(0.01 * (req % 3))
    emit(req)


def test_stream_answers_every_request_then_ends():
    async def go():
        return [r async for r in answer_concurrently(_requests(range(20)), _slow_echo)]

    assert sorted(asyncio.run(go())) == list(range(20))


def test_broken_request_stream_answers_what_was_accepted_then_raises():
    got = []

    async def go():
        async for r in answer_concurrently(_requests(range(10), fail_after=6), _slow_echo):
            got.append(r)

    with pytest.raises(InvalidInput, match="garbage"):
        asyncio.run(go())
    assert sorted(got) == list(range(6))  # every accepted request answered before the error


def test_client_leaving_cancels_pending_handlers():
    started, cancelled = [], []

    async def handle(req, emit):
        started.append(req)
        if req == 0:
            emit(req)
            return
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(req)
            raise

    async def go():
        gen = answer_concurrently(_requests(range(5)), handle)
        first = await gen.__anext__()
        await asyncio.sleep(0.05)
        await gen.aclose()  # the client went away
        await asyncio.sleep(0.05)
        return first

    assert asyncio.run(go()) == 0
    assert sorted(cancelled) == [1, 2, 3, 4] and sorted(started) == [0, 1, 2, 3, 4]


# -- admission, errors, control guard -----------------------------------------------------------

def test_byte_budget_refuses_over_its_limit_and_releases():
    b = ByteBudget(100, "svc")
    with b.hold(60):
        with pytest.raises(Overloaded, match="max_inflight_bytes=100"), b.hold(41):
            pass
        with b.hold(40):
            assert b.used == 100
    assert b.used == 0


def test_undecodable_request_is_invalid_input_naming_the_request():
    decode = _decoder(lambda raw: json.loads(raw), "request")
    assert decode(b"[1]") == [1]
    with pytest.raises(InvalidInput, match="request: 3 bytes"):
        decode(b"{{{")
    assert status_for(InvalidInput("x"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(Misconfigured("x"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(Unauthenticated("x"))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert status_for(Forbidden("x"))[0] == grpc.StatusCode.PERMISSION_DENIED


class FakeContext:
    def __init__(self, metadata=(), names=()):
        self._md = metadata
        self._names = names

    def invocation_metadata(self):
        return self._md

    def auth_context(self):
        return {"x509_common_name": [n.encode() for n in self._names]} if self._names else {}


def test_control_guard():
    ControlGuard().check(FakeContext())
    with pytest.raises(Forbidden, match="control=off"):
        ControlGuard(enabled=False).check(FakeContext((("authorization", "Bearer t"),)))
    token = ControlGuard(token="t")
    token.check(FakeContext((("authorization", "Bearer t"),)))
    for md in ((), (("authorization", "Bearer u"),), (("authorization", "t"),)):
        with pytest.raises(Unauthenticated):
            token.check(FakeContext(md))
    named = ControlGuard(clients="ops, admin")
    named.check(FakeContext(names=["admin"]))
    with pytest.raises(Forbidden, match="ops"):
        named.check(FakeContext(names=["edge"]))


# -- health follows a bounded probe -------------------------------------------------------------

def test_health_follows_the_probe_and_its_deadline():
    state = {"mode": "ok"}

    async def probe():
        if state["mode"] == "hang":
            await asyncio.sleep(30)
        if state["mode"] == "raise":
            raise ConnectionError("down")
        return state["mode"] == "ok"

    seen = []

    async def go():
        server = GrpcServer("127.0.0.1:0", 1 << 20, ready_probe=probe, probe_timeout_s=0.05, on_health=seen.append)
        server.service_names.append("ddnn.v1.Cloud")
        out = []
        for mode in ("ok", "hang", "ok", "raise", "not ready", "ok"):
            state["mode"] = mode
            await server.set_serving(await server.probe())
            out.append(server.serving)
        server._stopping = True  # a draining server is never SERVING again
        await server.set_serving(True)
        out.append(server.serving)
        return out

    assert asyncio.run(go()) == [True, False, True, False, False, True, False]
    assert seen == [True, False, True, False, False, True, False]


# -- settings -----------------------------------------------------------------------------------

def test_settings_precedence_default_env_flag(monkeypatch):
    assert load_settings(EdgeSettings, "DDNN_EDGE", []).grace_s == 10.0
    monkeypatch.setenv("DDNN_EDGE_GRACE_S", "3")
    assert load_settings(EdgeSettings, "DDNN_EDGE", []).grace_s == 3.0
    assert load_settings(EdgeSettings, "DDNN_EDGE", ["--grace-s", "4"]).grace_s == 4.0
    monkeypatch.setenv("DDNN_EDGE_GRACE_S", "soon")
    with pytest.raises(SettingsError, match="DDNN_EDGE_GRACE_S"):
        load_settings(EdgeSettings, "DDNN_EDGE", [])
    with pytest.raises(SettingsError, match="control"):
        load_settings(CloudSettings, "DDNN_CLOUD", ["--control", "maybe"])


def test_every_service_shares_the_base_settings():
    shared = {"metrics_addr", "metrics_port", "max_message_bytes", "message_slack_bytes", "keepalive_s",
              "connect_timeout_s", "grace_s", "ready_file", "log_json"}
    server = {"listen", "tls_cert", "tls_key", "tls_ca", "max_inflight_bytes", "health_interval_s",
              "health_timeout_s", "control", "control_token", "control_clients"}
    for cls, prefix in ((EdgeSettings, "DDNN_EDGE"), (CloudSettings, "DDNN_CLOUD"), (LoadgenSettings, "DDNN_LOADGEN")):
        s = load_settings(cls, prefix, [])
        assert shared <= set(vars(s)), cls
        assert s.message_limit(1000) == 1000 + 64 * 1024
    assert server <= set(vars(load_settings(CloudSettings, "DDNN_CLOUD", [])))
    assert load_settings(EdgeSettings, "DDNN_EDGE", ["--max-message-bytes", "5"]).message_limit(1000) == 5


# -- the edge's runtime: reconfiguration, rollback, status --------------------------------------

@pytest.fixture(scope="module")
def ck():
    return load_checkpoint(SHIPPED_CHECKPOINT)


def _servicer(ck):
    from services.edge.runtime import EdgeRuntime
    from services.edge.server import EdgeServicer

    runtime = EdgeRuntime(ck, EdgePolicy.from_dict(POLICY), "normal", "fp32")
    return EdgeServicer(runtime, None, 64, 1024, 1.0)


def test_rejected_configure_changes_nothing_and_a_good_one_applies(ck):
    async def go():
        sv = _servicer(ck)
        before = sv.runtime.config
        status_before = sv.status()
        bad = [dict(policy_json=json.dumps({**POLICY, "exits": {"block4": {"kind": "ao_margin", "num_classes": 2}}})),
               dict(knobs={"block7": 0.3}, mode="warp"),
               dict(knobs={"block7": 0.3}, payload="bf16"),
               dict(knobs={"block7": 0.3}, slo="p95_latency=soon"),
               dict(mode="ws", slo="bandwidth=inf")]
        from ddnn.pb.ddnn.v1 import edge_pb2

        for fields in bad:
            with pytest.raises((InvalidInput, PolicyError)):
                await sv.Configure(edge_pb2.ConfigureRequest(**fields), FakeContext())
            assert sv.runtime.config is before, fields
            assert sv.slo is None
            assert sv.status() == status_before
        status = await sv.Configure(edge_pb2.ConfigureRequest(knobs={"block7": 0.3}, mode="local",
                                                              slo="p95_latency=0.5"), FakeContext())
        assert status.knobs["block7"] == pytest.approx(0.3) and status.mode == "local"
        assert status.slo == "p95_latency=0.5" and status.effective_mode == "local"
        sv.set_slo(None)
        sv.pool.shutdown()

    asyncio.run(go())


def test_policy_that_does_not_fit_the_model_at_batch_time_is_the_servers_fault(ck):
    from ddnn.pb.ddnn.v1 import edge_pb2
    from ddnn.serving.convert import images_to_proto

    async def go():
        sv = _servicer(ck)
        # Force a policy fitted for 2 classes past the checks (as an older edge would have taken it).
        two = {"kind": "ao_margin", "ratio": 1.0, "num_classes": 2, "bandwidth": 0.05, "min_pair_samples": 1,
               "grid_points": 2, "groups": {"*": {"n_correct": 1, "n_incorrect": 0}}}
        sv.runtime.base_policy = EdgePolicy.from_dict({**POLICY, "exits": {"block7": two}})
        sv.runtime.config = sv.runtime._build()
        images = np.zeros((2, 32, 32, 3), np.uint8)
        with pytest.raises(Misconfigured, match="2 classes"):
            await sv.process(edge_pb2.ImageBatch(batch_id=1, sample_ids=[1, 2], images=images_to_proto(images)),
                             lambda rb: None)
        assert sv.inflight == 0 and sv.budget.used == 0
        sv.pool.shutdown()

    asyncio.run(go())


def test_softmax_is_finite_for_any_logits():
    logits = np.array([[np.inf, 0.0, -np.inf], [np.nan, 1.0, 2.0], [np.nan, np.nan, np.nan],
                       [3e38, -3e38, 0.0]], np.float32)
    p = softmax(logits)
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(axis=1), 1.0)
    assert p[0].argmax() == 0 and p[1].argmax() == 2 and p[3].argmax() == 0


# -- every tensor a client can send decodes or is INVALID_ARGUMENT -----------------------------

def test_any_tensor_decodes_or_is_invalid_input():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from ddnn.codec import Encoded, decode

    floats = st.floats(width=32, allow_nan=True, allow_infinity=True)

    @settings(max_examples=300, deadline=None)
    @given(dtype=st.integers(-1, 6), shape=st.lists(st.integers(-2, 4), max_size=3), data=st.binary(max_size=64),
           encoding=st.integers(-1, 3), scale=st.lists(floats, max_size=3), zp=st.lists(floats, max_size=3))
    def check(dtype, shape, data, encoding, scale, zp):
        try:
            out = decode(Encoded(dtype, tuple(shape), data, encoding, scale, zp), expect_shape=None, max_batch=4)
        except InvalidInput:
            return
        assert out.dtype in (np.float32, np.uint8)
        assert out.dtype == np.uint8 or np.all(np.isfinite(out))

    check()


def test_cloud_link_fails_fast_while_the_cloud_is_not_serving():
    from ddnn.errors import NotReady
    from ddnn.pb.ddnn.v1 import cloud_pb2
    from services.edge.cloud_link import CloudLink

    async def go():
        link = CloudLink("127.0.0.1:1", 1 << 20, 10.0, 0.5)
        link.connected, link._queue = True, asyncio.Queue()  # as if the stream were up
        pending = asyncio.ensure_future(link.infer(cloud_pb2.FeatureBatch(batch_id=1), timeout_s=30))
        await asyncio.sleep(0)
        link._set_serving(False)  # the cloud's health Watch said NOT_SERVING
        with pytest.raises(NotReady, match="NOT_SERVING"):
            await pending  # failed at once, not after its 30 s deadline
        with pytest.raises(NotReady, match="NOT_SERVING"):
            await link.infer(cloud_pb2.FeatureBatch(batch_id=2), timeout_s=30)
        link._set_serving(True)
        assert link.serving and link.inflight == 0

    asyncio.run(go())
