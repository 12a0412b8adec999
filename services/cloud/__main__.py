"""``python -m services.cloud``: serve the deep segments of a checkpoint (see --help)."""

from __future__ import annotations

import asyncio
import logging
import sys

from ddnn.checkpoint import load_checkpoint
from ddnn.pb.ddnn.v1 import cloud_pb2_grpc
from ddnn.serving.entry import run_service
from ddnn.serving.server import GrpcServer, TlsFiles, install_shutdown, start_metrics_server, write_ready_file
from services.cloud.backends import TorchBackend, split_models
from services.cloud.server import CloudServicer
from services.cloud.settings import CloudSettings

log = logging.getLogger("services.cloud")


def make_backend(s: CloudSettings, ck, splits):
    if s.backend == "torch":
        return TorchBackend(ck, splits, s.torch_threads)
    from services.cloud.triton_backend import TritonBackend

    return TritonBackend(ck, splits, s)


async def serve(s: CloudSettings) -> None:
    ck = load_checkpoint(s.checkpoint)
    splits = split_models(ck, [x.strip() for x in s.splits.split(",") if x.strip()] or None)
    backend = make_backend(s, ck, splits)
    await backend.start()
    servicer = CloudServicer(backend, splits, ck.sha256, s.max_batch, s.max_inflight_batches)
    server = GrpcServer(s.listen, s.max_message_bytes, TlsFiles(s.tls_cert or None, s.tls_key or None,
                                                                s.tls_ca or None), s.keepalive_s, s.grace_s)
    server.add(cloud_pb2_grpc.add_CloudServicer_to_server, servicer, "ddnn.v1.Cloud")
    port = await server.start()
    metrics_port = start_metrics_server(s.metrics_addr, s.metrics_port)
    log.info("cloud serving %s (%s backend) on port %d, metrics on %d", sorted(splits), backend.name, port,
             metrics_port)
    write_ready_file(s.ready_file, grpc_port=port, metrics_port=metrics_port, **getattr(backend, "info", {}))
    stop = asyncio.Event()
    install_shutdown(stop)
    await stop.wait()
    await server.stop()
    await backend.close()
    log.info("cloud stopped")


def main(argv: list[str] | None = None) -> int:
    return run_service("cloud", CloudSettings, "DDNN_CLOUD", serve, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
