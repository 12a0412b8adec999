"""Prometheus metrics of the edge service."""

from prometheus_client import Counter, Gauge, Histogram

TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SAMPLES = Counter("ddnn_edge_samples_total",
                  "Samples answered, by outcome: an edge exit name, 'cloud', 'dropped' or 'degraded'",
                  ["outcome"])
BATCHES = Counter("ddnn_edge_batches_total", "Image batches received, by status", ["status"])
STAGE_SECONDS = Histogram("ddnn_edge_stage_seconds",
                          "Per-sample time by stage: edge_compute, link, cloud_compute, total",
                          ["stage", "path"], buckets=TIME_BUCKETS)
OFFLOAD_BYTES = Counter("ddnn_edge_offload_bytes_total", "Payload bytes sent to the cloud", ["payload"])
OFFLOAD_SAMPLES = Counter("ddnn_edge_offload_samples_total", "Samples sent to the cloud", ["payload"])
CLOUD_RTT = Histogram("ddnn_edge_cloud_rtt_seconds", "Round trip of one feature batch to the cloud",
                      buckets=TIME_BUCKETS)
CLOUD_ERRORS = Counter("ddnn_edge_cloud_errors_total", "Offloads answered locally, by reason", ["reason"])
CLOUD_UP = Gauge("ddnn_edge_cloud_connected", "1 while the stream to the cloud is up")
THRESHOLD = Gauge("ddnn_edge_threshold", "Current knob (threshold) of each exit's criterion", ["exit", "kind"])
MODE = Gauge("ddnn_edge_mode", "1 for the configured mode (auto, normal, ws, local)", ["mode"])
EFFECTIVE_MODE = Gauge("ddnn_edge_effective_mode", "1 for the mode in effect (normal, ws, local)", ["mode"])
MODE_SWITCHES = Counter("ddnn_edge_mode_switches_total", "Mode changes, by new mode", ["mode"])
INFLIGHT = Gauge("ddnn_edge_inflight_samples", "Samples admitted and not yet answered")
LINK_RTT = Gauge("ddnn_edge_link_rtt_seconds", "Smoothed cloud round trip (EWMA)")
LINK_THROUGHPUT = Gauge("ddnn_edge_link_throughput_bytes_per_second", "Smoothed offload throughput (EWMA)")
SLO_TARGET = Gauge("ddnn_edge_slo_target", "SLO controller target (seconds, samples/s or bytes/s)", ["kind"])
SLO_MEASURED = Gauge("ddnn_edge_slo_measured", "SLO controller's measured value over its window", ["kind"])
SLO_OFFLOAD_TARGET = Gauge("ddnn_edge_slo_offload_fraction", "Offload fraction the SLO controller aims for")
LINK_ERROR_RATE = Gauge("ddnn_edge_link_error_rate", "Smoothed fraction of offloads that failed (EWMA)")
INFLIGHT_BYTES = Gauge("ddnn_edge_inflight_bytes", "Request payload bytes admitted and not yet answered")
SERVING = Gauge("ddnn_edge_serving", "1 while the edge's health is SERVING")
CLOUD_SERVING = Gauge("ddnn_edge_cloud_serving", "1 while the cloud's health (grpc.health.v1 Watch) is SERVING")
