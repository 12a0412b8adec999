"""Load generator settings (``DDNN_LOADGEN_*`` environment variables or ``--flags``)."""

from __future__ import annotations

from dataclasses import dataclass

from ddnn.serving.settings import ProcessSettings, setting


@dataclass
class LoadgenSettings(ProcessSettings):
    edge: str = setting("127.0.0.1:50051", "edge service address host:port")
    data: str = setting("", "test images: pack, ImageFolder root or CIFAR pickle folder (default: shipped pack)")
    limit: int = setting(0, "replay only the first N images (0 = all)")
    repeat: int = setting(1, "replay the data this many times (ids stay unique)")
    shuffle: bool = setting(True, "replay in a fixed pseudo-random order (the shipped split is sorted by class, so "
                                  "--limit would otherwise pick one class); sample ids stay dataset indices")
    seed: int = setting(0, "seed of the replay order")
    batch_size: int = setting(32, "images per batch (the papers' testbeds use 32)")
    loop: str = setting("closed", "closed: each stream waits for a batch's answers; open: send at --rate")
    concurrency: int = setting(1, "concurrent streams")
    rate: float = setting(0.0, "open loop: batches per second, over all streams")
    batch_timeout_s: float = setting(60.0, "a batch not fully answered by then counts its samples missing")
    deadline_s: float = setting(3600.0, "deadline of each stream call")
    out: str = setting("", "folder for report.json and samples.csv (default: results/loadgen-<time>)")
    metrics_port: int = setting(9103, "port of the /metrics endpoint (0 = any free port, -1 = none)")
    linger_s: float = setting(0.0, "keep /metrics up this long after the run, for a last scrape")
    tls_ca: str = setting("", "CA of the edge's certificate; enables TLS")
    tls_cert: str = setting("", "client certificate for mutual TLS")
    tls_key: str = setting("", "client key for mutual TLS")
    tls_server_name: str = setting("", "expected name in the edge's certificate")
    progress: bool = setting(True, "show a progress bar")

    def __post_init__(self):
        self.check_common()
        if self.loop not in ("closed", "open"):
            raise ValueError(f"--loop must be 'closed' or 'open', got {self.loop!r}")
        if self.loop == "open" and self.rate <= 0:
            raise ValueError("--loop open needs --rate > 0 (batches per second)")
        for name in ("batch_size", "concurrency", "repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
