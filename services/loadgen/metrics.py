"""Prometheus metrics of the load generator (running accuracies as seen by the client)."""

from prometheus_client import Counter, Gauge, Histogram

from ddnn.outcome import Outcome

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

SAMPLES = Counter("ddnn_loadgen_samples_total", "Samples answered, by outcome (edge/cloud/dropped/degraded/rejected)",
                  ["outcome"])
CORRECT = Counter("ddnn_loadgen_correct_total", "Correctly answered samples, by outcome", ["outcome"])
ACCURACY = Gauge("ddnn_loadgen_accuracy", "Running accuracy: scope edge, cloud or overall", ["scope"])
LATENCY = Histogram("ddnn_loadgen_latency_seconds", "Client-side latency per sample, by path", ["path"],
                    buckets=LATENCY_BUCKETS)
INFLIGHT = Gauge("ddnn_loadgen_inflight_batches", "Batches sent and not fully answered")

for _outcome in Outcome:  # series exist from the start
    SAMPLES.labels(_outcome.label)
    CORRECT.labels(_outcome.label)
