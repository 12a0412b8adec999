"""Edge service settings (``DDNN_EDGE_*`` environment variables or ``--flags``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddnn.codec import PAYLOADS, Payload
from ddnn.export.bundle import MODES, SPLIT_MODES, Mode
from ddnn.paths import SHIPPED_CHECKPOINT
from ddnn.serving.settings import ServerSettings, setting


@dataclass
class EdgeSettings(ServerSettings):
    checkpoint: str = setting(str(SHIPPED_CHECKPOINT), "checkpoint whose edge part runs here (torch engine; "
                                                       "for ONNX engines, its bundle x.bundle beside x.pt)")
    bundle: str = setting("", "ONNX bundle (ddnn export-onnx) the ONNX engines run (default: the one beside "
                              "--checkpoint, else exported from it when torch is importable)")
    engine: str = setting("onnxruntime", "engine: onnxruntime | onnxruntime-int8 | openvino[-int8|-bf16] | torch")
    threads: int = setting(0, "engine intra-op threads (0 = the runtime's default)")
    policy: str = setting("", "exit policy JSON (ddnn calibrate; default: the shipped policy calibrated for "
                              "the engine's precision)")
    principal_checkpoint: str = setting("", "aux/principal arrangement: the cloud's principal network; "
                                            "the edge then offloads raw images (Lo et al.)")
    listen: str = setting("127.0.0.1:50051", "gRPC listen address (port 0 = any free port)")
    keepalive_s: float = setting(10.0, "HTTP/2 keepalive ping interval on the cloud stream and idle clients")
    metrics_port: int = setting(9101, "port of the /metrics endpoint (0 = any free port)")
    cloud: str = setting("127.0.0.1:50052", "cloud service address host:port ('' = local-only edge)")
    mode: str = setting(Mode.NORMAL.value, "auto | normal (deepest edge exit) | ws (shallow exit) | local (no offload)")
    modes: str = setting("", "exits per mode, e.g. 'ws=block4;normal=block7' or 'normal=block4,block7' for a "
                             "cascade (default: ws = shallowest edge exit, normal = deepest)")
    payload: str = setting(Payload.FP32.value, "offload payload: fp32 | fp16 | int8 features, or raw (the input image)")
    max_batch: int = setting(256, "largest image batch accepted")
    max_inflight_samples: int = setting(4096, "samples admitted at once; more are refused RESOURCE_EXHAUSTED")
    cloud_timeout_s: float = setting(5.0, "deadline for a cloud answer; past it the sample is answered locally")
    auto_dwell_s: float = setting(2.0, "auto mode: how long a link condition must hold before switching")
    auto_ws_rtt_s: float = setting(0.010, "auto mode: enter ws below this probe RTT (leave above twice it)")
    auto_ws_throughput_bps: float = setting(8e6, "auto mode: enter ws above this offload throughput, bytes/s "
                                                 "(leave below half of it)")
    auto_local_error_rate: float = setting(0.5, "auto mode: go local above this failure rate (back below a fifth)")
    slo: str = setting("", "SLO controller target: p95_latency=SECONDS | cloud_rate=SAMPLES_PER_S | "
                           "bandwidth=BYTES_PER_S ('' = off)")
    slo_interval_s: float = setting(1.0, "SLO controller period")
    slo_window_s: float = setting(5.0, "SLO controller measurement window")
    torch_threads: int = setting(0, "the older name of --threads (--threads wins)")
    cloud_tls_ca: str = setting("", "CA that signed the cloud's certificate; enables TLS to the cloud")
    cloud_tls_cert: str = setting("", "client certificate for mutual TLS to the cloud")
    cloud_tls_key: str = setting("", "client private key for mutual TLS to the cloud")
    cloud_tls_server_name: str = setting("", "expected name in the cloud's certificate (default: its host)")

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        from ddnn.engines import ENGINE_NAMES

        if self.engine not in ENGINE_NAMES:
            raise ValueError(f"--engine must be one of {', '.join(ENGINE_NAMES)}, got {self.engine!r}")
        if self.payload not in PAYLOADS:
            raise ValueError(f"--payload must be one of {', '.join(PAYLOADS)}, got {self.payload!r}")
        self.check_common()
        for name in ("max_batch", "max_inflight_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
        if self.cloud_timeout_s <= 0:
            raise ValueError("--cloud-timeout-s must be > 0")
        if self.slo:
            from ddnn.control.slo import SloTarget

            SloTarget.parse(self.slo)


def parse_modes(text: str) -> dict[Mode, list[str]]:
    """'ws=block4;normal=block4,block7' -> {Mode.WS: ['block4'], Mode.NORMAL: ['block4', 'block7']}."""
    out: dict[Mode, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        mode, sep, exits = part.partition("=")
        if not sep or mode.strip() not in SPLIT_MODES or not exits.strip():
            raise ValueError(f"--modes: expected 'ws=EXIT[,EXIT];normal=EXIT[,EXIT]', got {part!r}")
        out[Mode(mode.strip())] = [e.strip() for e in exits.split(",") if e.strip()]
    return out
