"""``python -m services.edge``: serve the edge part of a checkpoint (see --help)."""

from __future__ import annotations

import logging
import sys

import numpy as np

from ddnn.control.modes import ModeSelector, ModeThresholds
from ddnn.control.slo import SloTarget
from ddnn.data import IMAGE_BYTES
from ddnn.engines import EngineSpec, policy_engine
from ddnn.paths import SHIPPED_INT8_POLICY, SHIPPED_POLICY
from ddnn.pb.ddnn.v1 import edge_pb2_grpc
from ddnn.policies import EdgePolicy
from ddnn.serving.control import ControlGuard
from ddnn.serving.entry import run_service
from ddnn.serving.server import GrpcServer, TlsFiles, serve_until_signalled
from services.edge import metrics
from services.edge.cloud_link import CloudLink
from services.edge.model import load_edge_model
from services.edge.runtime import EdgeRuntime
from services.edge.server import ChannelMonitor, EdgeServicer
from services.edge.settings import EdgeSettings

log = logging.getLogger("services.edge")


SAMPLE_ID_BYTES = 16  # a sample id on the wire, with its share of the framing (varint + tag, rounded up)


POLICY_BYTES = 1 << 20  # the largest Configure request (policy document) the edge takes; shipped: 73 KB


def message_limit(s: EdgeSettings, runtime: EdgeRuntime | None = None) -> int:
    """The setting, or the largest valid message plus slack: a full image batch or a Configure with
    a policy of up to 1 MiB from clients, or (``runtime`` given: the link to the cloud) a full fp32
    feature batch, whichever is larger."""
    per_sample = max([IMAGE_BYTES, *(4 * int(np.prod(r.feature_shape)) for r in runtime.config.routes.values())]
                     if runtime is not None else [IMAGE_BYTES])
    return s.message_limit(max(s.max_batch * (per_sample + SAMPLE_ID_BYTES), POLICY_BYTES))


def default_policy(spec: EngineSpec) -> str:
    """The shipped policy calibrated for the engine's precision."""
    return str(SHIPPED_INT8_POLICY if spec.precision == "int8" else SHIPPED_POLICY)


def build(s: EdgeSettings) -> tuple[EdgeRuntime, CloudLink | None]:
    spec = EngineSpec.parse(s.engine, s.threads or s.torch_threads)  # --torch-threads: the older name
    model = load_edge_model(spec, s.bundle, s.checkpoint, s.principal_checkpoint)
    policy = EdgePolicy.load(s.policy or default_policy(spec))
    fitted = policy_engine(policy.meta)
    if fitted.precision != spec.precision:
        log.warning("policy %s was calibrated for engine %s, this edge runs %s: its thresholds assume the other "
                    "precision's logits (calibrate one with `ddnn calibrate --engine %s`)", s.policy or "(default)",
                    fitted.name, spec.name, spec.name)
    runtime = EdgeRuntime(model, policy, s.mode, s.payload, s.modes)
    link = None
    if s.cloud:
        tls = TlsFiles(s.cloud_tls_cert or None, s.cloud_tls_key or None, s.cloud_tls_ca or None)
        link = CloudLink(s.cloud, message_limit(s, runtime), s.keepalive_s, s.connect_timeout_s, tls,
                         s.cloud_tls_server_name)
    return runtime, link


async def serve(s: EdgeSettings) -> None:
    runtime, link = build(s)
    if link:
        await link.start()
    thresholds = ModeThresholds(
        ws_enter_rtt_s=s.auto_ws_rtt_s, ws_leave_rtt_s=2 * s.auto_ws_rtt_s,
        ws_enter_throughput_bps=s.auto_ws_throughput_bps, ws_leave_throughput_bps=s.auto_ws_throughput_bps / 2,
        local_enter_error_rate=s.auto_local_error_rate, local_leave_error_rate=s.auto_local_error_rate / 5,
        dwell_s=s.auto_dwell_s)
    monitor = ChannelMonitor(runtime, link, ModeSelector(thresholds))
    servicer = EdgeServicer(runtime, link, s.max_batch, s.max_inflight_samples, s.cloud_timeout_s, monitor,
                            s.max_inflight_bytes, ControlGuard.from_settings(s))
    monitor.start()
    if s.slo:
        servicer.set_slo(SloTarget.parse(s.slo), s.slo_interval_s, s.slo_window_s)
    # The edge answers (degraded if need be) whatever its cloud link does, so its health is SERVING
    # while it runs; the link's state is in GetStatus (cloud_connected) and ddnn_edge_cloud_connected.
    server = GrpcServer(s.listen, message_limit(s), s.tls, s.keepalive_s, s.grace_s,
                        on_health=lambda ok: metrics.SERVING.set(1 if ok else 0))
    server.add(edge_pb2_grpc.add_EdgeServicer_to_server, servicer, "ddnn.v1.Edge")
    log.info("edge serving %s on engine %s (mode %s, payload %s), cloud %s, message limit %d bytes",
             runtime.model.path, runtime.model.spec.name, s.mode, s.payload, s.cloud or "none", message_limit(s))

    async def close() -> None:
        monitor.stop()
        if link:
            await link.close()
        servicer.pool.shutdown(wait=False)
        log.info("edge stopped")

    await serve_until_signalled(server, s.metrics_addr, s.metrics_port, s.ready_file, [close])


def main(argv: list[str] | None = None) -> int:
    return run_service("edge", EdgeSettings, "DDNN_EDGE", serve, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
