"""``python -m services.cloud``: serve the deep segments of a checkpoint (see --help)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np

from ddnn.engines import Backend, EngineSpec
from ddnn.export.bundle import is_bundle, load_bundle
from ddnn.pb.ddnn.v1 import cloud_pb2_grpc
from ddnn.serving.entry import run_service
from ddnn.serving.server import GrpcServer, serve_until_signalled
from services.cloud import metrics
from services.cloud.backends import EngineBackend, SplitModel, split_models
from services.cloud.server import CloudServicer
from services.cloud.settings import CloudSettings

log = logging.getLogger("services.cloud")


def load_bundle_for(s: CloudSettings):
    """The ONNX bundle whose cloud graphs are served: --bundle, else the one beside --checkpoint, else
    exported from the checkpoint (needs torch)."""
    if s.bundle:
        return load_bundle(s.bundle)
    beside = Path(s.checkpoint).with_suffix(".bundle")
    if is_bundle(beside):
        return load_bundle(beside)
    try:
        from ddnn.checkpoint import load_checkpoint
        from ddnn.export.cache import bundle_for
    except ImportError:
        raise ValueError(f"--bundle: no ONNX bundle beside {s.checkpoint}; export one with `ddnn export-onnx` and "
                         "pass --bundle DIR (DDNN_CLOUD_BUNDLE)") from None
    return bundle_for(load_checkpoint(s.checkpoint))


def make_backend(s: CloudSettings, bundle, splits):
    if s.backend == "torch":  # research: the checkpoint's torch modules, imported only here
        from ddnn.checkpoint import load_checkpoint

        ck = load_checkpoint(s.checkpoint)
        if ck.sha256 != bundle.checkpoint_sha256:
            raise ValueError(f"--checkpoint {s.checkpoint} is not the checkpoint of bundle {bundle.root}")
        return EngineBackend(EngineSpec(Backend.TORCH, threads=s.torch_threads), ck, splits)
    if s.backend == "onnxruntime":
        return EngineBackend(EngineSpec(Backend.ONNXRUNTIME, threads=s.torch_threads), bundle, splits)
    from services.cloud.triton_backend import TritonBackend

    return TritonBackend(bundle, splits, s, message_limit(s, splits))


SAMPLE_ID_BYTES = 16  # a sample id on the wire, with its share of the framing (varint + tag, rounded up)


def message_limit(s: CloudSettings, splits: dict[str, SplitModel]) -> int:
    """The setting, or the largest valid request: a full batch of the largest split input (fp32
    features or uint8 pixels), plus slack."""
    per_sample = max((4 if x.input_dtype == "float32" else 1) * int(np.prod(x.input_shape)) for x in splits.values())
    return s.message_limit(s.max_batch * (per_sample + SAMPLE_ID_BYTES))


async def serve(s: CloudSettings) -> None:
    bundle = load_bundle_for(s)
    splits = split_models(bundle, [x.strip() for x in s.splits.split(",") if x.strip()] or None)
    backend = make_backend(s, bundle, splits)
    await backend.start()
    servicer = CloudServicer(backend, splits, bundle.checkpoint_sha256, s.max_batch, s.max_inflight_batches,
                             s.max_inflight_bytes)
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
