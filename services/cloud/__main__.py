"""``python -m services.cloud``: serve the deep segments of a checkpoint (see --help)."""

from __future__ import annotations

import logging
import sys

import numpy as np

from ddnn.checkpoint import load_checkpoint
from ddnn.pb.ddnn.v1 import cloud_pb2_grpc
from ddnn.serving.entry import run_service
from ddnn.serving.server import GrpcServer, serve_until_signalled
from services.cloud import metrics
from services.cloud.backends import SplitModel, TorchBackend, split_models
from services.cloud.server import CloudServicer
from services.cloud.settings import CloudSettings

log = logging.getLogger("services.cloud")


def make_backend(s: CloudSettings, ck, splits):
    if s.backend == "torch":
        return TorchBackend(ck, splits, s.torch_threads)
    from services.cloud.triton_backend import TritonBackend

    return TritonBackend(ck, splits, s, message_limit(s, splits))


SAMPLE_ID_BYTES = 16  # a sample id on the wire, with its share of the framing (varint + tag, rounded up)


def message_limit(s: CloudSettings, splits: dict[str, SplitModel]) -> int:
    """The setting, or the largest valid request: a full batch of the largest split input (fp32
    features or uint8 pixels), plus slack."""
    per_sample = max((4 if x.input_dtype == "float32" else 1) * int(np.prod(x.input_shape)) for x in splits.values())
    return s.message_limit(s.max_batch * (per_sample + SAMPLE_ID_BYTES))


async def serve(s: CloudSettings) -> None:
    ck = load_checkpoint(s.checkpoint)
    splits = split_models(ck, [x.strip() for x in s.splits.split(",") if x.strip()] or None)
    backend = make_backend(s, ck, splits)
    await backend.start()
    servicer = CloudServicer(backend, splits, ck.sha256, s.max_batch, s.max_inflight_batches, s.max_inflight_bytes)
    # Health follows the backend: NOT_SERVING while Triton is down, restarting, hung past the probe's
    # deadline or missing a model; SERVING again when it answers.
    server = GrpcServer(s.listen, message_limit(s, splits), s.tls, s.keepalive_s, s.grace_s,
                        ready_probe=backend.ready, probe_interval_s=s.health_interval_s,
                        probe_timeout_s=s.health_timeout_s,
                        on_health=lambda ok: metrics.BACKEND_READY.set(1 if ok else 0))
    server.add(cloud_pb2_grpc.add_CloudServicer_to_server, servicer, "ddnn.v1.Cloud")
    log.info("cloud serving %s (%s backend), message limit %d bytes", sorted(splits), backend.name,
             message_limit(s, splits))

    async def close() -> None:
        await backend.close()
        log.info("cloud stopped")

    await serve_until_signalled(server, s.metrics_addr, s.metrics_port, s.ready_file, [close],
                                **getattr(backend, "info", {}))


def main(argv: list[str] | None = None) -> int:
    return run_service("cloud", CloudSettings, "DDNN_CLOUD", serve, argv, __doc__)


if __name__ == "__main__":
    sys.exit(main())
