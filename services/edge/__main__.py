"""``python -m services.edge``: serve the edge part of a checkpoint (see --help)."""

from __future__ import annotations

import asyncio
import logging
import sys

import torch

from ddnn.checkpoint import load_checkpoint
from ddnn.control.modes import ModeSelector, ModeThresholds
from ddnn.control.slo import SloTarget
from ddnn.pb.ddnn.v1 import edge_pb2_grpc
from ddnn.policies import EdgePolicy
from ddnn.serving.entry import run_service
from ddnn.serving.server import GrpcServer, TlsFiles, install_shutdown, start_metrics_server, write_ready_file
from services.edge.cloud_link import CloudLink
from services.edge.runtime import EdgeRuntime
from services.edge.server import ChannelMonitor, EdgeServicer
from services.edge.settings import EdgeSettings

log = logging.getLogger("services.edge")


def build(s: EdgeSettings) -> tuple[EdgeRuntime, CloudLink | None]:
    if s.torch_threads:
        torch.set_num_threads(s.torch_threads)
    ck = load_checkpoint(s.checkpoint)
    principal = load_checkpoint(s.principal_checkpoint) if s.principal_checkpoint else None
    runtime = EdgeRuntime(ck, EdgePolicy.load(s.policy), s.mode, s.payload, s.modes, principal)
    link = None
    if s.cloud:
        tls = TlsFiles(s.cloud_tls_cert or None, s.cloud_tls_key or None, s.cloud_tls_ca or None)
        link = CloudLink(s.cloud, s.max_message_bytes, s.keepalive_s, s.connect_timeout_s, tls,
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
    servicer = EdgeServicer(runtime, link, s.max_batch, s.max_inflight_samples, s.cloud_timeout_s, monitor)
    monitor.start()
    if s.slo:
        servicer.set_slo(SloTarget.parse(s.slo), s.slo_interval_s, s.slo_window_s)
    server = GrpcServer(s.listen, s.max_message_bytes, TlsFiles(s.tls_cert or None, s.tls_key or None,
                                                                s.tls_ca or None), s.keepalive_s, s.grace_s)
    server.add(edge_pb2_grpc.add_EdgeServicer_to_server, servicer, "ddnn.v1.Edge")
    port = await server.start()
    metrics_port = start_metrics_server(s.metrics_addr, s.metrics_port)
    log.info("edge serving %s (mode %s, payload %s) on port %d, metrics on %d, cloud %s",
             runtime.ck.path, s.mode, s.payload, port, metrics_port, s.cloud or "none")
    write_ready_file(s.ready_file, grpc_port=port, metrics_port=metrics_port)
    stop = asyncio.Event()
    install_shutdown(stop)
    await stop.wait()
    await server.stop()
    monitor.stop()
    if link:
        await link.close()
    servicer.pool.shutdown(wait=False)
    log.info("edge stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service("edge", EdgeSettings, "DDNN_EDGE", serve, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
