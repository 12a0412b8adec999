"""Run Triton for the cloud service in a container: export the checkpoint's cloud parts, serve them.

The entry point of the ``triton`` service in docker-compose.yml and of the ``triton`` Deployment in
deploy/k8s. It writes the model repository with ``ddnn.triton.export_repository`` (what ``ddnn
export-triton`` does; ``DDNN_TRITON_SERVE_KIND=gpu`` gives KIND_GPU instance groups) and runs the
nvidia-pytriton wheel's ``tritonserver`` through ``ddnn.triton.server.TritonServer``, which sets
up the Python backend's stub so the models can import onnxruntime and ddnn. Unlike the launcher inside
the cloud service, the ports are fixed (Triton's conventional 8000 HTTP, 8001 gRPC, 8002 metrics)
and bound on all interfaces, so the cloud connects over the network (``DDNN_CLOUD_TRITON_URL``)
and Prometheus scrapes Triton's own metrics. SIGTERM stops Triton gracefully.

Settings are ``DDNN_TRITON_SERVE_*`` environment variables or ``--flags`` (``--help``).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from dataclasses import dataclass

from ddnn.errors import NotReady
from ddnn.logs import configure_logging
from ddnn.paths import SHIPPED_CHECKPOINT
from ddnn.serving.server import write_ready_file
from ddnn.serving.settings import SettingsError, load_settings, setting

log = logging.getLogger("deploy.triton_serve")
PREFIX = "DDNN_TRITON_SERVE"


@dataclass
class TritonServeSettings:
    checkpoint: str = setting(str(SHIPPED_CHECKPOINT), "checkpoint to export ('' = serve --repository as it is)")
    repository: str = setting("/tmp/triton-repository", "model repository directory (written when exporting)")
    splits: str = setting("", "split points to export, comma-separated (default: every edge exit and 'input')")
    kind: str = setting("cpu", "instance kind of every model: cpu (KIND_CPU) or gpu (KIND_GPU)")
    instances: int = setting(1, "model instances per model")
    max_batch: int = setting(256, "max_batch_size of every model")
    threads: int = setting(0, "ONNX Runtime threads per instance (0 = usable cores / instances)")
    host: str = setting("0.0.0.0", "address Triton's endpoints bind to")
    grpc_port: int = setting(8001, "Triton gRPC port (0 = any free port)")
    http_port: int = setting(8000, "Triton HTTP port (0 = any free port, -1 = off)")
    metrics_port: int = setting(8002, "Triton Prometheus metrics port (0 = any free port, -1 = off)")
    startup_timeout_s: float = setting(300.0, "time allowed for Triton and every model to become ready")
    stop_grace_s: float = setting(10.0, "on SIGTERM, time Triton gets to finish in-flight requests")
    shm_bytes: int = setting(16 << 20, "shared memory per model instance between Triton and the stub")
    log_file: str = setting("", "tritonserver's own log ('' = a temporary file, /dev/stdout in a container)")
    ready_file: str = setting("", "write {pid, grpc_port, http_port, metrics_port} here once serving")
    log_json: bool = setting(False, "log JSON lines")

    def __post_init__(self):
        if self.kind not in ("cpu", "gpu"):
            raise ValueError(f"--kind must be 'cpu' or 'gpu', got {self.kind!r}")
        if not self.repository:
            raise ValueError("--repository must name a directory")


def export(s: TritonServeSettings) -> None:
    """Write the model repository for ``s.checkpoint`` (deterministic and idempotent)."""
    from ddnn.triton import ExportOptions, export_repository

    splits = [x.strip() for x in s.splits.split(",") if x.strip()] or None
    options = ExportOptions(max_batch_size=s.max_batch, kind=s.kind, instances=s.instances,
                            threads=s.threads)
    manifest = export_repository(s.checkpoint, s.repository, splits, options)
    log.info("exported %s to %s: %s (%s x%d)", s.checkpoint, s.repository, ", ".join(manifest.model_names),
             s.kind, s.instances)


def serve(s: TritonServeSettings, stop: threading.Event) -> int:
    from ddnn.triton.server import TritonServer

    def port(p: int) -> int | None:
        return None if p < 0 else p

    server = TritonServer(s.repository, host=s.host, grpc_port=s.grpc_port, http_port=port(s.http_port),
                          metrics_port=port(s.metrics_port), startup_timeout=s.startup_timeout_s,
                          stop_grace=s.stop_grace_s, shm_bytes=s.shm_bytes, log_path=s.log_file or None)
    server.start()
    try:
        log.info("Triton serving %s on %s (ports %s)", server.models, s.host, server.ports)
        write_ready_file(s.ready_file, grpc_port=server.ports["grpc"], http_port=server.ports["http"],
                         metrics_port=server.ports["metrics"])
        while not stop.wait(1.0):
            if not server.running:
                log.error("tritonserver exited with code %s:\n%s", server.process.returncode, server.log_tail())
                return 1
    finally:
        code = server.stop()
    log.info("Triton stopped (exit code %s)", code)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        s = load_settings(TritonServeSettings, PREFIX, argv, description=__doc__)
    except SettingsError as exc:
        print(f"triton_serve: error: {exc}", file=sys.stderr)
        return 2
    configure_logging(json_lines=s.log_json)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if s.checkpoint:
            export(s)
        return serve(s, stop)
    except (ValueError, LookupError, OSError, NotReady) as exc:  # TritonNotInstalled is an OSError
        log.error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
