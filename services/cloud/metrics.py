"""Prometheus metrics of the cloud service."""

from prometheus_client import Counter, Gauge, Histogram

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

BATCHES = Counter("ddnn_cloud_batches_total", "Feature batches answered, by split point and status",
                  ["split", "status"])
SAMPLES = Counter("ddnn_cloud_samples_total", "Samples answered by the final exit", ["split"])
RECEIVED_BYTES = Counter("ddnn_cloud_received_bytes_total", "Feature payload bytes received", ["split"])
BATCH_SIZE = Histogram("ddnn_cloud_batch_size", "Samples per feature batch", ["split"], buckets=BATCH_BUCKETS)
QUEUE_SECONDS = Histogram("ddnn_cloud_queue_seconds", "Time from arrival to the start of compute",
                          buckets=TIME_BUCKETS)
COMPUTE_SECONDS = Histogram("ddnn_cloud_compute_seconds", "Deep-segment compute (Triton round trip)", ["split"],
                            buckets=TIME_BUCKETS)
INFLIGHT = Gauge("ddnn_cloud_inflight_batches", "Batches being processed")
INFLIGHT_BYTES = Gauge("ddnn_cloud_inflight_bytes", "Request payload bytes admitted and not yet answered")
BACKEND_READY = Gauge("ddnn_cloud_backend_ready",
                      "1 while the compute backend (Triton: server and every model) answers its readiness check "
                      "in time; the health status follows it")
