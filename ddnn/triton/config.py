"""The settings of one launched tritonserver, apart from the process (PyTriton's
``TritonServerConfig`` vs ``TritonServer``), and the command-line flags they become.

Every wait the launcher does is a named field here, with the reason for its default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONTROL_KEY = "ddnn-model-control"  # --grpc-restricted-protocol=model-repository:<key>=<secret>
# ... and the metadata key a gRPC client then sends (Triton prefixes the key it was given).
CONTROL_HEADER = f"triton-grpc-protocol-{CONTROL_KEY}"
MODEL_CONTROL_MODES = ("explicit", "poll")


@dataclass(frozen=True)
class TritonServerConfig:
    """What to serve, where, and how long to wait for it. See :class:`~ddnn.triton.server.TritonServer`
    for the meaning of the serving fields; ports are 0 for a free port, None for an endpoint that is off.
    """

    repositories: tuple[Path, ...]
    models: tuple[str, ...] | None = None  # None: every model the repositories list
    host: str = "127.0.0.1"
    grpc_port: int = 0
    http_port: int | None = 0
    metrics_port: int | None = 0
    log_path: Path | None = None
    model_control_mode: str = "explicit"
    poll_secs: int = 5
    # Initial shared memory per model instance between Triton and the stub (the backend grows it
    # in steps of the same size; a 1 MiB default would grow per request).
    shm_bytes: int = 16 << 20
    extra_args: tuple[str, ...] = ()
    lock_model_control: bool = True
    # Shipped repository on 2 busy cores: 10-20 s; a cold start that imports torch per stub: more.
    startup_timeout: float = 120.0
    # SIGTERM -> SIGKILL: how long Triton may drain in-flight requests (--exit-timeout-secs).
    stop_grace: float = 10.0
    # Beyond stop_grace, for Triton's own teardown (stub interpreters unloading torch take 2-5 s).
    stop_margin: float = 5.0
    # After SIGKILL: the kernel reaps at once, but a loaded machine can delay the wait() a few s.
    kill_wait: float = 10.0
    # The last-resort finalizer's waits for the server and its stubs after SIGKILL.
    cleanup_wait: float = 5.0
    # Readiness polling: each probe call's deadline (a hung server must not stall the poll loop)
    # and the pause between probes (startup takes seconds; 0.1 s costs nothing and ends the wait early).
    probe_timeout: float = 2.0
    probe_interval: float = 0.1
    # A port picked free can be taken before Triton binds it: start again on new ports this often.
    port_attempts: int = 3

    def __post_init__(self):
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ValueError(f"model_control_mode must be 'explicit' or 'poll', got {self.model_control_mode!r}")
        for name in ("startup_timeout", "stop_grace", "stop_margin", "kill_wait", "cleanup_wait", "probe_timeout",
                     "probe_interval"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 seconds, got {getattr(self, name)!r}")
        if self.port_attempts < 1:
            raise ValueError(f"port_attempts must be >= 1, got {self.port_attempts!r}")

    @property
    def requested_ports(self) -> dict[str, int | None]:
        """Endpoint -> the port asked for (0: pick a free one; None: endpoint off)."""
        return {"grpc": self.grpc_port, "http": self.http_port, "metrics": self.metrics_port}

    def flags(self, ports: dict[str, int | None], backend_dir: Path, shm_prefix: str,
              control_secret: str = "") -> list[str]:
        """tritonserver's flags (without the binary) for the ``ports`` picked and this launch's
        backend directory, shared-memory prefix and model-control secret ('' = not locked)."""
        flags = [f"--model-repository={r}" for r in self.repositories]
        flags += [f"--backend-directory={backend_dir}",
                  f"--model-control-mode={self.model_control_mode}",
                  "--strict-readiness=true", "--exit-on-error=true",
                  # The configs are complete: without this the Python backend starts one extra stub per
                  # model (importing torch) only to ask model.py for a config.
                  "--disable-auto-complete-config",
                  f"--exit-timeout-secs={max(1, int(self.stop_grace))}",
                  f"--grpc-address={self.host}", f"--grpc-port={ports['grpc']}",
                  # Let clients keep idle connections alive with pings every >= 10 s (see TritonClient).
                  "--grpc-keepalive-permit-without-calls=true", "--grpc-http2-max-pings-without-data=0",
                  "--grpc-http2-min-recv-ping-interval-without-data=10000",
                  f"--backend-config=python,shm-default-byte-size={self.shm_bytes}",
                  f"--backend-config=python,shm-growth-byte-size={self.shm_bytes}",
                  f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
                  "--log-verbose=0", "--log-info=true"]
        if control_secret:
            flags += [f"--grpc-restricted-protocol=model-repository:{CONTROL_KEY}={control_secret}"]
            if self.http_port is not None:
                flags += [f"--http-restricted-api=model-repository:{CONTROL_KEY}={control_secret}"]
        if self.model_control_mode == "explicit":
            flags += [f"--load-model={m}" for m in self.models] if self.models else ["--load-model=*"]
        else:
            flags += [f"--repository-poll-secs={self.poll_secs}"]
        if ports["http"] is None:
            flags += ["--allow-http=false"]
        else:
            flags += ["--allow-http=true", f"--http-address={self.host}", f"--http-port={ports['http']}"]
        if ports["metrics"] is None:
            flags += ["--allow-metrics=false"]
        else:
            flags += ["--allow-metrics=true", "--allow-gpu-metrics=false", f"--metrics-address={self.host}",
                      f"--metrics-port={ports['metrics']}"]
        return flags + list(self.extra_args)
