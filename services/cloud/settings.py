"""Cloud service settings (``DDNN_CLOUD_*`` environment variables or ``--flags``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddnn.paths import SHIPPED_CHECKPOINT
from ddnn.serving.settings import ServerSettings, setting


@dataclass
class CloudSettings(ServerSettings):
    checkpoint: str = setting(str(SHIPPED_CHECKPOINT), "checkpoint whose cloud parts are served (its ONNX bundle "
                                                       "x.bundle beside x.pt; torch backend: the checkpoint)")
    bundle: str = setting("", "ONNX bundle (ddnn export-onnx) whose cloud graphs are served (default: the one "
                              "beside --checkpoint, else exported from it when torch is importable)")
    listen: str = setting("127.0.0.1:50052", "gRPC listen address (host:port, port 0 = any free port)")
    metrics_port: int = setting(9102, "port of the /metrics endpoint (0 = any free port)")
    backend: str = setting("triton", "'triton' (ONNX cloud graphs on a Triton server), 'onnxruntime' "
                                     "(in-process) or 'torch' (in-process, research)")
    triton_url: str = setting("", "use the Triton server at host:port instead of starting one")
    triton_repository: str = setting("", "model repository to export to / serve (default: a cache folder); "
                                         "with --triton-url, the repository that server serves (its manifest "
                                         "maps split points to model names)")
    triton_host: str = setting("127.0.0.1", "address the Triton this service starts binds to (0.0.0.0 lets "
                                            "Prometheus scrape its metrics from another host)")
    triton_metrics_port: int = setting(0, "metrics port of the Triton this service starts (0 = any free port)")
    triton_threads: int = setting(1, "ONNX Runtime threads per Triton model instance (0 = cores / instances)")
    triton_max_queue_delay_us: int = setting(100, "Triton dynamic batcher's queue delay, microseconds")
    triton_shared_memory: bool = setting(True, "pass tensors to a Triton this service started through shared "
                                               "memory (same host) instead of inside gRPC messages")
    triton_restart: bool = setting(True, "restart the Triton this service started if it dies")
    triton_startup_timeout_s: float = setting(180.0, "time the Triton this service starts (or its watchdog "
                                                     "restarts) may take to serve every model")
    triton_ready_timeout_s: float = setting(120.0, "time Triton (started here or at --triton-url) may take to "
                                                   "report every model ready before the service gives up starting")
    splits: str = setting("", "split points to serve, comma-separated (default: every edge exit and 'input')")
    max_batch: int = setting(256, "largest batch accepted (samples)")
    max_inflight_batches: int = setting(64, "batches processed at once; more are refused RESOURCE_EXHAUSTED")
    request_timeout_s: float = setting(10.0, "deadline of each Triton request")
    torch_threads: int = setting(0, "intra-op threads of the in-process backends (0 = the runtime's default)")

    def __post_init__(self):
        if self.backend not in ("triton", "onnxruntime", "torch"):
            raise ValueError(f"--backend must be 'triton', 'onnxruntime' or 'torch', got {self.backend!r}")
        self.check_common()
        for name in ("triton_startup_timeout_s", "triton_ready_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"--{name.replace('_', '-')} must be > 0")
        for name in ("max_batch", "max_inflight_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
