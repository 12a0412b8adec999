"""Load generator: replays CIFAR batches against an edge and reports accuracy, exits, latency."""
